"""Benchmark of one training step, as :mod:`uaafusion.training.epochs` runs it per batch:

- fusion step **with the cache**: the crops' weights from a :class:`uaafusion.attribution.WeightCache`
  filled beforehand with the full images (a hit: fingerprint check and crop), then the unfolding
  network (pathway attention included), ``S(F)``, the fusion loss, backward, gradient clipping and
  an AdamW step;
- fusion step **without the cache**: :func:`uaafusion.attribution.modality_weights` of the crops at
  every step (what the published code and the joint schedule do; with the params' engine, and with
  Captum per class), then the same step;
- segmentation step: the segmenter trained on the fused crops (fused beforehand, as the stage does
  once per round) and both sources: forward, cross-entropy, backward, clipping, AdamW.

Numbers: seconds per step (median and spread), images (crops) per second, and the ratio uncached /
cached (target: >= 5). Two settings, both with the params' models (segmenter, unfolding network,
attribution engine, ``internal_batch_size``, ``train.amp``):

- **the params' batch** (keys ``training/...``): ``data.batch_size`` crops of ``data.crop_size`` from
  scenes of the embedded generator (``synthetic.height x synthetic.width``), ``attribution.steps``,
  the scenes' label ids below ``data.num_classes`` (the embedded default: 4 crops of 96x96, 4 steps,
  about 4 classes present);
- **the issue's headline setting** (keys ``training/headline/...``, :func:`headline_params`): the
  attribution headline case (C 9, steps 5, batch 8, 256x256: whole scenes as the batch) with every
  class in every image (:func:`benchmarks.attribution.stripe_labels`), the scale at which the
  published code's per-step attribution is slow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.attribution import AttributionCase, stripe_labels
from benchmarks.timing import log, machine_info, synchronize, time_call, utc_now, version_info
from uaafusion.config import Params, params_from_dict
from uaafusion.device import mixed_precision
from uaafusion.training.loop import clip_gradients, set_trainable

CACHE_SPEEDUP_TARGET = 5.0
PARAMS_PREFIX = "training"
HEADLINE_PREFIX = "training/headline"
SETTINGS: dict[str, str] = {
    PARAMS_PREFIX: "the params' batch (data.batch_size crops of data.crop_size, attribution.steps, "
                   "the scenes' classes)",
    HEADLINE_PREFIX: "the attribution headline case's batch (whole scenes, every class present), the params' models",
}


def headline_params(params: Params, case: AttributionCase) -> Params:
    """``params`` with the batch of an attribution case: ``case.classes`` classes (generic names),
    ``case.steps`` integration steps, ``case.batch`` whole scenes of ``case.height x case.width``
    (``data.crop_size`` 0). The models and every other setting stay the params'."""
    overrides = {"data.num_classes": case.classes, "data.class_names": [f"class_{i}" for i in range(case.classes)],
                 "attribution.steps": case.steps, "data.batch_size": case.batch, "data.crop_size": 0,
                 "synthetic.height": case.height, "synthetic.width": case.width}
    return params_from_dict(params.to_dict(), overrides, source=f"params with the batch of {case.key}")


def synthetic_scenes(count: int, height: int, width: int, num_classes: int, seed: int = 0,
                     ) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor]:
    """``count`` scenes of the embedded generator: ``(names, ir (N,1,H,W), vi luma (N,1,H,W), labels (N,H,W))``;
    label ids >= ``num_classes`` (the generator draws 5 classes) become background (0)."""
    from uaafusion.data.io import array_to_tensor, split_luma_chroma
    from uaafusion.data.synthetic import render_scene

    scenes = [render_scene(np.random.default_rng([seed, 7919, index]), height, width, night=index % 2 == 1,
                           name=f"bench_{index:04d}") for index in range(count)]
    labels = [torch.from_numpy(np.where(scene.label < num_classes, scene.label, 0).astype(np.int64))
              for scene in scenes]
    return ([scene.name for scene in scenes], torch.stack([array_to_tensor(scene.ir) for scene in scenes]),
            torch.stack([split_luma_chroma(scene.vi)[0] for scene in scenes]), torch.stack(labels))


