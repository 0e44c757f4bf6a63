"""Models: the segmentation network ``S`` and the fusion networks (a registry by name).

- :func:`create_segmenter` (``(B, 1, H, W) -> logits (B, C, H, W)``, any size);
- :func:`create_fusion_model` / :func:`register_fusion_model` / :func:`available_fusion_models`
  (:mod:`uaafusion.models.registry`); ``"uaafusion"`` is :class:`UnfoldingFusionNet`, ``"alpha_blend"``,
  ``"mask_guided"`` and ``"prompt"`` the heads of docs/method.md ("Other fusion heads"); all share
  :class:`~uaafusion.models.guided.AttributionGuidedFusion` (mask, attribution weights);
- checkpoints: :mod:`uaafusion.models.checkpoint` (``save_models``, ``load_models``).
"""

from __future__ import annotations

from uaafusion.models.checkpoint import LoadedModels, load_models, save_models
from uaafusion.models.memory import ConvLSTMCell
from uaafusion.models.registry import available_fusion_models, create_fusion_model, register_fusion_model
from uaafusion.models.segmentation import (
    PaddedSegmenter,
    available_architectures,
    available_encoders,
    create_segmenter,
)
from uaafusion.models.unfolding import FusionOutput, UnfoldingFusionNet, count_parameters, exact_inference

__all__ = [
    "ConvLSTMCell",
    "FusionOutput",
    "PaddedSegmenter",
    "UnfoldingFusionNet",
    "available_architectures",
    "available_encoders",
    "available_fusion_models",
    "count_parameters",
    "exact_inference",
    "create_fusion_model",
    "create_segmenter",
    "register_fusion_model",
    "LoadedModels",
    "load_models",
    "save_models",
]
