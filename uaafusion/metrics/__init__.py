"""Evaluation: fusion quality metrics, segmentation/ROI task metrics, and folder scoring.

- :mod:`uaafusion.metrics.fusion`: :func:`fusion_metrics` (EN, SD, SF, AG, MI, MI_bits, SCD, VIF, Qabf, SSIM).
- :mod:`uaafusion.metrics.segmentation`: :class:`ConfusionMatrix`, :func:`roi_ssim`.
- :mod:`uaafusion.metrics.evaluate`: :func:`evaluate_folders`, :func:`format_table`.
- :mod:`uaafusion.metrics.classes`: the number and names of the classes an evaluation scores.
- :mod:`uaafusion.metrics.comparison`: paired bootstrap intervals of the differences between two
  evaluated methods, and between a method's fused images and each source (``uaafusion compare``).
"""

from __future__ import annotations

from uaafusion.metrics.fusion import METRIC_NAMES, fusion_metrics
from uaafusion.metrics.segmentation import ConfusionMatrix, roi_ssim

__all__ = ["METRIC_NAMES", "ConfusionMatrix", "fusion_metrics", "roi_ssim"]
