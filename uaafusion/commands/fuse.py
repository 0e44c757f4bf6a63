"""``uaafusion fuse``: fuse one infrared/visible pair, or two folders of pairs, with trained models.

- a pair: ``--ir a.png --vi b.png --out fused.png``;
- folders: ``--ir IR_DIR --vi VI_DIR --out OUT_DIR`` (pairs matched by file name without
  extension; each fused image is ``OUT_DIR/NAME.png``). A pair that cannot be fused (unreadable
  file, sizes differ, partner missing) is reported on its own line naming the files; the others
  are still fused, and the command ends with a summary of the failures and exit code 1.

Any size, gray or colour; the output is an 8-bit PNG of the input size (colour: docs/method.md §5).
Models: ``--checkpoint`` (default ``models/uaafusion.pt``), ``--run MLFLOW_RUN_ID`` (the run's
``model/uaafusion.pt`` artifact) or ``--model models:/uaafusion-fusion@champion`` (the registry).
``--save-maps`` adds ``NAME_weight_ir.png``, ``NAME_weight_vi.png``, ``NAME_attention.png`` (last
stage) and ``NAME_segmentation.png`` (predicted classes of the fused image) under ``OUT_DIR/maps/``
(folders) or beside the output file (a pair).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uaafusion.errors import DataError, UAAFusionError

@dataclass(frozen=True)
class FuseJob:
    """One pair to fuse: its name, its sources (either may be missing) and where the result goes."""

    name: str
    ir_path: Path | None
    vi_path: Path | None
    out_path: Path
    maps_dir: Path


@dataclass(frozen=True)
class FuseFailure:
    """A pair that could not be fused and why."""

    name: str
    message: str


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
                        help="a registered model, e.g. models:/uaafusion-fusion@champion")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument("--save-maps", action="store_true",
                        help="also write the weight maps, the last attention map and the segmentation")
    parser.add_argument("--project-root", type=Path, default=Path("."),
                        help="project root: default checkpoint location and local MLflow store (default: .)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from uaafusion.device import resolve_device
    from uaafusion.inference import load_models_for_inference

    jobs, early_failures = plan_jobs(args.ir, args.vi, args.out)
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="uaafusion-model-") as download_dir:
        checkpoint = resolve_checkpoint(args, Path(download_dir))
        loaded = load_models_for_inference(checkpoint, device)
        failures = early_failures + fuse_jobs(jobs, loaded, device, args.save_maps)
    succeeded = len(jobs) - (len(failures) - len(early_failures))
    total = len(jobs) + len(early_failures)
    if args.ir.is_dir():
        print(f"fused {succeeded} of {total} pair(s) into {args.out}")
    elif succeeded:
        print(f"fused image written to {jobs[0].out_path}")
    if failures:
        print(f"{len(failures)} pair(s) failed:", file=sys.stderr)
        for failure in failures:
            print(f"  {failure.name}: {failure.message}", file=sys.stderr)
        return 1
    return 0


def plan_jobs(ir: Path, vi: Path, out: Path) -> tuple[list[FuseJob], list[FuseFailure]]:
    """The pairs to fuse, and the names already known to fail (a missing partner).

    Two files -> one job writing ``out`` (or ``out/<infrared stem>.png`` when ``out`` is a
    folder). Two folders -> one job per name found in either folder. Anything else raises
    :class:`DataError`.
    """
    from uaafusion.data.pairs import index_images

    if ir.is_file() and vi.is_file():
        if out.is_dir():
            out = out / f"{ir.stem}.png"
        return [FuseJob(out.stem, ir, vi, out, out.parent)], []
    if ir.is_dir() and vi.is_dir():
        if out.exists() and not out.is_dir():
            raise DataError(f"{out}: --out must be a folder when --ir and --vi are folders.")
        infrared = index_images(ir, "infrared")
        visible = index_images(vi, "visible")
        jobs: list[FuseJob] = []
        failures: list[FuseFailure] = []
        for name in sorted(set(infrared) | set(visible)):
            if name not in visible:
                failures.append(FuseFailure(name, f"{infrared[name]}: no visible partner named '{name}.*' in {vi}"))
            elif name not in infrared:
                failures.append(FuseFailure(name, f"{visible[name]}: no infrared partner named '{name}.*' in {ir}"))
            else:
                jobs.append(FuseJob(name, infrared[name], visible[name], out / f"{name}.png", out / "maps"))
        return jobs, failures
    for path, role in ((ir, "--ir"), (vi, "--vi")):
        if not path.exists():
            raise DataError(f"{path}: {role} not found.")
    raise DataError(f"--ir {ir} and --vi {vi} must be two image files or two folders, not one of each.")


def resolve_checkpoint(args: argparse.Namespace, download_dir: Path) -> Path:
    """The checkpoint file to load: ``--checkpoint``, an MLflow run's artifact, a registered model, or the default."""
    from uaafusion.inference import download_registered_checkpoint, download_run_checkpoint
    from uaafusion.paths import ProjectPaths
    from uaafusion.tracking import check_reachable, tracking_uri

    paths = ProjectPaths.at(args.project_root)
    if args.run or args.model:
        uri = tracking_uri(paths.root)
        check_reachable(uri)
        if args.run:
            return download_run_checkpoint(args.run, uri, download_dir)
        return download_registered_checkpoint(args.model, uri, download_dir)
    return Path(args.checkpoint) if args.checkpoint is not None else paths.model_checkpoint


