"""Losses of the fusion and segmentation stages (METHOD.md §3).

All images are ``(B, 1, H, W)`` in [0, 1]; logits ``(B, C, H, W)``; labels ``int64 (B, H, W)``
with ``ignore_index`` for unknown pixels; ROI masks ``(B, 1, H, W)`` (1 inside boxes). Every loss
returns a scalar tensor and stays finite when a mask is empty (0, never NaN).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, get_args

import numpy as np
import torch
import torch.nn.functional as functional

from uaafusion.config import IntensityTarget, LossConfig, RoiTarget
from uaafusion.imageops import sobel_magnitude_l1
from uaafusion.metrics.differentiable import target_metrics

if TYPE_CHECKING:
    from uaafusion.models.unfolding import FusionOutput


INTENSITY_TARGETS: tuple[str, ...] = get_args(IntensityTarget)


def intensity_loss(
    fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor, w_ir: torch.Tensor, w_vi: torch.Tensor,
    target: str = "sources",
) -> torch.Tensor:
    """All inputs ``(B, 1, H, W)``. ``target`` ``"sources"`` (METHOD.md §3):
    ``mean((w_ir * (F - I))^2) + mean((w_vi * (F - V))^2)``; ``"maximum"``: ``mean((F - max(I, V))^2)``
    (the weights are not used)."""
    if target not in INTENSITY_TARGETS:
        raise ValueError(f"intensity target {target!r}: expected one of {', '.join(INTENSITY_TARGETS)}")
    if target == "maximum":
        return (fused - torch.maximum(ir, vi)).pow(2).mean()
    return (w_ir * (fused - ir)).pow(2).mean() + (w_vi * (fused - vi)).pow(2).mean()


def gradient_loss(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """``L1(|grad F|, max(|grad I|, |grad V|))`` with the Sobel ``|gx| + |gy|`` of :mod:`uaafusion.imageops`."""
    target = torch.maximum(sobel_magnitude_l1(ir), sobel_magnitude_l1(vi))
    return functional.l1_loss(sobel_magnitude_l1(fused), target)


# Smallest baseline gap a margin is measured in (crops where both baselines score alike).
MARGIN_MIN_GAP = 0.01
# Of the soft minimum over the three margins, in margin units.
MARGIN_TEMPERATURE = 0.05


def soft_minimum(values: torch.Tensor, temperature: float, dim: int = -1) -> torch.Tensor:
    """``-T logsumexp(-values / T)`` along ``dim``: within ``T log n`` below the minimum of ``n`` values."""
    return -temperature * torch.logsumexp(-values / temperature, dim=dim)


def baseline_margins(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """How far ``fused`` beats both pixel baselines on VIF, Qabf and SSIM, per image: ``(B, 3)``.

    ``margin_m = (m(F) - max(m(avg), m(max))) / max(|m(avg) - m(max)|, MARGIN_MIN_GAP)`` with the
    evaluation's metrics (:mod:`uaafusion.metrics.differentiable`; ``avg = (I + V) / 2``,
    ``max = max(I, V)``), columns in :data:`~uaafusion.metrics.differentiable.TARGET_METRICS` order: 0 = level with the better
    baseline, -1 = as far below it as the worse one. Inputs ``(B, 1, H, W)`` in [0, 1], scored on
    0-255 in float32 outside autocast; the baselines carry no gradient.
    """
    with torch.autocast(device_type=fused.device.type, enabled=False):
        fused_255, ir_255, vi_255 = (255.0 * image.float() for image in (fused, ir, vi))
        with torch.no_grad():
            baselines = [target_metrics(baseline, ir_255, vi_255)
                         for baseline in ((ir_255 + vi_255) / 2, torch.maximum(ir_255, vi_255))]
        target = torch.maximum(*baselines)
        gap = (baselines[0] - baselines[1]).abs().clamp(min=MARGIN_MIN_GAP)
        return (target_metrics(fused_255, ir_255, vi_255) - target) / gap


def fusion_metric_loss(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """Minus the soft worst of the three :func:`baseline_margins`, averaged over the batch (scalar).

    Issue #8's criterion as a training objective (not in METHOD.md): it falls as the fused image
    gains on whichever of VIF, Qabf and SSIM is furthest behind the better baseline of its own crop.
    The soft minimum is :func:`soft_minimum` with ``T =`` :data:`MARGIN_TEMPERATURE` (within ``T log 3``
    of the true minimum).
    """
    return -soft_minimum(baseline_margins(fused, ir, vi), MARGIN_TEMPERATURE, dim=1).mean()


def segmentation_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = 255,
    dice_weight: float = 0.0,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy of ``logits (B, C, H, W)`` against ``labels (B, H, W)``, plus ``dice_weight`` x soft Dice.

    Ignored pixels count for neither term. The cross-entropy is the mean over the valid pixels
    (0 when every pixel is ignored); with ``class_weights (C,)`` (:func:`class_balance_weights`)
    each pixel counts with its class's weight and the mean is taken over those weights. The soft
    Dice loss is ``1 - mean over classes of (2 sum(p t) + 1) / (sum p + sum t + 1)`` over the valid
    pixels of the batch (softmax ``p``, one-hot ``t``); it is 0 when every pixel is ignored.
    """
    labels = labels.long()
    valid = labels != ignore_index
    if class_weights is None:
        total_weight = valid.sum().to(logits.dtype)
    else:
        class_weights = class_weights.to(device=logits.device, dtype=logits.dtype)
        total_weight = class_weights[labels[valid]].sum()
    cross_entropy = functional.cross_entropy(logits, labels, weight=class_weights, ignore_index=ignore_index,
                                             reduction="sum")
    loss = cross_entropy / total_weight.clamp(min=1e-12)
    if dice_weight > 0:
        num_classes = logits.shape[1]
        probabilities = torch.softmax(logits, dim=1) * valid.unsqueeze(1).to(logits.dtype)
        safe_labels = torch.where(valid, labels, torch.zeros_like(labels))
        targets = functional.one_hot(safe_labels, num_classes).permute(0, 3, 1, 2).to(logits.dtype)
        targets = targets * valid.unsqueeze(1).to(logits.dtype)
        dims = (0, 2, 3)
        overlap = (probabilities * targets).sum(dims)
        total = probabilities.sum(dims) + targets.sum(dims)
        dice = (2 * overlap + 1.0) / (total + 1.0)
        loss = loss + dice_weight * (1.0 - dice.mean())
    return loss


