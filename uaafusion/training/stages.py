"""Training stages as pure functions: params + a run folder in, checkpoint + metrics out.

Schedules (METHOD.md §4):
- ``alternating`` (default): pretrain the segmenter on the sources, then per round a fusion stage
  (segmenter frozen, attribution weights cached once per image) and a segmentation stage (fusion
  frozen, fused images computed once per round), then a validation on the test split.
- ``joint``: the published schedule, one fusion step and one segmenter step per batch (weights
  recomputed each step since the segmenter changes every step).

Every stage resumes: units already recorded in the run folder's state are skipped, and the state is
saved after each unit, so a killed run picks up where it stopped and ends with the same numbers.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from uaafusion.config import Params
from uaafusion.device import mixed_precision, resolve_device
from uaafusion.errors import TrainingError
from uaafusion.training.builders import build_models, build_optimizer, build_scheduler, model_spec
from uaafusion.training.state import Progress, TrainingObjects, load_state, save_atomically, save_state

if TYPE_CHECKING:
    from uaafusion.attribution import WeightCache

LOGGER = logging.getLogger(__name__)

# A sink receives (stage run name, metrics, step): the flow sends these to MLflow nested runs.
# Stage run names: "pretrain", "round-1/fusion", "round-1/segmentation", "round-1/validation", "joint".
MetricsSink = Callable[[str, dict[str, float], int], None]


def _ignore_sink(phase: str, metrics: dict[str, float], step: int) -> None:
    """Default sink: metrics only go to the run folder's history."""


@dataclass
class TrainingContext:
    """Everything a stage needs, opened from params and the run folder."""

    params: Params
    device: torch.device
    run_dir: Path
    objects: TrainingObjects
    sink: MetricsSink
    class_weights: torch.Tensor | None = None  # (C,) segmentation cross-entropy weights (loss.class_balance)
    fusion_class_weights: torch.Tensor | None = None  # (C,) the fusion stage's (loss.fusion_class_balance)

    @property
    def fusion(self) -> torch.nn.Module:
        return self.objects.fusion

    @property
    def segmenter(self) -> torch.nn.Module:
        return self.objects.segmenter

    @property
    def progress(self) -> Progress:
        return self.objects.progress

    def save(self) -> None:
        save_state(self.run_dir, self.objects)


def run_fingerprint(params: Params) -> str:
    """Short hash of everything that changes a training run's result (not retries, device, report):
    the params and the package's source code (:func:`package_source_digest`). A run folder is
    resumed only by a run with the same fingerprint, so a run of changed code starts afresh instead
    of resuming (or, when finished, re-exporting) what the old code trained."""
    relevant = params.to_dict()
    relevant.pop("device", None)
    relevant.pop("report", None)
    relevant.pop("evaluate", None)
    relevant.pop("outputs", None)
    relevant["train"].pop("retries", None)
    relevant["data"].pop("num_workers", None)
    relevant["code"] = package_source_digest()
    encoded = json.dumps(relevant, sort_keys=True).encode()
    return hashlib.sha256(encoded).hexdigest()[:12]


def source_digest(root: Path) -> str:
    """SHA-256 of every ``*.py`` file under ``root`` (relative paths and contents, in path order)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def package_source_digest() -> str:
    """:func:`source_digest` of the installed ``uaafusion`` package (computed once per process)."""
    return source_digest(Path(__file__).resolve().parents[1])


def open_training(params: Params, run_dir: Path, sink: MetricsSink | None = None) -> TrainingContext:
    """Build models and optimisers from params and restore the run folder's state if it has one."""
    device = resolve_device(params.device)
    _seed_everything(params.seed)
    fusion, segmenter = build_models(params, device)
    train = params.train
    optimizers = {
        "fusion": build_optimizer(fusion, train.lr_fusion, train.weight_decay),
        "segmenter": build_optimizer(segmenter, train.lr_segmenter, train.weight_decay),
    }
    if train.schedule == "alternating":
        fusion_epochs = train.rounds * train.fusion_epochs
        segmenter_epochs = train.pretrain_epochs + train.rounds * train.segmentation_epochs
    else:
        fusion_epochs = train.joint_epochs
        segmenter_epochs = train.pretrain_epochs + train.joint_epochs
    schedulers = {
        "fusion": build_scheduler(optimizers["fusion"], train.lr_schedule, fusion_epochs),
        "segmenter": build_scheduler(optimizers["segmenter"], train.lr_schedule, segmenter_epochs),
    }
    objects = TrainingObjects(fusion, segmenter, optimizers, schedulers, Progress())
    run_dir = Path(run_dir)
    if load_state(run_dir, objects):
        LOGGER.info("resuming from %s (%d units done)", run_dir, len(objects.progress.completed))
    (run_dir / "params.json").parent.mkdir(parents=True, exist_ok=True)
    (run_dir / "params.json").write_text(json.dumps(params.to_dict(), indent=2))
    class_weights, fusion_class_weights = (
        None if weights is None else weights.to(device) for weights in _class_weights(params, run_dir))
    return TrainingContext(params, device, run_dir, objects, sink or _ignore_sink, class_weights,
                           fusion_class_weights)


