"""A training run opened from params and its run folder: models, optimisers, progress, class weights.

Every stage opens the run afresh (:func:`open_training`), so a stage started in a new process (a
retried Prefect task, a resumed run) continues from the run folder's last saved unit.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from uaafusion import ddp
from uaafusion.config import Params
from uaafusion.device import resolve_device
from uaafusion.errors import TrainingError
from uaafusion.integrity import write_text_atomically
from uaafusion.training.builders import build_models, build_optimizer, build_scheduler
from uaafusion.training.initialise import initialise_from
from uaafusion.training.state import Progress, TrainingObjects, load_state, save_state

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

    def dataset(self, split: str, crop: bool) -> Dataset:
        """The ``split`` of the params' data: training crops (``crop``, degraded as ``degrade`` says) or
        whole images."""
        from uaafusion.data.datasets import create_dataset

        return create_dataset(self.params.data, split, crop=crop, seed=self.params.seed,
                              degrade=self.params.degrade if crop else None)


def run_fingerprint(params: Params) -> str:
    """Short hash of everything that changes a training run's result (:func:`training_params`) and
    of the package's source code (:func:`package_source_digest`). A run folder is resumed only by a
    run with the same fingerprint, so a run of changed code starts afresh instead of resuming (or,
    when finished, re-exporting) what the old code trained."""
    relevant = training_params(params)
    relevant["code"] = package_source_digest()
    encoded = json.dumps(relevant, sort_keys=True).encode()
    return hashlib.sha256(encoded).hexdigest()[:12]


NOT_TRAINING_SECTIONS = ("device", "report", "evaluate", "tracking", "outputs")
NOT_TRAINING_KEYS = (("train", "retries"), ("train", "distributed_timeout_s"), ("data", "num_workers"))


def training_params(params: Params) -> dict:
    """The params that change a training run's result, nested as in ``params.yaml``: all but the
    device, retries, the distributed timeout, loader workers and the evaluate, report, tracking and outputs sections."""
    relevant = params.to_dict()
    for section in NOT_TRAINING_SECTIONS:
        relevant.pop(section, None)
    for section, key in NOT_TRAINING_KEYS:
        relevant[section].pop(key, None)
    return relevant


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
    device = ddp.rank_device(resolve_device(params.device))
    _seed_everything(params.seed)
    fusion, segmenter = build_models(params, device)
    segmenter = ddp.synchronise_batch_norm(segmenter, device)
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
    elif train.init_from:
        initialise_from(train.init_from, fusion, segmenter)
    if ddp.is_main():
        (run_dir / "params.json").parent.mkdir(parents=True, exist_ok=True)
        (run_dir / "params.json").write_text(json.dumps(params.to_dict(), indent=2))
    class_weights = _class_weights(params, run_dir)
    return TrainingContext(params, device, run_dir, objects, sink or _ignore_sink,
                           None if class_weights is None else class_weights.to(device))


def _class_weights(params: Params, run_dir: Path) -> torch.Tensor | None:
    """Cross-entropy class weights ``(C,)`` from the training split's labelled pixels
    (``loss.class_balance``; None when it is 0). Written to the run folder's ``class_weights.json``
    with the pixel counts, and read back from it when the run is opened again (every stage opens it)."""
    from uaafusion.data.datasets import create_dataset
    from uaafusion.losses import class_balance_weights

    exponent = params.loss.class_balance
    if exponent <= 0:
        return None
    classes = list(params.data.class_names)
    record_file = run_dir / "class_weights.json"
    record = json.loads(record_file.read_text()) if record_file.is_file() else {}
    if record.get("classes") != classes or "pixel_counts" not in record:
        counts = create_dataset(params.data, params.data.train_split, crop=False).class_pixel_counts()
        if counts.sum() == 0:
            raise TrainingError(f"loss.class_balance = {exponent}: the training split {params.data.train_split!r} "
                                "has no labelled pixel to count; set it to 0 or add labels.")
        record = {"classes": classes, "pixel_counts": counts.tolist()}
    weights = class_balance_weights(np.asarray(record["pixel_counts"], dtype=np.float64), exponent)
    # Counted when this run folder was first opened (its params hash fixes the data); the weights follow.
    updated = {**record, "class_balance": exponent, "weights": weights.tolist()}
    if updated != record and ddp.is_main():  # whole or not at all: other processes may read it
        write_text_atomically(record_file, json.dumps(updated, indent=2))
    LOGGER.info("segmentation class weights (class_balance %s): %s", exponent,
                dict(zip(classes, weights.round(3).tolist())))
    return torch.tensor(weights, dtype=torch.float32)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
