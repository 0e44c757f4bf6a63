"""The Python API of inference: :class:`Fuser` (``uaafusion.Fuser``), which ``uaafusion fuse`` wraps.

>>> fuser = Fuser.from_checkpoint("models/uaafusion.pt")                 # or runs:/ID, models:/NAME@ALIAS
>>> fused = fuser.fuse(ir_array, vi_array)                               # uint8 (H, W) or (H, W, 3)
>>> result = fuser.fuse_folder("ir/", "vi/", "fused/")                   # progress bar, per-pair errors

A folder is fused pair by pair while a reader thread decodes the next pairs; a pair that cannot
be fused (unreadable file, sizes differ, partner missing) is recorded with a message naming its
files and the others go on. Modes, tiling and memory: docs/inference.md.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from uaafusion.errors import ConfigError, DataError, UAAFusionError
from uaafusion.inference import (
    INFERENCE_INTERNAL_BATCH_SIZE,
    FusedPair,
    checkpoint_file,
    fuse_pair,
    load_models_for_inference,
)
from uaafusion.tiling import check_tiling

# Images of more than this many pixels squared are fused in tiles: the usual thermal sizes up to
# 1280x1024 stay untiled (exact), HD frames and larger go in tiles. Untiled working memory grows
# by about 0.3 GiB per megapixel on a CPU (reports/benchmarks.md).
DEFAULT_TILE_SIZE = 1280
MODES: tuple[str, ...] = ("fast", "exact")
PREFETCH_PAIRS = 2


@dataclass(frozen=True)
class FuseJob:
    """One pair to fuse: its name, its sources and where the result goes."""

    name: str
    ir_path: Path
    vi_path: Path
    out_path: Path
    maps_dir: Path


@dataclass(frozen=True)
class FuseFailure:
    """A pair that could not be fused and why (the message names the files)."""

    name: str
    message: str


@dataclass
class FolderResult:
    """What :meth:`Fuser.fuse_jobs` did: the images written and the pairs that failed."""

    written: list[Path] = field(default_factory=list)
    failures: list[FuseFailure] = field(default_factory=list)


class Fuser:
    """Trained models ready to fuse: arrays, files or folders in, ``uint8`` images out.

    ``mode``: ``fast`` or ``exact`` (docs/inference.md); None keeps the checkpoint's
    ``model.fusion.inference_mode``. ``tile_size``: images of more pixels than ``tile_size^2``
    are fused in tiles overlapping by ``overlap`` pixels (bounded memory at any size; None: never
    tile; the overlap defaults to 64, or a quarter of a smaller tile).
    """

    def __init__(
        self,
        fusion: torch.nn.Module,
        segmenter: torch.nn.Module,
        device: torch.device,
        mode: str | None = None,
        tile_size: int | None = DEFAULT_TILE_SIZE,
        overlap: int | None = None,
        spec: dict | None = None,
    ) -> None:
        self.overlap = check_tiling(tile_size, overlap)
        self.fusion = fusion.to(device).eval()
        self.segmenter = segmenter.to(device).eval()
        self.device = device
        self.tile_size = tile_size
        self.spec = spec or {}
        if mode is not None:
            self.mode = mode

    @classmethod
    def from_checkpoint(
        cls,
        source: str | Path,
        device: str | torch.device = "auto",
        mode: str | None = None,
        tile_size: int | None = DEFAULT_TILE_SIZE,
        overlap: int | None = None,
        tracking_uri: str | None = None,
        internal_batch_size: int | None = INFERENCE_INTERNAL_BATCH_SIZE,
    ) -> Fuser:
        """Load the models of a checkpoint file, an MLflow run (``runs:/RUN_ID``) or a registered
        model (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``).

        ``tracking_uri``: the MLflow store for ``runs:/`` and ``models:/`` (default: the
        ``MLFLOW_TRACKING_URI`` environment variable, else ``./mlflow.db``). Applies the
        allocator setting the commands use (:func:`uaafusion.allocator.keep_freed_memory`).
        """
        from uaafusion.allocator import keep_freed_memory
        from uaafusion.device import resolve_device

        keep_freed_memory()
        target = resolve_device(str(device))
        with tempfile.TemporaryDirectory(prefix="uaafusion-model-") as download_dir:
            checkpoint = checkpoint_file(source, tracking_uri, Path(download_dir))
            loaded = load_models_for_inference(checkpoint, target, internal_batch_size)
        return cls(loaded.fusion, loaded.segmenter, target, mode, tile_size, overlap, loaded.spec)

    @property
    def mode(self) -> str:
        """``fast`` or ``exact``: what the fusion model computes in eval mode."""
        return getattr(self.fusion, "inference_mode", "exact")

    @mode.setter
    def mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ConfigError(f"mode = {mode!r} is not allowed; allowed: {', '.join(MODES)}.")
        if hasattr(self.fusion, "inference_mode"):
            self.fusion.inference_mode = mode

    @property
    def num_classes(self) -> int:
        """Classes of the segmenter (its ``num_classes``, else the checkpoint's class names)."""
        count = getattr(self.segmenter, "num_classes", None)
        if isinstance(count, int) and count > 0:
            return count
        names = self.spec.get("class_names") if isinstance(self.spec, dict) else None
        return len(names) if names else 256

    def fuse_pair(self, ir: np.ndarray | torch.Tensor, vi: np.ndarray | torch.Tensor,
                  segment: bool = False) -> FusedPair:
        """One pair -> :class:`~uaafusion.inference.FusedPair` (image, weights, attention, classes)."""
        return fuse_pair(ir, vi, self.fusion, self.segmenter, self.device, segment, self.tile_size, self.overlap)

    def fuse(self, ir: np.ndarray | torch.Tensor, vi: np.ndarray | torch.Tensor) -> np.ndarray:
        """``uint8`` arrays ``(H, W)`` or ``(H, W, 3)`` (or float tensors in [0, 1]) -> the fused ``uint8`` image."""
        return self.fuse_pair(ir, vi).image

    def fuse_folder(self, ir_dir: str | Path, vi_dir: str | Path, out_dir: str | Path,
                    save_maps: bool = False, progress: bool = True) -> FolderResult:
        """Fuse every pair of two folders (matched by file name) into ``out_dir/NAME.png``."""
        jobs, failures = plan_jobs(Path(ir_dir), Path(vi_dir), Path(out_dir))
        result = self.fuse_jobs(jobs, save_maps, progress)
        result.failures[:0] = failures
        return result

    def fuse_jobs(self, jobs: Sequence[FuseJob], save_maps: bool = False, progress: bool = True) -> FolderResult:
        """Fuse ``jobs`` in order while a thread decodes the next :data:`PREFETCH_PAIRS` pairs. A pair that
        fails goes into the result's ``failures`` (and, while a progress bar is shown, to stderr at once)."""
        from tqdm import tqdm

        result = FolderResult()
        bar = tqdm(total=len(jobs), desc="fusing", unit="pair", disable=None if progress else True, file=sys.stderr)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="uaafusion-reader") as reader:
            pending: list[Future] = [reader.submit(read_pair, job) for job in jobs[:PREFETCH_PAIRS]]
            for index, job in enumerate(jobs):
                if index + PREFETCH_PAIRS < len(jobs):
                    pending.append(reader.submit(read_pair, jobs[index + PREFETCH_PAIRS]))
                try:
                    ir_image, vi_image = pending[index].result()
                    pending[index] = None  # type: ignore[call-overload]  # free the decoded images
                    result.written.append(self._fuse_and_write(job, ir_image, vi_image, save_maps))
                except (UAAFusionError, ValueError, RuntimeError, OSError) as error:
                    result.failures.append(FuseFailure(job.name, str(error)))
                    if not bar.disable:  # beside a live bar, say it now; else the caller's summary is the message
                        bar.write(f"error: {job.name}: {error}", file=sys.stderr)
                bar.update(1)
        bar.close()
        return result

    def _fuse_and_write(self, job: FuseJob, ir_image: np.ndarray, vi_image: np.ndarray, save_maps: bool) -> Path:
        from uaafusion.data.io import write_png

        fused = self.fuse_pair(ir_image, vi_image, segment=save_maps)
        write_png(job.out_path, fused.image)
        if save_maps:
            write_maps(job.maps_dir, job.name, fused, self.num_classes)
        return job.out_path


