"""Benchmark of the batched attribution (:mod:`uaafusion.attribution`).

Compares the batched attribution (one pass over every (image, present class) copy: Captum's
``IntegratedGradients``, the reverse-mode or the forward-mode engine) with a per-class loop that already batches
the images (one Captum call per class: the published code's structure, minus its per-image Python
loop). Both compute the same numbers; that is checked on every run.

- :func:`benchmark_attribution`: region scores (:func:`~uaafusion.attribution.region_attribution`)
  on one setting; ``python benchmarks/attribution.py [--classes 9 --steps 5 --batch 2 --height 256
  --width 256 --device cpu --repeats 3]`` prints its JSON;
- :func:`run_weights_grid`: weight maps (:func:`~uaafusion.attribution.modality_weights`) over a
  grid of cases (:func:`full_grid`, :func:`reduced_grid`, :func:`quick_grid`), used by the suite
  (``python -m benchmarks --only attribution``).

Timing (warm-up, repeats, median and spread, CUDA synchronisation) is :mod:`benchmarks.timing`'s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import machine_info, summarize, time_call, timed_runs  # noqa: E402
from uaafusion.attribution import (  # noqa: E402
    frozen_segmenter,
    gradients_enabled,
    modality_weights,
    region_attribution,
    weights_from_region_scores,
)
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
    segmenter = frozen_segmenter(segmenter)
    with gradients_enabled():
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


def _timed_runs(function: Callable[[], torch.Tensor], device: torch.device, repeats: int,
                warmup: int) -> tuple[list[float], torch.Tensor]:
    """Kept for callers of the old helper: :func:`benchmarks.timing.timed_runs`."""
    return timed_runs(function, device, repeats, warmup)


def _summary(times: list[float]) -> dict[str, Any]:
    """Kept for callers of the old helper: :func:`benchmarks.timing.summarize` without ``repeats``."""
    summary = summarize(times)
    summary.pop("repeats")
    return summary


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
    segmenter = _seeded_segmenter(arch, encoder, classes, seed).to(torch_device).eval()
    image, _, mask = attribution_inputs(batch, classes, height, width, seed, torch_device)

    def batched() -> torch.Tensor:
        return region_attribution(segmenter, image, mask, steps, internal_batch_size=internal_batch_size)

    def loop() -> torch.Tensor:
        return per_class_loop_attribution(segmenter, image, mask, steps, internal_batch_size=internal_batch_size)

    batched_times, batched_scores = timed_runs(batched, torch_device, repeats, warmup)
    loop_times, loop_scores = timed_runs(loop, torch_device, repeats, warmup)
    largest, scale = _check_same(batched_scores, loop_scores, 1e-4, "region scores")
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
        "environment": _environment(torch_device),
    }


# --------------------------------------------------------------------------------------------
# Shared inputs and checks
# --------------------------------------------------------------------------------------------
def _environment(device: torch.device) -> dict[str, Any]:
    """The machine (:func:`benchmarks.timing.machine_info`), kept under this benchmark's old keys too."""
    info = machine_info(device)
    cuda = info.get("cuda_device") or {}
    return {
        **info,
        "torch": torch.__version__,
        "threads": info["torch_threads"],
        "cpus": info["cpu_count"],
        "python": sys.version.split()[0],
        "gpu": cuda.get("name"),
    }


