"""Saving and loading the fusion network and the segmenter together, with what rebuilds them.

A checkpoint is one ``torch.save`` file holding only plain data (dicts, lists, strings, numbers,
tensors), so it loads with ``torch.load(weights_only=True)``::

    {"format": "uaafusion-models", "version": 1,
     "spec": {"segmenter": {create_segmenter kwargs}, "fusion": {"name": ..., constructor kwargs}},
     "fusion_state": {...}, "segmenter_state": {...}, "extra": {...}, "digest": "sha256 hex"}

Models are rebuilt from ``spec`` (so they work at any input size) and their weights loaded
strictly. Files are written atomically (temporary file in the same folder, then ``os.replace``).
``digest`` (:func:`uaafusion.integrity.tensors_sha256` of spec, weights and extra) travels inside the
file, also through MLflow: a file whose content no longer matches it is refused (older files without
one still load).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from uaafusion.device import resolve_device
from uaafusion.errors import ConfigError, DataError, TrainingError
from uaafusion.integrity import tensors_sha256, write_atomically
from uaafusion.models.registry import create_fusion_model
from uaafusion.models.segmentation import create_segmenter

CHECKPOINT_FORMAT = "uaafusion-models"
CHECKPOINT_VERSION = 1
DIGESTED_KEYS = ("spec", "fusion_state", "segmenter_state", "extra")


@dataclass
class LoadedModels:
    """What :func:`load_models` returns: both models (eval mode), the spec, and the extra data."""

    fusion: nn.Module
    segmenter: nn.Module
    spec: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)


def _check_plain(value: Any, where: str) -> None:
    """Raise :class:`TrainingError` unless ``value`` is made of dict/list/tuple/str/int/float/bool/None/Tensor."""
    if value is None or isinstance(value, (str, int, float, bool, torch.Tensor)):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TrainingError(f"{where}: key {key!r} must be a string or an integer to be saved.")
            _check_plain(item, f"{where}.{key}")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
        return
    raise TrainingError(
        f"{where}: a {type(value).__name__} cannot go into a checkpoint; use plain dicts, lists, "
        "strings, numbers and tensors."
    )


def model_spec(fusion: nn.Module, segmenter: nn.Module) -> dict[str, Any]:
    """The spec of two models built by the factories (from their ``spec`` attributes)."""
    fusion_spec = getattr(fusion, "spec", None)
    segmenter_spec = getattr(segmenter, "spec", None)
    if not isinstance(fusion_spec, dict) or not isinstance(segmenter_spec, dict):
        raise TrainingError(
            "cannot tell how to rebuild these models: build them with create_fusion_model/create_segmenter "
            "or pass spec={'segmenter': {...}, 'fusion': {'name': ..., ...}} to save_models."
        )
    return {"segmenter": dict(segmenter_spec), "fusion": dict(fusion_spec)}


def save_models(
    path: str | Path,
    fusion: nn.Module,
    segmenter: nn.Module,
    spec: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write both models' weights with their ``spec`` (None -> :func:`model_spec`) and ``extra`` to ``path``.

    ``spec = {"segmenter": {create_segmenter kwargs}, "fusion": {"name": ..., kwargs}}``; ``extra``
    is any plain data (epoch, metrics, params). The write is atomic. Returns the path.
    """
    path = Path(path)
    spec = model_spec(fusion, segmenter) if spec is None else spec
    if not isinstance(spec, dict) or not isinstance(spec.get("segmenter"), dict) \
            or not isinstance(spec.get("fusion"), dict) or "name" not in spec["fusion"]:
        raise TrainingError(
            f"{path}: spec must be {{'segmenter': {{...}}, 'fusion': {{'name': ..., ...}}}}, got {spec!r}"
        )
    extra = {} if extra is None else extra
    if not isinstance(extra, dict):
        raise TrainingError(f"{path}: extra must be a dict, got {type(extra).__name__}")
    _check_plain(spec, "spec")
    _check_plain(extra, "extra")
    content = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "spec": spec,
        "fusion_state": {key: value.detach().cpu() for key, value in fusion.state_dict().items()},
        "segmenter_state": {key: value.detach().cpu() for key, value in segmenter.state_dict().items()},
        "extra": extra,
    }
    content["digest"] = tensors_sha256(*(content[key] for key in DIGESTED_KEYS))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda stream: torch.save(content, stream))
    return path


