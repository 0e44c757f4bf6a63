"""Benchmark of the degraded benchmark's preparation: every kind applied to a whole test split,
read, degraded and written as files (:func:`uaafusion.data.degraded_sets.build_degraded_benchmark`);
target: the 60 MSRS test pairs (640x480) for all kinds in under a minute on 2 CPU cores.

Uses ``../shared/datasets/msrs-boxes/test`` when present, else synthetic pairs of the same size."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.timing import log, time_call
from uaafusion.data.degrade import DEGRADATIONS
from uaafusion.data.degraded_sets import build_degraded_benchmark
from uaafusion.data.io import write_png

TARGET_S = 60.0
MSRS_TEST = Path("..") / "shared" / "datasets" / "msrs-boxes" / "test"
FULL_SET = {"count": 60, "height": 480, "width": 640}
QUICK_SET = {"count": 3, "height": 48, "width": 64}


def write_synthetic_split(folder: Path, count: int, height: int, width: int, seed: int) -> Path:
    """``count`` textured pairs (gray infrared, RGB visible PNGs) with one box file each, in ``folder``."""
    generator = np.random.default_rng(seed)
    for index in range(count):
        name = f"{index:04d}"
        write_png(folder / "ir" / f"{name}.png", generator.integers(0, 256, (height, width), dtype=np.uint8))
        write_png(folder / "vi" / f"{name}.png", generator.integers(0, 256, (height, width, 3), dtype=np.uint8))
        (folder / "boxes").mkdir(parents=True, exist_ok=True)
        (folder / "boxes" / f"{name}.txt").write_text("0 0.5 0.5 0.2 0.3\n")
    return folder


def benchmark_degrade(root: Path, quick: bool, repeats: int, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Time degrading one split for every registered kind (files in and out); one case."""
    setting = QUICK_SET if quick else FULL_SET
    with tempfile.TemporaryDirectory(prefix="uaafusion-degrade-bench-") as scratch:
        source = (root / MSRS_TEST).resolve()
        if quick or not source.is_dir():
            source = write_synthetic_split(Path(scratch) / "source", **setting, seed=seed)
            origin = f"synthetic {setting['count']} pairs of {setting['width']}x{setting['height']}"
        else:
            origin = str(root / MSRS_TEST)
        count = len(list((source / "ir").iterdir()))
        log(f"degrade: {count} pairs ({origin}) x {len(DEGRADATIONS)} kinds")
        out = Path(scratch) / "degraded"

        def run() -> None:
            shutil.rmtree(out, ignore_errors=True)
            build_degraded_benchmark("boxes", source, out, tuple(DEGRADATIONS), 0.5, seed)

        summary, _ = time_call(run, None, repeats, warmup=0)
    key = f"degrade/{count}-pairs-all-kinds"
    return {key: {**summary, "pairs": count, "kinds": list(DEGRADATIONS), "severity": 0.5, "source": origin,
                  "target_seconds": TARGET_S, "seconds_per_pair_and_kind": summary["median_s"] / (count * len(DEGRADATIONS))}}