def _seeded_segmenter(arch: str, encoder: str, classes: int, seed: int) -> torch.nn.Module:
    """A randomly initialised segmenter, the same for a given seed (global RNG state restored)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_segmenter(arch, encoder, num_classes=classes)


def attribution_inputs(batch: int, classes: int, height: int, width: int, seed: int = 0,
                       device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(ir, vi, mask)``: two smoothed-noise images ``(B, 1, H, W)`` and a one-hot ``(B, C, H, W)``
    of ``C`` vertical stripes (every class present in every image: the most copies for ``C``)."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(2 * batch, 1, height, width, generator=generator)
    images = torch.nn.functional.avg_pool2d(noise, 5, stride=1, padding=2, count_include_pad=False)
    mask = torch.nn.functional.one_hot(stripe_labels(batch, classes, height, width), classes).permute(0, 3, 1, 2)
    return images[:batch].to(device), images[batch:].to(device), mask.float().to(device)


def stripe_labels(batch: int, classes: int, height: int, width: int) -> torch.Tensor:
    """Label ids ``(B, H, W)`` (int64): ``C`` vertical stripes of equal width, ids 0..C-1 from the left,
    so every class is present in every image (needs ``width >= C``)."""
    if width < classes:
        raise ValueError(f"stripe_labels: width {width} < classes {classes}; every class needs a column.")
    return (torch.arange(width) * classes // width).expand(batch, height, width).clone()


def _check_same(result: torch.Tensor, reference: torch.Tensor, tolerance: float, what: str) -> tuple[float, float]:
    """Largest absolute difference and the reference's scale; raises when the relative difference
    (largest difference / largest reference value) is above ``tolerance``."""
    largest = float((result.double() - reference.double()).abs().max())
    scale = float(reference.double().abs().max())
    relative = largest / scale if scale > 0 else (0.0 if largest == 0 else float("inf"))
    if relative > tolerance:
        raise AssertionError(
            f"batched and per-class-loop {what} differ: max |difference| {largest:.3g} for a largest value "
            f"{scale:.3g} (relative {relative:.3g} > {tolerance:g})"
        )
    return largest, scale


def per_class_loop_weights(
    segmenter: torch.nn.Module,
    ir: torch.Tensor,
    vi: torch.Tensor,
    mask: torch.Tensor,
    steps: int,
    method: str = "riemann_right",
    internal_batch_size: int | None = None,
) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The baseline of :func:`uaafusion.attribution.modality_weights`: :func:`per_class_loop_attribution`
    over both sources (one Captum call per class, images batched), then the same weight maps.

    Returns ``((w_ir, w_vi), scores (2B, C))`` (infrared rows first).
    """
    batch = ir.shape[0]
    scores = per_class_loop_attribution(segmenter, torch.cat([ir, vi]), torch.cat([mask, mask]), steps, method,
                                        internal_batch_size)
    return weights_from_region_scores(scores[:batch], scores[batch:], mask), scores


# --------------------------------------------------------------------------------------------
# Weight maps: batched modality_weights vs the per-class loop, over a grid of cases
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AttributionCase:
    """One attribution setting: classes ``C``, integration ``steps``, ``batch`` images of ``height x width``."""

    classes: int
    steps: int
    batch: int
    height: int
    width: int

    @property
    def key(self) -> str:
        return f"C{self.classes}-s{self.steps}-b{self.batch}-{self.width}x{self.height}"

    def as_dict(self) -> dict[str, int]:
        return {"classes": self.classes, "steps": self.steps, "batch": self.batch,
                "height": self.height, "width": self.width}


def full_grid() -> list[AttributionCase]:
    """Every combination the issue asks for: C in {4, 9, 15}, steps in {5, 10}, 256x256 and 640x480
    (width x height), batch 1 and 8 (24 cases; meant for a GPU)."""
    return [AttributionCase(classes, steps, batch, height, width)
            for (width, height) in ((256, 256), (640, 480)) for batch in (1, 8)
            for classes in (4, 9, 15) for steps in (5, 10)]


# The headline case first: C=9, steps=5, batch 8, 256x256.
HEADLINE_CASE = AttributionCase(9, 5, 8, 256, 256)


def reduced_grid() -> list[AttributionCase]:
    """The CPU default (6 cases): the headline case, then one step along each axis of the grid from a
    small base (C=9, steps=5, batch 1, 256x256): C 4 and 15, steps 10, and 640x480 (with C=4, the
    cheapest class count, to keep the large image affordable on two cores)."""
    return [
        HEADLINE_CASE,
        AttributionCase(9, 5, 1, 256, 256),
        AttributionCase(4, 5, 1, 256, 256),
        AttributionCase(15, 5, 1, 256, 256),
        AttributionCase(9, 10, 1, 256, 256),
        AttributionCase(4, 5, 1, 480, 640),
    ]


def quick_grid() -> list[AttributionCase]:
    """Seconds-long smoke cases (tests, ``--quick``)."""
    return [AttributionCase(4, 2, 2, 32, 48), AttributionCase(3, 3, 1, 40, 32)]


