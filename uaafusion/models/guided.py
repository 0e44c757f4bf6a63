"""What every fusion model of the registry shares: the segmenter's guidance.

A fusion model is given ``ir, vi (B, 1, H, W)``, the segmenter, and optionally the one-hot class mask
``(B, C, H, W)`` and the attribution weights ``(w_ir, w_vi)``. Without labels (inference) the mask is
the segmenter's prediction (:meth:`AttributionGuidedFusion.predicted_mask`); without cached weights
they are computed by integrated gradients (:meth:`AttributionGuidedFusion.attribution_weights`,
docs/method.md §1). Subclasses implement ``forward`` and return a
:class:`~uaafusion.models.unfolding.FusionOutput`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from uaafusion.attribution import (
    ATTRIBUTION_METHODS,
    DEFAULT_ENGINE,
    DEFAULT_INTERNAL_BATCH_SIZE,
    frozen_segmenter,
    mask_from_logits,
    modality_weights,
)
from uaafusion.errors import ConfigError, DataError

# The image whose segmentation gives the class mask when no labels are given (inference).
INFERENCE_MASKS: tuple[str, ...] = ("average", "infrared")

# What an eval-mode forward computes (docs/inference.md). "exact": what training computes; "fast": a
# model may reuse work between its stages (the unfolding network shares one segmenter gradient).
INFERENCE_MODES: tuple[str, ...] = ("fast", "exact")

LOGIT_EPS = 1e-4


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """A 3x3 'same' convolution (any ``H, W``)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, stride=stride)


def start_small(layer: nn.Module) -> nn.Module:
    """``layer``'s weight small (not zero: every parameter must receive gradients) and its bias zero:
    a correction that starts near nothing."""
    nn.init.normal_(layer.weight, std=1e-3)
    nn.init.zeros_(layer.bias)
    return layer


def corrected(estimate: torch.Tensor, correction: torch.Tensor) -> torch.Tensor:
    """``sigmoid(logit(estimate) + correction)``: an estimate in [0, 1] corrected in logit space."""
    return torch.sigmoid(torch.logit(estimate.clamp(LOGIT_EPS, 1.0 - LOGIT_EPS)) + correction)


def check_size(name: str, value: object, minimum: int) -> int:
    """``model.fusion.<name>`` must be an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"model.fusion.{name} = {value!r}: expected an integer >= {minimum}.")
    return value


class AttributionGuidedFusion(nn.Module):
    """Base of the fusion models: their sizes (``stages``: their 3x3 blocks or stages; ``features``: the
    channels), the attribution and inference-mask settings, the predicted mask and the attribution
    weights (see the module's docstring). A subclass builds its layers in :meth:`build`, which the
    constructor calls last (or after ``super().__init__`` when it takes more arguments)."""

    def __init__(
        self,
        stages: int = 3,
        features: int = 16,
        attribution_steps: int = 5,
        attribution_method: str = "riemann_right",
        internal_batch_size: int | None = DEFAULT_INTERNAL_BATCH_SIZE,
        attribution_engine: str = DEFAULT_ENGINE,
        attribution_scale: float = 1.0,
        inference_mask: str = "average",
        inference_mode: str = "fast",
    ) -> None:
        super().__init__()
        for key, value, allowed in (("attribution.method", attribution_method, ATTRIBUTION_METHODS),
                                    ("model.fusion.inference_mask", inference_mask, INFERENCE_MASKS),
                                    ("model.fusion.inference_mode", inference_mode, INFERENCE_MODES)):
            if value not in allowed:
                raise ConfigError(f"{key} = {value!r} is not allowed; allowed: {', '.join(allowed)}.")
        self.attribution_steps = attribution_steps
        self.attribution_method = attribution_method
        self.internal_batch_size = internal_batch_size
        self.attribution_engine = attribution_engine
        self.attribution_scale = attribution_scale
        self.inference_mask = inference_mask
        self.inference_mode = inference_mode
        self.stages = check_size("stages", stages, 1)
        self.features = check_size("features", features, 1)
        self.build(self.stages, self.features)

    def build(self, stages: int, features: int) -> None:
        """The subclass's layers (nothing here)."""

    def predicted_mask(self, segmenter: nn.Module, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
        """The class mask fusion uses without labels: one-hot ``(B, C, H, W)`` of ``argmax S(X)``.

        ``X`` is the pixel average ``(ir + vi) / 2`` (``inference_mask="average"``) or the infrared
        image (``"infrared"``: warm objects such as people stand out there; docs/experiments.md, item 2).
        """
        source = (ir + vi) / 2 if self.inference_mask == "average" else ir
        with torch.no_grad():
            return mask_from_logits(frozen_segmenter(segmenter)(source.detach()))

    def attribution_weights(self, segmenter: nn.Module, ir: torch.Tensor, vi: torch.Tensor, mask: torch.Tensor,
                            max_pixels: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The weights ``(w_ir, w_vi)`` ``(B, 1, H, W)`` that ``forward`` computes when none are given.

        ``max_pixels`` caps the image the region scores are computed on (the attribution scale is
        lowered until ``H * W * scale^2 <= max_pixels``): tiled inference of very large images
        (:mod:`uaafusion.tiling`) uses it to keep the attribution's time and memory bounded.
        """
        scale = self.attribution_scale
        if max_pixels is not None:
            scale = min(scale, math.sqrt(max_pixels / float(ir.shape[-2] * ir.shape[-1])))
        return modality_weights(
            segmenter, ir, vi, mask, self.attribution_steps, self.attribution_method, self.internal_batch_size,
            engine=self.attribution_engine, scale=scale,
        )

    def guidance(self, ir: torch.Tensor, vi: torch.Tensor, segmenter: nn.Module, mask: torch.Tensor | None,
                 weights: tuple[torch.Tensor, torch.Tensor] | None,
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(mask, w_ir, w_vi)`` for ``forward``: the given ones checked against ``ir, vi (B, 1, H, W)``,
        else the predicted mask and the computed weights."""
        if ir.dim() != 4 or ir.shape[1] != 1 or ir.shape != vi.shape:
            raise DataError(f"ir and vi must both be (B, 1, H, W); got {tuple(ir.shape)} and {tuple(vi.shape)}")
        if mask is None:
            mask = self.predicted_mask(segmenter, ir, vi)
        if mask.dim() != 4 or mask.shape[0] != ir.shape[0] or mask.shape[-2:] != ir.shape[-2:]:
            raise DataError(f"mask must be (B, C, H, W) matching {tuple(ir.shape)}, got {tuple(mask.shape)}")
        mask = mask.to(ir.dtype)
        if weights is None:
            weight_ir, weight_vi = self.attribution_weights(segmenter, ir, vi, mask)
        else:
            weight_ir, weight_vi = weights
            if weight_ir.shape != ir.shape or weight_vi.shape != ir.shape:
                raise DataError(
                    f"weights must both be {tuple(ir.shape)}; got {tuple(weight_ir.shape)} and {tuple(weight_vi.shape)}"
                )
        return mask, weight_ir.to(ir), weight_vi.to(ir)

