"""Shared test helpers: the real params.yaml, shrunk to run in seconds on a CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"

# Overrides that shrink the real configuration (lightning-hydra-template style).
TINY_OVERRIDES: dict[str, Any] = {
    "device": "cpu",
    "synthetic.train": 6,
    "synthetic.test": 2,
    "synthetic.height": 48,
    "synthetic.width": 48,
    "data.crop_size": 32,
    "data.batch_size": 2,
    "model.fusion.stages": 2,
    "model.fusion.features": 8,
    "attribution.steps": 2,
    "train.rounds": 1,
    "train.pretrain_epochs": 1,
    "train.fusion_epochs": 1,
    "train.segmentation_epochs": 1,
    "train.joint_epochs": 1,
    "train.retries": 0,
    "report.samples": 2,
}


def tiny_params_dict(**extra: Any) -> dict[str, Any]:
    """The repository's params.yaml as a dict with :data:`TINY_OVERRIDES` (and ``extra``) applied."""
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    for dotted, value in {**TINY_OVERRIDES, **extra}.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return raw


def write_tiny_params(path: Path, **extra: Any) -> Path:
    """Write shrunk params to ``path`` (a project root's params.yaml)."""
    path.write_text(yaml.safe_dump(tiny_params_dict(**extra), sort_keys=False))
    return path
