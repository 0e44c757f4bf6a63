"""Benchmark of one training step: the fusion stage with and without the attribution cache, and
the segmentation stage.

The models are the params' (:func:`uaafusion.training.builders.build_models`), the batch is
``data.batch_size`` crops of ``data.crop_size`` from scenes rendered by the embedded synthetic
generator (:func:`uaafusion.data.synthetic.render_scene`, ``synthetic.height x synthetic.width``),
and one step is what :mod:`uaafusion.training.stages` does per batch:

- fusion step **with the cache**: the crops' weights from a :class:`uaafusion.attribution.WeightCache`
  filled beforehand with the full images (a hit: fingerprint check and crop), then forward
  through the unfolding network (pathway attention included), ``S(F)``, the fusion loss,
  backward, gradient clipping and an AdamW step;
- fusion step **without the cache**: :func:`uaafusion.attribution.modality_weights` of the crops
  at every step (what the published code and the joint schedule do), then the same step;
- segmentation step: the segmenter trained on the fused crops (computed beforehand, as the stage
  does once per round) and both sources: forward, cross-entropy, backward, clipping, AdamW.

Numbers: seconds per step (median and spread, :mod:`benchmarks.timing`), images (crops) per
second, and the ratio uncached / cached (target: >= 5).

Two settings, both with the params' models (segmenter, unfolding network, attribution engine,
``internal_batch_size``, ``train.amp``):

- **the params' batch** (keys ``training/...``): ``data.batch_size`` crops of ``data.crop_size``,
  ``attribution.steps``, the generator's label ids below ``data.num_classes`` (the embedded
  default: 4 crops of 96x96, 4 steps, about 4 classes present);
- **the issue's headline setting** (keys ``training/headline/...``, :func:`headline_params`): the
  attribution benchmark's headline case (C 9, steps 5, batch 8, 256x256: whole scenes of that size
  as the batch) with every class present in every image (:func:`benchmarks.attribution.stripe_labels`,
  as in the attribution benchmark), the scale at which the published code's per-step attribution
  is slow.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.attribution import AttributionCase, stripe_labels
from benchmarks.timing import time_call
from uaafusion.config import Params, params_from_dict
from uaafusion.device import mixed_precision

CACHE_SPEEDUP_TARGET = 5.0
LABEL_SOURCES = ("scene", "stripes")
PARAMS_PREFIX = "training"
HEADLINE_PREFIX = "training/headline"
# The two settings (module docstring), by key prefix: recorded in the JSON with the section and the targets.
SETTINGS: dict[str, str] = {
    PARAMS_PREFIX: "the params' batch (data.batch_size crops of data.crop_size, attribution.steps, the scenes' classes)",
    HEADLINE_PREFIX: "the attribution headline case's batch (whole scenes, every class present), the params' models",
}


def headline_params(params: Params, case: AttributionCase) -> Params:
    """``params`` with the batch of an attribution case: ``case.classes`` classes (generic names),
    ``case.steps`` integration steps, ``case.batch`` whole ``case.height x case.width`` scenes per
    batch (``data.crop_size`` 0). Models and every other setting stay the params'."""
    overrides = {
        "data.num_classes": case.classes,
        "data.class_names": [f"class_{index}" for index in range(case.classes)],
        "attribution.steps": case.steps,
        "data.batch_size": case.batch,
        "data.crop_size": 0,
        "synthetic.height": case.height,
        "synthetic.width": case.width,
    }
    return params_from_dict(params.to_dict(), overrides, source=f"params with the batch of {case.key}")


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------
def synthetic_scenes(count: int, height: int, width: int, num_classes: int, seed: int = 0,
                     ) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor]:
    """``count`` scenes of the embedded generator: ``(names, ir (N,1,H,W), vi luma (N,1,H,W), labels (N,H,W))``.

    Label ids >= ``num_classes`` (the generator draws 5 classes) become background (0).
    """
    from uaafusion.data.io import array_to_tensor, split_luma_chroma
    from uaafusion.data.synthetic import render_scene

    names, infrared, visible, labels = [], [], [], []
    for index in range(count):
        rng = np.random.default_rng([seed, 7919, index])
        scene = render_scene(rng, height, width, night=index % 2 == 1, name=f"bench_{index:04d}")
        names.append(scene.name)
        infrared.append(array_to_tensor(scene.ir))
        visible.append(split_luma_chroma(scene.vi)[0])
        label = scene.label.astype(np.int64)
        labels.append(torch.from_numpy(np.where(label < num_classes, label, 0)))
    return names, torch.stack(infrared), torch.stack(visible), torch.stack(labels)