def _class_weights(params: Params, run_dir: Path) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Cross-entropy class weights ``(C,)`` from the training split's labelled pixels: the
    segmenter's (``loss.class_balance``) and the fusion stage's (``loss.fusion_class_balance``);
    None where the exponent is 0. Written to the run folder's ``class_weights.json`` with the pixel
    counts, and read back from it when the run is opened again (every stage opens it)."""
    from uaafusion.data.datasets import create_dataset
    from uaafusion.losses import class_balance_weights

    exponents = {"class_balance": params.loss.class_balance, "fusion_class_balance": params.loss.fusion_exponent}
    if all(exponent <= 0 for exponent in exponents.values()):
        return None, None
    classes = list(params.data.class_names)
    record_file = run_dir / "class_weights.json"
    record = json.loads(record_file.read_text()) if record_file.is_file() else {}
    if record.get("classes") != classes or "pixel_counts" not in record:
        counts = create_dataset(params.data, params.data.train_split, crop=False).class_pixel_counts()
        if counts.sum() == 0:
            keys = " and ".join(f"loss.{key} = {value}" for key, value in exponents.items() if value > 0)
            raise TrainingError(f"{keys}: the training split {params.data.train_split!r} has no labelled pixel "
                                "to count; set them to 0 or add labels.")
        record = {"classes": classes, "pixel_counts": counts.tolist()}
    counts = np.asarray(record["pixel_counts"], dtype=np.float64)
    weights = {key: class_balance_weights(counts, exponent) if exponent > 0 else None
               for key, exponent in exponents.items()}
    # Counted when this run folder was first opened (its params hash fixes the data); the weights follow from the counts.
    updated = {**record, "class_balance": exponents["class_balance"], "weights": _listed(weights["class_balance"]),
               "fusion_class_balance": exponents["fusion_class_balance"],
               "fusion_weights": _listed(weights["fusion_class_balance"])}
    if updated != record:
        record_file.write_text(json.dumps(updated, indent=2))
    for key, value in weights.items():
        if value is not None:
            LOGGER.info("%s class weights (%s %s): %s", "fusion-stage" if key.startswith("fusion") else "segmentation",
                        key, exponents[key], dict(zip(classes, value.round(3).tolist())))
    return tuple(None if value is None else torch.tensor(value, dtype=torch.float32)  # type: ignore[return-value]
                 for value in weights.values())


def _listed(weights: np.ndarray | None) -> list[float] | None:
    return None if weights is None else weights.tolist()


# --------------------------------------------------------------------------------------------
# Stage functions
# --------------------------------------------------------------------------------------------


def pretrain_segmenter(params: Params, run_dir: Path, sink: MetricsSink | None = None) -> dict[str, float]:
    """Pretrain the segmenter on the infrared and visible sources (``train.pretrain_epochs``)."""
    context = open_training(params, run_dir, sink)
    last: dict[str, float] = {}
    for epoch in range(1, params.train.pretrain_epochs + 1):
        unit = f"pretrain/epoch-{epoch}"
        if context.progress.done(unit):
            continue
        last = _segmenter_epoch(context, unit, fused_store=None)
        _finish_unit(context, unit, "pretrain", {"epoch": epoch}, last, scheduler="segmenter")
    return last


def fusion_stage(params: Params, run_dir: Path, round_index: int, sink: MetricsSink | None = None) -> dict[str, float]:
    """Train the fusion network for ``train.fusion_epochs`` with the segmenter frozen."""
    context = open_training(params, run_dir, sink)
    units = [f"round-{round_index}/fusion/epoch-{epoch}" for epoch in range(1, params.train.fusion_epochs + 1)]
    if all(context.progress.done(unit) for unit in units):
        return {}
    masks = _round_masks(context, round_index)
    weights = _round_weights(context, round_index, masks)
    last: dict[str, float] = {}
    for epoch, unit in enumerate(units, start=1):
        if context.progress.done(unit):
            continue
        last = _fusion_epoch(context, unit, weights, masks)
        _finish_unit(context, unit, "fusion", {"round": round_index, "epoch": epoch}, last, scheduler="fusion")
    return last


def segmentation_stage(params: Params, run_dir: Path, round_index: int, sink: MetricsSink | None = None) -> dict[str, float]:
    """Train the segmenter on fused images (fusion frozen, computed once) and the sources."""
    context = open_training(params, run_dir, sink)
    units = [f"round-{round_index}/segmentation/epoch-{epoch}" for epoch in range(1, params.train.segmentation_epochs + 1)]
    if all(context.progress.done(unit) for unit in units):
        return {}
    if params.train.fused_mask == "labels":
        masks = _round_masks(context, round_index)
        fused_store = _fused_image_store(context, _round_weights(context, round_index, masks), masks)
    else:
        fused_store = _fused_image_store(context, None)
    last: dict[str, float] = {}
    for epoch, unit in enumerate(units, start=1):
        if context.progress.done(unit):
            continue
        last = _segmenter_epoch(context, unit, fused_store=fused_store)
        _finish_unit(context, unit, "segmentation", {"round": round_index, "epoch": epoch}, last, scheduler="segmenter")
    return last


def joint_stage(params: Params, run_dir: Path, sink: MetricsSink | None = None) -> dict[str, float]:
    """The published one-step schedule: per batch a fusion step, then a segmenter step."""
    context = open_training(params, run_dir, sink)
    last: dict[str, float] = {}
    for epoch in range(1, params.train.joint_epochs + 1):
        unit = f"joint/epoch-{epoch}"
        if context.progress.done(unit):
            continue
        last = _joint_epoch(context, unit)
        context.objects.schedulers["fusion"].step()
        _finish_unit(context, unit, "joint", {"epoch": epoch}, last, scheduler="segmenter")
    return last


def validation_stage(params: Params, run_dir: Path, round_index: int, sink: MetricsSink | None = None,
                     samples_dir: Path | None = None) -> dict[str, float]:
    """Fuse the test split and measure segmentation (mIoU on fused images) and fusion quality."""
    context = open_training(params, run_dir, sink)
    unit = f"round-{round_index}/validation"
    for row in context.progress.history:
        if row.get("unit") == unit:
            return {key: value for key, value in row.items() if isinstance(value, float)}
    metrics = validate(context, samples_dir=samples_dir)
    _finish_unit(context, unit, "validation", {"round": round_index}, metrics, scheduler=None)
    return metrics


def training_units(params: Params) -> list[tuple[str, int]]:
    """The stage calls of a whole training run in order: ``[("pretrain", 0), ("fusion", 1), ...]``."""
    units: list[tuple[str, int]] = [("pretrain", 0)]
    if params.train.schedule == "joint":
        return units + [("joint", 0), ("validation", 1)]
    for round_index in range(1, params.train.rounds + 1):
        units += [("fusion", round_index), ("segmentation", round_index), ("validation", round_index)]
    return units


def run_training(params: Params, run_dir: Path, sink: MetricsSink | None = None) -> dict[str, float]:
    """All stages in order (what the pipeline's train step does); returns the last validation."""
    metrics: dict[str, float] = {}
    for name, round_index in training_units(params):
        metrics = run_stage(params, run_dir, name, round_index, sink) or metrics
    return metrics


def run_stage(params: Params, run_dir: Path, name: str, round_index: int, sink: MetricsSink | None = None) -> dict[str, float]:
    """Dispatch one stage by name (``pretrain|fusion|segmentation|validation|joint``)."""
    if name == "pretrain":
        return pretrain_segmenter(params, run_dir, sink)
    if name == "fusion":
        return fusion_stage(params, run_dir, round_index, sink)
    if name == "segmentation":
        return segmentation_stage(params, run_dir, round_index, sink)
    if name == "validation":
        return validation_stage(params, run_dir, round_index, sink)
    if name == "joint":
        return joint_stage(params, run_dir, sink)
    raise ValueError(f"unknown training stage {name!r}")


def export_models(params: Params, run_dir: Path, out_path: Path) -> Path:
    """Write the trained models (state dicts + constructor spec, any input size) to ``out_path``."""
    from uaafusion.models.checkpoint import save_models

    context = open_training(params, run_dir)
    extra = {"fingerprint": run_fingerprint(params), "units": len(context.progress.completed)}
    save_models(out_path, context.fusion, context.segmenter, model_spec(params), extra=extra)
    return out_path


def read_history(run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """``{"units": [one row per completed unit], "steps": [one row per optimisation step]}``."""
    path = Path(run_dir) / "history.json"
    return json.loads(path.read_text()) if path.is_file() else {"units": [], "steps": []}


# --------------------------------------------------------------------------------------------
# Epochs
# --------------------------------------------------------------------------------------------


def _segmenter_epoch(context: TrainingContext, unit: str, fused_store: dict[str, torch.Tensor] | None) -> dict[str, float]:
    """One epoch of the segmenter on the sources (and on fused images when ``fused_store`` is given)."""
    params = context.params
    segmenter, fusion = context.segmenter, context.fusion
    _freeze(fusion)
    _unfreeze(segmenter)
    segmenter.train()
    optimizer = context.objects.optimizers["segmenter"]
    totals: dict[str, float] = {}
    batches = 0
    mixing = _source_mixing(context, unit)
    for batch in _train_batches(context, unit):
        ir, vi, labels = batch["ir"], batch["vi"], batch["label"]
        inputs = {"ir": ir, "vi": vi}
        if fused_store is not None:
            inputs["fused"] = _crop_stored(fused_store, batch, context.device)
        if mixing is not None:
            inputs["mixed"] = mixing(ir, vi)
        optimizer.zero_grad(set_to_none=True)
        with _autocast(context):
            loss, losses = _segmenter_loss(context, inputs, labels)
        _check_finite(context, unit, loss)
        loss.backward()
        _clip(segmenter, params.train.grad_clip)
        optimizer.step()
        terms = {"loss": loss.item(), **{f"loss_{name}": value.item() for name, value in losses.items()}}
        _log_step(context, unit, terms)
        for key, value in terms.items():
            totals[key] = totals.get(key, 0.0) + value
        batches += 1
    return {key: value / max(batches, 1) for key, value in totals.items()}


def _segmenter_loss(context: TrainingContext, inputs: Mapping[str, torch.Tensor],
                    labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The segmenter's training loss on every input image ``(B, 1, H, W)`` against the same ``labels``.

    Returns ``(total, per input)``: each input's segmentation loss (cross-entropy, Dice per
    ``loss.dice``, the class weights), summed with weight 1, except ``"mixed"`` (the blend of the
    sources) with ``train.mixed_sources`` and ``"vi"`` with ``train.visible_weight``. An input of
    weight 0 is not run at all (and has no entry in ``per input``). With ``train.visible_labels:
    background`` the visible image's loss ignores the object pixels (:func:`background_only`).
    """
    from uaafusion.losses import segmentation_loss

    params = context.params
    ignore_index = params.data.ignore_index
    special_weights = {"mixed": params.train.mixed_sources, "vi": params.train.visible_weight}
    weights = {name: special_weights.get(name, 1.0) for name in inputs}
    targets = {name: labels for name in inputs}
    if params.train.visible_labels == "background":
        targets["vi"] = background_only(labels, ignore_index)
    losses = {name: segmentation_loss(context.segmenter(image), targets[name], ignore_index, params.loss.dice,
                                      context.class_weights)
              for name, image in inputs.items() if weights[name] > 0}
    total = torch.stack([weights[name] * value for name, value in losses.items()]).sum()
    return total, losses


def background_only(labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """``labels`` ``int64 (B, H, W)`` with every object pixel (class > 0, the background is class 0)
    set to ``ignore_index``: the background stays labelled, the objects are not scored."""
    return labels.masked_fill((labels != 0) & (labels != ignore_index), ignore_index)


def _fusion_epoch(context: TrainingContext, unit: str, weights: Mapping[str, torch.Tensor],
                  masks: Mapping[str, torch.Tensor] | None = None) -> dict[str, float]:
    """One epoch of the fusion network; the segmenter is frozen but passes gradients to ``F``.

    The class mask behind the attention is the crop's labels, or (``masks``: this round's
    :func:`_round_masks`, ``train.fusion_mask: predicted``) the crop of the full image's predicted mask.
    """
    from uaafusion.attribution import frozen_segmenter, labels_to_one_hot
    from uaafusion.losses import FusionLoss

    params = context.params
    fusion, segmenter = context.fusion, context.segmenter
    _freeze(segmenter)
    segmenter.eval()
    frozen = frozen_segmenter(segmenter)  # the segmenter does not change during this stage
    _unfreeze(fusion)
    fusion.train()
    loss_function = FusionLoss(params.loss, params.data.ignore_index, context.fusion_class_weights)
    optimizer = context.objects.optimizers["fusion"]
    totals: dict[str, float] = {}
    batches = 0
    for batch in _train_batches(context, unit):
        ir, vi, labels, roi = batch["ir"], batch["vi"], batch["label"], batch["roi"]
        weight_ir = _crop_stored(weights, batch, context.device)
        mask_ids = labels if masks is None else _crop_stored(masks, batch, context.device)[:, 0].long()
        mask = labels_to_one_hot(mask_ids, params.data.num_classes, params.data.ignore_index)
        optimizer.zero_grad(set_to_none=True)
        with _autocast(context):
            output = fusion(ir, vi, segmenter, mask=mask, weights=(weight_ir, 1.0 - weight_ir))
            logits = frozen(output.fused)
            terms = loss_function(output, ir, vi, logits, labels, roi)
        loss = terms["total"]
        _check_finite(context, unit, loss)
        loss.backward()
        _clip(fusion, params.train.grad_clip)
        optimizer.step()
        values = {f"loss_{key}" if key != "total" else "loss": float(value.detach()) for key, value in terms.items()}
        _log_step(context, unit, values)
        for key, value in values.items():
            totals[key] = totals.get(key, 0.0) + value
        batches += 1
    _unfreeze(segmenter)
    return {key: value / max(batches, 1) for key, value in totals.items()}


def _joint_epoch(context: TrainingContext, unit: str) -> dict[str, float]:
    """One epoch of the joint schedule: fusion step (weights recomputed), then segmenter step."""
    from uaafusion.attribution import frozen_segmenter, modality_weights
    from uaafusion.losses import FusionLoss

    params = context.params
    fusion, segmenter = context.fusion, context.segmenter
    loss_function = FusionLoss(params.loss, params.data.ignore_index, context.fusion_class_weights)
    fusion_optimizer = context.objects.optimizers["fusion"]
    segmenter_optimizer = context.objects.optimizers["segmenter"]
    totals: dict[str, float] = {}
    batches = 0
    mixing = _source_mixing(context, unit)
    for batch in _train_batches(context, unit):
        ir, vi, labels, roi = batch["ir"], batch["vi"], batch["label"], batch["roi"]
        # Fusion step, segmenter frozen.
        _freeze(segmenter)
        segmenter.eval()
        _unfreeze(fusion)
        fusion.train()
        if params.train.fusion_mask == "labels":
            mask = attribution_mask(fusion, segmenter, ir, vi, labels, params.data.num_classes, params.data.ignore_index)
        else:
            mask = fusion.predicted_mask(segmenter, ir, vi)
        weight_ir, weight_vi = modality_weights(segmenter, ir, vi, mask, params.attribution.steps,
                                                method=params.attribution.method,
                                                internal_batch_size=params.attribution.internal_batch_size,
                                                engine=params.attribution.engine, scale=params.attribution.scale)
        fusion_optimizer.zero_grad(set_to_none=True)
        with _autocast(context):
            output = fusion(ir, vi, segmenter, mask=mask, weights=(weight_ir, weight_vi))
            terms = loss_function(output, ir, vi, frozen_segmenter(segmenter)(output.fused), labels, roi)
        _check_finite(context, unit, terms["total"])
        terms["total"].backward()
        _clip(fusion, params.train.grad_clip)
        fusion_optimizer.step()
        # Segmenter step, fusion frozen, fused image detached.
        _freeze(fusion)
        _unfreeze(segmenter)
        segmenter.train()
        fused = output.fused.detach()
        segmenter_optimizer.zero_grad(set_to_none=True)
        inputs = {"fused": fused, "ir": ir, "vi": vi}
        if mixing is not None:
            inputs["mixed"] = mixing(ir, vi)
        with _autocast(context):
            segmenter_loss, _ = _segmenter_loss(context, inputs, labels)
        _check_finite(context, unit, segmenter_loss)
        segmenter_loss.backward()
        _clip(segmenter, params.train.grad_clip)
        segmenter_optimizer.step()
        values = {"loss": float(terms["total"].detach()), "loss_segmenter": float(segmenter_loss.detach())}
        _log_step(context, unit, values)
        for key, value in values.items():
            totals[key] = totals.get(key, 0.0) + value
        batches += 1
    _unfreeze(fusion)
    return {key: value / max(batches, 1) for key, value in totals.items()}


def validate(context: TrainingContext, samples_dir: Path | None = None) -> dict[str, float]:
    """Fuse every test image (full size) and score it: mIoU of the segmenter on fused images
    and on each source, and the mean fusion metrics. Optionally saves sample images."""
    from uaafusion.data.io import tensor_to_array, write_png
    from uaafusion.inference import fuse_luma
    from uaafusion.metrics.fusion import fusion_metrics
    from uaafusion.metrics.segmentation import ConfusionMatrix

    params = context.params
    dataset = _dataset(context, params.data.test_split, crop=False)
    confusions = {source: ConfusionMatrix(params.data.num_classes, params.data.ignore_index)
                  for source in ("fused", "ir", "vi")}
    fusion_totals: dict[str, float] = {}
    context.segmenter.eval()
    for index in tqdm(range(len(dataset)), desc="validation", leave=False, disable=None):
        sample = dataset[index]
        ir = sample["ir"][None].to(context.device)
        vi = sample["vi"][None].to(context.device)
        output = fuse_luma(context.fusion, context.segmenter, ir, vi)
        with torch.no_grad():
            for source, image in (("fused", output.fused), ("ir", ir), ("vi", vi)):
                prediction = context.segmenter(image).argmax(dim=1)[0].cpu().numpy()
                confusions[source].update(prediction, sample["label"].numpy())
        fused_array = tensor_to_array(output.fused[0])
        scores = fusion_metrics(fused_array.astype(np.float64), tensor_to_array(sample["ir"]).astype(np.float64),
                                tensor_to_array(sample["vi"]).astype(np.float64))
        for key, value in scores.items():
            fusion_totals[key] = fusion_totals.get(key, 0.0) + float(value)
        if samples_dir is not None and index < params.report.samples:
            write_png(Path(samples_dir) / f"{sample['name']}_fused.png", fused_array)
            write_png(Path(samples_dir) / f"{sample['name']}_weight_ir.png", tensor_to_array(output.weight_ir[0]))
    metrics = {key: value / max(len(dataset), 1) for key, value in fusion_totals.items()}
    metrics["mIoU"] = float(confusions["fused"].miou())
    metrics["mIoU_ir"] = float(confusions["ir"].miou())
    metrics["mIoU_vi"] = float(confusions["vi"].miou())
    return metrics


# --------------------------------------------------------------------------------------------
# Per-round stores: attribution weights and fused images of the full training images
# --------------------------------------------------------------------------------------------


def _modality_weight_store(context: TrainingContext, masks: Mapping[str, torch.Tensor] | None = None,
                           ) -> "WeightCache":
    """Infrared weights ``(1, H, W)`` of every full training image, computed once for this round,
    with the label mask (``masks`` None) or the stored class maps ``masks`` (:func:`_round_masks`).

    The segmenter is frozen for the whole fusion stage, so the weights are fixed: computing them
    once per image (batched over same-size images) replaces an attribution per step (METHOD.md §1).
    """
    from uaafusion.attribution import WeightCache

    params = context.params
    segmenter = context.segmenter
    segmenter.eval()
    cache = WeightCache(steps=params.attribution.steps, method=params.attribution.method,
                        internal_batch_size=params.attribution.internal_batch_size,
                        engine=params.attribution.engine, scale=params.attribution.scale)
    dataset = _dataset(context, params.data.train_split, crop=False)
    chunk = max(1, params.data.batch_size)
    for start in tqdm(range(0, len(dataset), chunk), desc="attribution weights", leave=False, disable=None):
        samples = [dataset[index] for index in range(start, min(start + chunk, len(dataset)))]
        names, ir_list, vi_list, class_masks = [], [], [], []
        for sample in samples:
            ir = sample["ir"][None].to(context.device)
            vi = sample["vi"][None].to(context.device)
            class_masks.append(_full_image_mask(context, sample, ir, vi, masks)[0])
            names.append(sample["name"])
            ir_list.append(ir[0])
            vi_list.append(vi[0])
        cache.get_or_compute(names, ir_list, vi_list, class_masks, segmenter)
    return cache


def _full_image_mask(context: TrainingContext, sample: dict[str, Any], ir: torch.Tensor, vi: torch.Tensor,
                     masks: Mapping[str, torch.Tensor] | None) -> torch.Tensor:
    """One-hot ``(1, C, H, W)`` class mask of a full training image for the fusion stage: from its
    labels (:func:`attribution_mask`) or, given ``masks``, from its stored predicted class map."""
    from uaafusion.attribution import labels_to_one_hot

    params = context.params
    if masks is not None:
        class_map = masks[sample["name"]].long().to(context.device)  # (1, H, W)
        return labels_to_one_hot(class_map, params.data.num_classes, params.data.ignore_index)
    labels = sample["label"][None].to(context.device)
    return attribution_mask(context.fusion, context.segmenter, ir, vi, labels, params.data.num_classes,
                            params.data.ignore_index)


def _round_masks(context: TrainingContext, round_index: int) -> Mapping[str, torch.Tensor] | None:
    """This round's fusion-stage class maps ``(1, H, W)`` (class ids) of the full training images when
    ``train.fusion_mask`` is ``predicted``: ``argmax`` of the model's inference mask
    (:meth:`~uaafusion.models.unfolding.UnfoldingFusionNet.predicted_mask`), the mask ``uaafusion fuse``
    uses; None for ``labels``. Computed once per round (the segmenter is frozen from the start of the
    fusion stage to the start of the segmentation stage) and kept in the run folder for a resume.
    """
    if context.params.train.fusion_mask == "labels":
        return None

    def compute() -> dict[str, torch.Tensor]:
        fusion, segmenter = context.fusion, context.segmenter
        segmenter.eval()
        dataset = _dataset(context, context.params.data.train_split, crop=False)
        store: dict[str, torch.Tensor] = {}
        dtype = torch.uint8 if context.params.data.num_classes <= 256 else torch.int64  # class ids, compactly
        for index in tqdm(range(len(dataset)), desc="predicted masks", leave=False, disable=None):
            sample = dataset[index]
            ir = sample["ir"][None].to(context.device)
            vi = sample["vi"][None].to(context.device)
            class_map = fusion.predicted_mask(segmenter, ir, vi).argmax(dim=1)
            store[sample["name"]] = class_map.to(dtype).cpu()
        return store

    return _kept_in_run_folder(context.run_dir / f"masks-round-{round_index}.pt", compute)


def _round_weights(context: TrainingContext, round_index: int, masks: Mapping[str, torch.Tensor] | None,
                   ) -> Mapping[str, torch.Tensor]:
    """This round's weights: loaded from the run folder, or computed (with the round's ``masks``,
    :func:`_round_masks`) and saved there.

    The segmenter does not change from the start of a round's fusion stage to the start of its
    segmentation stage, so both stages (and a resumed run) share one computation.
    """
    def compute() -> dict[str, torch.Tensor]:
        cache = _modality_weight_store(context, masks)
        return {name: cache[name] for name in _dataset(context, context.params.data.train_split, crop=False).names}

    return _kept_in_run_folder(context.run_dir / f"weights-round-{round_index}.pt", compute)


def _kept_in_run_folder(path: Path, compute: Callable[[], dict[str, torch.Tensor]]) -> Mapping[str, torch.Tensor]:
    """A per-round store of tensors by image name: loaded from ``path`` when a run (or the round's
    other stage) has kept it there, else made by ``compute()`` and kept there for the next reader."""
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)
    store = compute()
    save_atomically(store, path)
    return store


def _fused_image_store(context: TrainingContext, weights: Mapping[str, torch.Tensor] | None,
                       masks: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Fused image ``(1, H, W)`` of every full training image from the frozen fusion network.

    ``weights`` (this round's weights) given: fused with the fusion stage's mask (``train.fused_mask:
    labels``, the default): the label mask, or the round's predicted ``masks`` with
    ``train.fusion_mask: predicted``; the label regions then show in the fused images
    (``experiments/mask_source.py``). None: fused as inference does, from the
    segmenter's own mask (the model's ``inference_mask``; ``train.fused_mask: predicted``), so the segmenter
    trains on the kind of fused image it is evaluated on, with no trace of the labels.
    """
    from uaafusion.inference import fuse_luma

    params = context.params
    fusion, segmenter = context.fusion, context.segmenter
    fusion.eval()
    segmenter.eval()
    store: dict[str, torch.Tensor] = {}
    dataset = _dataset(context, params.data.train_split, crop=False)
    for index in tqdm(range(len(dataset)), desc="fusing training images", leave=False, disable=None):
        sample = dataset[index]
        ir = sample["ir"][None].to(context.device)
        vi = sample["vi"][None].to(context.device)
        if weights is None:
            with torch.no_grad():
                output = fuse_luma(fusion, segmenter, ir, vi)
        else:
            mask = _full_image_mask(context, sample, ir, vi, masks)
            weight_ir = weights[sample["name"]][None].to(context.device)
            with torch.no_grad():
                output = fusion(ir, vi, segmenter, mask=mask, weights=(weight_ir, 1.0 - weight_ir))
        store[sample["name"]] = output.fused[0].detach().cpu()
    return store


