"""Confusion-matrix IoU worked out by hand, ignore handling, set-level accumulation, ROI-SSIM."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from uaafusion.metrics.fusion import structural_similarity
from uaafusion.metrics.segmentation import ConfusionMatrix, roi_ssim

TARGET = np.array([[0, 0, 1], [1, 2, 255]])
PREDICTION = np.array([[0, 1, 1], [1, 0, 2]])


def test_confusion_matrix_by_hand() -> None:
    matrix = ConfusionMatrix(3)
    matrix.update(PREDICTION, TARGET)
    # counted pixels (target, prediction): (0,0) (0,1) (1,1) (1,1) (2,0); the last pixel is ignored
    np.testing.assert_array_equal(matrix.matrix, [[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    assert matrix.total == 5
    # IoU0 = 1 / (1 + 1 FP + 1 FN) = 1/3; IoU1 = 2 / (2 + 1 FP) = 2/3; IoU2 = 0 / (0 + 0 + 1 FN) = 0
    np.testing.assert_allclose(matrix.per_class_iou(), [1 / 3, 2 / 3, 0.0])
    assert matrix.miou() == pytest.approx(1 / 3)
    assert matrix.pixel_accuracy() == pytest.approx(3 / 5)


def test_absent_class_is_left_out_of_the_mean() -> None:
    matrix = ConfusionMatrix(4)
    matrix.update(PREDICTION, TARGET)
    iou = matrix.per_class_iou()
    assert math.isnan(iou[3])
    assert matrix.miou() == pytest.approx(1 / 3)


def test_ignore_index_is_respected() -> None:
    matrix = ConfusionMatrix(2, ignore_index=7)
    target = np.array([[7, 7], [0, 1]])
    prediction = np.array([[1, 99], [0, 1]])  # anything may be predicted where the target is ignored
    matrix.update(prediction, target)
    assert matrix.total == 2
    assert matrix.miou() == 1.0
    assert matrix.pixel_accuracy() == 1.0


def test_empty_matrix_is_nan() -> None:
    matrix = ConfusionMatrix(3)
    matrix.update(np.zeros((2, 2), dtype=np.int64), np.full((2, 2), 255))
    assert math.isnan(matrix.miou())
    assert math.isnan(matrix.pixel_accuracy())


def test_accumulates_pixels_over_the_set_not_mean_of_images() -> None:
    first_target, first_prediction = np.array([[1, 0, 0, 0]]), np.array([[1, 1, 0, 0]])
    second_target, second_prediction = np.array([[1, 1, 1, 0]]), np.array([[1, 1, 1, 0]])
    matrix = ConfusionMatrix(2)
    matrix.update(first_prediction, first_target)
    matrix.update(second_prediction, second_target)
    pooled = ConfusionMatrix(2)
    pooled.update(np.concatenate([first_prediction, second_prediction]), np.concatenate([first_target, second_target]))
    np.testing.assert_array_equal(matrix.matrix, pooled.matrix)
    # class 1: TP 1 + 3, FP 1 -> 4/5; class 0: TP 2 + 1, FN 1 -> 3/4
    np.testing.assert_allclose(matrix.per_class_iou(), [3 / 4, 4 / 5])
    per_image_mean = np.mean([np.mean([2 / 3, 1 / 2]), 1.0])
    assert matrix.miou() != pytest.approx(per_image_mean)


def test_torch_inputs_and_merge() -> None:
    matrix = ConfusionMatrix(3)
    matrix.update(torch.from_numpy(PREDICTION), torch.from_numpy(TARGET))
    other = ConfusionMatrix(3)
    other.update(PREDICTION, TARGET)
    other.merge(matrix)
    np.testing.assert_array_equal(other.matrix, 2 * matrix.matrix)
    matrix.reset()
    assert matrix.total == 0


def test_bad_inputs_are_rejected() -> None:
    matrix = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="shapes differ"):
        matrix.update(np.zeros((2, 2), dtype=int), np.zeros((2, 3), dtype=int))
    with pytest.raises(ValueError, match=r"target holds class ids \[5\]"):
        matrix.update(np.zeros((1, 2), dtype=int), np.array([[0, 5]]))
    with pytest.raises(ValueError, match=r"prediction holds class ids \[3\]"):
        matrix.update(np.array([[0, 3]]), np.zeros((1, 2), dtype=int))
    with pytest.raises(TypeError):
        matrix.update(np.array([[0.5]]), np.array([[0]]))


def test_roi_ssim_full_mask_equals_ssim_and_border_handling() -> None:
    generator = np.random.default_rng(0)
    fused = generator.uniform(0, 255, (30, 32))
    source = np.clip(fused + generator.normal(0, 20, fused.shape), 0, 255)
    everywhere = np.ones(fused.shape, dtype=bool)
    assert roi_ssim(fused, source, everywhere) == pytest.approx(structural_similarity(fused, source))
    border_only = np.zeros(fused.shape, dtype=bool)
    border_only[:5, :] = True  # no pixel here is the centre of a full 11x11 window
    assert math.isnan(roi_ssim(fused, source, border_only))
    assert math.isnan(roi_ssim(fused, source, np.zeros(fused.shape, dtype=bool)))


def test_roi_ssim_looks_only_inside_the_roi() -> None:
    generator = np.random.default_rng(1)
    source = generator.uniform(0, 255, (40, 60))
    fused = source.copy()
    fused[:, 40:] = 255 - fused[:, 40:]  # damage the right part only
    roi = np.zeros(source.shape, dtype=bool)
    roi[10:30, 5:25] = True  # windows centred here never reach column 40
    assert roi_ssim(fused, source, roi) == pytest.approx(1.0)
    damaged = np.zeros(source.shape, dtype=bool)
    damaged[10:30, 45:55] = True
    assert roi_ssim(fused, source, damaged) < 0.5