def benchmark_weights_case(
    case: AttributionCase,
    device: torch.device | str = "cpu",
    repeats: int = 3,
    warmup: int = 1,
    engines: Sequence[str] = ("reverse",),
    method: str = "riemann_right",
    internal_batch_size: int | None = 32,
    arch: str = "DeepLabV3Plus",
    encoder: str = "mobilenet_v2",
    seed: int = 0,
    tolerance: float = 1e-4,
) -> dict[str, dict[str, Any]]:
    """Time :func:`modality_weights` (one variant per attribution ``engine``) against
    :func:`per_class_loop_weights` on one case; check that every variant gives the loop's numbers.

    Returns flat records keyed by variant (``per_class_loop``, ``batched`` for the first engine,
    ``batched_<engine>`` for the others): each the timing summary of :mod:`benchmarks.timing` plus
    the case's parameters, the variant, its engine and, for the batched variants, ``speedup``
    (loop median / its median) and the largest relative differences of the region scores and of
    the weight maps from the loop's (the scores' must be <= ``tolerance``).
    """
    torch_device = torch.device(device)
    segmenter = _seeded_segmenter(arch, encoder, case.classes, seed).to(torch_device).eval()
    ir, vi, mask = attribution_inputs(case.batch, case.classes, case.height, case.width, seed, torch_device)
    common = {
        **case.as_dict(), "case": case.key, "method": method, "internal_batch_size": internal_batch_size,
        "segmenter": f"{arch}/{encoder}", "copies": 2 * int((mask.flatten(2).sum(2) > 0).sum()),
        "device": str(torch_device),
    }

    def loop() -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        return per_class_loop_weights(segmenter, ir, vi, mask, case.steps, method, internal_batch_size)

    loop_summary, ((loop_weight_ir, _), loop_scores) = time_call(loop, torch_device, repeats, warmup)
    records: dict[str, dict[str, Any]] = {
        "per_class_loop": {**loop_summary, **common, "variant": "per_class_loop", "engine": "captum-per-class"},
    }
    for position, engine in enumerate(engines):
        def batched(engine: str = engine) -> tuple[torch.Tensor, torch.Tensor]:
            return modality_weights(segmenter, ir, vi, mask, case.steps, method, internal_batch_size, engine=engine)

        # The weights are a ratio of scores: check the scores themselves. This untimed call runs
        # what modality_weights runs, so it is also the first warm-up call.
        scores = region_attribution(segmenter, torch.cat([ir, vi]), torch.cat([mask, mask]), case.steps, method,
                                    internal_batch_size, engine)
        score_difference, score_scale = _check_same(scores, loop_scores, tolerance, f"region scores ({engine})")
        summary, (weight_ir, _) = time_call(batched, torch_device, repeats, max(0, warmup - 1))
        summary["warmup"] = max(1, warmup)
        weight_difference = float((weight_ir.double() - loop_weight_ir.double()).abs().max())
        variant = "batched" if position == 0 else f"batched_{engine}"
        records[variant] = {
            **summary, **common, "variant": variant, "engine": engine,
            "speedup": loop_summary["median_s"] / summary["median_s"],
            "max_rel_diff_scores": score_difference / score_scale if score_scale > 0 else 0.0,
            "max_abs_diff_scores": score_difference,
            "max_abs_score": score_scale,
            "max_abs_diff_weights": weight_difference,
        }
    return records


def run_weights_grid(
    cases: Sequence[AttributionCase],
    device: torch.device | str = "cpu",
    repeats: int = 3,
    warmup: int = 1,
    engines: Sequence[str] = ("reverse",),
    method: str = "riemann_right",
    internal_batch_size: int | None = 32,
    arch: str = "DeepLabV3Plus",
    encoder: str = "mobilenet_v2",
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """:func:`benchmark_weights_case` over ``cases``: ``(records keyed "attribution/<case>/<variant>",
    ratios keyed "attribution/<case>" (and "attribution/<case>/<engine>" for further engines))``."""
    records: dict[str, dict[str, Any]] = {}
    ratios: dict[str, float] = {}
    for case in cases:
        if log is not None:
            log(f"attribution {case.key} ({', '.join(engines)} vs per-class loop)")
        results = benchmark_weights_case(case, device, repeats, warmup, engines, method, internal_batch_size,
                                         arch, encoder, seed)
        for variant, record in results.items():
            records[f"attribution/{case.key}/{variant}"] = record
            if variant == "batched":
                ratios[f"attribution/{case.key}"] = record["speedup"]
            elif variant.startswith("batched_"):
                ratios[f"attribution/{case.key}/{record['engine']}"] = record["speedup"]
    return records, ratios


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