def _crop_stored(store: Mapping[str, torch.Tensor], batch: dict[str, Any], device: torch.device) -> torch.Tensor:
    """Crop each sample's stored full-image map with the sample's crop box -> ``(B, 1, h, w)``.

    Crops reaching past the image (padded samples) are reflect-padded, as the dataset pads images.
    """
    from uaafusion.data.datasets import crop_padded

    height, width = batch["ir"].shape[-2:]
    # torch.stack makes the one contiguous copy (the crops may be strided views of the stored maps).
    crops = [torch.from_numpy(crop_padded(store[name].numpy(), tuple(int(value) for value in box), (height, width)))
             for name, box in zip(batch["name"], batch["crop"])]
    return torch.stack(crops).to(device)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def attribution_mask(fusion: torch.nn.Module, segmenter: torch.nn.Module, ir: torch.Tensor, vi: torch.Tensor,
                     labels: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """One-hot class mask ``(B, C, H, W)`` for the fusion stage's attribution from ``labels (B, H, W)``;
    an image without any label gets the fusion model's inference mask
    (:meth:`~uaafusion.models.unfolding.UnfoldingFusionNet.predicted_mask`), the one ``uaafusion fuse`` uses."""
    from uaafusion.attribution import labels_to_one_hot

    mask = labels_to_one_hot(labels, num_classes, ignore_index)
    unlabeled = (labels == ignore_index).flatten(1).all(dim=1)
    if bool(unlabeled.any()):
        predicted_mask = fusion.predicted_mask(segmenter, ir, vi).to(mask.dtype)
        mask = torch.where(unlabeled[:, None, None, None], predicted_mask, mask)
    return mask


def _dataset(context: TrainingContext, split: str, crop: bool) -> Dataset:
    from uaafusion.data.datasets import create_dataset

    return create_dataset(context.params.data, split, crop=crop, seed=context.params.seed)


def _unit_seed(params: Params, unit: str) -> int:
    """The random seed of one training unit: the run's seed and the unit id, nothing else (resume)."""
    return params.seed * 1_000_003 + int(hashlib.sha256(unit.encode()).hexdigest()[:8], 16)


def _source_mixing(context: TrainingContext, unit: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """``train.mixed_sources > 0``: a function ``(ir, vi) (B, 1, H, W) -> a I + (1 - a) V``, one
    ``a ~ U(0, 1)`` per sample, drawn from a generator seeded by the unit (a resumed unit draws the
    same blends); ``None`` when off."""
    if context.params.train.mixed_sources <= 0:
        return None
    generator = torch.Generator().manual_seed(_unit_seed(context.params, unit) + 1)

    def mix(ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
        share = torch.rand(ir.shape[0], 1, 1, 1, generator=generator).to(ir)
        return share * ir + (1.0 - share) * vi

    return mix


def _train_batches(context: TrainingContext, unit: str) -> Iterator[dict[str, Any]]:
    """Batches of training crops; order and crops depend only on the seed and the unit id."""
    params = context.params
    unit_seed = _unit_seed(params, unit)
    dataset = _dataset(context, params.data.train_split, crop=True)
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(unit_seed)
    generator = torch.Generator().manual_seed(unit_seed)
    batch_size = min(params.data.batch_size, len(dataset))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator,
                        drop_last=len(dataset) >= 2 * batch_size, num_workers=params.data.num_workers,
                        collate_fn=getattr(dataset, "collate", None))
    for batch in tqdm(loader, desc=unit, leave=False, disable=None):
        yield {key: value.to(context.device) if isinstance(value, torch.Tensor) and key != "crop" else value
               for key, value in batch.items()}


def _finish_unit(context: TrainingContext, unit: str, phase: str, where: dict[str, int],
                 metrics: dict[str, float], scheduler: str | None) -> None:
    if scheduler is not None:
        context.objects.schedulers[scheduler].step()
    row = {"unit": unit, "phase": phase, "step": context.progress.global_step, **where,
           **{key: float(value) for key, value in metrics.items()}}
    context.progress.history.append(row)
    context.progress.completed.append(unit)
    context.save()
    (context.run_dir / "history.json").write_text(json.dumps(
        {"units": context.progress.history, "steps": context.progress.steps}, indent=1))
    context.sink(stage_run_name(unit),
                 {f"epoch_{key}" if phase != "validation" else key: value for key, value in metrics.items()},
                 context.progress.global_step)
    LOGGER.info("%s: %s", unit, ", ".join(f"{key}={value:.4g}" for key, value in metrics.items()))


def _log_step(context: TrainingContext, unit: str, values: dict[str, float]) -> None:
    context.progress.global_step += 1
    run_name = stage_run_name(unit)
    context.progress.steps.append({"step": context.progress.global_step, "stage": run_name, **values})
    context.sink(run_name, values, context.progress.global_step)


def stage_run_name(unit: str) -> str:
    """``"round-1/fusion/epoch-2"`` -> ``"round-1/fusion"``; ``"pretrain/epoch-1"`` -> ``"pretrain"``."""
    parts = unit.split("/")
    return "/".join(part for part in parts if not part.startswith("epoch-"))


def _check_finite(context: TrainingContext, unit: str, loss: torch.Tensor) -> None:
    if not bool(torch.isfinite(loss.detach()).all()):
        raise TrainingError(
            f"{unit}: the loss became {float(loss.detach())} at step {context.progress.global_step + 1}. "
            f"Training stopped; the last good checkpoint is kept in {context.run_dir}. Lower "
            "train.lr_fusion / train.lr_segmenter, set train.grad_clip > 0, or check the inputs for NaN."
        )


def _clip(module: torch.nn.Module, max_norm: float) -> None:
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm)


def _autocast(context: TrainingContext) -> AbstractContextManager[None]:
    return mixed_precision(context.params.train.amp, context.device)


def _freeze(module: torch.nn.Module) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(False)


def _unfreeze(module: torch.nn.Module) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(True)


def _seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