def fuse_jobs(jobs: list[FuseJob], loaded, device, save_maps: bool) -> list[FuseFailure]:
    """Fuse every job with a progress bar; a failing pair is reported and skipped."""
    from tqdm import tqdm

    failures: list[FuseFailure] = []
    progress = tqdm(jobs, desc="fusing", unit="pair", disable=None, file=sys.stderr)
    for job in progress:
        try:
            fuse_job(job, loaded, device, save_maps)
        except (UAAFusionError, ValueError, RuntimeError, OSError) as error:
            message = str(error)
            failures.append(FuseFailure(job.name, message))
            progress.write(f"error: {job.name}: {message}", file=sys.stderr)
    return failures


def fuse_job(job: FuseJob, loaded, device, save_maps: bool) -> Path:
    """Read, fuse and write one pair (and its maps); raises :class:`DataError` naming the files."""
    from uaafusion.data.io import read_image, write_png
    from uaafusion.inference import fuse_pair

    assert job.ir_path is not None and job.vi_path is not None
    ir_image = read_image(job.ir_path)
    vi_image = read_image(job.vi_path)
    if ir_image.shape[:2] != vi_image.shape[:2]:
        raise DataError(
            f"{job.ir_path} is {_size(ir_image)} but {job.vi_path} is {_size(vi_image)}; "
            "a pair must have the same height and width (register/resize them first)."
        )
    result = fuse_pair(ir_image, vi_image, loaded.fusion, loaded.segmenter, device=device, segment=save_maps)
    write_png(job.out_path, result.image)
    if save_maps:
        write_maps(job.maps_dir, job.name, result, class_count(loaded))
    return job.out_path


def write_maps(folder: Path, name: str, result, num_classes: int) -> dict[str, Path]:
    """Write ``NAME_weight_ir/_weight_vi/_attention/_segmentation.png`` (colour-mapped) into ``folder``."""
    from uaafusion.data.io import write_png
    from uaafusion.visualize import colourise_map, colourise_segmentation

    pictures: dict[str, np.ndarray] = {
        "weight_ir": colourise_map(result.weight_ir),
        "weight_vi": colourise_map(result.weight_vi),
    }
    if result.attention is not None:
        pictures["attention"] = colourise_map(result.attention, colour_map="viridis")
    if result.segmentation is not None:
        pictures["segmentation"] = colourise_segmentation(result.segmentation, num_classes, ignore_index=None)
    return {key: write_png(folder / f"{name}_{key}.png", picture) for key, picture in pictures.items()}


def class_count(loaded) -> int:
    """Number of classes of the loaded segmenter (its ``num_classes``, else the spec's class names)."""
    count = getattr(loaded.segmenter, "num_classes", None)
    if isinstance(count, int) and count > 0:
        return count
    names = (loaded.spec or {}).get("class_names") if isinstance(loaded.spec, dict) else None
    return len(names) if names else 256


def _size(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]} (WxH)"
