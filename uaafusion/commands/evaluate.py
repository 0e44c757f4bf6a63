"""``uaafusion evaluate``: score a folder of fused images (fusion metrics, and task metrics with labels)."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from uaafusion.errors import ConfigError

LOGGER = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` sub-command to the ``uaafusion`` parser."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score fused images against their sources (EN, SD, SF, AG, MI, SCD, VIF, Qabf, SSIM; mIoU with labels)",
        description=(
            "Pair --ir, --vi and --fused images by file name (extensions may differ), compute the fusion "
            "metrics on gray images, and with --labels or --boxes plus --segmenter the segmentation metrics "
            "of the segmenter on the fused images and on each source. With --boxes, also SSIM inside the boxes."
        ),
    )
    parser.add_argument("--ir", required=True, type=Path, help="folder of infrared images")
    parser.add_argument("--vi", required=True, type=Path, help="folder of visible images")
    parser.add_argument("--fused", required=True, type=Path, help="folder of fused images (same names)")
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument("--labels", type=Path, help="folder of class-index label PNGs (same names)")
    labels.add_argument("--boxes", type=Path, help="folder of YOLO box files NAME.txt (class cx cy w h)")
    parser.add_argument(
        "--segmenter", type=Path, help="checkpoint whose segmenter scores mIoU (uaafusion train output)"
    )
    parser.add_argument("--reference-ir", type=Path,
                        help="clean infrared images (same names) that the fusion metrics compare with, when "
                             "--ir holds degraded inputs (the segmenter still sees --ir)")
    parser.add_argument("--reference-vi", type=Path,
                        help="clean visible images (same names) that the fusion metrics compare with, when "
                             "--vi holds degraded inputs (the segmenter still sees --vi)")
    parser.add_argument(
        "--num-classes",
        type=int,
        help="number of classes (default: the segmenter's; with --boxes 1 + the box classes of classes.txt, i.e. 4)",
    )
    parser.add_argument(
        "--class-names", help="comma-separated class names, background first (e.g. background,person,bicycle,car)"
    )
    parser.add_argument("--ignore-index", type=int, default=255, help="label value that is not scored (default 255)")
    parser.add_argument(
        "--device", default="auto", help="where the segmenter runs: auto, cpu, cuda, cuda:N (default auto)"
    )
    parser.add_argument(
        "--select", metavar="PATTERN",
        help="score only the pairs whose name (without extension) matches this shell-style pattern, "
             "e.g. '*N' for MSRS's night images (quote it)",
    )
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    parser.add_argument("--out", required=True, type=Path,
                        help="JSON file to write ({per_image, mean, count}; with a segmenter, the per-image "
                             "confusion matrices that `uaafusion compare` resamples)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate, write the JSON file, print the table of means; returns the exit code (0)."""
    from uaafusion.device import resolve_device
    from uaafusion.metrics.evaluate import evaluate_folders, format_table

    device = resolve_device(args.device)
    class_names = None
    if args.class_names:
        class_names = [name.strip() for name in args.class_names.split(",") if name.strip()]
        if not class_names:
            raise ConfigError("--class-names is empty; give comma-separated names, background first.")
    segmenter = None
    if args.segmenter is not None:
        if not args.segmenter.is_file():
            raise ConfigError(
                f"{args.segmenter}: segmenter checkpoint not found; pass the .pt file written by training."
            )
        from uaafusion.models.checkpoint import load_models

        segmenter = load_models(args.segmenter, map_location=device).segmenter
        if segmenter is None:
            raise ConfigError(f"{args.segmenter}: the checkpoint holds no segmenter.")

    started = time.perf_counter()
    results = evaluate_folders(
        args.ir,
        args.vi,
        args.fused,
        labels_dir=args.labels,
        boxes_dir=args.boxes,
        segmenter=segmenter,
        num_classes=args.num_classes,
        class_names=class_names,
        ignore_index=args.ignore_index,
        device=device,
        progress=not args.no_progress,
        select=args.select,
        reference_ir_dir=args.reference_ir,
        reference_vi_dir=args.reference_vi,
    )
    seconds = time.perf_counter() - started
    document = {
        "per_image": results["per_image"],
        "mean": results["mean"],
        "count": results["count"],
        **{key: results[key] for key in ("roi_count", "confusion") if key in results},
        "inputs": {
            "ir": str(args.ir),
            "vi": str(args.vi),
            "fused": str(args.fused),
            "labels": str(args.labels) if args.labels else None,
            "boxes": str(args.boxes) if args.boxes else None,
            "segmenter": str(args.segmenter) if args.segmenter else None,
            "select": args.select,
            "reference_ir": str(args.reference_ir) if args.reference_ir else None,
            "reference_vi": str(args.reference_vi) if args.reference_vi else None,
        },
        "seconds": round(seconds, 3),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from uaafusion.integrity import write_text_atomically

    write_text_atomically(args.out, json.dumps(document, indent=2, allow_nan=False) + "\n")
    print(format_table(results))
    print(f"wrote {args.out} ({seconds:.1f} s)")
    return 0
