"""The pieces every epoch shares: seeded batches, step and unit bookkeeping, NaN checks, freezing.

A unit is an epoch of a stage (``"round-1/fusion/epoch-2"``) or a validation
(``"round-1/validation"``); its data order and crops depend only on the run's seed and the unit id,
so a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler
from tqdm import tqdm

from uaafusion import ddp
from uaafusion.config import Params
from uaafusion.device import mixed_precision
from uaafusion.errors import TrainingError
from uaafusion.training.context import TrainingContext
from uaafusion.integrity import write_text_atomically

LOGGER = logging.getLogger(__name__)


def loss_targets(batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """The fusion losses' ``(ir, vi)`` targets ``(B, 1, H, W)``: the clean crops when the batch was
    degraded (degradation-aware training), else the inputs themselves."""
    return batch.get("ir_clean", batch["ir"]), batch.get("vi_clean", batch["vi"])


def degradation_shares(params: Params, batch: dict[str, Any]) -> dict[str, float]:
    """``{"degraded_<kind>": share of the batch}`` for "clean" and each of ``degrade.kinds`` (logged per
    step and per epoch); empty when training is not degradation-aware."""
    kinds = batch.get("degradation")
    if kinds is None:
        return {}
    return {f"degraded_{kind}": sum(item == kind for item in kinds) / len(kinds)
            for kind in ("clean", *params.degrade.kinds)}


def unit_seed(params: Params, unit: str) -> int:
    """The random seed of one training unit: the run's seed and the unit id, nothing else (resume)."""
    return params.seed * 1_000_003 + int(hashlib.sha256(unit.encode()).hexdigest()[:8], 16)


def train_batches(context: TrainingContext, unit: str) -> Iterator[dict[str, Any]]:
    """Batches of training crops on the run's device; order and crops depend only on the seed and the unit id."""
    params = context.params
    seed = unit_seed(params, unit)
    dataset = context.dataset(params.data.train_split, crop=True)
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(seed)
    generator = torch.Generator().manual_seed(seed)
    batch_size = min(params.data.batch_size, len(dataset))
    global_batches = BatchSampler(RandomSampler(dataset, generator=generator), batch_size,
                                  drop_last=len(dataset) >= 2 * batch_size)
    current = ddp.world()
    # The loader draws from the generator as DataLoader(shuffle=True) does: one process's batches.
    loader = DataLoader(dataset, batch_sampler=ddp.RankShareSampler(global_batches, current.rank, current.world_size),
                        generator=generator, num_workers=params.data.num_workers,
                        collate_fn=getattr(dataset, "collate", None))
    for batch in tqdm(loader, desc=unit, leave=False, disable=ddp.progress_disabled()):
        yield {key: value.to(context.device) if isinstance(value, torch.Tensor) and key != "crop" else value
               for key, value in batch.items()}


class RunningMeans:
    """Per-key means of the values logged by the steps of one epoch."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.count = 0

    def add(self, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.totals[key] = self.totals.get(key, 0.0) + value
        self.count += 1

    def means(self) -> dict[str, float]:
        return {key: value / max(self.count, 1) for key, value in self.totals.items()}


def log_step(context: TrainingContext, unit: str, values: dict[str, float]) -> dict[str, float]:
    """Record one optimisation step's losses (the mean over the training processes) in the history and
    send them to the sink; returns what it recorded."""
    values = ddp.mean_over_ranks(values, context.device)
    context.progress.global_step += 1
    run_name = stage_run_name(unit)
    context.progress.steps.append({"step": context.progress.global_step, "stage": run_name, **values})
    context.sink(run_name, values, context.progress.global_step)
    return values


def finish_unit(context: TrainingContext, unit: str, phase: str, where: dict[str, int],
                metrics: dict[str, float], scheduler: str | None) -> None:
    """Step the unit's learning-rate schedule, record the unit as done and save the run (resume point)."""
    if scheduler is not None:
        context.objects.schedulers[scheduler].step()
    row = {"unit": unit, "phase": phase, "step": context.progress.global_step, **where,
           **{key: float(value) for key, value in metrics.items()}}
    context.progress.history.append(row)
    context.progress.completed.append(unit)
    # The sink before the save: a kill in between repeats the unit, whose metrics a sink that skips
    # logged steps drops; after the save, a kill would lose them.
    context.sink(stage_run_name(unit),
                 {f"epoch_{key}" if phase != "validation" else key: value for key, value in metrics.items()},
                 context.progress.global_step)
    if ddp.is_main():  # one writer; the others wait, then open the next stage from what it saved
        context.save()
        write_text_atomically(context.run_dir / "history.json", json.dumps(
            {"units": context.progress.history, "steps": context.progress.steps}, indent=1))
    ddp.barrier()
    LOGGER.info("%s: %s", unit, ", ".join(f"{key}={value:.4g}" for key, value in metrics.items()))


def stage_run_name(unit: str) -> str:
    """``"round-1/fusion/epoch-2"`` -> ``"round-1/fusion"``; ``"pretrain/epoch-1"`` -> ``"pretrain"``."""
    return "/".join(part for part in unit.split("/") if not part.startswith("epoch-"))


def check_finite(context: TrainingContext, unit: str, loss: torch.Tensor) -> None:
    """Stop training with a message (the last good checkpoint stays) when ``loss`` is NaN or infinite."""
    if not bool(torch.isfinite(loss.detach()).all()):
        raise TrainingError(
            f"{unit}: the loss became {float(loss.detach())} at step {context.progress.global_step + 1}. "
            f"Training stopped; the last good checkpoint is kept in {context.run_dir}. Lower "
            "train.lr_fusion / train.lr_segmenter, set train.grad_clip > 0, or check the inputs for NaN."
        )


def clip_gradients(module: torch.nn.Module, max_norm: float) -> None:
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm)


def autocast(context: TrainingContext) -> AbstractContextManager[None]:
    """``train.amp``: bfloat16 autocast where the device supports it (:func:`uaafusion.device.mixed_precision`)."""
    return mixed_precision(context.params.train.amp, context.device)


def set_trainable(module: torch.nn.Module, trainable: bool) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(trainable)
