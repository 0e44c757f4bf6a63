"""The fusion-model registry: a name -> factory mapping and the one factory that builds by name."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from uaafusion.errors import ConfigError
from uaafusion.models.alpha_blend import AlphaBlendFusion
from uaafusion.models.mask_guided import MaskGuidedFusion
from uaafusion.models.prompt import PromptFusion
from uaafusion.models.unfolding import UnfoldingFusionNet

ModelFactory = TypeVar("ModelFactory", bound=Callable[..., nn.Module])

_FUSION_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_fusion_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: register a fusion model class (or factory function) under ``name``.

    The model's ``forward(ir, vi, segmenter, mask=None, weights=None)`` must return a
    :class:`FusionOutput`. A model with the class attribute ``accepts_degradation = True`` is also
    given ``degradation=`` (one kind name per sample, ``"clean"`` for an undegraded one; see
    :func:`fusion_conditioning`). Registering a taken name is an error.
    """

    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in _FUSION_MODELS and _FUSION_MODELS[name] is not factory:
            raise ConfigError(f"fusion model name {name!r} is already registered ({_FUSION_MODELS[name]!r}).")
        _FUSION_MODELS[name] = factory
        return factory

    return decorator


def fusion_conditioning(fusion: nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments beyond the images that ``fusion`` asks for: ``degradation`` (the kind of each
    sample of ``batch``, ``"clean"`` when the batch was not degraded) for a model that declares
    ``accepts_degradation``; nothing for any other model."""
    if not getattr(fusion, "accepts_degradation", False):
        return {}
    count = int(batch["ir"].shape[0])
    return {"degradation": list(batch.get("degradation", ["clean"] * count))}


def available_fusion_models() -> list[str]:
    """Registered fusion model names, sorted."""
    return sorted(_FUSION_MODELS)


def create_fusion_model(name: str = "uaafusion", **kwargs: Any) -> nn.Module:
    """Build the fusion model registered as ``name`` with constructor ``kwargs``.

    The model gets a ``spec`` attribute ``{"name": name, **constructor arguments}`` (what a
    checkpoint needs to rebuild it). Unknown names or arguments raise :class:`ConfigError`.
    """
    factory = _FUSION_MODELS.get(name)
    if factory is None:
        raise ConfigError(
            f"model.fusion.name = {name!r} is not a registered fusion model; available: "
            f"{', '.join(available_fusion_models())}."
        )
    try:
        inspect.signature(factory).bind(**kwargs)
        model = factory(**kwargs)  # a factory taking **kwargs may still refuse some (nn.Module's own __init__)
    except TypeError as error:
        raise ConfigError(f"fusion model {name!r} does not take these arguments {sorted(kwargs)}: {error}") from error
    existing = getattr(model, "spec", None)
    spec = dict(existing) if isinstance(existing, dict) else dict(kwargs)
    spec["name"] = name
    model.spec = spec
    return model


register_fusion_model("uaafusion")(UnfoldingFusionNet)
register_fusion_model("alpha_blend")(AlphaBlendFusion)
register_fusion_model("mask_guided")(MaskGuidedFusion)
register_fusion_model("prompt")(PromptFusion)
