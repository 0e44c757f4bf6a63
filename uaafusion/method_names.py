"""The names under which the pipeline fuses, scores and reports the test images (one place)."""

from __future__ import annotations

OUR_METHOD = "ours"
"""Our trained fusion network."""

BASELINE_METHODS: tuple[str, ...] = ("average", "maximum")
"""The pixel baselines the pipeline fuses beside ours: ``(I + V) / 2`` and ``max(I, V)``."""

PIPELINE_METHODS: tuple[str, ...] = (OUR_METHOD, *BASELINE_METHODS)
"""Every method the pipeline fuses itself, in report order (peers follow)."""
