"""``uaafusion prepare``: write the synthetic dataset, or check the configured one.

    uaafusion prepare --synthetic [--params params.yaml] [--out data/synthetic]
    uaafusion prepare --check [--params params.yaml] [--root DIR] [--layout LAYOUT]
"""

from __future__ import annotations

import argparse
import time
import typing
from pathlib import Path
from typing import Any

from uaafusion.config import Layout, load_params
from uaafusion.errors import DataError

DEFAULT_SYNTHETIC_OUT = "data/synthetic"
LAYOUT_CHOICES: tuple[str, ...] = typing.get_args(Layout)


def register(subparsers: Any) -> None:
    """Add the ``prepare`` sub-command."""
    parser = subparsers.add_parser(
        "prepare",
        help="write the synthetic dataset, or check the configured dataset",
        description="Write the synthetic road-scene dataset (--synthetic), or check every pair of the "
                    "dataset configured in params.yaml (data.layout, data.root) and print counts (--check).",
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--synthetic", action="store_true",
                        help="write the synthetic set from the 'synthetic' section of params")
    action.add_argument("--check", action="store_true",
                        help="validate the configured dataset and print counts per split")
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    parser.add_argument("--out", default=DEFAULT_SYNTHETIC_OUT,
                        help=f"--synthetic: output folder (default: {DEFAULT_SYNTHETIC_OUT})")
    parser.add_argument("--root", default=None, help="--check: dataset folder instead of data.root")
    parser.add_argument("--layout", default=None, choices=LAYOUT_CHOICES,
                        help="--check: dataset layout instead of data.layout")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``prepare``; returns the exit code (errors raise :class:`uaafusion.errors.UAAFusionError`)."""
    overrides: dict[str, Any] = {}
    if getattr(args, "root", None):
        overrides["data.root"] = str(args.root)
    if getattr(args, "layout", None):
        overrides["data.layout"] = args.layout
    params = load_params(args.params, overrides)
    if args.synthetic:
        return _write_synthetic(params, Path(args.out))
    return _check(params)


def _write_synthetic(params: Any, out: Path) -> int:
    from uaafusion.data.synthetic import CLASS_NAMES, write_synthetic_dataset

    started = time.perf_counter()
    manifest = write_synthetic_dataset(params.synthetic, out)
    seconds = time.perf_counter() - started
    for split, info in manifest["splits"].items():
        shares = ", ".join(f"{name} {fraction:.0%}" for name, fraction in info["class_image_fractions"].items())
        print(f"{split}: {info['count']} pairs ({info['day']} day, {info['night']} night); "
              f"images containing each class: {shares}")
    print(f"wrote {out} ({manifest['height']}x{manifest['width']}, seed {manifest['seed']}) in {seconds:.1f} s; "
          f"preview: {out / 'montage.png'}")
    if tuple(params.data.class_names) != CLASS_NAMES:
        print(f"note: data.class_names in params ({', '.join(params.data.class_names)}) differ from the "
              f"synthetic classes ({', '.join(CLASS_NAMES)}).")
    return 0


def _check(params: Any) -> int:
    from uaafusion.data.datasets import create_dataset, split_directory

    data = params.data
    print(f"checking {data.root} ({data.layout} layout, {data.num_classes} classes, "
          f"on_bad_input: {data.on_bad_input})")
    seen: dict[Path, str] = {}
    total = 0
    for split in dict.fromkeys((data.train_split, data.test_split)):
        directory = split_directory(data.layout, data.root, split).resolve()
        if directory in seen:
            print(f"{split}: same folder as {seen[directory]} ({directory})")
            continue
        seen[directory] = split
        dataset = create_dataset(data, split, crop=False)
        sizes = sorted({(record.height, record.width) for record in dataset.records})
        size_text = (f"{sizes[0][1]}x{sizes[0][0]}" if len(sizes) == 1
                     else f"{len(sizes)} sizes from {sizes[0][1]}x{sizes[0][0]} to {sizes[-1][1]}x{sizes[-1][0]}")
        print(f"{split}: {len(dataset)} pairs in {directory} ({size_text}); skipped {len(dataset.skipped)}")
        for name, reason in dataset.skipped:
            print(f"  skipped {name}: {reason}")
        total += len(dataset)
    if total == 0:
        raise DataError(f"{data.root}: no usable pairs found.")
    print("ok")
    return 0
