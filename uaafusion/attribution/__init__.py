"""Attribution analysis: how much each source image matters to each semantic region (docs/method.md §1),
the pathway attention of the unfolding network (§2) and the per-round cache of training weights.

- :mod:`uaafusion.attribution.integrated`: integrated gradients per class region, modality weights;
- :mod:`uaafusion.attribution.attention`: :func:`pathway_attention`;
- :mod:`uaafusion.attribution.cache`: :class:`WeightCache`.
"""

from __future__ import annotations

from uaafusion.attribution.attention import pathway_attention, segmentation_score_gradient
from uaafusion.attribution.cache import WeightCache, segmenter_fingerprint
from uaafusion.attribution.integrated import (
    ATTRIBUTION_ENGINES,
    ATTRIBUTION_METHODS,
    DEFAULT_ENGINE,
    DEFAULT_EPS,
    DEFAULT_INTERNAL_BATCH_SIZE,
    frozen_segmenter,
    gradients_enabled,
    inputs_per_pass,
    labels_to_one_hot,
    mask_from_logits,
    modality_weights,
    region_attribution,
    weights_from_region_scores,
)

__all__ = [
    "ATTRIBUTION_ENGINES",
    "ATTRIBUTION_METHODS",
    "DEFAULT_ENGINE",
    "DEFAULT_EPS",
    "DEFAULT_INTERNAL_BATCH_SIZE",
    "WeightCache",
    "frozen_segmenter",
    "gradients_enabled",
    "inputs_per_pass",
    "labels_to_one_hot",
    "mask_from_logits",
    "modality_weights",
    "pathway_attention",
    "region_attribution",
    "segmentation_score_gradient",
    "segmenter_fingerprint",
    "weights_from_region_scores",
]
