"""``mask_guided``: an AMG-Fuse-style head (docs/method.md, "Other fusion heads").

From the attribution-weighted estimate ``F0 = w_I I + w_V V``:

1. **modality-aware mask** ``m`` (per pixel, how much the fused image follows the visible one): the
   share that solves ``F0 = m V + (1 - m) I``, sharpened, ``m0 = sigmoid(k (clamp((F0 - I) / (V - I), 0, 1)
   - 1/2))`` with ``k = 5`` (0.5 where ``|V - I|`` is tiny), refined by a small network in logit space;
2. **mask-guided cross-attention**: queries from the visible features times ``m`` and from the
   infrared features times ``1 - m``, keys and values from the fused stream's features; attention over
   channels (a ``C x C`` map, any image size); a squeeze-excitation pair of weights mixes the two;
3. the fused image is ``F0`` corrected in logit space by a decoder that starts near zero.

Its own loss term (:func:`mask_target`, ``loss.mask``): the mask against the same formula on a pseudo
ground truth (``loss.mask_target``: the pixel maximum, or ``F0``).
"""

from __future__ import annotations

import torch
from torch import nn

from uaafusion.models.guided import AttributionGuidedFusion, conv3x3, corrected, start_small
from uaafusion.models.unfolding import FusionOutput

MASK_SHARPNESS = 5.0  # k of AMG-Fuse's mask
_DIFFERENCE_EPS = 1e-3


def modality_mask(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """``m = sigmoid(k (clamp((F - I) / (V - I), 0, 1) - 1/2))`` ``(B, 1, H, W)`` in (0, 1); where ``V`` and
    ``I`` (nearly) agree the share is undefined and taken as 1/2."""
    difference = vi - ir
    defined = difference.abs() > _DIFFERENCE_EPS
    share = torch.where(defined, (fused - ir) / torch.where(defined, difference, torch.ones_like(difference)),
                        torch.full_like(fused, 0.5))
    return torch.sigmoid(MASK_SHARPNESS * (share.clamp(0.0, 1.0) - 0.5))


def mask_target(ir: torch.Tensor, vi: torch.Tensor, weight_ir: torch.Tensor, weight_vi: torch.Tensor,
                source: str) -> torch.Tensor:
    """The mask's pseudo ground truth ``m*`` ``(B, 1, H, W)``: :func:`modality_mask` of the pixel maximum
    (``source="max"``: the brighter source wins) or of the attribution-weighted estimate (``"weighted"``)."""
    pseudo = torch.maximum(ir, vi) if source == "max" else weight_ir * ir + weight_vi * vi
    return modality_mask(pseudo, ir, vi)


class ChannelCrossAttention(nn.Module):
    """Queries ``(B, C, H, W)`` attend to keys/values of the same shape over channels: ``softmax(q k^T / t) v``
    with ``q, k`` normalised over the pixels and a learned temperature ``t`` (cost linear in ``H W``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.query = nn.Conv2d(channels, channels, 1)
        self.key = nn.Conv2d(channels, channels, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, queries: torch.Tensor, keys_values: torch.Tensor) -> torch.Tensor:
        batch, channels = queries.shape[:2]
        query = nn.functional.normalize(self.query(queries).flatten(2), dim=-1)
        key = nn.functional.normalize(self.key(keys_values).flatten(2), dim=-1)
        attention = torch.softmax(query @ key.transpose(1, 2) * self.log_temperature.exp() * channels ** 0.5, dim=-1)
        return (attention @ self.value(keys_values).flatten(2)).view_as(queries)


class MaskGuidedFusion(AttributionGuidedFusion):
    """Modality-aware mask and mask-guided cross-attention (AMG-Fuse-style), attribution-guided.

    ``forward(ir, vi, segmenter, mask=None, weights=None) -> FusionOutput`` with ``ir, vi (B, 1, H, W)``
    in [0, 1]; the output's ``maps["mask"] (B, 1, H, W)`` in [0, 1] is the modality-aware mask ``m``.
    ``stages``: 3x3 blocks of the fused stream; ``features``: their channels.
    """

    def build(self, stages: int, features: int) -> None:
        self.encode_ir = nn.Sequential(conv3x3(2, features), nn.LeakyReLU(0.1))
        self.encode_vi = nn.Sequential(conv3x3(2, features), nn.LeakyReLU(0.1))
        self.fused_stream = nn.Sequential(conv3x3(3, features), nn.LeakyReLU(0.1),
                                          *(layer for _ in range(stages) for layer in (conv3x3(features, features),
                                                                                       nn.LeakyReLU(0.1))))
        self.refine_mask = nn.Sequential(conv3x3(features + 1, features), nn.LeakyReLU(0.1),
                                         start_small(conv3x3(features, 1)))
        self.attend_visible = ChannelCrossAttention(features)
        self.attend_infrared = ChannelCrossAttention(features)
        self.mix = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(2 * features, 2, 1))
        self.decode = nn.Sequential(conv3x3(features, features), nn.LeakyReLU(0.1), start_small(conv3x3(features, 1)))

    def forward(
        self,
        ir: torch.Tensor,
        vi: torch.Tensor,
        segmenter: nn.Module,
        mask: torch.Tensor | None = None,
        weights: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> FusionOutput:
        """Fuse ``ir, vi (B, 1, H, W)``; ``mask`` and ``weights`` as for the unfolding network."""
        class_mask, weight_ir, weight_vi = self.guidance(ir, vi, segmenter, mask, weights)
        estimate = weight_ir * ir + weight_vi * vi
        features_ir = self.encode_ir(torch.cat([ir, weight_ir], dim=1))
        features_vi = self.encode_vi(torch.cat([vi, weight_vi], dim=1))
        fused_features = self.fused_stream(torch.cat([estimate, ir, vi], dim=1))
        first_mask = modality_mask(estimate, ir, vi)
        modality = corrected(first_mask, self.refine_mask(torch.cat([fused_features, first_mask], dim=1)))
        visible = self.attend_visible(features_vi * modality, fused_features)
        infrared = self.attend_infrared(features_ir * (1.0 - modality), fused_features)
        shares = torch.softmax(self.mix(torch.cat([visible, infrared], dim=1)), dim=1)  # (B, 2, 1, 1)
        correction = self.decode(fused_features + shares[:, :1] * visible + shares[:, 1:] * infrared)
        fused = corrected(estimate, correction)
        return FusionOutput(fused=fused, weight_ir=weight_ir, weight_vi=weight_vi, estimates=[fused], mask=class_mask,
                            maps={"mask": modality})