def class_balance_weights(pixel_counts: np.ndarray | Sequence[int], exponent: float) -> np.ndarray:
    """Cross-entropy class weights ``w_c`` proportional to ``f_c ** -exponent`` from labelled pixels per class.

    ``f_c`` is class ``c``'s share of the counted pixels. The weights are scaled so that the
    average weight of a labelled pixel is 1 (``sum f_c w_c = 1``); classes with no pixel get 0
    (no pixel is ever weighted by it). ``exponent`` 0 gives 1 for every present class.
    """
    counts = np.asarray(pixel_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0 or (counts < 0).any():
        raise ValueError(f"pixel counts must be a non-empty list of counts >= 0, got {counts.tolist()}")
    if counts.sum() <= 0:
        raise ValueError("pixel counts are all 0: no labelled pixel to balance the classes on")
    frequency = counts / counts.sum()
    weights = np.zeros_like(frequency)
    present = frequency > 0
    weights[present] = frequency[present] ** -float(exponent)
    return weights / float((frequency * weights).sum())


ROI_TARGETS: tuple[str, ...] = get_args(RoiTarget)


def roi_loss(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor, roi: torch.Tensor,
             target: str = "maximum") -> torch.Tensor:
    """Target-aware term inside the box masks ``roi (B, 1, H, W)``: 0 when no pixel is inside a box.

    ``sum(roi (F - T)^2) / sum(roi) + sum(roi |(|grad F| - G)|) / sum(roi)`` with, for ``target``
    ``"maximum"``, ``T = max(I, V)`` and ``G = max(|grad I|, |grad V|)``; for ``"infrared"``,
    ``T = I`` and ``G = |grad I|``.
    """
    if target not in ROI_TARGETS:
        raise ValueError(f"roi target {target!r}: expected one of {', '.join(ROI_TARGETS)}")
    roi = roi.to(fused.dtype)
    count = roi.sum().clamp(min=1.0)
    if target == "infrared":
        intensity_target, gradient_target = ir, sobel_magnitude_l1(ir)
    else:
        intensity_target = torch.maximum(ir, vi)
        gradient_target = torch.maximum(sobel_magnitude_l1(ir), sobel_magnitude_l1(vi))
    intensity = (roi * (fused - intensity_target).pow(2)).sum() / count
    gradient = (roi * (sobel_magnitude_l1(fused) - gradient_target).abs()).sum() / count
    return intensity + gradient


class FusionLoss:
    """The fusion-stage objective, weighted by :class:`uaafusion.config.LossConfig`.

    ``loss(output, ir, vi, logits, labels, roi) -> {"intensity", "gradient", "segmentation",
    "roi", "metrics", "total"}``: the terms unweighted, ``total`` = the weighted sum. ``logits`` are
    ``S(output.fused)`` (gradients flow through the frozen segmenter to the fused image); the
    segmentation term is the cross-entropy against ``labels`` (METHOD.md §3; Dice belongs to the
    segmentation stage), weighted by ``class_weights (C,)`` when given (``loss.class_balance``). ``logits``/``labels``/``roi`` may be None (their term is 0); terms with
    weight 0 are reported as 0 and not computed.
    """

    def __init__(self, loss_config: LossConfig, ignore_index: int = 255,
                 class_weights: torch.Tensor | None = None) -> None:
        self.config = loss_config
        self.ignore_index = ignore_index
        self.class_weights = class_weights

    def __call__(
        self,
        output: FusionOutput,
        ir: torch.Tensor,
        vi: torch.Tensor,
        logits: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        roi: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        fused = output.fused
        zero = fused.new_zeros(())
        config = self.config
        terms: dict[str, torch.Tensor] = {
            "intensity": intensity_loss(fused, ir, vi, output.weight_ir, output.weight_vi, config.intensity_target)
            if config.intensity > 0 else zero,
            "gradient": gradient_loss(fused, ir, vi) if config.gradient > 0 else zero,
            "segmentation": segmentation_loss(logits, labels, self.ignore_index, class_weights=self.class_weights)
            if config.segmentation > 0 and logits is not None and labels is not None else zero,
            "roi": roi_loss(fused, ir, vi, roi, config.roi_target) if config.roi > 0 and roi is not None else zero,
            "metrics": fusion_metric_loss(fused, ir, vi) if config.metrics > 0 else zero,
        }
        terms["total"] = (
            config.intensity * terms["intensity"]
            + config.gradient * terms["gradient"]
            + config.segmentation * terms["segmentation"]
            + config.roi * terms["roi"]
            + config.metrics * terms["metrics"]
        )
        return terms
