"""Degradation of one training sample (degradation-aware training, ``degrade:`` in ``params.yaml``).

The dataset calls :func:`degrade_sample` on each training crop; the degraded images become the
fusion network's and the segmenter's inputs, the clean ones the fusion losses' targets
(docs/degradations.md, "Degradation-aware training").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from uaafusion.config import DegradeConfig
from uaafusion.data.degrade import DEGRADATIONS, apply_degradations
from uaafusion.data.io import rgb_to_ycrcb, ycrcb_to_rgb

CLEAN = "clean"
"""The ``degradation`` of a sample left clean."""


def draw_degradation(config: DegradeConfig, rng: np.random.Generator) -> tuple[str, float]:
    """``(kind, severity)`` of one sample: ``("clean", 0.0)`` with probability ``1 - config.probability``,
    else a kind of ``config.kinds`` drawn uniformly and a severity uniform in ``config.severity``."""
    if not config.kinds or rng.random() >= config.probability:
        return CLEAN, 0.0
    kind = config.kinds[int(rng.integers(len(config.kinds)))]
    low, high = config.severity
    return kind, float(rng.uniform(low, high))


def degrade_sample(sample: dict[str, Any], config: DegradeConfig, rng: np.random.Generator,
                   has_colour: bool) -> dict[str, Any]:
    """A copy of ``sample`` (see :mod:`uaafusion.data.datasets`) with degraded ``ir``/``vi``/``vi_crcb``,
    the clean ``ir_clean``/``vi_clean (1, H, W)`` and ``degradation`` (the kind, or ``"clean"``).

    A colour visible image is degraded in RGB (as ``uaafusion degrade`` degrades files), a gray one as
    luma; all draws come from ``rng``.
    """
    degraded = dict(sample, ir_clean=sample["ir"], vi_clean=sample["vi"])
    kind, severity = draw_degradation(config, rng)
    degraded["degradation"] = kind
    if kind == CLEAN:
        return degraded
    ir = sample["ir"][0].numpy()
    if has_colour:
        ycrcb = torch.cat((sample["vi"], sample["vi_crcb"]), dim=0)
        vi = ycrcb_to_rgb(ycrcb).permute(1, 2, 0).numpy()
    else:
        vi = sample["vi"][0].numpy()
    ir_out, vi_out = apply_degradations(ir, vi, (kind,), severity, rng_for=lambda _kind: rng)
    if DEGRADATIONS[kind].source == "ir":
        degraded["ir"] = torch.from_numpy(np.ascontiguousarray(ir_out, dtype=np.float32))[None]
    elif has_colour:
        ycrcb = rgb_to_ycrcb(torch.from_numpy(np.ascontiguousarray(vi_out, dtype=np.float32)).permute(2, 0, 1))
        degraded["vi"], degraded["vi_crcb"] = ycrcb[:1].contiguous(), ycrcb[1:].contiguous()
    else:
        degraded["vi"] = torch.from_numpy(np.ascontiguousarray(vi_out, dtype=np.float32))[None]
    return degraded
