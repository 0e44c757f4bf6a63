"""``alpha_blend``: a FusionNet-style head (docs/method.md, "Other fusion heads").

Each source is encoded with its attribution weight (``[I, w_I]`` and ``[V, w_V]``); a modality-aware
attention re-weights the two feature sets channel by channel (a softmax over the modalities of
pooled features); a few 3x3 blocks predict a pixel-wise ``alpha`` and a small detail term ``delta``:

    F = alpha * V + (1 - alpha) * I + delta,   alpha = sigmoid(logit(w_V) + a(features)),
    delta = 0.1 * tanh(d(features)).

``a`` and ``d`` start near zero, so an untrained head blends the sources with the attribution weights
(``alpha = w_V``), as the unfolding network starts from the attribution-weighted estimate.
"""

from __future__ import annotations

import torch
from torch import nn

from uaafusion.models.guided import AttributionGuidedFusion, conv3x3, corrected, start_small
from uaafusion.models.unfolding import FusionOutput

DETAIL_RANGE = 0.1  # |delta| <= 0.1: a detail correction, not a second image


class AlphaBlendFusion(AttributionGuidedFusion):
    """Pixel-wise alpha blending with modality-aware attention (FusionNet-style), attribution-guided.

    ``forward(ir, vi, segmenter, mask=None, weights=None) -> FusionOutput`` with ``ir, vi (B, 1, H, W)``
    in [0, 1]; the output's ``maps["alpha"] (B, 1, H, W)`` in [0, 1] is the visible image's share.
    ``stages``: 3x3 blocks after the attention; ``features``: their channels.
    """

    def build(self, stages: int, features: int) -> None:
        self.encode_ir = nn.Sequential(conv3x3(2, features), nn.LeakyReLU(0.1))
        self.encode_vi = nn.Sequential(conv3x3(2, features), nn.LeakyReLU(0.1))
        self.modality_attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(2 * features, features, 1), nn.ReLU(), nn.Conv2d(features, 2 * features, 1))
        self.blocks = nn.Sequential(*(layer for _ in range(stages) for layer in (conv3x3(features, features),
                                                                                 nn.LeakyReLU(0.1))))
        self.alpha_head = start_small(conv3x3(features, 1))
        self.detail_head = start_small(conv3x3(features, 1))

    def forward(
        self,
        ir: torch.Tensor,
        vi: torch.Tensor,
        segmenter: nn.Module,
        mask: torch.Tensor | None = None,
        weights: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> FusionOutput:
        """Fuse ``ir, vi (B, 1, H, W)``; ``mask`` and ``weights`` as for the unfolding network."""
        mask, weight_ir, weight_vi = self.guidance(ir, vi, segmenter, mask, weights)
        features_ir = self.encode_ir(torch.cat([ir, weight_ir], dim=1))
        features_vi = self.encode_vi(torch.cat([vi, weight_vi], dim=1))
        logits = self.modality_attention(torch.cat([features_ir, features_vi], dim=1))
        share = torch.softmax(logits.view(ir.shape[0], 2, self.features, 1, 1), dim=1)  # per channel, sums to 1
        features = self.blocks(share[:, 0] * features_ir + share[:, 1] * features_vi)
        alpha = corrected(weight_vi, self.alpha_head(features))  # starts at w_V
        detail = DETAIL_RANGE * torch.tanh(self.detail_head(features))
        fused = (alpha * vi + (1.0 - alpha) * ir + detail).clamp(0.0, 1.0)
        return FusionOutput(fused=fused, weight_ir=weight_ir, weight_vi=weight_vi, estimates=[fused], mask=mask,
                            maps={"alpha": alpha})
