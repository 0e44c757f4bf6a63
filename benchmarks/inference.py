"""Benchmark of inference (docs/inference.md): what a user of ``uaafusion fuse`` and ``uaafusion.Fuser`` sees.

- ``inference/<mode>/<W>x<H>``: seconds per pair (first call, then median and spread of the timed
  calls) and the peak resident memory of the process, for ``exact`` and ``fast`` at 640x480 and
  1280x1024 (width x height);
- ``inference/profile/<part>``: where the time and the memory of one 640x480 pair go (read, class
  mask, attribution weights, one segmenter gradient, the proximal networks of all stages, whole pair);
- ``inference/fuse_folder/<N>-pairs``: ``Fuser.fuse_folder`` over the 60 MSRS test pairs (default mode).

The pair is an MSRS test pair (``../shared/datasets/msrs-boxes/test``, resized bicubically to each
size) when present, else a scene of the embedded generator; the models are a checkpoint's (the
suite's default: ``models/uaafusion.pt``) or the params' models freshly initialised. Every case runs
in its own process (:mod:`benchmarks.inference_case`): a process's peak memory only grows, so
cases sharing one would inherit each other's peaks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.timing import log, summarize
from uaafusion.config import Params

DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((640, 480), (1280, 1024))  # (width, height)
QUICK_SIZES: tuple[tuple[int, int], ...] = ((64, 48), (96, 80))
MODES: tuple[str, ...] = ("exact", "fast")
# The targets per 640x480 pair on 2 CPU cores: seconds and GiB of peak resident memory.
TARGETS: dict[str, dict[str, float]] = {"exact": {"seconds": 2.5, "gib": 2.0}, "fast": {"seconds": 1.0, "gib": 1.5}}
TARGET_SIZE = (640, 480)
MSRS_TEST = Path("..") / "shared" / "datasets" / "msrs-boxes" / "test"
MSRS_EXAMPLE = "00008N"  # the first test pair: a night street scene


def benchmark_inference(params: Params, device: torch.device, sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
                        repeats: int = 3, warmup: int = 1, checkpoint: Path | None = None, seed: int = 0,
                        root: Path = Path("."), folder: bool = True, threads: int | None = None,
                        ) -> dict[str, dict[str, Any]]:
    """Run the cases (module docstring); returns records keyed ``inference/...``."""
    from uaafusion.data.io import write_png

    msrs = (root / MSRS_TEST).resolve()
    records: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="uaafusion-inference-bench-") as scratch:
        work = Path(scratch)
        models, source = _models_file(params, device, checkpoint, work)
        ir, vi, pair_source = _example_pair(msrs, params, sizes[0], seed)
        common = {"checkpoint": str(models), "device": str(device), "threads": threads}
        for width, height in sizes:
            ir_path = write_png(work / f"{width}x{height}" / "ir.png", _resized(ir, width, height))
            vi_path = write_png(work / f"{width}x{height}" / "vi.png", _resized(vi, width, height))
            for mode in MODES:
                log(f"inference {mode} {width}x{height}")
                record = run_case({**common, "task": "pair", "mode": mode, "ir": str(ir_path), "vi": str(vi_path),
                                   "repeats": repeats, "warmup": warmup})
                records[f"inference/{mode}/{width}x{height}"] = {
                    **record, "width": width, "height": height, "ms_per_image": 1000.0 * record["median_s"],
                    "images_per_s": 1.0 / record["median_s"], "pair": pair_source, "models": source,
                    "num_classes": params.data.num_classes, **_model_settings(models)}
            if (width, height) == sizes[0]:
                log(f"inference profile {width}x{height}")
                profile = run_case({**common, "task": "profile", "ir": str(ir_path), "vi": str(vi_path),
                                    "repeats": repeats})
                for part, record in profile.items():
                    records[f"inference/profile/{part}"] = {**record, "width": width, "height": height,
                                                            "pair": pair_source, "models": source}
        if folder and (msrs / "ir").is_dir():
            count = len(list((msrs / "ir").iterdir()))
            log(f"inference fuse_folder: {count} MSRS test pairs")
            record = run_case({**common, "task": "folder", "mode": None, "ir_dir": str(msrs / "ir"),
                               "vi_dir": str(msrs / "vi")})
            records[f"inference/fuse_folder/{count}-pairs"] = {**summarize([record["seconds"]]), **record,
                                                               "source": str(root / MSRS_TEST), "models": source}
    return records


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """Run :mod:`benchmarks.inference_case` in a fresh process; its last output line is the record."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                                 os.environ.get("PYTHONPATH", "")])}
    completed = subprocess.run([sys.executable, "-m", "benchmarks.inference_case", json.dumps(case)],
                               capture_output=True, text=True, env=environment, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"inference benchmark case {case['task']} failed (exit {completed.returncode}):\n"
                           f"{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def inference_targets(cases: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The issue's time and memory targets per mode at 640x480, met or not."""
    found: dict[str, dict[str, Any]] = {}
    width, height = TARGET_SIZE
    for mode, target in TARGETS.items():
        record = cases.get(f"inference/{mode}/{width}x{height}")
        if record is None:
            continue
        seconds, gib = record["median_s"], record["peak_rss_gib"]
        found[f"inference/{mode}/{width}x{height}/seconds"] = {
            "target": f"<= {target['seconds']:g} s", "value": seconds, "met": seconds <= target["seconds"]}
        found[f"inference/{mode}/{width}x{height}/peak_rss_gib"] = {
            "target": f"<= {target['gib']:g} GiB", "value": gib, "met": gib <= target["gib"]}
    return found


def _models_file(params: Params, device: torch.device, checkpoint: Path | None, work: Path) -> tuple[Path, str]:
    if checkpoint is not None:
        return Path(checkpoint).resolve(), str(checkpoint)
    from uaafusion.models.checkpoint import save_models
    from uaafusion.training.builders import build_models

    fusion, segmenter = build_models(params, torch.device("cpu"))
    return save_models(work / "untrained.pt", fusion, segmenter), "params defaults (untrained, seeded)"


def _model_settings(models: Path) -> dict[str, Any]:
    spec = torch.load(models, map_location="cpu", weights_only=True)["spec"]["fusion"]
    return {key: spec.get(key) for key in ("stages", "attribution_steps", "attribution_engine", "attribution_scale")}


def _example_pair(msrs: Path, params: Params, size: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """``(ir, vi, where from)`` as ``uint8`` arrays: the MSRS example pair, else an embedded scene."""
    from uaafusion.data.io import read_image, tensor_to_array

    candidates = sorted((msrs / "ir").glob(f"{MSRS_EXAMPLE}.*")) if (msrs / "ir").is_dir() else []
    if candidates:
        ir_path = candidates[0]
        vi_path = next(iter(sorted((msrs / "vi").glob(f"{MSRS_EXAMPLE}.*"))))
        return read_image(ir_path), read_image(vi_path), f"MSRS test {MSRS_EXAMPLE}"
    from benchmarks.training import synthetic_scenes

    width, height = size
    _, ir, vi, _ = synthetic_scenes(1, height, width, params.data.num_classes, seed)
    return tensor_to_array(ir[0]), tensor_to_array(vi[0]), "embedded synthetic scene"


def _resized(image: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    if image.shape[1] == width and image.shape[0] == height:
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BICUBIC))
