"""Models, optimisers and schedules built from params (the one place that maps params -> objects)."""

from __future__ import annotations

import math
from typing import Any

import torch

from uaafusion.config import Params


def model_spec(params: Params) -> dict[str, Any]:
    """Constructor arguments of both networks as a plain dict (stored in every checkpoint)."""
    segmenter = params.model.segmenter
    fusion = params.model.fusion
    return {
        "segmenter": {
            "arch": segmenter.arch,
            "encoder": segmenter.encoder,
            "num_classes": params.data.num_classes,
            "encoder_weights": segmenter.encoder_weights,
        },
        "fusion": {
            "name": fusion.name,
            "stages": fusion.stages,
            "features": fusion.features,
            "inference_mask": fusion.inference_mask,
            "inference_mode": fusion.inference_mode,
            "attribution_steps": params.attribution.steps,
            "attribution_method": params.attribution.method,
            "internal_batch_size": params.attribution.internal_batch_size,
            "attribution_engine": params.attribution.engine,
            "attribution_scale": params.attribution.scale,
        },
        "class_names": list(params.data.class_names),
        "ignore_index": params.data.ignore_index,
    }


def build_models(params: Params, device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(fusion, segmenter)`` freshly initialised from the seed in params, on ``device``."""
    from uaafusion.models import create_fusion_model, create_segmenter

    spec = model_spec(params)
    torch.manual_seed(params.seed)
    segmenter = create_segmenter(**spec["segmenter"])
    fusion_arguments = dict(spec["fusion"])
    fusion = create_fusion_model(fusion_arguments.pop("name"), **fusion_arguments)
    return fusion.to(device), segmenter.to(device)


def build_optimizer(module: torch.nn.Module, learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW over the module's parameters."""
    return torch.optim.AdamW(module.parameters(), lr=learning_rate, weight_decay=weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: str, total_epochs: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch learning-rate schedule: ``cosine`` (to 5% of the start over ``total_epochs``) or ``constant``."""
    if schedule == "constant" or total_epochs <= 1:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
    floor = 0.05

    def cosine(epoch: int) -> float:
        progress = min(epoch, total_epochs) / total_epochs
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
