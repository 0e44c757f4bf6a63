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
    MARGIN_MIN_GAP,
    MARGIN_TEMPERATURE,
    baseline_margins,
    fusion_metric_loss,
    gradient_loss,
    intensity_loss,
    roi_loss,
    segmentation_loss,
)
from uaafusion.metrics.differentiable import TARGET_METRICS
from uaafusion.metrics.fusion import fusion_metrics
from uaafusion.models import FusionOutput
from tests.metrics.test_fusion_metrics import smooth_random_image


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


def test_intensity_loss_towards_the_maximum_ignores_the_weights():
    ir = torch.tensor([[[[0.2, 0.9]]]])
    vi = torch.tensor([[[[0.6, 0.1]]]])
    fused = torch.tensor([[[[0.6, 0.5]]]])  # equals the maximum at the first pixel, 0.4 below it at the second
    for w_ir, w_vi in ((1.0, 0.0), (0.3, 0.7)):
        weights = (torch.full_like(ir, w_ir), torch.full_like(ir, w_vi))
        assert intensity_loss(fused, ir, vi, *weights, target="maximum").item() == pytest.approx(0.4**2 / 2)
    assert intensity_loss(torch.maximum(ir, vi), ir, vi, ir, vi, target="maximum").item() == 0.0
    with pytest.raises(ValueError, match="intensity target 'brightest'.*sources, maximum"):
        intensity_loss(fused, ir, vi, ir, vi, target="brightest")


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


def test_roi_loss_with_the_infrared_target_follows_the_infrared_image():
    ir = torch.zeros(1, 1, 5, 5)
    ir[..., 2, 2] = 0.4  # a warm spot: infrared intensity and edges
    vi = torch.full((1, 1, 5, 5), 0.8)  # brighter everywhere, flat
    inside = torch.ones(1, 1, 5, 5)
    assert roi_loss(ir, ir, vi, inside, target="infrared").item() == pytest.approx(0.0)
    assert roi_loss(ir, ir, vi, inside).item() > 0.1  # the default target is the brighter visible image
    assert roi_loss(vi, ir, vi, inside, target="infrared").item() > 0.1
    with pytest.raises(ValueError, match="roi target 'visible'"):
        roi_loss(ir, ir, vi, inside, target="visible")


def test_fusion_loss_weights_and_reports_every_term():
    fused, ir, vi = _constant(0.5, 4), _constant(1.0, 4), _constant(0.0, 4)
    output = FusionOutput(fused=fused, weight_ir=_constant(1.0, 4), weight_vi=_constant(0.0, 4))
    logits = torch.zeros(1, 2, 4, 4)
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    roi = torch.zeros(1, 1, 4, 4)
    roi[..., 1, 1] = 1
    config = LossConfig(intensity=2.0, gradient=0.5, segmentation=0.1, roi=3.0)
    terms = FusionLoss(config, ignore_index=255)(output, ir, vi, logits, labels, roi)
    assert set(terms) == {"intensity", "gradient", "segmentation", "roi", "metrics", "total"}
    assert terms["metrics"].item() == 0.0  # weight 0: not computed
    assert terms["intensity"].item() == pytest.approx(0.25)
    assert terms["segmentation"].item() == pytest.approx(math.log(2))
    assert terms["roi"].item() == pytest.approx(roi_loss(fused, ir, vi, roi).item())
    expected = 2.0 * 0.25 + 0.5 * terms["gradient"].item() + 0.1 * math.log(2) + 3.0 * terms["roi"].item()
    assert terms["total"].item() == pytest.approx(expected, rel=1e-6)
    # The configured ROI target reaches the term (a dark infrared image, so the two targets differ).
    darker = FusionOutput(fused=_constant(0.25, 4), weight_ir=_constant(1.0, 4), weight_vi=_constant(0.0, 4))
    infrared_target = FusionLoss(LossConfig(roi=3.0, roi_target="infrared"), 255)(darker, vi, ir, logits, labels, roi)
    assert infrared_target["roi"].item() == pytest.approx(0.25**2)  # (0.25 - 0)^2 at the box pixel
    assert roi_loss(darker.fused, vi, ir, roi).item() == pytest.approx(0.75**2)  # the default: the brighter source
    # The configured intensity target reaches the term: the fused 0.25 against max(ir, vi) = 1 everywhere,
    # where the default pulls it to the source of weight 1 (here 0).
    towards_maximum = FusionLoss(LossConfig(intensity_target="maximum"), 255)(darker, vi, ir, logits, labels, roi)
    assert towards_maximum["intensity"].item() == pytest.approx(0.75**2)
    assert FusionLoss(LossConfig(), 255)(darker, vi, ir)["intensity"].item() == pytest.approx(0.25**2)
    no_segmentation = FusionLoss(LossConfig(segmentation=0.0), 255)(output, ir, vi)
    assert no_segmentation["segmentation"].item() == 0.0 and no_segmentation["roi"].item() == 0.0


