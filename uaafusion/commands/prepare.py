"""``uaafusion prepare``: the pipeline's prepare step, or the embedded synthetic dataset on its own.

    uaafusion prepare [--params params.yaml] [--root DIR] [--layout LAYOUT]
    uaafusion prepare --synthetic [--params params.yaml] [--out data/synthetic]
    uaafusion prepare --check [--params params.yaml] [--root DIR] [--layout LAYOUT]
    uaafusion prepare --degraded [--params params.yaml] [--kind KIND ...]

Without a flag it does what the pipeline's prepare step does (:func:`uaafusion.steps.prepare_step`):
write the synthetic set when ``data.root`` is its folder, else check every pair of the configured
dataset and print counts per split (:func:`uaafusion.steps.check_dataset`, what ``--check`` always does).
``--degraded`` writes the degraded benchmark: the test split degraded once per kind
(:func:`uaafusion.degraded_benchmark.prepare_degraded_sets`; ``evaluate.degraded`` in the params).
"""

from __future__ import annotations

import argparse
import time
import typing
from pathlib import Path
from typing import Any

from uaafusion.config import Layout, load_params

DEFAULT_SYNTHETIC_OUT = "data/synthetic"
LAYOUT_CHOICES: tuple[str, ...] = typing.get_args(Layout)


def register(subparsers: Any) -> None:
    """Add the ``prepare`` sub-command."""
    parser = subparsers.add_parser(
        "prepare",
        help="write the synthetic dataset, or check the configured dataset",
        description="The pipeline's prepare step: write the synthetic road-scene dataset when data.root is "
                    "its folder, else check every pair of the configured dataset (data.layout, data.root) "
                    "and print counts. --synthetic writes the synthetic set whatever data.root says.",
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--synthetic", action="store_true",
                        help="write the synthetic set from the 'synthetic' section of params to --out")
    action.add_argument("--check", action="store_true", help="only check the configured dataset (writes nothing)")
    action.add_argument("--degraded", action="store_true",
                        help="write one degraded copy of the test split per kind to evaluate.degraded.root, at "
                             "evaluate.degraded.severity and seed (kinds: --kind, else evaluate.degraded.kinds, "
                             "else all)")
    parser.add_argument("--kind", action="append", default=[], help="--degraded: a degradation kind (repeatable)")
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    parser.add_argument("--out", default=DEFAULT_SYNTHETIC_OUT,
                        help=f"--synthetic: output folder (default: {DEFAULT_SYNTHETIC_OUT})")
    parser.add_argument("--root", default=None, help="dataset folder instead of data.root")
    parser.add_argument("--layout", default=None, choices=LAYOUT_CHOICES, help="dataset layout instead of data.layout")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``prepare``; returns the exit code (errors raise :class:`uaafusion.errors.UAAFusionError`)."""
    from uaafusion.data.synthetic import write_synthetic_dataset
    from uaafusion.paths import ProjectPaths, project_root_for
    from uaafusion.steps import check_dataset, prepare_step, uses_synthetic_data, with_absolute_data_root

    overrides: dict[str, Any] = {}
    if args.root:
        overrides["data.root"] = str(args.root)
    if args.layout:
        overrides["data.layout"] = args.layout
    params = load_params(args.params, overrides)
    paths = ProjectPaths.at(project_root_for(args.params), params.outputs)
    started = time.perf_counter()
    if args.kind and not args.degraded:
        from uaafusion.errors import ConfigError

        raise ConfigError("--kind chooses the degraded test sets: use it with --degraded.")
    if args.degraded:
        from uaafusion.data.degrade import check_kinds
        from uaafusion.degraded_benchmark import prepare_degraded_sets

        kinds = check_kinds(args.kind, "--kind") if args.kind else None
        summary = prepare_degraded_sets(params, paths, kinds)
        print(f"wrote {len(summary['sets'])} degraded test sets of {summary['source']} to {summary['root']} "
              f"(severity {summary['severity']}, seed {summary['seed']}: {', '.join(summary['sets'])}) "
              f"in {time.perf_counter() - started:.1f} s")
    elif args.synthetic:
        _print_synthetic(params, write_synthetic_dataset(params.synthetic, Path(args.out)), Path(args.out),
                         time.perf_counter() - started)
    elif not args.check and uses_synthetic_data(params, paths):
        _print_synthetic(params, prepare_step(params, paths), paths.synthetic_data, time.perf_counter() - started)
    else:
        print(f"checking {params.data.root} ({params.data.layout} layout, {params.data.num_classes} classes, "
              f"on_bad_input: {params.data.on_bad_input})")
        _print_check(check_dataset(with_absolute_data_root(params, paths)))
    return 0


def _print_synthetic(params: Any, manifest: dict[str, Any], out: Path, seconds: float) -> None:
    from uaafusion.data.synthetic import CLASS_NAMES

    for split, info in manifest["splits"].items():
        shares = ", ".join(f"{name} {fraction:.0%}" for name, fraction in info["class_image_fractions"].items())
        print(f"{split}: {info['count']} pairs ({info['day']} day, {info['night']} night); "
              f"images containing each class: {shares}")
    print(f"wrote {out} ({manifest['height']}x{manifest['width']}, seed {manifest['seed']}) in {seconds:.1f} s; "
          f"preview: {out / 'montage.png'}")
    if tuple(params.data.class_names) != CLASS_NAMES:
        print(f"note: data.class_names in params ({', '.join(params.data.class_names)}) differ from the "
              f"synthetic classes ({', '.join(CLASS_NAMES)}).")


def _print_check(summary: dict[str, Any]) -> None:
    for split, info in summary["splits"].items():
        if "same_as" in info:
            print(f"{split}: same folder as {info['same_as']} ({info['folder']})")
            continue
        (height, width), *others = info["sizes"]
        low, high = info["sizes"][0], info["sizes"][-1]
        size_text = f"{width}x{height}" if not others else f"{len(info['sizes'])} sizes from {low[1]}x{low[0]} to {high[1]}x{high[0]}"
        print(f"{split}: {info['count']} pairs in {info['folder']} ({size_text}); skipped {len(info['skipped'])}")
        for name, reason in info["skipped"]:
            print(f"  skipped {name}: {reason}")
    print("ok")
