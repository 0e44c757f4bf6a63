"""Benchmark of :func:`uaafusion.metrics.fusion.fusion_metrics`: time to score a set of images.

Run: ``python benchmarks/metrics.py [--count 60 --height 480 --width 640 --repeats 3]`` prints JSON.
The target is under 60 s for 60 images of 640x480 with all metrics, on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import timing  # noqa: E402
from uaafusion.metrics.fusion import fusion_metrics  # noqa: E402


def _synthetic_triples(count: int, height: int, width: int, seed: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``count`` (fused, ir, vi) uint8 images with structure (ramps, blobs, texture, noise)."""
    generator = np.random.default_rng(seed)
    rows = np.linspace(0.0, 1.0, height)[:, None]
    columns = np.linspace(0.0, 1.0, width)[None, :]
    triples = []
    for _ in range(count):
        frequency = generator.uniform(3.0, 12.0)
        ir = 80 + 60 * rows + 50 * np.exp(-((rows - generator.uniform()) ** 2 + (columns - generator.uniform()) ** 2) / 0.01)
        vi = 120 + 60 * np.sin(2 * np.pi * frequency * columns) * np.cos(2 * np.pi * frequency * rows) + 40 * columns
        ir = ir + generator.normal(0.0, 6.0, (height, width))
        vi = vi + generator.normal(0.0, 6.0, (height, width))
        fused = np.maximum(ir, vi) * 0.5 + 0.5 * vi
        triples.append(tuple(np.clip(np.rint(image), 0, 255).astype(np.uint8) for image in (fused, ir, vi)))
    return triples


def machine_info() -> dict[str, object]:
    """Python, platform, CPU and library versions of this machine (from :mod:`benchmarks.timing`)."""
    machine = timing.machine_info("cpu")
    versions = timing.version_info()
    load = machine["load_average"]
    return {
        "python": versions["python"],
        "platform": machine["platform"],
        "processor": machine["cpu_model"],
        "cpu_count": machine["cpu_count"],
        "usable_cores": machine["usable_cores"],
        "load_average_1min": load[0] if load else None,
        "numpy": versions["numpy"],
        "scipy": versions["scipy"],
        "torch": versions["torch"],
        "torch_threads": machine["torch_threads"],
    }


def benchmark_metrics(count: int = 60, height: int = 480, width: int = 640, repeats: int = 3, seed: int = 0) -> dict:
    """Time :func:`fusion_metrics` over ``count`` synthetic ``height x width`` triples, ``repeats`` times.

    Returns the median and spread (min, max) of the total seconds per set, seconds per image,
    every repeat's time and :func:`machine_info`, plus the same numbers unrounded under the
    suite's keys (``median_s``, ``min_s``, ``max_s``, ``stdev_s``, ``repeats``, ``runs_s``). One
    warm-up call runs first (not timed); timing is :func:`benchmarks.timing.time_call`'s.
    """
    triples = _synthetic_triples(count, height, width, seed)
    fusion_metrics(*triples[0])  # warm-up: imports, allocator, thread pools

    def score_all() -> None:
        for fused, ir, vi in triples:
            fusion_metrics(fused, ir, vi)

    summary, _ = timing.time_call(score_all, None, repeats, warmup=0)
    times = summary["runs_s"]
    median = summary["median_s"]
    return {
        "benchmark": "fusion_metrics (EN, SD, SF, AG, MI, SCD, VIF, Qabf, SSIM)",
        "count": count,
        "height": height,
        "width": width,
        "repeats": repeats,
        "seconds_median": round(median, 3),
        "seconds_min": round(min(times), 3),
        "seconds_max": round(max(times), 3),
        "spread_seconds": round(max(times) - min(times), 3),
        "seconds_per_image_median": round(median / count, 4),
        "times": [round(value, 3) for value in times],
        "target_seconds": 60.0,
        "machine": machine_info(),
        # The suite's common case format (unrounded): median_s, min_s, max_s, stdev_s, repeats, runs_s.
        **{key: value for key, value in summary.items() if key != "warmup"},
        "warmup": "one fusion_metrics call",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(json.dumps(benchmark_metrics(args.count, args.height, args.width, args.repeats, args.seed), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