def crop_boxes(count: int, height: int, width: int, crop: int, seed: int = 0) -> list[tuple[int, int, int, int]]:
    """Random ``(top, left, crop_h, crop_w)`` boxes in ``height x width`` (the whole image when ``crop``
    is 0 or larger than the image)."""
    crop_height, crop_width = (height, width) if crop <= 0 else (min(crop, height), min(crop, width))
    rng = np.random.default_rng([seed, 104729])
    return [(int(rng.integers(0, height - crop_height + 1)), int(rng.integers(0, width - crop_width + 1)),
             crop_height, crop_width) for _ in range(count)]


def _crop(tensor: torch.Tensor, boxes: list[tuple[int, int, int, int]]) -> torch.Tensor:
    return torch.stack([tensor[index, ..., top:top + height, left:left + width]
                        for index, (top, left, height, width) in enumerate(boxes)])


class TrainingBench:
    """Models, optimisers, one batch of crops and the full images they come from, on one device.

    ``labels``: ``"scene"`` (the generator's label ids) or ``"stripes"`` (every class in every image).
    """

    def __init__(self, params: Params, device: torch.device, seed: int = 0, labels: str = "scene") -> None:
        from uaafusion.attribution import WeightCache, labels_to_one_hot
        from uaafusion.losses import FusionLoss
        from uaafusion.training.builders import build_models, build_optimizer

        if labels not in ("scene", "stripes"):
            raise ValueError(f"TrainingBench labels={labels!r}: allowed scene, stripes.")
        self.params, self.device, self.labels_source = params, device, labels
        data, train, attribution = params.data, params.train, params.attribution
        self.batch_size = max(1, data.batch_size)
        height, width = max(params.synthetic.height, data.crop_size), max(params.synthetic.width, data.crop_size)
        self.full_size = (height, width)
        self.names, full_ir, full_vi, full_labels = synthetic_scenes(self.batch_size, height, width,
                                                                     data.num_classes, seed)
        if labels == "stripes":
            full_labels = stripe_labels(self.batch_size, data.num_classes, height, width)
        self.full_ir, self.full_vi = full_ir.to(device), full_vi.to(device)
        self.full_mask = labels_to_one_hot(full_labels.to(device), data.num_classes, data.ignore_index)
        self.boxes = crop_boxes(self.batch_size, height, width, data.crop_size, seed)
        self.ir, self.vi, self.mask = (_crop(full, self.boxes) for full in (self.full_ir, self.full_vi, self.full_mask))
        self.labels = _crop(full_labels, self.boxes).to(device)
        self.roi = torch.zeros_like(self.ir)
        self.fusion, self.segmenter = build_models(params, device)
        self.fusion_optimizer = build_optimizer(self.fusion, train.lr_fusion, train.weight_decay)
        self.segmenter_optimizer = build_optimizer(self.segmenter, train.lr_segmenter, train.weight_decay)
        self.loss = FusionLoss(params.loss, data.ignore_index)
        self.cache = WeightCache(steps=attribution.steps, method=attribution.method, engine=attribution.engine,
                                 internal_batch_size=attribution.internal_batch_size, scale=attribution.scale)
        self.fused: torch.Tensor | None = None

    def prepare_fusion(self) -> None:
        """Freeze the segmenter (eval), train the fusion network; fill the cache with the full images."""
        set_trainable(self.segmenter, False)
        self.segmenter.eval()
        set_trainable(self.fusion, True)
        self.fusion.train()
        self.cache.get_or_compute(self.names, self.full_ir, self.full_vi, self.full_mask, self.segmenter)

    def computed_weights(self, engine: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The crops' weights computed now, with ``engine`` (default: the params' ``attribution.engine``)."""
        from uaafusion.attribution import modality_weights

        attribution = self.params.attribution
        return modality_weights(self.segmenter, self.ir, self.vi, self.mask, attribution.steps, attribution.method,
                                attribution.internal_batch_size, engine=engine or attribution.engine,
                                scale=attribution.scale)

    def fusion_step(self, weights: tuple[torch.Tensor, torch.Tensor]) -> float:
        """One optimisation step of the fusion network (as ``fusion_epoch``); returns the loss."""
        from uaafusion.attribution import frozen_segmenter

        self.fusion_optimizer.zero_grad(set_to_none=True)
        with mixed_precision(self.params.train.amp, self.device):
            output = self.fusion(self.ir, self.vi, self.segmenter, mask=self.mask, weights=weights)
            logits = frozen_segmenter(self.segmenter)(output.fused)
            total = self.loss(output, self.ir, self.vi, logits, self.labels, self.roi)["total"]
        total.backward()
        clip_gradients(self.fusion, self.params.train.grad_clip)
        self.fusion_optimizer.step()
        return float(total.detach())

    def step_with_cache(self) -> float:
        return self.fusion_step(self.cache.get_or_compute(self.names, self.full_ir, self.full_vi, self.full_mask,
                                                          self.segmenter, crop_boxes=self.boxes))

    def prepare_segmentation(self) -> None:
        """Fuse the crops once (frozen fusion network), then train the segmenter."""
        from uaafusion.inference import fuse_luma

        set_trainable(self.fusion, False)
        with torch.no_grad():
            self.fused = fuse_luma(self.fusion, self.segmenter, self.ir, self.vi).fused.detach()
        set_trainable(self.segmenter, True)
        self.segmenter.train()

    def segmentation_step(self) -> float:
        """One optimisation step of the segmenter on the fused crops and both sources (as
        ``segmenter_epoch``); returns the loss."""
        from uaafusion.losses import segmentation_loss

        assert self.fused is not None, "call prepare_segmentation() first"
        params = self.params
        self.segmenter_optimizer.zero_grad(set_to_none=True)
        with mixed_precision(params.train.amp, self.device):
            loss = torch.stack([segmentation_loss(self.segmenter(image), self.labels, params.data.ignore_index,
                                                  params.loss.dice) for image in (self.ir, self.vi, self.fused)]).sum()
        loss.backward()
        clip_gradients(self.segmenter, params.train.grad_clip)
        self.segmenter_optimizer.step()
        return float(loss.detach())

    def case_params(self) -> dict[str, Any]:
        params = self.params
        return {
            "batch": self.batch_size, "crop_size": params.data.crop_size, "height": self.ir.shape[-2],
            "width": self.ir.shape[-1], "full_image": list(self.full_size), "num_classes": params.data.num_classes,
            "classes_present": float((self.mask.flatten(2).amax(2) > 0).sum(1).float().mean()),
            "segmenter": f"{params.model.segmenter.arch}/{params.model.segmenter.encoder}",
            "fusion_stages": params.model.fusion.stages, "fusion_features": params.model.fusion.features,
            "attribution_steps": params.attribution.steps, "attribution_engine": params.attribution.engine,
            "attribution_scale": params.attribution.scale,
            "internal_batch_size": params.attribution.internal_batch_size, "amp": bool(params.train.amp),
            "labels": self.labels_source, "device": str(self.device),
        }


def benchmark_training(params: Params, device: torch.device, repeats: int = 3, warmup: int = 1, seed: int = 0,
                       prefix: str = PARAMS_PREFIX, labels: str = "scene",
                       ) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """Time the steps of one setting. Returns ``(records, ratios)``: records ``{prefix}/fusion_step_cached``,
    ``{prefix}/fusion_step_uncached``, ``{prefix}/segmentation_step`` and, when the params' engine is
    not ``captum``, ``{prefix}/fusion_step_uncached_captum`` (the weights computed the published way,
    Captum per class); ratios ``{prefix}/cache_speedup`` (uncached / cached median, the target) and
    ``{prefix}/cache_speedup_vs_captum``."""
    bench = TrainingBench(params, device, seed, labels)
    common = bench.case_params()
    bench.prepare_fusion()
    records: dict[str, dict[str, Any]] = {}

    def timed(name: str, message: str, function: Any, **extra: Any) -> float:
        log(f"{prefix}: {message}")
        summary, _ = time_call(function, device, repeats, warmup)
        records[f"{prefix}/{name}"] = {**summary, **common, **extra,
                                       "images_per_s": bench.batch_size / summary["median_s"]}
        return summary["median_s"]

    misses = bench.cache.misses
    cached = timed("fusion_step_cached", f"fusion step with the attribution cache ({common['batch']} x "
                   f"{common['width']}x{common['height']}, {common['classes_present']:g} classes present, "
                   f"{common['attribution_steps']} steps)", bench.step_with_cache,
                   step="fusion", weights="WeightCache hit (full images, cropped)")
    if bench.cache.misses != misses:
        raise AssertionError("the weight cache missed during the cached fusion steps")
    records[f"{prefix}/fusion_step_cached"]["cache"] = bench.cache.stats()
    uncached = timed("fusion_step_uncached", "fusion step computing the attribution weights",
                     lambda: bench.fusion_step(bench.computed_weights()),
                     step="fusion", weights="modality_weights of the crops at every step")
    ratios = {f"{prefix}/cache_speedup": uncached / cached}
    if params.attribution.engine != "captum":
        captum = timed("fusion_step_uncached_captum", "fusion step computing the attribution weights with Captum "
                       "(per class)", lambda: bench.fusion_step(bench.computed_weights("captum")),
                       attribution_engine="captum", step="fusion",
                       weights="modality_weights of the crops at every step, Captum IntegratedGradients per class")
        ratios[f"{prefix}/cache_speedup_vs_captum"] = captum / cached
    bench.prepare_segmentation()  # after the fusion steps, as the stages run
    segmentation = timed("segmentation_step", "segmentation step", bench.segmentation_step,
                         step="segmentation", inputs_per_sample=3)
    records[f"{prefix}/segmentation_step"]["inputs_per_s"] = 3 * bench.batch_size / segmentation
    return records, ratios


def benchmark_training_settings(params: Params, headline: AttributionCase, device: torch.device, repeats: int = 3,
                                warmup: int = 1, seed: int = 0) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """Both settings (module docstring): the params' batch, then the batch of the attribution case
    ``headline`` with every class present."""
    records, ratios = benchmark_training(params, device, repeats, warmup, seed)
    more_records, more_ratios = benchmark_training(headline_params(params, headline), device, repeats, warmup, seed,
                                                   HEADLINE_PREFIX, "stripes")
    return {**records, **more_records}, {**ratios, **more_ratios}


def profile_steps(params: Params, device: torch.device, out: Path, row_limit: int = 30, seed: int = 0) -> Path:
    """Profile one fusion training step (cached weights) and one attribution call (``modality_weights``
    of the batch) with ``torch.profiler``; write the top operators of each (by self time on the device)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    bench = TrainingBench(params, device, seed)
    bench.prepare_fusion()
    bench.step_with_cache()  # warm-up
    bench.computed_weights()
    synchronize(device)
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    sections = []
    for title, function in (("one fusion training step (weights from the cache)", bench.step_with_cache),
                            ("one attribution call (modality_weights of the batch)", bench.computed_weights)):
        with profile(activities=activities, record_shapes=False) as profiler:
            with record_function(title):
                function()
            synchronize(device)
        table = profiler.key_averages().table(sort_by=f"self_{'cuda' if cuda else 'cpu'}_time_total",
                                              row_limit=row_limit)
        sections.append(f"## {title}\n\n{table}\n")
    machine, versions = machine_info(device), version_info()
    gpu = f", GPU {machine['cuda_device']['name']}" if machine.get("cuda_device") else ""
    header = (f"# uaafusion profile on {device} ({utc_now()})\n"
              f"# CPU {machine['cpu_model']}, {machine['usable_cores']} usable cores, "
              f"torch threads {machine['torch_threads']}{gpu}\n"
              f"# torch {versions['torch']}, smp {versions['smp']}, captum {versions['captum']}\n"
              f"# case: {bench.case_params()}\n\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(header + "\n".join(sections))
    return out
