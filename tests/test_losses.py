"""Losses on tiny inputs whose values can be worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from uaafusion.config import LossConfig
from uaafusion.losses import (
    FusionLoss,
    class_balance_weights,
    gradient_loss,
    intensity_loss,
    roi_loss,
    segmentation_loss,
)
from uaafusion.models import FusionOutput


def _constant(value: float, size: int = 3) -> torch.Tensor:
    return torch.full((1, 1, size, size), value)


def _delta(size: int = 3) -> torch.Tensor:
    image = torch.zeros(1, 1, size, size)
    image[0, 0, size // 2, size // 2] = 1.0
    return image


def test_intensity_loss_by_hand():
    fused, ir, vi = _constant(0.5), _constant(1.0), _constant(0.0)
    assert intensity_loss(fused, ir, vi, _constant(1.0), _constant(0.0)).item() == pytest.approx(0.25)
    # (0.5 * 0.5)^2 + (0.5 * 0.5)^2
    assert intensity_loss(fused, ir, vi, _constant(0.5), _constant(0.5)).item() == pytest.approx(0.125)
    assert intensity_loss(ir, ir, vi, _constant(1.0), _constant(0.0)).item() == 0.0


def test_gradient_loss_by_hand():
    # Sobel |gx| + |gy| of a single bright pixel sums to 8 + 8 over the 3x3 image.
    assert gradient_loss(_constant(0.0), _delta(), _constant(0.0)).item() == pytest.approx(16 / 9)
    assert gradient_loss(_delta(), _delta(), _constant(0.0)).item() == pytest.approx(0.0)
    # The target is the larger of the two source gradients.
    assert gradient_loss(2 * _delta(), _delta(), 2 * _delta()).item() == pytest.approx(0.0)


def test_segmentation_loss_by_hand_and_with_ignored_pixels():
    logits = torch.zeros(1, 4, 2, 2, requires_grad=True)
    labels = torch.tensor([[[0, 1], [2, 255]]])
    assert segmentation_loss(logits, labels).item() == pytest.approx(math.log(4))
    everything_ignored = torch.full((1, 2, 2), 255)
    for dice in (0.0, 1.0):
        loss = segmentation_loss(logits, everything_ignored, 255, dice_weight=dice)
        assert loss.item() == 0.0
        loss.backward()
        assert torch.isfinite(logits.grad).all()
    confident = 100.0 * torch.nn.functional.one_hot(torch.tensor([[[0, 1], [2, 0]]]), 4).permute(0, 3, 1, 2).float()
    perfect = segmentation_loss(confident, labels, 255, dice_weight=1.0)
    assert perfect.item() == pytest.approx(0.0, abs=1e-6)
    wrong = segmentation_loss(confident, torch.tensor([[[1, 0], [0, 255]]]), 255, dice_weight=1.0)
    assert wrong.item() > 100.0  # cross-entropy of confident mistakes, plus Dice > 0
    uniform_dice = segmentation_loss(logits, labels, 255, dice_weight=1.0) - segmentation_loss(logits, labels, 255)
    # softmax 1/4 everywhere on 3 valid pixels; classes 0,1,2 one pixel each, class 3 none:
    # class c<3: (2*0.25 + 1) / (0.75 + 1 + 1); class 3: (0 + 1) / (0.75 + 1)
    expected = 1 - (3 * (1.5 / 2.75) + 1 / 1.75) / 4
    assert uniform_dice.item() == pytest.approx(expected, rel=1e-5)


def test_roi_loss_by_hand():
    fused, ir, vi = _constant(0.0), _constant(0.5), _constant(0.25)
    assert roi_loss(fused, ir, vi, torch.zeros(1, 1, 3, 3)).item() == 0.0
    # Only the centre pixel is inside a box: intensity (0 - 0.5)^2; Sobel at the centre is 0.
    assert roi_loss(fused, ir, vi, _delta()).item() == pytest.approx(0.25)
    assert roi_loss(torch.maximum(ir, vi), ir, vi, torch.ones(1, 1, 3, 3)).item() == pytest.approx(0.0)


def test_fusion_loss_weights_and_reports_every_term():
    fused, ir, vi = _constant(0.5, 4), _constant(1.0, 4), _constant(0.0, 4)
    output = FusionOutput(fused=fused, weight_ir=_constant(1.0, 4), weight_vi=_constant(0.0, 4))
    logits = torch.zeros(1, 2, 4, 4)
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    roi = torch.zeros(1, 1, 4, 4)
    roi[..., 1, 1] = 1
    config = LossConfig(intensity=2.0, gradient=0.5, segmentation=0.1, roi=3.0)
    terms = FusionLoss(config, ignore_index=255)(output, ir, vi, logits, labels, roi)
    assert set(terms) == {"intensity", "gradient", "segmentation", "roi", "total"}
    assert terms["intensity"].item() == pytest.approx(0.25)
    assert terms["segmentation"].item() == pytest.approx(math.log(2))
    assert terms["roi"].item() == pytest.approx(roi_loss(fused, ir, vi, roi).item())
    expected = 2.0 * 0.25 + 0.5 * terms["gradient"].item() + 0.1 * math.log(2) + 3.0 * terms["roi"].item()
    assert terms["total"].item() == pytest.approx(expected, rel=1e-6)
    no_segmentation = FusionLoss(LossConfig(segmentation=0.0), 255)(output, ir, vi)
    assert no_segmentation["segmentation"].item() == 0.0 and no_segmentation["roi"].item() == 0.0


def test_class_balance_weights_by_hand():
    counts = [900, 100, 0, 0]  # frequencies 0.9, 0.1; classes 2 and 3 never labelled
    inverse_sqrt = class_balance_weights(counts, 0.5)
    raw = np.array([0.9 ** -0.5, 0.1 ** -0.5])
    expected = raw / (0.9 * raw[0] + 0.1 * raw[1])
    assert inverse_sqrt[:2] == pytest.approx(expected) and inverse_sqrt[2:].tolist() == [0.0, 0.0]
    assert float(np.dot([0.9, 0.1, 0, 0], inverse_sqrt)) == pytest.approx(1.0)  # average pixel weight 1
    assert class_balance_weights(counts, 0.0).tolist() == [1.0, 1.0, 0.0, 0.0]
    assert class_balance_weights(counts, 1.0)[:2] == pytest.approx([1 / 1.8, 5.0])  # 1 / (2 f_c): 2 classes present
    for bad in ([], [0, 0], [3, -1]):
        with pytest.raises(ValueError):
            class_balance_weights(bad, 0.5)


def test_weighted_cross_entropy_is_the_class_weighted_mean():
    logits = torch.randn(1, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([[[0, 1], [1, 255]]])
    weights = torch.tensor([1.0, 3.0, 7.0])
    per_pixel = torch.nn.functional.cross_entropy(logits, labels, ignore_index=255, reduction="none")[0]
    expected = (1.0 * per_pixel[0, 0] + 3.0 * per_pixel[0, 1] + 3.0 * per_pixel[1, 0]) / 7.0
    assert segmentation_loss(logits, labels, 255, class_weights=weights).item() == pytest.approx(expected.item(), rel=1e-6)
    ones = torch.ones(3)
    assert segmentation_loss(logits, labels, 255, class_weights=ones).item() == pytest.approx(
        segmentation_loss(logits, labels, 255).item(), rel=1e-6)
    ignored = torch.full((1, 2, 2), 255)
    assert segmentation_loss(logits, ignored, 255, dice_weight=1.0, class_weights=weights).item() == 0.0
    fusion_terms = FusionLoss(LossConfig(segmentation=1.0), 255, class_weights=weights)(
        FusionOutput(fused=torch.zeros(1, 1, 2, 2), weight_ir=torch.full((1, 1, 2, 2), 0.5),
                     weight_vi=torch.full((1, 1, 2, 2), 0.5)),
        torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), logits, labels)
    assert fusion_terms["segmentation"].item() == pytest.approx(expected.item(), rel=1e-6)
