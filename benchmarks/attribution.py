"""Benchmark of the batched attribution (:mod:`uaafusion.attribution`), ``python -m benchmarks --only attribution``.

Times the weight maps of :func:`~uaafusion.attribution.modality_weights` (one variant per attribution
engine: one pass over every (image, present class) copy) against a per-class loop that already batches
the images (one Captum call per class: the published code's structure, minus its per-image Python
loop), over a grid of cases (:func:`full_grid`, :func:`reduced_grid`, :func:`quick_grid`). Every run
checks that both give the same region scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from benchmarks.timing import log, time_call
from uaafusion.attribution import (
    frozen_segmenter,
    gradients_enabled,
    modality_weights,
    region_attribution,
    weights_from_region_scores,
)
from uaafusion.config import Params
from uaafusion.models import create_segmenter


@dataclass(frozen=True)
class AttributionCase:
    """One setting: classes ``C``, integration ``steps``, ``batch`` images of ``height x width``."""

    classes: int
    steps: int
    batch: int
    height: int
    width: int

    @property
    def key(self) -> str:
        return f"C{self.classes}-s{self.steps}-b{self.batch}-{self.width}x{self.height}"

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


HEADLINE_CASE = AttributionCase(9, 5, 8, 256, 256)


def full_grid() -> list[AttributionCase]:
    """Every combination the issue asks for (24 cases; meant for a GPU): C in {4, 9, 15}, steps in
    {5, 10}, 256x256 and 640x480 (width x height), batch 1 and 8."""
    return [AttributionCase(classes, steps, batch, height, width)
            for (width, height) in ((256, 256), (640, 480)) for batch in (1, 8)
            for classes in (4, 9, 15) for steps in (5, 10)]


def reduced_grid() -> list[AttributionCase]:
    """The CPU default: the headline case, then one step along each axis from C 9, steps 5, batch 1,
    256x256: C 4 and 15, steps 10, and 640x480 (with C 4, to keep the large image affordable)."""
    return [HEADLINE_CASE, AttributionCase(9, 5, 1, 256, 256), AttributionCase(4, 5, 1, 256, 256),
            AttributionCase(15, 5, 1, 256, 256), AttributionCase(9, 10, 1, 256, 256),
            AttributionCase(4, 5, 1, 480, 640)]


def quick_grid() -> list[AttributionCase]:
    """Seconds-long smoke cases (tests, ``--quick``)."""
    return [AttributionCase(4, 2, 2, 32, 48), AttributionCase(3, 3, 1, 40, 32)]


def stripe_labels(batch: int, classes: int, height: int, width: int) -> torch.Tensor:
    """Label ids ``(B, H, W)`` (int64): ``C`` vertical stripes of equal width, ids 0..C-1 from the left,
    so every class is present in every image (needs ``width >= C``)."""
    if width < classes:
        raise ValueError(f"stripe_labels: width {width} < classes {classes}; every class needs a column.")
    return (torch.arange(width) * classes // width).expand(batch, height, width).clone()


def attribution_inputs(case: AttributionCase, seed: int = 0, device: torch.device | str = "cpu",
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(ir, vi, mask)``: two smoothed-noise images ``(B, 1, H, W)`` and the one-hot ``(B, C, H, W)``
    of :func:`stripe_labels` (every class in every image: the most copies for ``C``)."""
    noise = torch.rand(2 * case.batch, 1, case.height, case.width, generator=torch.Generator().manual_seed(seed))
    images = torch.nn.functional.avg_pool2d(noise, 5, stride=1, padding=2, count_include_pad=False)
    labels = stripe_labels(case.batch, case.classes, case.height, case.width)
    mask = torch.nn.functional.one_hot(labels, case.classes).permute(0, 3, 1, 2)
    return images[:case.batch].to(device), images[case.batch:].to(device), mask.float().to(device)


def per_class_loop_attribution(segmenter: torch.nn.Module, image: torch.Tensor, mask: torch.Tensor, steps: int,
                               method: str = "riemann_right", internal_batch_size: int | None = None) -> torch.Tensor:
    """The baseline of :func:`~uaafusion.attribution.region_attribution`: for each class, one Captum
    call over the images that contain it. Returns the region scores ``(B, C)``."""
    from captum.attr import IntegratedGradients

    scores = torch.zeros(mask.shape[:2], dtype=image.dtype, device=image.device)
    segmenter = frozen_segmenter(segmenter)
    region = mask > 0.5
    with gradients_enabled():
        for class_index in range(mask.shape[1]):
            images_with_class = torch.nonzero(region[:, class_index].flatten(1).any(dim=1)).flatten()
            if images_with_class.numel() == 0:
                continue
            region_masks = region[images_with_class, class_index].unsqueeze(1).to(image.dtype)

            def class_score(images: torch.Tensor, masks: torch.Tensor, c: int = class_index) -> torch.Tensor:
                return (segmenter(images)[:, c:c + 1] * masks).sum(dim=(1, 2, 3)) / masks.sum(dim=(1, 2, 3))

            attributions = IntegratedGradients(class_score).attribute(
                image[images_with_class], baselines=torch.zeros_like(image[images_with_class]),
                additional_forward_args=(region_masks,), n_steps=steps, method=method,
                internal_batch_size=internal_batch_size)
            mean_in_region = (attributions * region_masks).sum(dim=(1, 2, 3)) / region_masks.sum(dim=(1, 2, 3))
            scores[images_with_class, class_index] = torch.relu(mean_in_region)
    return scores


