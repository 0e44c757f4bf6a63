"""Resumable training state: models, optimisers, schedules, RNG and progress in one file.

The state is saved atomically after every completed unit (an epoch of a stage, a validation).
A run killed at any point restarts from the last saved unit and, because data order and crops
are seeded per unit, ends with the same result as a run that was never interrupted.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uaafusion.errors import TrainingError

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
    return save_atomically(payload, path)


def save_atomically(payload: Any, path: Path) -> Path:
    """``torch.save`` ``payload`` to ``path`` so that a kill leaves the old file or the new one, never
    half of one (a temporary file beside it, synced, then renamed)."""
    temporary = path.with_suffix(".tmp")
    torch.save(payload, temporary)
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return path


def load_state(run_dir: Path, objects: TrainingObjects) -> bool:
    """Restore ``objects`` from ``run_dir`` if a state file exists; returns whether it did."""
    path = run_dir / STATE_FILE_NAME
    if not path.is_file():
        return False
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
        objects.fusion.load_state_dict(payload["fusion"])
        objects.segmenter.load_state_dict(payload["segmenter"])
        for name, optimizer in objects.optimizers.items():
            optimizer.load_state_dict(payload["optimizers"][name])
        for name, scheduler in objects.schedulers.items():
            scheduler.load_state_dict(payload["schedulers"][name])
    except Exception as error:  # noqa: BLE001 - any failure here means the file cannot be used
        raise TrainingError(
            f"{path}: the training checkpoint cannot be loaded ({error}). It does not match these "
            f"params or is damaged; delete {run_dir} to start this run from scratch."
        ) from error
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
