"""What an MLflow run says about where it came from: its name, tags, dataset inputs, the params of
each nested run, and metric names that line up across datasets."""

from __future__ import annotations

import datetime
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from uaafusion.config import Params

DVC_EXPERIMENT_VARIABLE = "DVC_EXP_NAME"  # set by `dvc exp run` for the commands it runs
SEGMENTATION_LABELS_TAG = "uaafusion.segmentation_labels"  # "pixel" or "box": what test_mIoU is computed on

# The params each kind of nested run carries (dotted prefixes of Params.flat() keys).
_OPTIMISER = ("train.weight_decay", "train.lr_schedule", "train.grad_clip", "train.amp")
_SEGMENTER = ("model.segmenter.", "train.lr_segmenter", "loss.dice", "loss.class_balance", *_OPTIMISER)
_FUSION = ("model.fusion.", "attribution.", "train.lr_fusion", "loss.intensity", "loss.gradient",
           "loss.segmentation", "loss.roi", "degrade.", *_OPTIMISER)
STAGE_PARAMS: dict[str, tuple[str, ...]] = {
    "pretrain": ("seed", "data.", "train.pretrain_epochs", "degrade.", *_SEGMENTER),
    "fusion": ("seed", "data.", "train.fusion_epochs", *_FUSION),
    "segmentation": ("seed", "data.", "train.segmentation_epochs", *_SEGMENTER),
    "joint": ("seed", "data.", "train.joint_epochs", *_FUSION, *_SEGMENTER),
    "validation": ("data.root", "data.test_split", "data.layout", "model.fusion.inference_mask", "report.samples"),
    "evaluate": ("seed", "data.root", "data.test_split", "data.layout", "evaluate."),
    "report": ("report.",),
}


def run_name(explicit: str | None, params_file: str | Path, now: datetime.datetime | None = None) -> str:
    """``explicit`` when given, else the DVC experiment's name (``dvc exp run``), else the params
    file's stem and a short time stamp (``params-1206-1432``)."""
    if explicit and explicit.strip():
        return explicit.strip()
    experiment = os.environ.get(DVC_EXPERIMENT_VARIABLE, "").strip()
    if experiment:
        return experiment
    stamp = (now or datetime.datetime.now()).strftime("%m%d-%H%M")
    return f"{Path(params_file).stem}-{stamp}"


def run_tags(project_root: Path, params_file: Path, device: torch.device) -> dict[str, str]:
    """The parent run's lineage tags: params file, git commit and dirty flag, DVC experiment, device,
    and MLflow's source tags (the runs table's Source column)."""
    from uaafusion.device import device_name
    from uaafusion.tracking import git_commit, git_dirty

    root = Path(project_root).resolve()
    params_path = Path(params_file).resolve()
    shown = params_path.relative_to(root).as_posix() if params_path.is_relative_to(root) else str(params_path)
    tags = {"uaafusion.params_file": shown, "uaafusion.device": str(device),
            "uaafusion.device_name": device_name(device),
            "mlflow.source.type": "LOCAL", "mlflow.source.name": f"uaafusion train --params {shown}"}
    commit = git_commit(root)
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["uaafusion.git_dirty"] = str(git_dirty(root)).lower()
    experiment = os.environ.get(DVC_EXPERIMENT_VARIABLE, "").strip()
    if experiment:
        tags["dvc.experiment"] = experiment
    return tags


@dataclass(frozen=True)
class DatasetRecord:
    """One split as an MLflow dataset input: ``name`` (``synthetic/train``), the split's folder,
    its number of pairs and a digest of its file list (names and sizes of every image and label)."""

    name: str
    source: str
    pairs: int
    digest: str

    @property
    def profile(self) -> dict[str, Any]:
        return {"num_pairs": self.pairs}


def dataset_record(params: Params, split: str) -> DatasetRecord:
    """The :class:`DatasetRecord` of ``split`` of the params' data (``data.root`` absolute or relative
    to the current directory). Raises :class:`uaafusion.errors.DataError` when it cannot be read."""
    from uaafusion.data.datasets import create_dataset

    dataset = create_dataset(params.data, split, crop=False, seed=params.seed)
    base = Path(dataset.location or params.data.root).resolve()
    digest = hashlib.sha256()
    for record in dataset.records:
        for path in (record.ir_path, record.vi_path, record.label_path, record.box_path):
            if path is not None:
                path = Path(path).resolve()
                shown = path.relative_to(base).as_posix() if path.is_relative_to(base) else path.name
                digest.update(f"{shown}\0{path.stat().st_size}\n".encode())
    root_name = Path(params.data.root).resolve().name
    return DatasetRecord(f"{root_name}/{split}", str(base), len(dataset.records),
                         digest.hexdigest()[:12])


def stage_kind(nested_name: str) -> tuple[str, int | None]:
    """``"round-2/fusion"`` -> ``("fusion", 2)``; ``"pretrain"`` -> ``("pretrain", None)``."""
    match = re.fullmatch(r"round-(\d+)/(\w+)", nested_name)
    return (match.group(2), int(match.group(1))) if match else (nested_name, None)


def stage_params(params: Params, nested_name: str) -> dict[str, Any]:
    """The params of the nested run ``nested_name`` (:data:`STAGE_PARAMS`), with its ``round``."""
    kind, round_index = stage_kind(nested_name)
    prefixes = STAGE_PARAMS.get(kind, ())
    chosen = {key: value for key, value in params.flat().items()
              if any(key == prefix or (prefix.endswith(".") and key.startswith(prefix)) for prefix in prefixes)}
    if round_index is not None:
        chosen["round"] = round_index
    return chosen


_BOX_PREFIX = re.compile(r"(?<![A-Za-z0-9])box_")


def unified_segmentation_names(metrics: dict[str, float]) -> tuple[dict[str, float], str]:
    """Metric names that line up across data layouts: box-label metrics (``box_mIoU``, ``box_IoU/car``,
    ``ours/box_mIoU-box_mIoU_ir``) lose their ``box_`` prefix unless a pixel-label metric has that
    name already. Returns the renamed metrics and the labels ``mIoU`` is computed on (``pixel`` or
    ``box``, the :data:`SEGMENTATION_LABELS_TAG`)."""
    renamed: dict[str, float] = {}
    labels = "pixel"
    for key, value in metrics.items():
        plain = _BOX_PREFIX.sub("", key)
        if plain != key and plain not in metrics:
            renamed[plain] = value
            labels = "box"
        else:
            renamed[key] = value
    return renamed, labels
