"""Benchmark of :func:`uaafusion.metrics.fusion.fusion_metrics`: the time to score a set of images
(target: under 60 s for 60 images of 640x480 with all nine metrics, on 2 CPU cores)."""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.timing import time_call
from uaafusion.metrics.fusion import fusion_metrics

TARGET_S = 60.0


def synthetic_triples(count: int, height: int, width: int, seed: int) -> list[tuple[np.ndarray, ...]]:
    """``count`` (fused, ir, vi) uint8 images with structure (ramps, blobs, texture, noise)."""
    generator = np.random.default_rng(seed)
    rows = np.linspace(0.0, 1.0, height)[:, None]
    columns = np.linspace(0.0, 1.0, width)[None, :]
    triples = []
    for _ in range(count):
        frequency = generator.uniform(3.0, 12.0)
        blob = (rows - generator.uniform()) ** 2 + (columns - generator.uniform()) ** 2
        ir = 80 + 60 * rows + 50 * np.exp(-blob / 0.01)
        vi = 120 + 60 * np.sin(2 * np.pi * frequency * columns) * np.cos(2 * np.pi * frequency * rows) + 40 * columns
        ir = ir + generator.normal(0.0, 6.0, (height, width))
        vi = vi + generator.normal(0.0, 6.0, (height, width))
        fused = np.maximum(ir, vi) * 0.5 + 0.5 * vi
        triples.append(tuple(np.clip(np.rint(image), 0, 255).astype(np.uint8) for image in (fused, ir, vi)))
    return triples


def benchmark_metrics(count: int = 60, height: int = 480, width: int = 640, repeats: int = 3,
                      seed: int = 0) -> dict[str, Any]:
    """Time :func:`fusion_metrics` over ``count`` synthetic ``height x width`` triples, ``repeats`` times
    after one untimed call: the suite's timing summary of the whole set, seconds per image, and the same
    numbers rounded under the first version's keys (``seconds_median``, ``times``, ...)."""
    triples = synthetic_triples(count, height, width, seed)
    fusion_metrics(*triples[0])  # warm-up: imports, allocator, thread pools
    summary, _ = time_call(lambda: [fusion_metrics(*triple) for triple in triples], None, repeats, warmup=0)
    times, median = summary["runs_s"], summary["median_s"]
    return {
        "benchmark": "fusion_metrics (EN, SD, SF, AG, MI, SCD, VIF, Qabf, SSIM)",
        "count": count, "height": height, "width": width,
        "seconds_median": round(median, 3), "seconds_min": round(min(times), 3), "seconds_max": round(max(times), 3),
        "spread_seconds": round(max(times) - min(times), 3), "seconds_per_image_median": round(median / count, 4),
        "times": [round(value, 3) for value in times], "target_seconds": TARGET_S,
        **summary, "warmup": "one fusion_metrics call", "device": "cpu (numpy/scipy)",
        "seconds_per_image": median / count,
    }
