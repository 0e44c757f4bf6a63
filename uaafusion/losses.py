"""Losses of the fusion and segmentation stages (docs/method.md §3).

All images are ``(B, 1, H, W)`` in [0, 1]; logits ``(B, C, H, W)``; labels ``int64 (B, H, W)``
with ``ignore_index`` for unknown pixels; ROI masks ``(B, 1, H, W)`` (1 inside boxes). Every loss
returns a scalar tensor and stays finite when a mask is empty (0, never NaN).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as functional

from uaafusion.config import LossConfig
from uaafusion.imageops import sobel_magnitude_l1

if TYPE_CHECKING:
    from uaafusion.models.unfolding import FusionOutput


def intensity_loss(
    fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor, w_ir: torch.Tensor, w_vi: torch.Tensor,
) -> torch.Tensor:
    """All inputs ``(B, 1, H, W)``: ``mean((w_ir * (F - I))^2) + mean((w_vi * (F - V))^2)`` (docs/method.md §3)."""
    return (w_ir * (fused - ir)).pow(2).mean() + (w_vi * (fused - vi)).pow(2).mean()


def gradient_loss(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """``L1(|grad F|, max(|grad I|, |grad V|))`` with the Sobel ``|gx| + |gy|`` of :mod:`uaafusion.imageops`."""
    target = torch.maximum(sobel_magnitude_l1(ir), sobel_magnitude_l1(vi))
    return functional.l1_loss(sobel_magnitude_l1(fused), target)


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


def roi_loss(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor, roi: torch.Tensor) -> torch.Tensor:
    """Target-aware term inside the box masks ``roi (B, 1, H, W)``: 0 when no pixel is inside a box.

    ``sum(roi (F - max(I, V))^2) / sum(roi) + sum(roi |(|grad F| - max(|grad I|, |grad V|))|) / sum(roi)``:
    inside the boxes the fused image follows the brighter source and the stronger gradient.
    """
    roi = roi.to(fused.dtype)
    count = roi.sum().clamp(min=1.0)
    intensity_target = torch.maximum(ir, vi)
    gradient_target = torch.maximum(sobel_magnitude_l1(ir), sobel_magnitude_l1(vi))
    intensity = (roi * (fused - intensity_target).pow(2)).sum() / count
    gradient = (roi * (sobel_magnitude_l1(fused) - gradient_target).abs()).sum() / count
    return intensity + gradient


def mask_loss(output: FusionOutput, ir: torch.Tensor, vi: torch.Tensor, target: str) -> torch.Tensor:
    """Mean absolute difference between a head's modality mask ``output.maps["mask"]`` and its pseudo ground
    truth from the sources ``ir, vi (B, 1, H, W)`` (:func:`uaafusion.models.mask_guided.mask_target`)."""
    from uaafusion.models.mask_guided import mask_target

    expected = mask_target(ir, vi, output.weight_ir, output.weight_vi, target)
    return (output.maps["mask"] - expected).abs().mean()


def degradation_loss(logits: torch.Tensor, kinds: Sequence[str]) -> torch.Tensor:
    """Cross-entropy of a head's degradation classifier ``logits (B, K)`` on the ``kinds`` the crops were
    degraded with (:data:`uaafusion.models.prompt.DEGRADATION_KINDS` order)."""
    from uaafusion.models.prompt import kind_indices

    return functional.cross_entropy(logits, kind_indices(kinds, logits.device))


class FusionLoss:
    """The fusion-stage objective, weighted by :class:`uaafusion.config.LossConfig`.

    ``loss(output, ir, vi, logits, labels, roi) -> {"intensity", "gradient", "segmentation",
    "roi", "total"}``, ``"mask"`` for a head with a modality mask (:func:`mask_loss`) and
    ``"degradation"`` for a degradation-aware head given the crops' ``degradation`` kinds
    (:func:`degradation_loss`): the terms unweighted, ``total`` = the weighted sum. ``logits`` are
    ``S(output.fused)`` (gradients flow through the frozen segmenter to the fused image); the
    segmentation term is the cross-entropy against ``labels`` (docs/method.md §3; Dice belongs to the
    segmentation stage), weighted by ``class_weights (C,)`` when given (``loss.class_balance``).
    ``logits``/``labels``/``roi`` may be None (their term is 0); terms with weight 0 are reported as
    0 and not computed.
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
        degradation: Sequence[str] | None = None,
    ) -> dict[str, torch.Tensor]:
        fused = output.fused
        zero = fused.new_zeros(())
        config = self.config
        terms: dict[str, torch.Tensor] = {
            "intensity": intensity_loss(fused, ir, vi, output.weight_ir, output.weight_vi)
            if config.intensity > 0 else zero,
            "gradient": gradient_loss(fused, ir, vi) if config.gradient > 0 else zero,
            "segmentation": segmentation_loss(logits, labels, self.ignore_index, class_weights=self.class_weights)
            if config.segmentation > 0 and logits is not None and labels is not None else zero,
            "roi": roi_loss(fused, ir, vi, roi) if config.roi > 0 and roi is not None else zero,
        }
        if "mask" in output.maps:  # a head with a modality mask (mask_guided)
            terms["mask"] = mask_loss(output, ir, vi, config.mask_target) if config.mask > 0 else zero
        if output.degradation_logits is not None and degradation is not None:  # a degradation-aware head
            # Computed even at weight 0: the classifier stays in the graph (DistributedDataParallel
            # expects a gradient for every parameter it keeps in step).
            terms["degradation"] = degradation_loss(output.degradation_logits, degradation)
        terms["total"] = (
            config.intensity * terms["intensity"]
            + config.gradient * terms["gradient"]
            + config.segmentation * terms["segmentation"]
            + config.roi * terms["roi"]
            + config.mask * terms.get("mask", zero)
            + config.degradation * terms.get("degradation", zero)
        )
        return terms
