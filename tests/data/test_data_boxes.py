"""YOLO boxes -> pixel boxes, class masks (class k -> k + 1, smaller box wins) and ROI masks."""

from __future__ import annotations

import numpy as np
import pytest

from uaafusion.data.boxes import Box, boxes_to_class_mask, boxes_to_roi_mask, read_yolo_boxes
from uaafusion.errors import DataError


def test_read_yolo_boxes_to_pixels(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("1 0.5 0.5 0.5 0.25\n\n2  0.1 0.1 0.4 0.4 \n")
    boxes = read_yolo_boxes(path, height=40, width=80, num_box_classes=3)
    # second box is clipped at the image border
    assert boxes == [Box(1, 20, 15, 60, 25), Box(2, 0, 0, 24, 12)]


def test_class_mask_maps_box_class_k_to_label_k_plus_one():
    mask = boxes_to_class_mask([Box(0, 0, 0, 2, 2), Box(2, 5, 5, 7, 8)], height=10, width=10)
    assert mask.dtype == np.int64 and mask.shape == (10, 10)
    assert mask[0, 0] == 1 and mask[6, 5] == 3 and mask[9, 9] == 0
    assert set(np.unique(mask)) == {0, 1, 3}


@pytest.mark.parametrize("order", [0, 1])
def test_overlapping_boxes_smaller_wins_in_any_order(order):
    big, small = Box(2, 0, 0, 10, 10), Box(0, 3, 3, 5, 5)
    boxes = [big, small] if order == 0 else [small, big]
    mask = boxes_to_class_mask(boxes, height=12, width=12)
    assert (mask[3:5, 3:5] == 1).all()
    assert mask[0, 0] == 3 and mask[9, 9] == 3 and mask[11, 11] == 0


def test_roi_mask_covers_every_box():
    roi = boxes_to_roi_mask([Box(0, 0, 0, 2, 2), Box(1, 1, 1, 4, 3)], height=5, width=5)
    assert roi.dtype == bool
    assert int(roi.sum()) == 4 + 6 - 1


@pytest.mark.parametrize("line, message", [
    ("0 0.5 0.5 0.1", "expected 'class cx cy w h'"),
    ("0 a 0.5 0.1 0.1", "not numbers"),
    ("5 0.5 0.5 0.1 0.1", "out of range"),
    ("0 1.5 0.5 0.1 0.1", "normalised"),
])
def test_malformed_box_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.txt"
    path.write_text(f"0 0.5 0.5 0.1 0.1\n{line}\n")
    with pytest.raises(DataError, match=f"bad.txt:2.*{message}"):
        read_yolo_boxes(path, 10, 10, num_box_classes=3)