def check_same(result: torch.Tensor, reference: torch.Tensor, tolerance: float, what: str) -> tuple[float, float]:
    """Largest absolute difference and the reference's scale; raises when the relative difference
    (largest difference / largest reference value) is above ``tolerance``."""
    largest = float((result.double() - reference.double()).abs().max())
    scale = float(reference.double().abs().max())
    relative = largest / scale if scale > 0 else (0.0 if largest == 0 else float("inf"))
    if relative > tolerance:
        raise AssertionError(f"batched and per-class-loop {what} differ: max |difference| {largest:.3g} for a "
                             f"largest value {scale:.3g} (relative {relative:.3g} > {tolerance:g})")
    return largest, scale


def run_weights_grid(cases: Sequence[AttributionCase], params: Params, device: torch.device, repeats: int = 3,
                     warmup: int = 1, engines: Sequence[str] = ("reverse",), tolerance: float = 1e-4,
                     ) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """Time :func:`modality_weights` (one variant per engine) against the per-class loop on each case,
    with the params' segmenter architecture (randomly initialised from ``params.seed``), integration
    method and ``internal_batch_size``; check that every variant's region scores are within
    ``tolerance`` (relative) of the loop's.

    Returns records keyed ``attribution/<case>/<variant>`` (``per_class_loop``; ``batched`` for the
    first engine, ``batched_<engine>`` for the others: the timing summary, the case's parameters,
    ``speedup`` = loop median / its median and the largest differences from the loop's scores and
    weights) and ratios keyed ``attribution/<case>`` (first engine) and ``attribution/<case>/<engine>``.
    """
    method, internal_batch_size = params.attribution.method, params.attribution.internal_batch_size
    arch, encoder = params.model.segmenter.arch, params.model.segmenter.encoder
    records: dict[str, dict[str, Any]] = {}
    ratios: dict[str, float] = {}
    for case in cases:
        log(f"attribution {case.key} ({', '.join(engines)} vs per-class loop)")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(params.seed)
            segmenter = create_segmenter(arch, encoder, num_classes=case.classes)
        segmenter = segmenter.to(device).eval()
        ir, vi, mask = attribution_inputs(case, params.seed, device)
        images, masks = torch.cat([ir, vi]), torch.cat([mask, mask])
        common = {**case.as_dict(), "case": case.key, "method": method, "internal_batch_size": internal_batch_size,
                  "segmenter": f"{arch}/{encoder}", "copies": int((masks.flatten(2).sum(2) > 0).sum()),
                  "device": str(device)}

        def loop() -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
            scores = per_class_loop_attribution(segmenter, images, masks, case.steps, method, internal_batch_size)
            return weights_from_region_scores(scores[:case.batch], scores[case.batch:], mask), scores

        loop_summary, ((loop_weight_ir, _), loop_scores) = time_call(loop, device, repeats, warmup)
        prefix = f"attribution/{case.key}"
        records[f"{prefix}/per_class_loop"] = {**loop_summary, **common, "variant": "per_class_loop",
                                               "engine": "captum-per-class"}
        for position, engine in enumerate(engines):
            # The weights are a ratio of scores: check the scores. This untimed call runs what
            # modality_weights runs, so it is also the first warm-up call.
            scores = region_attribution(segmenter, images, masks, case.steps, method, internal_batch_size, engine)
            difference, scale = check_same(scores, loop_scores, tolerance, f"region scores ({engine})")
            summary, (weight_ir, _) = time_call(
                lambda engine=engine: modality_weights(segmenter, ir, vi, mask, case.steps, method,
                                                       internal_batch_size, engine=engine),
                device, repeats, max(0, warmup - 1))
            variant = "batched" if position == 0 else f"batched_{engine}"
            speedup = loop_summary["median_s"] / summary["median_s"]
            records[f"{prefix}/{variant}"] = {
                **summary, "warmup": max(1, warmup), **common, "variant": variant, "engine": engine,
                "speedup": speedup, "max_rel_diff_scores": difference / scale if scale > 0 else 0.0,
                "max_abs_diff_scores": difference, "max_abs_score": scale,
                "max_abs_diff_weights": float((weight_ir.double() - loop_weight_ir.double()).abs().max()),
            }
            ratios[prefix if position == 0 else f"{prefix}/{engine}"] = speedup
    return records, ratios
