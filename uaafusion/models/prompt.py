"""``prompt``: a degradation-aware head in the manner of LURE and Text-IF (docs/method.md, "Other fusion heads").

Published work conditions fusion on a frozen text encoder's embedding of one fixed sentence per
degradation kind; a learnt embedding per kind carries the same information. Here:

- a **unified latent space**: one encoder over ``[I, V, w_I, w_V]`` (both modalities and their
  attribution weights) at two resolutions, where the fusion rules are learnt;
- the **degradation prompt**: an embedding per kind of :data:`DEGRADATION_KINDS` (``clean`` and the
  kinds of :mod:`uaafusion.data.degrade`); given in training (the kind each crop was degraded with),
  predicted by a small classifier otherwise (the embeddings averaged with its probabilities);
- **FiLM** at each decoder level, ``(1 + gamma) x + beta`` from the prompt, starting at the identity;
- the output: the attribution-weighted estimate corrected in logit space (starting near zero).

Its own loss term: the classifier's cross-entropy on the given kinds (``loss.degradation``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from uaafusion.data.degrade import DEGRADATIONS
from uaafusion.data.sample_degradation import CLEAN
from uaafusion.errors import DataError
from uaafusion.models.guided import AttributionGuidedFusion, conv3x3, corrected, start_small
from uaafusion.models.unfolding import FusionOutput

DEGRADATION_KINDS: tuple[str, ...] = (CLEAN, *DEGRADATIONS)
"""The prompt's kinds, in the order of the classifier's logits and the embedding table."""


def kind_indices(kinds: Sequence[str], device: torch.device | None = None) -> torch.Tensor:
    """``int64 (B,)`` positions of ``kinds`` in :data:`DEGRADATION_KINDS`; an unknown kind is a DataError."""
    unknown = sorted(set(kinds) - set(DEGRADATION_KINDS))
    if unknown:
        raise DataError(f"degradation kind(s) {unknown} unknown to the prompt head; known: {', '.join(DEGRADATION_KINDS)}.")
    return torch.tensor([DEGRADATION_KINDS.index(kind) for kind in kinds], dtype=torch.int64, device=device)


class FiLM(nn.Module):
    """``(1 + gamma) x + beta`` with ``gamma, beta (B, C)`` from a prompt ``(B, E)``; the identity at first."""

    def __init__(self, prompt_size: int, channels: int) -> None:
        super().__init__()
        self.project = start_small(nn.Linear(prompt_size, 2 * channels))

    def forward(self, features: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.project(prompt)[..., None, None].chunk(2, dim=1)
        return (1.0 + gamma) * features + beta


class StatisticsPooling(nn.Module):
    """``(B, C, H, W) -> (B, 2C)``: each channel's mean and standard deviation over the pixels (a
    degradation shows in the statistics of local features more than in their mean: noise, stripes)."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        flat = features.flatten(2)
        return torch.cat([flat.mean(dim=2), flat.std(dim=2)], dim=1)


class PromptFusion(AttributionGuidedFusion):
    """Degradation-prompted fusion in a unified latent space with FiLM (LURE / Text-IF-style), attribution-guided.

    ``forward(ir, vi, segmenter, mask=None, weights=None, degradation=None) -> FusionOutput``;
    ``degradation``: the kind of each sample (training), else predicted. The output's
    ``degradation_logits (B, K)`` are the classifier's over :data:`DEGRADATION_KINDS`.
    ``stages``: 3x3 blocks at the coarse level; ``features``: channels at full resolution (twice as
    many at the coarse level) and the prompt's size.
    """

    accepts_degradation = True

    def build(self, stages: int, features: int) -> None:
        coarse = 2 * features
        self.prompts = nn.Embedding(len(DEGRADATION_KINDS), features)
        self.classifier = nn.Sequential(conv3x3(2, features, 2), nn.LeakyReLU(0.1), conv3x3(features, features, 2),
                                        nn.LeakyReLU(0.1), StatisticsPooling(),
                                        nn.Linear(2 * features, len(DEGRADATION_KINDS)))
        self.encode = nn.Sequential(conv3x3(4, features), nn.LeakyReLU(0.1))
        self.down = nn.Sequential(conv3x3(features, coarse, 2), nn.LeakyReLU(0.1))
        self.coarse_film = FiLM(features, coarse)
        self.coarse_blocks = nn.Sequential(*(layer for _ in range(stages) for layer in (conv3x3(coarse, coarse),
                                                                                        nn.LeakyReLU(0.1))))
        self.merge = nn.Sequential(conv3x3(coarse + features, features), nn.LeakyReLU(0.1))
        self.fine_film = FiLM(features, features)
        self.output = start_small(conv3x3(features, 1))

    def forward(
        self,
        ir: torch.Tensor,
        vi: torch.Tensor,
        segmenter: nn.Module,
        mask: torch.Tensor | None = None,
        weights: tuple[torch.Tensor, torch.Tensor] | None = None,
        degradation: Sequence[str] | None = None,
    ) -> FusionOutput:
        """Fuse ``ir, vi (B, 1, H, W)``; ``mask`` and ``weights`` as for the unfolding network."""
        class_mask, weight_ir, weight_vi = self.guidance(ir, vi, segmenter, mask, weights)
        logits = self.classifier(torch.cat([ir, vi], dim=1))
        if degradation is None:
            prompt = torch.softmax(logits, dim=1) @ self.prompts.weight
        else:
            if len(degradation) != ir.shape[0]:
                raise DataError(f"{len(degradation)} degradation kinds for a batch of {ir.shape[0]} pairs")
            prompt = self.prompts(kind_indices(degradation, ir.device))
        full = self.encode(torch.cat([ir, vi, weight_ir, weight_vi], dim=1))
        coarse = self.coarse_blocks(self.coarse_film(self.down(full), prompt))
        upsampled = nn.functional.interpolate(coarse, size=ir.shape[-2:], mode="bilinear", align_corners=False)
        features = self.fine_film(self.merge(torch.cat([upsampled, full], dim=1)), prompt)
        estimate = weight_ir * ir + weight_vi * vi
        fused = corrected(estimate, self.output(features))
        return FusionOutput(fused=fused, weight_ir=weight_ir, weight_vi=weight_vi, estimates=[fused], mask=class_mask,
                            degradation_logits=logits)
