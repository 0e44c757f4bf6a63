"""``uaafusion bench``: the speed benchmarks (the same as ``python -m benchmarks``).

Delegates to :mod:`benchmarks.suite` (installed with the package): attribution batched vs
per-class loop, training steps with and without the attribution cache, inference per image,
fusion metrics, and the ``dvc repro`` wall time. Writes JSON under ``reports/``.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` sub-command to the ``uaafusion`` parser."""
    parser = subparsers.add_parser(
        "bench",
        help="speed benchmarks (attribution, training steps, inference, metrics, pipeline) -> reports/benchmarks*.json",
        description="Time the expensive parts of uaafusion: median and spread over repeated runs after warm-up "
                    "(synchronised on CUDA). Sections: attribution, training, inference, metrics (default) and "
                    "pipeline (dvc repro in a fresh copy, minutes). Same as `python -m benchmarks`.",
    )
    try:
        from benchmarks.suite import add_arguments
    except ImportError as error:  # an installation without the benchmarks package
        parser.set_defaults(func=_missing(error))
        return
    add_arguments(parser)
    parser.set_defaults(func=run)


def _missing(error: ImportError):
    def fail(args: argparse.Namespace) -> int:
        from uaafusion.errors import ConfigError

        raise ConfigError(f"uaafusion bench needs the benchmarks package of the project checkout ({error}); "
                          "run it from the checkout installed with `pip install -e .`.")

    return fail


def run(args: argparse.Namespace) -> int:
    from benchmarks.suite import run as run_suite

    return run_suite(args)
