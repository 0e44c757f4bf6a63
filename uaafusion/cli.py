"""The ``uaafusion`` command line: one sub-command per module in ``uaafusion.commands``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from uaafusion.allocator import keep_freed_memory
from uaafusion.errors import UAAFusionError

# Each module exposes ``register(subparsers)``; its parser sets ``func`` (args -> exit code).
COMMAND_MODULES: tuple[str, ...] = (
    "prepare",
    "train",
    "evaluate",
    "compare",
    "fuse",
    "report",
    "bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uaafusion",
        description="Segmentation-driven infrared-visible image fusion (UAAFusion).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"uaafusion.commands.{name}")
        except ModuleNotFoundError as error:
            if error.name == f"uaafusion.commands.{name}":
                continue  # command not part of this build
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    keep_freed_memory()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        return int(args.func(args) or 0)
    except UAAFusionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
