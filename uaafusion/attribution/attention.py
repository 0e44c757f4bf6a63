"""Pathway attention of the unfolding network (docs/method.md §2): integrated gradients along the
path the unfolding takes, instead of a straight line from a baseline."""

from __future__ import annotations

import torch
from torch import nn

from uaafusion.attribution.integrated import autograd_usable, frozen_segmenter, gradients_enabled


def segmentation_score_gradient(segmenter: nn.Module, estimate: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``g = d<M, S(F)>/dF``: estimate ``F (B, 1, H, W)``, mask ``(B, C, H, W)`` -> ``(B, 1, H, W)``.

    The segmenter runs frozen in eval mode (images do not interact), gradients are taken with
    respect to ``F`` only, and the result is detached (no graph, no parameter ``.grad``).
    """
    segmenter = frozen_segmenter(segmenter)
    with gradients_enabled():
        point = autograd_usable(estimate).requires_grad_(True)
        score = (segmenter(point) * autograd_usable(mask).to(point.dtype)).sum()
        (gradient,) = torch.autograd.grad(score, point)
    return gradient.detach()


def pathway_attention(
    segmenter: nn.Module,
    estimate: torch.Tensor,
    previous_estimate: torch.Tensor,
    mask: torch.Tensor,
    running_mean: torch.Tensor | None = None,
    stage: int = 1,
    gradient: torch.Tensor | None = None,
) -> torch.Tensor:
    """Running mean over stages of ``g_j * (F_j - F_{j-1})`` (path-integrated gradients of the unfolding).

    estimate ``F_j``, previous_estimate ``F_{j-1}``: ``(B, 1, H, W)``; mask ``(B, C, H, W)``;
    ``running_mean``: the value returned at stage ``j-1`` (None at the first stage); ``stage``: ``j``
    (1-based). Returns ``(B, 1, H, W)``. ``g_j`` is a constant (:func:`segmentation_score_gradient`);
    the step ``F_j - F_{j-1}`` keeps its graph, so the attention is differentiable in the estimates.
    ``gradient``: a ``g`` ``(B, 1, H, W)`` to use instead of computing ``g_j`` (the fast inference
    mode reuses the first stage's; docs/inference.md).
    """
    if gradient is None:
        gradient = segmentation_score_gradient(segmenter, estimate, mask)
    contribution = gradient * (estimate - previous_estimate)
    if running_mean is None or stage <= 1:
        return contribution
    return running_mean + (contribution - running_mean) / float(stage)
