"""Datasets: image I/O, pairing, box labels, dataset readers and the synthetic generator.

Import the submodules directly (``uaafusion.data.datasets``, ``uaafusion.data.io``, ...); the
names below are re-exported for convenience and load lazily (``torch`` is only imported on use).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "create_dataset": "uaafusion.data.datasets",
    "FusionDataset": "uaafusion.data.datasets",
    "collate_samples": "uaafusion.data.datasets",
    "find_pairs": "uaafusion.data.pairs",
    "ImagePair": "uaafusion.data.pairs",
    "Box": "uaafusion.data.boxes",
    "read_yolo_boxes": "uaafusion.data.boxes",
    "boxes_to_class_mask": "uaafusion.data.boxes",
    "boxes_to_roi_mask": "uaafusion.data.boxes",
    "write_synthetic_dataset": "uaafusion.data.synthetic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'uaafusion.data' has no attribute {name!r}")
