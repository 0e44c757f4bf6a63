"""Benchmark of the batched attribution (:func:`uaafusion.attribution.region_attribution`).

Compares one batched Captum call over every (image, present class) copy with a per-class loop
that already batches the images (one Captum call per class: the published code's structure,
minus its per-image Python loop). Both compute the same numbers; that is checked on every run.

Run: ``python benchmarks/attribution.py [--classes 9 --steps 5 --batch 2 --height 256 --width 256
--device cpu --repeats 3]`` prints JSON (median and spread of the timed runs after one warm-up).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uaafusion.attribution import frozen_segmenter, gradients_enabled, region_attribution  # noqa: E402
from uaafusion.device import resolve_device  # noqa: E402
from uaafusion.models import create_segmenter  # noqa: E402


def per_class_loop_attribution(
    segmenter: torch.nn.Module,
    image: torch.Tensor,
    mask: torch.Tensor,
    steps: int,
    method: str = "riemann_right",
    internal_batch_size: int | None = None,
) -> torch.Tensor:
    """The baseline: for each class, one Captum call over the images that contain it. Returns ``(B, C)``."""
    from captum.attr import IntegratedGradients

    batch, num_classes = mask.shape[:2]
    scores = torch.zeros(batch, num_classes, dtype=image.dtype, device=image.device)
    with gradients_enabled(), frozen_segmenter(segmenter):
        region = mask > 0.5
        for class_index in range(num_classes):
            images_with_class = torch.nonzero(region[:, class_index].flatten(1).any(dim=1)).flatten()
            if images_with_class.numel() == 0:
                continue
            region_masks = region[images_with_class, class_index].unsqueeze(1).to(image.dtype)

            def class_score(images: torch.Tensor, masks: torch.Tensor, c: int = class_index) -> torch.Tensor:
                logits = segmenter(images)[:, c:c + 1]
                return (logits * masks).sum(dim=(1, 2, 3)) / masks.sum(dim=(1, 2, 3))

            attributions = IntegratedGradients(class_score).attribute(
                image[images_with_class], baselines=torch.zeros_like(image[images_with_class]),
                additional_forward_args=(region_masks,), n_steps=steps, method=method,
                internal_batch_size=internal_batch_size,
            )
            mean_in_region = (attributions * region_masks).sum(dim=(1, 2, 3)) / region_masks.sum(dim=(1, 2, 3))
            scores[images_with_class, class_index] = torch.relu(mean_in_region)
    return scores


def _timed_runs(function: Callable[[], torch.Tensor], device: torch.device, repeats: int, warmup: int) -> tuple[list[float], torch.Tensor]:
    result = None
    for _ in range(warmup):
        result = function()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    assert result is not None
    return times, result


def _summary(times: list[float]) -> dict[str, Any]:
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "stdev_s": statistics.stdev(times) if len(times) > 1 else 0.0,
        "runs_s": times,
    }


def benchmark_attribution(
    classes: int = 9,
    steps: int = 5,
    batch: int = 2,
    height: int = 256,
    width: int = 256,
    device: str = "cpu",
    repeats: int = 3,
    internal_batch_size: int | None = 32,
    warmup: int = 1,
    arch: str = "DeepLabV3Plus",
    encoder: str = "mobilenet_v2",
    seed: int = 0,
) -> dict[str, Any]:
    """Time batched vs per-class-loop attribution on random images where every class is present.

    Returns a JSON-ready dict: the settings, ``batched`` and ``per_class_loop`` timings (median,
    min, max, stdev, each run), ``speedup`` (loop median / batched median) and the largest
    difference between the two results (asserted to be within float32 round-off).
    """
    torch_device = resolve_device(device)
    generator = torch.Generator().manual_seed(seed)
    segmenter = create_segmenter(arch, encoder, num_classes=classes).to(torch_device).eval()
    noise = torch.rand(batch, 1, height, width, generator=generator)
    image = torch.nn.functional.avg_pool2d(noise, 5, stride=1, padding=2, count_include_pad=False).to(torch_device)
    stripes = (torch.arange(width) * classes // width).expand(batch, height, width)
    mask = torch.nn.functional.one_hot(stripes, classes).permute(0, 3, 1, 2).float().to(torch_device)

    def batched() -> torch.Tensor:
        return region_attribution(segmenter, image, mask, steps, internal_batch_size=internal_batch_size)

    def loop() -> torch.Tensor:
        return per_class_loop_attribution(segmenter, image, mask, steps, internal_batch_size=internal_batch_size)

    batched_times, batched_scores = _timed_runs(batched, torch_device, repeats, warmup)
    loop_times, loop_scores = _timed_runs(loop, torch_device, repeats, warmup)
    largest = float((batched_scores - loop_scores).abs().max())
    scale = float(loop_scores.abs().max())
    assert largest <= 1e-4 * max(scale, 1e-12) + 1e-7, f"batched and looped results differ by {largest} (scale {scale})"
    return {
        "settings": {
            "classes": classes, "steps": steps, "batch": batch, "height": height, "width": width,
            "device": str(torch_device), "repeats": repeats, "warmup": warmup,
            "internal_batch_size": internal_batch_size, "segmenter": f"{arch}/{encoder}",
            "copies": int((mask.flatten(2).sum(2) > 0).sum()),
        },
        "batched": _summary(batched_times),
        "per_class_loop": _summary(loop_times),
        "speedup": statistics.median(loop_times) / statistics.median(batched_times),
        "max_abs_difference": largest,
        "max_abs_score": scale,
        "environment": {
            "torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "machine": platform.machine(), "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(torch_device) if torch_device.type == "cuda" else None,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=9)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--internal-batch-size", type=int, default=32,
                        help="segmenter inputs per pass (0 = all at once)")
    arguments = parser.parse_args(argv)
    result = benchmark_attribution(
        arguments.classes, arguments.steps, arguments.batch, arguments.height, arguments.width,
        arguments.device, arguments.repeats, arguments.internal_batch_size or None,
    )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