def crop_boxes(count: int, height: int, width: int, crop: int, seed: int = 0) -> list[tuple[int, int, int, int]]:
    """Random ``(top, left, crop_h, crop_w)`` boxes inside ``height x width`` (the whole image when
    ``crop`` is 0 or larger than the image)."""
    crop_height = height if crop <= 0 else min(crop, height)
    crop_width = width if crop <= 0 else min(crop, width)
    rng = np.random.default_rng([seed, 104729])
    return [(int(rng.integers(0, height - crop_height + 1)), int(rng.integers(0, width - crop_width + 1)),
             crop_height, crop_width) for _ in range(count)]


def _crop(tensor: torch.Tensor, boxes: list[tuple[int, int, int, int]]) -> torch.Tensor:
    return torch.stack([tensor[index, ..., top:top + height, left:left + width]
                        for index, (top, left, height, width) in enumerate(boxes)])


# --------------------------------------------------------------------------------------------
# The steps
# --------------------------------------------------------------------------------------------
def _set_trainable(module: torch.nn.Module, trainable: bool) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(trainable)


class TrainingBench:
    """Models, optimisers, one batch of crops and the full images they come from, for one device.

    ``labels``: ``"scene"`` (the generator's label ids, ids >= ``data.num_classes`` as background)
    or ``"stripes"`` (every class present in every image, :func:`benchmarks.attribution.stripe_labels`).
    """

    def __init__(self, params: Params, device: torch.device, seed: int = 0, labels: str = "scene") -> None:
        from uaafusion.attribution import WeightCache, labels_to_one_hot
        from uaafusion.losses import FusionLoss
        from uaafusion.training.builders import build_models, build_optimizer

        self.params, self.device = params, device
        data = params.data
        self.batch_size = max(1, data.batch_size)
        crop = data.crop_size
        height = max(params.synthetic.height, crop)
        width = max(params.synthetic.width, crop)
        self.full_size = (height, width)
        if labels not in LABEL_SOURCES:
            raise ValueError(f"TrainingBench labels={labels!r}: allowed {', '.join(LABEL_SOURCES)}.")
        self.names, full_ir, full_vi, full_labels = synthetic_scenes(self.batch_size, height, width,
                                                                     data.num_classes, seed)
        if labels == "stripes":
            full_labels = stripe_labels(self.batch_size, data.num_classes, height, width)
        self.labels_source = labels
        self.full_ir, self.full_vi = full_ir.to(device), full_vi.to(device)
        self.full_mask = labels_to_one_hot(full_labels.to(device), data.num_classes, data.ignore_index)
        self.boxes = crop_boxes(self.batch_size, height, width, crop, seed)
        self.ir, self.vi = _crop(self.full_ir, self.boxes), _crop(self.full_vi, self.boxes)
        self.labels = _crop(full_labels, self.boxes).to(device)
        self.mask = _crop(self.full_mask, self.boxes)
        self.roi = torch.zeros_like(self.ir)
        self.fusion, self.segmenter = build_models(params, device)
        self.fusion_optimizer = build_optimizer(self.fusion, params.train.lr_fusion, params.train.weight_decay)
        self.segmenter_optimizer = build_optimizer(self.segmenter, params.train.lr_segmenter, params.train.weight_decay)
        self.loss = FusionLoss(params.loss, data.ignore_index)
        attribution = params.attribution
        self.cache = WeightCache(steps=attribution.steps, method=attribution.method,
                                 internal_batch_size=attribution.internal_batch_size,
                                 engine=attribution.engine, scale=attribution.scale)
        self.fused: torch.Tensor | None = None

    # -- fusion stage ------------------------------------------------------------------------
    def prepare_fusion(self) -> None:
        """Freeze the segmenter (eval), train the fusion network; fill the cache with the full images."""
        _set_trainable(self.segmenter, False)
        self.segmenter.eval()
        _set_trainable(self.fusion, True)
        self.fusion.train()
        self.cache.get_or_compute(self.names, self.full_ir, self.full_vi, self.full_mask, self.segmenter)

    def cached_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cache.get_or_compute(self.names, self.full_ir, self.full_vi, self.full_mask, self.segmenter,
                                         crop_boxes=self.boxes)

    def computed_weights(self, engine: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The crops' weights computed now, with ``engine`` (default: the params' ``attribution.engine``)."""
        from uaafusion.attribution import modality_weights

        attribution = self.params.attribution
        return modality_weights(self.segmenter, self.ir, self.vi, self.mask, attribution.steps, attribution.method,
                                attribution.internal_batch_size, engine=engine or attribution.engine,
                                scale=attribution.scale)

    def fusion_step(self, weights: tuple[torch.Tensor, torch.Tensor]) -> float:
        """One optimisation step of the fusion network (as ``stages._fusion_epoch``); returns the loss."""
        from uaafusion.attribution import frozen_segmenter

        optimizer = self.fusion_optimizer
        optimizer.zero_grad(set_to_none=True)
        with mixed_precision(self.params.train.amp, self.device):
            output = self.fusion(self.ir, self.vi, self.segmenter, mask=self.mask, weights=weights)
            logits = frozen_segmenter(self.segmenter)(output.fused)
            terms = self.loss(output, self.ir, self.vi, logits, self.labels, self.roi)
        terms["total"].backward()
        if self.params.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.fusion.parameters(), self.params.train.grad_clip)
        optimizer.step()
        return float(terms["total"].detach())

    def step_with_cache(self) -> float:
        return self.fusion_step(self.cached_weights())

    def step_without_cache(self, engine: str | None = None) -> float:
        return self.fusion_step(self.computed_weights(engine))

    # -- segmentation stage ------------------------------------------------------------------
    def prepare_segmentation(self) -> None:
        """Fuse the crops once (frozen fusion network), then train the segmenter."""
        from uaafusion.inference import fuse_luma

        _set_trainable(self.fusion, False)
        with torch.no_grad():
            self.fused = fuse_luma(self.fusion, self.segmenter, self.ir, self.vi).fused.detach()
        _set_trainable(self.segmenter, True)
        self.segmenter.train()

    def segmentation_step(self) -> float:
        """One optimisation step of the segmenter on the fused crops and both sources
        (as ``stages._segmenter_epoch``); returns the loss."""
        from uaafusion.losses import segmentation_loss

        assert self.fused is not None, "call prepare_segmentation() first"
        params = self.params
        optimizer = self.segmenter_optimizer
        optimizer.zero_grad(set_to_none=True)
        with mixed_precision(params.train.amp, self.device):
            losses = [segmentation_loss(self.segmenter(image), self.labels, params.data.ignore_index, params.loss.dice)
                      for image in (self.ir, self.vi, self.fused)]
            loss = torch.stack(losses).sum()
        loss.backward()
        if params.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.segmenter.parameters(), params.train.grad_clip)
        optimizer.step()
        return float(loss.detach())

    def case_params(self) -> dict[str, Any]:
        params = self.params
        return {
            "batch": self.batch_size,
            "crop_size": params.data.crop_size,
            "height": self.ir.shape[-2],
            "width": self.ir.shape[-1],
            "full_image": list(self.full_size),
            "num_classes": params.data.num_classes,
            "classes_present": float((self.mask.flatten(2).amax(2) > 0).sum(1).float().mean()),
            "segmenter": f"{params.model.segmenter.arch}/{params.model.segmenter.encoder}",
            "fusion_stages": params.model.fusion.stages,
            "fusion_features": params.model.fusion.features,
            "attribution_steps": params.attribution.steps,
            "attribution_engine": params.attribution.engine,
            "attribution_scale": params.attribution.scale,
            "internal_batch_size": params.attribution.internal_batch_size,
            "amp": bool(params.train.amp),
            "labels": self.labels_source,
            "device": str(self.device),
        }


def benchmark_training(params: Params, device: torch.device | str = "cpu", repeats: int = 3, warmup: int = 1,
                       seed: int = 0, log: Callable[[str], None] | None = None, prefix: str = PARAMS_PREFIX,
                       labels: str = "scene") -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """Time the three steps. Returns ``(records, ratios)``:

    records ``{prefix}/fusion_step_cached``, ``{prefix}/fusion_step_uncached``,
    ``{prefix}/segmentation_step`` (timing summary + case parameters + ``images_per_s``), and the
    ratio ``{prefix}/cache_speedup`` (uncached median / cached median, the target). When the
    params' engine is not ``captum``, also ``{prefix}/fusion_step_uncached_captum``: the weights
    computed every step the published way (Captum's IntegratedGradients, one call per class), and
    its ratio ``{prefix}/cache_speedup_vs_captum``. ``labels``: see :class:`TrainingBench`.
    """
    torch_device = torch.device(device)
    bench = TrainingBench(params, torch_device, seed, labels)
    common = bench.case_params()
    bench.prepare_fusion()
    records: dict[str, dict[str, Any]] = {}
    misses_before = bench.cache.misses
    where = f" ({common['batch']} x {common['width']}x{common['height']}, {common['classes_present']:g} classes " \
            f"present, {common['attribution_steps']} steps)"
    if log is not None:
        log(f"{prefix}: fusion step with the attribution cache{where}")
    summary, _ = time_call(bench.step_with_cache, torch_device, repeats, warmup)
    if bench.cache.misses != misses_before:
        raise AssertionError("the weight cache missed during the cached fusion steps")
    cached = records[f"{prefix}/fusion_step_cached"] = {
        **summary, **common, "step": "fusion", "weights": "WeightCache hit (full images, cropped)",
        "images_per_s": bench.batch_size / summary["median_s"], "cache": bench.cache.stats(),
    }
    if log is not None:
        log(f"{prefix}: fusion step computing the attribution weights")
    summary, _ = time_call(bench.step_without_cache, torch_device, repeats, warmup)
    records[f"{prefix}/fusion_step_uncached"] = {
        **summary, **common, "step": "fusion", "weights": "modality_weights of the crops at every step",
        "images_per_s": bench.batch_size / summary["median_s"],
    }
    ratios = {f"{prefix}/cache_speedup": summary["median_s"] / cached["median_s"]}
    if params.attribution.engine != "captum":
        if log is not None:
            log(f"{prefix}: fusion step computing the attribution weights with Captum (per class)")
        summary, _ = time_call(lambda: bench.step_without_cache("captum"), torch_device, repeats, warmup)
        records[f"{prefix}/fusion_step_uncached_captum"] = {
            **summary, **common, "attribution_engine": "captum", "step": "fusion",
            "weights": "modality_weights of the crops at every step, Captum IntegratedGradients per class",
            "images_per_s": bench.batch_size / summary["median_s"],
        }
        ratios[f"{prefix}/cache_speedup_vs_captum"] = summary["median_s"] / cached["median_s"]
    if log is not None:
        log(f"{prefix}: segmentation step")
    bench.prepare_segmentation()
    summary, _ = time_call(bench.segmentation_step, torch_device, repeats, warmup)
    records[f"{prefix}/segmentation_step"] = {
        **summary, **common, "step": "segmentation", "inputs_per_sample": 3,
        "images_per_s": bench.batch_size / summary["median_s"],
        "inputs_per_s": 3 * bench.batch_size / summary["median_s"],
    }
    return records, ratios


def benchmark_training_settings(params: Params, headline: AttributionCase, device: torch.device | str = "cpu",
                                repeats: int = 3, warmup: int = 1, seed: int = 0,
                                log: Callable[[str], None] | None = None,
                                ) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """Both settings (module docstring): the params' batch (``training/...``), then the batch of the
    attribution case ``headline`` with every class present (``training/headline/...``)."""
    records, ratios = benchmark_training(params, device, repeats, warmup, seed, log)
    more_records, more_ratios = benchmark_training(headline_params(params, headline), device, repeats, warmup, seed,
                                                   log, prefix=HEADLINE_PREFIX, labels="stripes")
    return {**records, **more_records}, {**ratios, **more_ratios}


# --------------------------------------------------------------------------------------------
# Profiling
# --------------------------------------------------------------------------------------------
def profile_steps(params: Params, device: torch.device | str, out: Path, row_limit: int = 30, seed: int = 0) -> Path:
    """Profile one fusion training step (cached weights) and one attribution call
    (:func:`~uaafusion.attribution.modality_weights` of the batch) with ``torch.profiler``; write
    the top operators of each (by self time on the device) to ``out``."""
    from torch.profiler import ProfilerActivity, profile, record_function

    from benchmarks.timing import machine_info, synchronize, utc_now, version_info

    torch_device = torch.device(device)
    bench = TrainingBench(params, torch_device, seed)
    bench.prepare_fusion()
    bench.step_with_cache()  # warm-up
    bench.computed_weights()
    synchronize(torch_device)
    activities = [ProfilerActivity.CPU]
    sort_by = "self_cpu_time_total"
    if torch_device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
        sort_by = "self_cuda_time_total"
    sections = []
    for title, function in (("one fusion training step (weights from the cache)", bench.step_with_cache),
                            ("one attribution call (modality_weights of the batch)", bench.computed_weights)):
        with profile(activities=activities, record_shapes=False) as profiler:
            with record_function(title):
                function()
            synchronize(torch_device)
        table = profiler.key_averages().table(sort_by=sort_by, row_limit=row_limit)
        sections.append(f"## {title}\n\n{table}\n")
    machine, versions = machine_info(torch_device), version_info()
    header = (
        f"# uaafusion profile on {torch_device} ({utc_now()})\n"
        f"# CPU {machine['cpu_model']}, {machine['usable_cores']} usable cores, "
        f"torch threads {machine['torch_threads']}"
        + (f", GPU {machine['cuda_device']['name']}" if machine.get("cuda_device") else "") + "\n"
        f"# torch {versions['torch']}, smp {versions['smp']}, captum {versions['captum']}\n"
        f"# case: {bench.case_params()}\n\n"
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(header + "\n".join(sections))
    return out