def _gray_pair_and_blend(height: int = 48, width: int = 56) -> tuple[torch.Tensor, ...]:
    ir, vi = smooth_random_image(height, width, seed=1), smooth_random_image(height, width, seed=2)
    as_tensor = lambda image: torch.tensor(image[None, None] / 255.0, dtype=torch.float32)  # noqa: E731
    return as_tensor((ir + vi) / 2), as_tensor(ir), as_tensor(vi)


def _reference_metrics(image: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> dict[str, float]:
    return fusion_metrics(*(255.0 * item[0, 0].double().numpy() for item in (image, ir, vi)))


def test_baseline_margins_are_distances_above_the_better_baseline_in_units_of_their_gap():
    fused, ir, vi = _gray_pair_and_blend()
    fused = 0.7 * fused + 0.3 * torch.maximum(ir, vi)
    scores = {name: _reference_metrics(image, ir, vi)
              for name, image in (("fused", fused), ("average", (ir + vi) / 2), ("maximum", torch.maximum(ir, vi)))}
    expected = [(scores["fused"][metric] - max(scores["average"][metric], scores["maximum"][metric]))
                / max(abs(scores["average"][metric] - scores["maximum"][metric]), MARGIN_MIN_GAP)
                for metric in TARGET_METRICS]
    margins = baseline_margins(fused, ir, vi)
    assert margins.shape == (1, 3)
    assert margins[0].tolist() == pytest.approx(expected, abs=2e-3)  # float32 against the float64 reference
    # Each baseline is level with itself where it is the better one, and -1 where it is the worse.
    on_maximum = baseline_margins(torch.maximum(ir, vi), ir, vi)[0]
    for metric, margin in zip(TARGET_METRICS, on_maximum.tolist(), strict=True):
        better = scores["maximum"][metric] >= scores["average"][metric]
        assert margin == pytest.approx(0.0 if better else -1.0, abs=2e-3)


def test_fusion_metric_loss_is_minus_the_soft_worst_margin_and_weighted_in_the_objective():
    fused, ir, vi = _gray_pair_and_blend()
    margins = baseline_margins(fused, ir, vi)
    loss = fusion_metric_loss(fused, ir, vi)
    worst = float(margins.min())
    assert -worst <= loss.item() <= -worst + MARGIN_TEMPERATURE * math.log(3) + 1e-6
    output = FusionOutput(fused=fused, weight_ir=torch.full_like(fused, 0.5), weight_vi=torch.full_like(fused, 0.5))
    terms = FusionLoss(LossConfig(intensity=0.0, gradient=0.0, segmentation=0.0, metrics=0.25), 255)(output, ir, vi)
    assert terms["metrics"].item() == pytest.approx(loss.item(), rel=1e-6)
    assert terms["total"].item() == pytest.approx(0.25 * loss.item(), rel=1e-6)


def test_a_step_down_the_fusion_metric_loss_raises_the_worst_reported_margin():
    fused, ir, vi = _gray_pair_and_blend()
    fused.requires_grad_()
    fusion_metric_loss(fused, ir, vi).backward()
    assert torch.isfinite(fused.grad).all() and fused.grad.abs().sum() > 0
    stepped = (fused - 1e-3 * fused.grad.sign()).clamp(0, 1).detach()
    before, after = (float(baseline_margins(image, ir, vi).min()) for image in (fused.detach(), stepped))
    assert after > before


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
