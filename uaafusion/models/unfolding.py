"""The UAAFusion unfolding network (docs/method.md §2).

Each of the ``K`` stages is one proximal-gradient iteration on the attribution-weighted data term
``D(F) = 1/2 ||F - (w_I I + w_V V)||^2``, starting from ``F_0 = (I + V) / 2``:

1. gradient step ``G_k = F_{k-1} - alpha_k (F_{k-1} - (w_I I + w_V V))`` with a learned
   ``alpha_k = sigmoid(step_size_logits[k])`` in (0, 1), applied (it trains);
2. attribution attention: ``P_k`` = running mean over ``j <= k`` of ``g_j * (G_j - F_{j-1})``,
   ``g_j = d<M, S(G_j)>/dG_j`` (the path the unfolding actually takes); ``P_k`` is divided by its
   per-image root mean square (raw gradients are tiny and their scale varies with the segmenter)
   and scaled by a learned ``gamma_k`` before the sigmoid;
3. learned proximal operator with memory: a ConvLSTM cell takes ``[phi_k(G_k), l, s]`` and its
   state ``(h, c)``; the long-term memory is ``l = conv(h)``; the short-term memory is
   ``s = l + conv_k(l) * sigmoid(gamma_k P_k)``; the new estimate is
   ``F_k = sigmoid(logit(G_k) + psi_k(s))``: the paper's ``sigmoid(conv(s))`` with a skip from the
   gradient step, so that an untrained network starts at the attribution-weighted estimate
   (``psi_k``'s last layer starts near zero) instead of flat gray, and short training on CPU
   already gives sharp images.

``phi_k``, ``conv_k``, ``psi_k``, ``alpha_k`` and ``gamma_k`` are per stage; the ConvLSTM cell and
the ``l = conv(h)`` convolution are shared (they are the recurrence). All convolutions are 3x3
'same', so any ``H, W`` works without padding.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from uaafusion.attribution import (
    DEFAULT_ENGINE,
    DEFAULT_INTERNAL_BATCH_SIZE,
    pathway_attention,
    segmentation_score_gradient,
)
from uaafusion.errors import ConfigError
from uaafusion.models.guided import LOGIT_EPS, AttributionGuidedFusion, conv3x3
from uaafusion.models.memory import ConvLSTMCell


@dataclass
class FusionOutput:
    """What the fusion network returns (all ``(B, 1, H, W)``).

    fused: the fused luma in [0, 1]; weight_ir/weight_vi: the attribution weights used;
    attention: per stage, the attention gate ``sigmoid(gamma_k P_k)`` in [0, 1];
    estimates: per stage, ``F_k`` (the last one is ``fused``); mask: the one-hot ``(B, C, H, W)``
    mask used (given or predicted); maps: what a model adds for the report, by name (the alpha map
    of ``alpha_blend``), each ``(B, 1, H, W)`` in [0, 1]; degradation_logits: a degradation-aware
    model's ``(B, K)`` classifier logits over its kinds (``prompt``).
    """

    fused: torch.Tensor
    weight_ir: torch.Tensor
    weight_vi: torch.Tensor
    attention: list[torch.Tensor] = field(default_factory=list)
    estimates: list[torch.Tensor] = field(default_factory=list)
    mask: torch.Tensor | None = None
    maps: dict[str, torch.Tensor] = field(default_factory=dict)
    degradation_logits: torch.Tensor | None = None



# Inference modes (uaafusion.models.guided.INFERENCE_MODES) of this network: "exact" computes one
# segmenter gradient per stage for the attention, as training does; "fast" reuses the first stage's
# in the later stages (the estimates move little between stages: within 1% of exact on VIF, Qabf and
# SSIM on the MSRS test pairs, reports/benchmarks.md). Training always computes exactly.

# Without autograd (inference), each stage's proximal network runs over bands of about this many
# pixels, with a halo of one row per 3x3 convolution on its path (:data:`_HALO`): the same numbers,
# with the working memory of one band instead of the whole image (docs/inference.md).
INFERENCE_BAND_PIXELS = 1 << 17
_HALO = 7  # feature encoder 2, memory cell 1, long memory 1, short memory 1, output 2


_Memory = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class UnfoldingFusionNet(AttributionGuidedFusion):
    """Attribution-guided deep unfolding fusion network with memory-augmented proximal stages.

    ``forward(ir, vi, segmenter, mask=None, weights=None) -> FusionOutput`` with
    ``ir, vi (B, 1, H, W)`` in [0, 1]. ``segmenter`` maps ``(B, 1, H, W)`` to logits
    ``(B, C, H, W)``; it is only read (gradients reach its input, never its parameters).
    """

    def __init__(
        self,
        stages: int = 3,
        features: int = 16,
        attribution_steps: int = 5,
        attribution_method: str = "riemann_right",
        internal_batch_size: int | None = DEFAULT_INTERNAL_BATCH_SIZE,
        initial_step_size: float = 0.5,
        attention_eps: float = 1e-6,
        attribution_engine: str = DEFAULT_ENGINE,
        attribution_scale: float = 1.0,
        inference_mask: str = "average",
        inference_mode: str = "fast",
    ) -> None:
        super().__init__(stages, features, attribution_steps, attribution_method, internal_batch_size,
                         attribution_engine, attribution_scale, inference_mask, inference_mode)
        if not 0.0 < initial_step_size < 1.0:
            raise ConfigError(f"initial_step_size = {initial_step_size!r}: expected a number in (0, 1).")
        self.attention_eps = attention_eps
        self.spec: dict[str, object] = {
            "name": "uaafusion", "stages": stages, "features": features,
            "attribution_steps": attribution_steps, "attribution_method": attribution_method,
            "internal_batch_size": internal_batch_size, "initial_step_size": initial_step_size,
            "attention_eps": attention_eps, "attribution_engine": attribution_engine,
            "attribution_scale": attribution_scale, "inference_mask": inference_mask,
            "inference_mode": inference_mode,
        }
        logit = math.log(initial_step_size / (1.0 - initial_step_size))
        self.step_size_logits = nn.Parameter(torch.full((stages,), logit))
        self.attention_scales = nn.Parameter(torch.ones(stages))
        self.feature_encoders = nn.ModuleList(
            nn.Sequential(conv3x3(1, features), nn.LeakyReLU(0.1), conv3x3(features, features), nn.LeakyReLU(0.1))
            for _ in range(stages)
        )
        self.memory_cell = ConvLSTMCell(3 * features, features)
        self.long_memory_conv = conv3x3(features, features)
        self.short_memory_convs = nn.ModuleList(conv3x3(features, features) for _ in range(stages))
        self.output_convs = nn.ModuleList(
            nn.Sequential(conv3x3(features, features), nn.LeakyReLU(0.1), conv3x3(features, 1)) for _ in range(stages)
        )
        for output_conv in self.output_convs:
            # Small (not zero: every parameter must receive gradients) initial corrections.
            nn.init.normal_(output_conv[-1].weight, std=1e-3)
            nn.init.zeros_(output_conv[-1].bias)

    @property
    def step_sizes(self) -> torch.Tensor:
        """The learned ``alpha_k``, shape ``(K,)``, each in (0, 1)."""
        return torch.sigmoid(self.step_size_logits)

    def _normalise_attention(self, attention: torch.Tensor) -> torch.Tensor:
        """Divide each image's map ``(B, 1, H, W)`` by its root mean square.

        ``attention_eps`` goes inside the square root: differentiable where a map is all zero (it
        is at stage 1 when ``w_I I + w_V V = F_0``), and maps below ``eps`` stay near 0 (gate 0.5).
        """
        mean_square = attention.pow(2).mean(dim=(1, 2, 3), keepdim=True)
        return attention / (mean_square + self.attention_eps**2).sqrt()

    def _proximal(self, stage: int, moved: torch.Tensor, gate: torch.Tensor,
                  memory: _Memory | None) -> tuple[torch.Tensor, _Memory]:
        """One stage's learned proximal operator with memory: ``G_k`` ``(B, 1, H, W)``, the gate and the
        previous ``(hidden, cell, long, short)`` (None at the first stage) -> ``F_k`` and the new memory."""
        features = self.feature_encoders[stage](moved)
        if memory is None:  # memories and state are still zero: skip their part of the gate convolution
            hidden, cell = self.memory_cell.first_step(features)
        else:
            hidden, cell, long_memory, short_memory = memory
            hidden, cell = self.memory_cell(torch.cat([features, long_memory, short_memory], dim=1), (hidden, cell))
        long_memory = self.long_memory_conv(hidden)
        short_memory = long_memory + self.short_memory_convs[stage](long_memory) * gate
        # Proximal output as a correction of the gradient-step estimate (in logit space), so
        # an untrained stage starts near the attribution-weighted estimate instead of gray.
        estimate = torch.sigmoid(torch.logit(moved.clamp(LOGIT_EPS, 1.0 - LOGIT_EPS))
                                 + self.output_convs[stage](short_memory))
        return estimate, (hidden, cell, long_memory, short_memory)

    def _proximal_in_bands(self, stage: int, moved: torch.Tensor, gate: torch.Tensor,
                           memory: _Memory | None) -> tuple[torch.Tensor, _Memory]:
        """:meth:`_proximal` band of rows by band of rows (inference only): each band is computed with
        :data:`_HALO` extra rows on both sides, so its rows are exactly the whole image's."""
        height, width = moved.shape[-2:]
        band_rows = max(16, INFERENCE_BAND_PIXELS // width)
        estimate = torch.empty_like(moved)
        new_memory: _Memory | None = None
        for top in range(0, height, band_rows):
            bottom = min(height, top + band_rows)
            low, high = max(0, top - _HALO), min(height, bottom + _HALO)
            crop = slice(low, high)
            band_memory = None if memory is None else tuple(part[..., crop, :] for part in memory)
            band_estimate, band_new = self._proximal(stage, moved[..., crop, :], gate[..., crop, :], band_memory)
            keep = slice(top - low, bottom - low)
            if new_memory is None:
                new_memory = tuple(part.new_empty((*part.shape[:-2], height, width)) for part in band_new)
            estimate[..., top:bottom, :] = band_estimate[..., keep, :]
            for whole, part in zip(new_memory, band_new):
                whole[..., top:bottom, :] = part[..., keep, :]
        assert new_memory is not None
        return estimate, new_memory  # type: ignore[return-value]

    def forward(
        self,
        ir: torch.Tensor,
        vi: torch.Tensor,
        segmenter: nn.Module,
        mask: torch.Tensor | None = None,
        weights: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> FusionOutput:
        """Fuse ``ir, vi (B, 1, H, W)``.

        mask: one-hot ``(B, C, H, W)``; None -> :meth:`predicted_mask` (no labels: inference).
        weights: ``(w_ir, w_vi)`` each ``(B, 1, H, W)`` (e.g. from a :class:`~uaafusion.attribution.WeightCache`);
        None -> computed here with :func:`~uaafusion.attribution.modality_weights`.
        """
        mask, weight_ir, weight_vi = self.guidance(ir, vi, segmenter, mask, weights)
        average = (ir + vi) / 2
        target = weight_ir * ir + weight_vi * vi

        estimate = average
        memory: _Memory | None = None  # (hidden, cell, long, short): zero before the first stage
        running_attention: torch.Tensor | None = None
        gradient: torch.Tensor | None = None  # g_k of the attention; fast inference keeps stage 1's
        share_gradient = self.inference_mode == "fast" and not self.training
        step_sizes = self.step_sizes
        attention_gates: list[torch.Tensor] = []
        estimates: list[torch.Tensor] = []
        for stage in range(self.stages):
            moved = estimate - step_sizes[stage] * (estimate - target)
            if gradient is None or not share_gradient:
                gradient = segmentation_score_gradient(segmenter, moved, mask)
            running_attention = pathway_attention(
                segmenter, moved, estimate, mask, running_attention, stage + 1, gradient=gradient,
            )
            gate = torch.sigmoid(self.attention_scales[stage] * self._normalise_attention(running_attention))
            if torch.is_grad_enabled() or moved.shape[-2] * moved.shape[-1] <= INFERENCE_BAND_PIXELS:
                estimate, memory = self._proximal(stage, moved, gate, memory)
            else:
                estimate, memory = self._proximal_in_bands(stage, moved, gate, memory)
            attention_gates.append(gate)
            estimates.append(estimate)
        return FusionOutput(
            fused=estimate, weight_ir=weight_ir, weight_vi=weight_vi,
            attention=attention_gates, estimates=estimates, mask=mask,
        )


@contextlib.contextmanager
def exact_inference(model: nn.Module) -> Iterator[None]:
    """Within the block, ``model`` computes in eval mode what training computes (``inference_mode="exact"``);
    a model without inference modes is left as it is. Training uses it for the fused images the
    segmenter learns from, so that ``model.fusion.inference_mode`` changes inference only."""
    previous = getattr(model, "inference_mode", None)
    if previous is None:
        yield
        return
    model.inference_mode = "exact"
    try:
        yield
    finally:
        model.inference_mode = previous


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameter elements of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
