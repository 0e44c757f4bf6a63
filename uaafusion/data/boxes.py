"""YOLO box labels (``class cx cy w h``, normalised to 0-1) -> boxes, per-pixel masks and ROI masks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uaafusion.errors import DataError

CLASSES_FILE_NAME = "classes.txt"
"""Box class names, one per line (``0 person``), in a box label folder, its parent or its grandparent."""

# Pixel coordinates within this of an integer count as that integer when rounding box edges.
_ROUNDING_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Box:
    """One box in pixel coordinates: ``[x0, x1) x [y0, y1)`` and its 0-based box class."""

    box_class: int
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def area(self) -> int:
        return max(0, self.x1 - self.x0) * max(0, self.y1 - self.y0)


def read_yolo_boxes(path: str | Path, height: int, width: int, num_box_classes: int) -> list[Box]:
    """Read a YOLO label file into pixel boxes for an image of ``height x width``.

    An empty file means no boxes. A malformed line, a class id outside ``[0, num_box_classes)``
    or coordinates outside ``[0, 1]`` raise :class:`DataError` naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: box label file not found (every image needs one; an empty file means no boxes).")
    boxes: list[Box] = []
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            raise DataError(f"{path}:{line_number}: expected 'class cx cy w h', got {line!r}.")
        try:
            box_class = int(float(fields[0]))
            center_x, center_y, box_width, box_height = (float(value) for value in fields[1:])
        except ValueError as error:
            raise DataError(f"{path}:{line_number}: not numbers: {line!r}.") from error
        if not 0 <= box_class < num_box_classes:
            raise DataError(
                f"{path}:{line_number}: box class {box_class} is out of range 0..{num_box_classes - 1}; "
                "fix the label or raise data.num_classes in params.yaml."
            )
        values = (center_x, center_y, box_width, box_height)
        if any(value < -1e-6 or value > 1 + 1e-6 for value in values):
            raise DataError(f"{path}:{line_number}: coordinates must be normalised to [0, 1] (divided by the "
                            f"image width and height), got {line!r}: the box is not within the image; fix or "
                            "remove the line.")
        # Outward rounding, tolerant of float noise (0.1 + 0.2 = 0.30000000000000004 must not add a pixel).
        x0 = int(np.floor((center_x - box_width / 2) * width + _ROUNDING_TOLERANCE))
        x1 = int(np.ceil((center_x + box_width / 2) * width - _ROUNDING_TOLERANCE))
        y0 = int(np.floor((center_y - box_height / 2) * height + _ROUNDING_TOLERANCE))
        y1 = int(np.ceil((center_y + box_height / 2) * height - _ROUNDING_TOLERANCE))
        box = Box(box_class, max(0, x0), max(0, y0), min(width, x1), min(height, y1))
        if box.area > 0:
            boxes.append(box)
    return boxes


def boxes_to_class_mask(boxes: list[Box], height: int, width: int) -> np.ndarray:
    """Per-pixel classes ``int64 (H, W)``: 0 = background, box class k -> k + 1.

    Where boxes overlap, the smaller box wins (painted last).
    """
    mask = np.zeros((height, width), dtype=np.int64)
    for box in sorted(boxes, key=lambda item: item.area, reverse=True):
        mask[box.y0:box.y1, box.x0:box.x1] = box.box_class + 1
    return mask


def boxes_to_roi_mask(boxes: list[Box], height: int, width: int) -> np.ndarray:
    """``bool (H, W)``: True inside any box."""
    mask = np.zeros((height, width), dtype=bool)
    for box in boxes:
        mask[box.y0:box.y1, box.x0:box.x1] = True
    return mask