def read_pair(job: FuseJob) -> tuple[np.ndarray, np.ndarray]:
    """Decode a job's two images; :class:`DataError` naming both files when their sizes differ."""
    from uaafusion.data.io import read_image

    ir_image, vi_image = read_image(job.ir_path), read_image(job.vi_path)
    if ir_image.shape[:2] != vi_image.shape[:2]:
        raise DataError(
            f"{job.ir_path} is {_size(ir_image)} but {job.vi_path} is {_size(vi_image)}; "
            "a pair must have the same height and width (register/resize them first)."
        )
    return ir_image, vi_image


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
                failures.append(FuseFailure(name, f"{infrared[name]}: no visible partner named '{name}.*' in {vi}; "
                                                  "add it or remove the infrared file"))
            elif name not in infrared:
                failures.append(FuseFailure(name, f"{visible[name]}: no infrared partner named '{name}.*' in {ir}; "
                                                  "add it or remove the visible file"))
            else:
                jobs.append(FuseJob(name, infrared[name], visible[name], out / f"{name}.png", out / "maps"))
        return jobs, failures
    for path, role in ((ir, "--ir"), (vi, "--vi")):
        if not path.exists():
            raise DataError(f"{path}: {role} not found; check the path (an image file or a folder of images).")
    raise DataError(f"--ir {ir} and --vi {vi} must be two image files or two folders, not one of each.")


def write_maps(folder: Path, name: str, result: FusedPair, num_classes: int) -> dict[str, Path]:
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


def _size(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]} (WxH)"
