"""``uaafusion fuse``: fuse one infrared/visible pair, or two folders of pairs, with trained models.

- a pair: ``--ir a.png --vi b.png --out fused.png``;
- folders: ``--ir IR_DIR --vi VI_DIR --out OUT_DIR`` (pairs matched by file name without
  extension; each fused image is ``OUT_DIR/NAME.png``). A pair that cannot be fused (unreadable
  file, sizes differ, partner missing) is reported on its own line naming the files; the others
  are still fused, and the command ends with a summary of the failures and exit code 1.

Any size, gray or colour; the output is an 8-bit PNG of the input size (colour: docs/method.md §5).
``--mode fast|exact`` and ``--tile-size`` (large images in tiles): docs/inference.md. The command is
a thin shell over :class:`uaafusion.Fuser`.
Models: ``--checkpoint`` (default ``models/uaafusion.pt``), ``--run MLFLOW_RUN_ID`` (the run's
``model/uaafusion.pt`` artifact) or ``--model models:/uaafusion@champion`` (the registry).
``--save-maps`` adds ``NAME_weight_ir.png``, ``NAME_weight_vi.png``, ``NAME_attention.png`` (last
stage) and ``NAME_segmentation.png`` (predicted classes of the fused image) under ``OUT_DIR/maps/``
(folders) or beside the output file (a pair).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fuse",
        help="fuse an infrared/visible pair (or two folders of pairs) with trained models",
        description="Fuse infrared and visible images: two files -> one PNG, or two folders -> a folder of "
                    "NAME.png (pairs matched by file name). Any size, gray or colour.",
    )
    parser.add_argument("--ir", required=True, type=Path, help="infrared image file or folder")
    parser.add_argument("--vi", required=True, type=Path, help="visible image file or folder")
    parser.add_argument("--out", required=True, type=Path,
                        help="output PNG file (for a pair) or folder (for folders)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", type=Path, default=None,
                        help="models checkpoint (default: models/uaafusion.pt under --project-root)")
    source.add_argument("--run", metavar="MLFLOW_RUN_ID", default=None,
                        help="use the model/uaafusion.pt artifact of this MLflow run")
    source.add_argument("--model", metavar="MODEL_URI", default=None,
                        help="a registered model, e.g. models:/uaafusion@champion")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument("--mode", choices=("fast", "exact"), default=None,
                        help="fast: one segmenter gradient shared by the stages; exact: what training computes "
                             "(default: the checkpoint's model.fusion.inference_mode; docs/inference.md)")
    parser.add_argument("--tile-size", type=int, default=None, metavar="PIXELS",
                        help="fuse images of more than PIXELS^2 pixels in overlapping tiles "
                             "(default: 1280; 0: never tile)")
    parser.add_argument("--save-maps", action="store_true",
                        help="also write the weight maps, the last attention map and the segmentation")
    parser.add_argument("--project-root", type=Path, default=Path("."),
                        help="project root: default checkpoint location and local MLflow store (default: .)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from uaafusion.fuser import DEFAULT_TILE_SIZE, Fuser, plan_jobs

    jobs, early_failures = plan_jobs(args.ir, args.vi, args.out)
    tile_size = DEFAULT_TILE_SIZE if args.tile_size is None else (args.tile_size or None)
    fuser = Fuser.from_checkpoint(checkpoint_source(args), device=args.device, mode=args.mode,
                                  tile_size=tile_size, tracking_uri=_tracking_uri(args))
    result = fuser.fuse_jobs(jobs, save_maps=args.save_maps)
    failures = early_failures + result.failures
    total = len(jobs) + len(early_failures)
    if args.ir.is_dir():
        print(f"fused {len(result.written)} of {total} pair(s) into {args.out}")
    elif result.written:
        print(f"fused image written to {result.written[0]}")
    if failures:
        print(f"{len(failures)} pair(s) failed:", file=sys.stderr)
        for failure in failures:
            print(f"  {failure.name}: {failure.message}", file=sys.stderr)
        return 1
    return 0


def checkpoint_source(args: argparse.Namespace) -> str | Path:
    """What to load: ``--checkpoint``, ``runs:/<--run>``, ``--model`` or the project's default checkpoint."""
    from uaafusion.paths import ProjectPaths

    if args.run:
        return f"runs:/{args.run}"
    if args.model:
        from uaafusion.inference import parse_model_uri

        parse_model_uri(args.model)  # before loading: raises the message that names the accepted forms
        return args.model
    return Path(args.checkpoint) if args.checkpoint is not None else ProjectPaths.at(args.project_root).model_checkpoint


def _tracking_uri(args: argparse.Namespace) -> str:
    from uaafusion.tracking import tracking_uri

    return tracking_uri(Path(args.project_root))