REMOVED_FUSION_OPTIONS = ("guard_classes", "guard_radius", "guard_sigma", "guard_missed", "guard_keep",
                          "guard_keep_sigma")
"""Keys that older checkpoints' fusion specs carry for the infrared guard, an inference option that was
removed (docs/experiments.md; it lives on in the tag ``archive/msrs-investigation``)."""


def _drop_removed_options(path: Path, fusion_kwargs: dict[str, Any]) -> None:
    """Drop the removed guard's keys from an older checkpoint's fusion spec when the guard was off (the
    model is then the same); refuse a checkpoint that had it on, since it cannot fuse as trained."""
    removed = {key: fusion_kwargs.pop(key) for key in REMOVED_FUSION_OPTIONS if key in fusion_kwargs}
    if removed.get("guard_classes"):
        raise TrainingError(
            f"{path}: this checkpoint was trained with the infrared guard (model.fusion.guard), which this "
            "version no longer has. Fuse it with the version tagged archive/msrs-investigation, or retrain.")


def load_models(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedModels:
    """Rebuild both models from a :func:`save_models` file and load their weights (strict).

    The models are returned in eval mode on ``map_location`` (a device name: ``cpu``, ``cuda``,
    ``cuda:N``, ``auto``; the file is always read onto the CPU first). A missing or unreadable file raises
    :class:`DataError`; a file that is not such a checkpoint, or whose weights do not fit the
    rebuilt models, raises :class:`TrainingError`. Both name the path.
    """
    path = Path(path)
    device = resolve_device(str(map_location))  # DeviceError for CUDA on a machine without it
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found. Train first (or check the path).")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - corrupt/truncated/foreign files all end here
        raise DataError(
            f"{path}: cannot be read as a checkpoint ({type(error).__name__}: {error}). The file may be "
            "truncated or not a uaafusion checkpoint; re-train or restore it."
        ) from error
    if not isinstance(content, dict) or content.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path}: not a uaafusion model checkpoint (no format marker {CHECKPOINT_FORMAT!r}).")
    if content.get("version") != CHECKPOINT_VERSION:
        raise TrainingError(
            f"{path}: checkpoint version {content.get('version')!r} is not supported (expected {CHECKPOINT_VERSION})."
        )
    if "digest" in content and tensors_sha256(*(content.get(key) for key in DIGESTED_KEYS)) != content["digest"]:
        raise DataError(f"{path}: the weights no longer match the digest written with them: the file is damaged. "
                        "Restore it, or export it again from its run folder (`uaafusion train` with the same params).")
    spec = content.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("segmenter"), dict) or not isinstance(spec.get("fusion"), dict):
        raise TrainingError(f"{path}: checkpoint has no usable model spec.")
    segmenter_kwargs = dict(spec["segmenter"])
    segmenter_kwargs["encoder_weights"] = None  # the saved state holds the weights
    fusion_kwargs = dict(spec["fusion"])
    fusion_name = fusion_kwargs.pop("name", None)
    _drop_removed_options(path, fusion_kwargs)
    try:
        segmenter = create_segmenter(**segmenter_kwargs)
        fusion = create_fusion_model(fusion_name, **fusion_kwargs)
    except (ConfigError, TypeError) as error:
        raise TrainingError(f"{path}: the models in this checkpoint cannot be rebuilt: {error}") from error
    for model, key in ((segmenter, "segmenter_state"), (fusion, "fusion_state")):
        state = content.get(key)
        if not isinstance(state, dict):
            raise TrainingError(f"{path}: checkpoint has no {key}.")
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise TrainingError(f"{path}: {key} does not fit the rebuilt model: {error}") from error
    fusion = fusion.to(device).eval()
    segmenter = segmenter.to(device).eval()
    extra = content.get("extra") or {}
    return LoadedModels(fusion=fusion, segmenter=segmenter, spec=spec, extra=dict(extra))
