"""Resumable training state: models, optimisers, schedules, RNG and progress in one file.

The state is saved atomically after every completed unit (an epoch of a stage, a validation), with
its digest beside it and the state before it kept (:func:`uaafusion.integrity.save_verified`).
A run killed at any point restarts from the last saved unit and, because data order and crops
are seeded per unit, ends with the same result as a run that was never interrupted. A state that
is damaged (truncated, changed, no digest) is never used: the run falls back to the one before it.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uaafusion.errors import TrainingError
from uaafusion.integrity import DamagedFileError, load_verified, previous_path, save_verified

LOGGER = logging.getLogger(__name__)

STATE_FILE_NAME = "training-state.pt"


@dataclass
class Progress:
    """What a run has done so far: completed unit ids (``"round-1/fusion/epoch-2"``) and history rows."""

    completed: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    global_step: int = 0

    def done(self, unit: str) -> bool:
        return unit in self.completed


@dataclass
class TrainingObjects:
    """Everything whose state a checkpoint holds."""

    fusion: torch.nn.Module
    segmenter: torch.nn.Module
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, Any]
    progress: Progress


def save_state(run_dir: Path, objects: TrainingObjects) -> Path:
    """Write the whole state to ``run_dir/training-state.pt`` atomically (tmp file + rename)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / STATE_FILE_NAME
    payload = {
        "fusion": objects.fusion.state_dict(),
        "segmenter": objects.segmenter.state_dict(),
        "optimizers": {name: optimizer.state_dict() for name, optimizer in objects.optimizers.items()},
        "schedulers": {name: scheduler.state_dict() for name, scheduler in objects.schedulers.items()},
        "progress": json.dumps({
            "completed": objects.progress.completed,
            "history": objects.progress.history,
            "steps": objects.progress.steps,
            "global_step": objects.progress.global_step,
        }),
        "rng": {
            "torch": torch.get_rng_state(),
            "numpy": json.dumps(_numpy_state_to_json(np.random.get_state())),
            "python": json.dumps(random.getstate()),
        },
    }
    return save_verified(payload, path, keep_previous=True)


def load_state(run_dir: Path, objects: TrainingObjects) -> bool:
    """Restore ``objects`` from ``run_dir`` if a state file exists; returns whether it did. A damaged
    state is skipped (with a warning naming it) for the previous one; when both are damaged, the
    :class:`TrainingError` names them."""
    path = run_dir / STATE_FILE_NAME
    candidates = [candidate for candidate in (path, previous_path(path)) if candidate.is_file()]
    if not candidates:
        return False
    problems = []
    for candidate in candidates:
        try:
            payload = load_verified(candidate, weights_only=False)
        except DamagedFileError as error:
            problems.append(str(error))
            LOGGER.warning("%s%s", error, "; trying the state before it" if candidate == path else "")
            continue
        try:
            objects.fusion.load_state_dict(payload["fusion"])
            objects.segmenter.load_state_dict(payload["segmenter"])
            for name, optimizer in objects.optimizers.items():
                optimizer.load_state_dict(payload["optimizers"][name])
            for name, scheduler in objects.schedulers.items():
                scheduler.load_state_dict(payload["schedulers"][name])
        except Exception as error:  # noqa: BLE001 - any failure here means the file cannot be used
            raise TrainingError(
                f"{candidate}: the training checkpoint cannot be loaded ({error}). It does not match these "
                f"params; delete {run_dir} to start this run from scratch."
            ) from error
        break
    else:
        raise TrainingError("every saved training state is damaged:\n  " + "\n  ".join(problems) +
                            f"\nDelete {run_dir} to start this run from scratch.")
    progress = json.loads(payload["progress"])
    objects.progress.completed = list(progress["completed"])
    objects.progress.history = list(progress["history"])
    objects.progress.steps = list(progress["steps"])
    objects.progress.global_step = int(progress["global_step"])
    torch.set_rng_state(payload["rng"]["torch"])
    np.random.set_state(_numpy_state_from_json(json.loads(payload["rng"]["numpy"])))
    python_state = json.loads(payload["rng"]["python"])
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
    return True


def _numpy_state_to_json(state: tuple) -> list:
    name, keys, position, has_gauss, cached_gaussian = state
    return [name, keys.tolist(), int(position), int(has_gauss), float(cached_gaussian)]


def _numpy_state_from_json(state: list) -> tuple:
    name, keys, position, has_gauss, cached_gaussian = state
    return name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian
