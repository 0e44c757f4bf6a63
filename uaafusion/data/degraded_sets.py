"""Degraded copies of image folders on disk: ``uaafusion degrade`` and the degraded benchmark.

:func:`degrade_folders` writes ``OUT/ir/`` and ``OUT/vi/`` under the sources' file names: the image
a kind degrades is degraded (:func:`uaafusion.data.degrade.degrade_pair`, so the same seed, kinds,
severity and file name give the same bytes), the other is copied unchanged. Everything is written
to a staging folder beside ``OUT`` first and moved into place at the end: a bad input stops the
run with a message and leaves nothing half-written.

:func:`build_degraded_benchmark` makes one such set per kind from a dataset's test split, labels
copied beside it, so that each set is a dataset of the same layout (``ROOT/KIND/{ir,vi,boxes}``).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from uaafusion.data.boxes import CLASSES_FILE_NAME
from uaafusion.data.degrade import DEGRADATIONS, check_kinds, check_severity, degrade_pair, to_float, to_uint8
from uaafusion.data.io import is_gray, read_image, to_gray_uint8, write_image
from uaafusion.data.pairs import find_pairs, index_images
from uaafusion.errors import ConfigError, DataError
from uaafusion.integrity import write_text_atomically

MANIFEST_NAME = "degradation.json"
"""The file in each degraded folder that says how it was made."""
BENCHMARK_LAYOUTS: tuple[str, ...] = ("msrs", "boxes", "pairs")
"""Layouts whose images sit in ``ir/`` and ``vi/`` (the degraded sets keep those names)."""


def degrade_folders(ir_dir: str | Path, vi_dir: str | Path, out_dir: str | Path, kinds: Sequence[str],
                    severity: float, seed: int, depth_dir: str | Path | None = None,
                    overwrite: bool = False, names: Sequence[str] | None = None) -> dict[str, Any]:
    """Write degraded copies of the pairs of ``ir_dir``/``vi_dir`` to ``out_dir/ir`` and ``out_dir/vi``.

    ``kinds`` are applied in order (each to the image of its source); ``depth_dir`` holds optional
    depth maps ``NAME.*`` for ``haze`` (gray, brighter = farther); ``names``: only these pairs (all when
    None). ``out_dir`` must not exist (or be empty) unless ``overwrite``. Returns the manifest written
    to ``out_dir/degradation.json``. Raises :class:`ConfigError` (kinds, severity, output folder) or :class:`DataError` (inputs).
    """
    kinds = check_kinds(kinds, "--kind")
    severity = check_severity(severity, "--severity")
    pairs = find_pairs(ir_dir, vi_dir)
    if names is not None:
        chosen = set(names)
        pairs = [pair for pair in pairs if pair.name in chosen]
    depths = index_images(depth_dir, "depth") if depth_dir is not None else {}
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ConfigError(f"{out_dir}: output folder exists and is not empty; choose another --out or remove it.")
    touched = {DEGRADATIONS[kind].source for kind in kinds}
    staging = out_dir.with_name(f"{out_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for pair in pairs:
            _write_pair(pair.name, pair.ir_path, pair.vi_path, staging, kinds, severity, seed, touched,
                        depths.get(pair.name))
        manifest = {"kinds": list(kinds), "severity": severity, "seed": seed, "ir": str(ir_dir), "vi": str(vi_dir),
                    "depth": str(depth_dir) if depth_dir is not None else None, "count": len(pairs),
                    "degraded": sorted(touched)}
        write_text_atomically(staging / MANIFEST_NAME, json.dumps(manifest, indent=1) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir) if out_dir.is_dir() else out_dir.unlink()
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _write_pair(name: str, ir_path: Path, vi_path: Path, out_dir: Path, kinds: tuple[str, ...], severity: float,
                seed: int, touched: set[str], depth_path: Path | None) -> None:
    """Degrade (or copy) one pair into ``out_dir/ir`` and ``out_dir/vi`` under the source file names.

    Both images are read and checked (readable, same size) even when one is only copied, so that a bad
    input stops the run instead of landing in the output.
    """
    ir_out, vi_out = out_dir / "ir" / ir_path.name, out_dir / "vi" / vi_path.name
    ir_out.parent.mkdir(parents=True, exist_ok=True)
    vi_out.parent.mkdir(parents=True, exist_ok=True)
    ir_array, vi_array = read_image(ir_path), read_image(vi_path)
    if ir_array.shape[:2] != vi_array.shape[:2]:
        raise DataError(f"{ir_path} ({ir_array.shape[1]}x{ir_array.shape[0]}) and {vi_path} "
                        f"({vi_array.shape[1]}x{vi_array.shape[0]}): the pair's sizes differ; align them first.")
    depth = _read_depth(depth_path, ir_array) if depth_path else None
    ir_float = to_float(to_gray_uint8(ir_array))
    vi_float = to_float(to_gray_uint8(vi_array) if is_gray(vi_array) else vi_array)
    ir_degraded, vi_degraded = degrade_pair(ir_float, vi_float, kinds, severity, seed, name, depth=depth)
    for role, array, degraded, source, target in (("ir", ir_array, ir_degraded, ir_path, ir_out),
                                                  ("vi", vi_array, vi_degraded, vi_path, vi_out)):
        if role not in touched:
            shutil.copyfile(source, target)
            continue
        result = to_uint8(degraded)
        if result.ndim == 2 and array.ndim == 3:  # gray stored as RGB stays stored as RGB
            result = np.repeat(result[..., None], 3, axis=2)
        write_image(target, result)


def spread_names(names: Sequence[str], count: int) -> list[str]:
    """``count`` of ``names`` (sorted), evenly spaced from the first: a subset that keeps the mix of the
    whole (MSRS: day and night pairs). All of them when ``count >= len(names)``."""
    ordered = sorted(names)
    if count >= len(ordered):
        return ordered
    return [ordered[index * len(ordered) // count] for index in range(count)]


def _degraded_set(ir_dir: Path, vi_dir: Path, target: Path, kind: str, severity: float, seed: int,
                  labels: list[Path], classes: Path | None, names: list[str] | None) -> str:
    """One set of :func:`build_degraded_benchmark` (a function of its own: it runs in a worker process)."""
    degrade_folders(ir_dir, vi_dir, target, (kind,), severity, seed, overwrite=True, names=names)
    chosen = set(names) if names is not None else None
    for folder in labels:
        shutil.copytree(folder, target / folder.name, ignore=None if chosen is None else (
            lambda _folder, files: [file for file in files if Path(file).stem not in chosen]))
    if classes is not None:
        shutil.copyfile(classes, target / CLASSES_FILE_NAME)
    return str(target)


def _read_depth(path: Path, image: np.ndarray) -> np.ndarray:
    """Depth map ``float32 (H, W)`` in [0, 1] (brighter = farther) of the size of ``image``."""
    depth = read_image(path)
    if depth.shape[:2] != image.shape[:2]:
        raise DataError(f"{path}: depth map {depth.shape[1]}x{depth.shape[0]} does not match its pair "
                        f"({image.shape[1]}x{image.shape[0]}); give depth maps of the images' size.")
    return to_float(to_gray_uint8(depth))


def build_degraded_benchmark(layout: str, split_dir: Path, out_root: Path, kinds: Sequence[str], severity: float,
                             seed: int, workers: int | None = None, pairs: int = 0) -> dict[str, Any]:
    """One degraded copy of the test split ``split_dir`` per kind: ``out_root/KIND/{ir,vi}`` degraded,
    the label folders (``boxes/``, ``Label/``, ...) and ``classes.txt`` copied, so that each is a
    dataset of ``layout``. ``pairs > 0``: only that many pairs, spread evenly over the split in name
    order (:func:`spread_names`; labels copied for those only). Rebuilds every set (they are
    deterministic), the kinds shared among ``workers`` processes (default: one per usable CPU core). Returns ``{"root", "sets": {kind:
    folder}, "severity", "seed", "source"}`` and writes it to ``out_root/degradation.json``."""
    if layout not in BENCHMARK_LAYOUTS:
        raise ConfigError(f"data.layout = {layout!r}: degraded test sets are made for the layouts "
                          f"{', '.join(BENCHMARK_LAYOUTS)} (images in ir/ and vi/).")
    kinds = check_kinds(kinds, "evaluate.degraded.kinds")
    ir_dir, vi_dir = split_dir / "ir", split_dir / "vi"
    labels = [path for path in sorted(split_dir.iterdir()) if path.is_dir() and path.name not in ("ir", "vi")]
    classes = next((folder / CLASSES_FILE_NAME for folder in (split_dir, split_dir.parent)
                    if (folder / CLASSES_FILE_NAME).is_file()), None)
    names = spread_names([pair.name for pair in find_pairs(ir_dir, vi_dir)], pairs) if pairs > 0 else None
    jobs = [(ir_dir, vi_dir, out_root / kind, kind, severity, seed, labels, classes, names) for kind in kinds]
    workers = max(1, min(len(jobs), workers or len(os.sched_getaffinity(0))))
    if workers == 1:
        folders = [_degraded_set(*job) for job in jobs]
    else:  # spawn: the caller may hold threads (torch, Prefect) that a forked child would inherit broken
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            folders = list(pool.map(_degraded_set, *zip(*jobs)))
    sets = dict(zip(kinds, folders))
    summary = {"root": str(out_root), "source": str(split_dir), "severity": severity, "seed": seed, "sets": sets,
               "pairs": len(names) if names is not None else "all"}
    write_text_atomically(out_root / MANIFEST_NAME, json.dumps(summary, indent=1) + "\n")
    return summary
