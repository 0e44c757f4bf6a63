"""Starting training from trained weights (``train.init_from``): fine-tuning on a new dataset.

The source is a checkpoint file, an MLflow run (``runs:/RUN_ID``) or a registered model
(``models:/NAME@ALIAS``). Both networks are built from params as usual, then take the source's
weights: the fusion network all of them (its spec must match ``model.fusion``), the segmenter every
tensor of matching name and shape. Only the segmentation head may differ (a dataset with other
classes): it keeps its fresh initialisation and the log says so. A run folder that is resumed keeps
its own state; the source is read only when a run starts.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import torch
from torch import nn

from uaafusion.errors import ConfigError

LOGGER = logging.getLogger(__name__)
_FUSION_SPEC_KEYS = ("name", "stages", "features")
_HEAD_MARKER = "segmentation_head"


def initialise_from(source: str, fusion: nn.Module, segmenter: nn.Module, tracking_uri: str | None = None) -> list[str]:
    """Copy the weights of ``source`` into ``fusion`` and ``segmenter`` (in place; optimisers keep working).

    Returns the names of the segmenter tensors that kept their fresh values (a head of another
    class count). Raises :class:`ConfigError` naming ``train.init_from`` when the source cannot be
    read or its networks do not fit.
    """
    from uaafusion.errors import UAAFusionError
    from uaafusion.inference import checkpoint_file
    from uaafusion.models.checkpoint import load_models

    try:
        with tempfile.TemporaryDirectory(prefix="uaafusion-init-") as download_dir:
            loaded = load_models(checkpoint_file(source, tracking_uri, Path(download_dir)), map_location="cpu")
    except UAAFusionError as error:
        raise ConfigError(f"train.init_from = {source!r}: {error}") from error
    _check_fusion_spec(source, getattr(fusion, "spec", {}), loaded.spec.get("fusion", {}))
    _copy_all(source, "fusion", fusion, loaded.fusion.state_dict())
    kept = _copy_matching(source, segmenter, loaded.segmenter.state_dict())
    if kept:
        LOGGER.warning("train.init_from %s: the segmenter's %d head tensor(s) differ in shape (another class "
                       "count) and start fresh: %s", source, len(kept), ", ".join(kept))
    LOGGER.info("initialised both networks from %s", source)
    return kept


def _check_fusion_spec(source: str, ours: dict, theirs: dict) -> None:
    differing = [key for key in _FUSION_SPEC_KEYS if ours.get(key) != theirs.get(key)]
    if differing:
        described = ", ".join(f"{key} {theirs.get(key)!r} there, {ours.get(key)!r} in params" for key in differing)
        raise ConfigError(
            f"train.init_from = {source!r}: its fusion network differs from model.fusion ({described}). "
            "Set model.fusion to the checkpoint's values, or start from scratch (train.init_from: null)."
        )


def _copy_all(source: str, role: str, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ConfigError(f"train.init_from = {source!r}: the {role} weights do not fit: {error}") from error


def _copy_matching(source: str, segmenter: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    own = segmenter.state_dict()
    missing = sorted(set(own) ^ set(state))
    mismatched = sorted(key for key in own if key in state and own[key].shape != state[key].shape)
    foreign = [key for key in missing + mismatched if _HEAD_MARKER not in key]
    if foreign:
        raise ConfigError(
            f"train.init_from = {source!r}: its segmenter has another architecture than model.segmenter "
            f"(e.g. {', '.join(foreign[:3])}). Set model.segmenter.arch and encoder to the checkpoint's."
        )
    segmenter.load_state_dict({key: value for key, value in state.items() if key not in mismatched}, strict=False)
    return [key for key in mismatched if _HEAD_MARKER in key]
