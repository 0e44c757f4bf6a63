"""The methods the pipeline fuses, scores and reports the test images with, by name (one place)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

OUR_METHOD = "ours"
"""Our trained fusion network."""

BASELINES: dict[str, Callable[[Any, Any], Any]] = {
    "average": lambda ir, vi: (ir + vi) / 2,
    "maximum": lambda ir, vi: ir.maximum(vi),
}
"""The pixel baselines the pipeline fuses beside ours: ``(ir, vi)`` tensors ``(..., H, W)`` -> fused luma."""

BASELINE_METHODS: tuple[str, ...] = tuple(BASELINES)

PIPELINE_METHODS: tuple[str, ...] = (OUR_METHOD, *BASELINE_METHODS)
"""Every method the pipeline fuses itself, in report order (peers follow)."""
