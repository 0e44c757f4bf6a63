"""Classes of a segmentation evaluation: how many, and their names, from the arguments, a
``classes.txt`` beside the box labels and the segmenter's output channels."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from uaafusion.data.boxes import CLASSES_FILE_NAME
from uaafusion.errors import ConfigError

LOGGER = logging.getLogger(__name__)

DEFAULT_BOX_CLASS_NAMES: tuple[str, ...] = ("person", "bicycle", "car")
"""Box classes of the MSRS detection labels, used when no ``classes.txt`` is found."""
BACKGROUND_CLASS_NAME = "background"


def read_box_class_names(boxes_dir: str | Path) -> list[str] | None:
    """Box class names from ``classes.txt`` in ``boxes_dir``, its parent or its grandparent.

    Lines are ``NAME`` or ``ID NAME`` (``0 person``), in class order; ``None`` when no file exists.
    """
    folder = Path(boxes_dir).resolve()
    for candidate in (folder, folder.parent, folder.parent.parent):
        path = candidate / CLASSES_FILE_NAME
        if not path.is_file():
            continue
        names: list[str] = []
        for line in path.read_text().splitlines():
            fields = line.split()
            if not fields:
                continue
            if len(fields) > 1 and fields[0].lstrip("-").isdigit():
                names.append(" ".join(fields[1:]))
            else:
                names.append(" ".join(fields))
        if names:
            LOGGER.debug("box classes from %s: %s", path, names)
            return names
    return None


def _segmenter_class_count(segmenter: torch.nn.Module, device: torch.device) -> int:
    """Number of output channels of ``segmenter`` (one forward pass on a small blank image)."""
    with torch.inference_mode():
        logits = segmenter(torch.zeros(1, 1, 64, 64, device=device))
    if not isinstance(logits, torch.Tensor) or logits.ndim != 4:
        raise ConfigError(
            "the segmenter must map (B, 1, H, W) images to logits (B, C, H, W); "
            f"it returned {type(logits).__name__} {getattr(logits, 'shape', '')}."
        )
    return int(logits.shape[1])


def resolve_classes(
    boxes_dir: str | Path | None,
    segmenter: torch.nn.Module | None,
    num_classes: int | None,
    class_names: Sequence[str] | None,
    device: torch.device,
) -> tuple[int | None, list[str] | None]:
    """Settle the number of classes and their names from the arguments, ``classes.txt`` and the segmenter."""
    box_names: list[str] | None = None
    if boxes_dir is not None:
        box_names = read_box_class_names(boxes_dir) or list(DEFAULT_BOX_CLASS_NAMES)
        if num_classes is None:
            num_classes = len(box_names) + 1
    if segmenter is not None:
        segmenter_classes = _segmenter_class_count(segmenter, device)
        if num_classes is None:
            num_classes = segmenter_classes
        elif segmenter_classes != num_classes:
            raise ConfigError(
                f"the segmenter predicts {segmenter_classes} classes but num_classes is {num_classes}; "
                "pass --num-classes matching the segmenter (or a segmenter trained for these labels)."
            )
    if num_classes is not None and num_classes < 1:
        raise ConfigError(f"num_classes must be at least 1, got {num_classes}.")
    if class_names is not None:
        names = [str(name).strip() for name in class_names]
        if num_classes is None:
            num_classes = len(names)
        if len(names) != num_classes:
            raise ConfigError(
                f"{len(names)} class names given ({', '.join(names)}) for {num_classes} classes; "
                "give one name per class, background first."
            )
        return num_classes, names
    if num_classes is None:
        return None, None
    if box_names is not None and len(box_names) + 1 == num_classes:
        return num_classes, [BACKGROUND_CLASS_NAME, *box_names]
    return num_classes, [f"class{index}" for index in range(num_classes)]
