"""Training stages as pure functions: params + a run folder in, checkpoint + metrics out.

Schedules (docs/method.md §4):
- ``alternating`` (default): pretrain the segmenter on the sources, then per round a fusion stage
  (segmenter frozen, attribution weights cached once per image) and a segmentation stage (fusion
  frozen, fused images computed once per round), then a validation on the test split.
- ``joint``: the published schedule, one fusion step and one segmenter step per batch (weights
  recomputed each step since the segmenter changes every step).

Every stage resumes: units already recorded in the run folder's state are skipped, and the state is
saved after each unit, so a killed run picks up where it stopped and ends with the same numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from uaafusion import ddp
from uaafusion.config import Params
from uaafusion.training.builders import model_spec
from uaafusion.training.context import MetricsSink, open_training, run_fingerprint
from uaafusion.training.epochs import fusion_epoch, joint_epoch, segmenter_epoch
from uaafusion.training.loop import finish_unit
from uaafusion.training.round_stores import fused_image_store, round_weights
from uaafusion.training.validation import validate


def pretrain_segmenter(params: Params, run_dir: Path, sink: MetricsSink | None = None) -> dict[str, float]:
    """Pretrain the segmenter on the infrared and visible sources (``train.pretrain_epochs``)."""
    context = open_training(params, run_dir, sink)
    last: dict[str, float] = {}
    for epoch in range(1, params.train.pretrain_epochs + 1):
        unit = f"pretrain/epoch-{epoch}"
        if context.progress.done(unit):
            continue
        last = segmenter_epoch(context, unit, fused_store=None)
        finish_unit(context, unit, "pretrain", {"epoch": epoch}, last, scheduler="segmenter")
    return last


def fusion_stage(params: Params, run_dir: Path, round_index: int, sink: MetricsSink | None = None) -> dict[str, float]:
    """Train the fusion network for ``train.fusion_epochs`` with the segmenter frozen."""
    context = open_training(params, run_dir, sink)
    units = [f"round-{round_index}/fusion/epoch-{epoch}" for epoch in range(1, params.train.fusion_epochs + 1)]
    if all(context.progress.done(unit) for unit in units):
        return {}
    weights = round_weights(context, round_index)
    last: dict[str, float] = {}
    for epoch, unit in enumerate(units, start=1):
        if context.progress.done(unit):
            continue
        last = fusion_epoch(context, unit, weights)
        finish_unit(context, unit, "fusion", {"round": round_index, "epoch": epoch}, last, scheduler="fusion")
    return last


def segmentation_stage(params: Params, run_dir: Path, round_index: int, sink: MetricsSink | None = None) -> dict[str, float]:
    """Train the segmenter on fused images (fusion frozen, computed once with the round's weights and
    the label mask, as the fusion stage fused them) and on the sources."""
    context = open_training(params, run_dir, sink)
    units = [f"round-{round_index}/segmentation/epoch-{epoch}" for epoch in range(1, params.train.segmentation_epochs + 1)]
    if all(context.progress.done(unit) for unit in units):
        return {}
    fused_store = fused_image_store(context, round_weights(context, round_index))
    last: dict[str, float] = {}
    for epoch, unit in enumerate(units, start=1):
        if context.progress.done(unit):
            continue
        last = segmenter_epoch(context, unit, fused_store=fused_store)
        finish_unit(context, unit, "segmentation", {"round": round_index, "epoch": epoch}, last, scheduler="segmenter")
    return last


def joint_stage(params: Params, run_dir: Path, sink: MetricsSink | None = None) -> dict[str, float]:
    """The published one-step schedule: per batch a fusion step, then a segmenter step."""
    context = open_training(params, run_dir, sink)
    last: dict[str, float] = {}
    for epoch in range(1, params.train.joint_epochs + 1):
        unit = f"joint/epoch-{epoch}"
        if context.progress.done(unit):
            continue
        last = joint_epoch(context, unit)
        context.objects.schedulers["fusion"].step()
        finish_unit(context, unit, "joint", {"epoch": epoch}, last, scheduler="segmenter")
    return last


def validation_stage(params: Params, run_dir: Path, round_index: int, sink: MetricsSink | None = None) -> dict[str, float]:
    """Fuse the test split and measure segmentation (mIoU on fused images) and fusion quality; the
    sample panels go to :func:`sample_panels_dir`."""
    context = open_training(params, run_dir, sink)
    unit = f"round-{round_index}/validation"
    for row in context.progress.history:
        if row.get("unit") == unit:
            return {key: value for key, value in row.items() if isinstance(value, float)}
    # One process validates (the test split is small); the others wait for its metrics.
    metrics = ddp.from_main(validate(context, samples_dir=sample_panels_dir(run_dir, round_index)) if ddp.is_main() else {})
    finish_unit(context, unit, "validation", {"round": round_index}, metrics, scheduler=None)
    return metrics


def sample_panels_dir(run_dir: Path, round_index: int) -> Path:
    """Where the validation of round ``round_index`` writes its sample panels (``NAME.png``)."""
    return Path(run_dir) / "samples" / f"round-{round_index}"


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
