"""Fusing image pairs with trained models: tensors or arrays in, fused image out.

Colour (docs/method.md §5): the networks fuse luma (Y). Chroma comes from the visible image; where both
inputs are colour, the two CrCb are blended per pixel, each weighted by its distance from neutral.

- :func:`fuse` (``uaafusion.fuse``): arrays/tensors in, the fused ``uint8`` picture out;
- :func:`fuse_pair`: the same, keeping the weight maps, the last attention map and the classes;
- :func:`fuse_luma`, :func:`blend_chroma`, :func:`compose_colour`: the pieces (the pipeline uses them);
- :func:`load_models_for_inference`, :func:`checkpoint_file`, :func:`download_run_checkpoint`,
  :func:`download_registered_checkpoint`: where the models come from (a file, an MLflow run, the registry).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from uaafusion.data.io import split_luma_chroma, tensor_to_array, ycrcb_to_rgb
from uaafusion.errors import DataError


# Segmenter inputs per attribution pass at 256x256 when fusing (the model's own knob is for
# training): 1 input per pass from 512x512 up. Peak memory at 640x480 falls from 4.4 to 1.4 GiB
# at the same speed (reports/benchmarks.md, inference profile).
INFERENCE_INTERNAL_BATCH_SIZE = 4


def fuse_luma(
    fusion: torch.nn.Module,
    segmenter: torch.nn.Module,
    ir: torch.Tensor,
    vi: torch.Tensor,
    tile_size: int | None = None,
    overlap: int | None = None,
):
    """Run the fusion network in eval mode without parameter gradients.

    ir, vi: ``(B, 1, H, W)`` in [0, 1] -> the model's ``FusionOutput`` (``fused (B, 1, H, W)``).
    The attribution inside the model still uses autograd on its inputs. Images of more than
    ``tile_size^2`` pixels are fused tile by tile (:func:`uaafusion.tiling.fuse_tiled`, a
    ``TiledOutput`` with the same ``fused``, ``weight_ir``, ``weight_vi`` and ``attention``).
    """
    from uaafusion.tiling import fuse_tiled, needs_tiling

    fusion_was_training, segmenter_was_training = fusion.training, segmenter.training
    fusion.eval()
    segmenter.eval()
    try:
        if needs_tiling(*ir.shape[-2:], tile_size):
            assert tile_size is not None
            output = fuse_tiled(fusion, segmenter, ir, vi, tile_size, overlap)
        else:
            with torch.no_grad():  # no graph over the fusion layers; attribution and attention enable their own
                output = fusion(ir, vi, segmenter)
    finally:
        fusion.train(fusion_was_training)
        segmenter.train(segmenter_was_training)
    return output


def blend_chroma(vi_crcb: torch.Tensor | None, ir_crcb: torch.Tensor | None) -> torch.Tensor | None:
    """Chroma of the fused image, ``(..., 2, H, W)`` or ``None`` when both inputs are gray."""
    if vi_crcb is None and ir_crcb is None:
        return None
    if ir_crcb is None:
        return vi_crcb
    if vi_crcb is None:
        return ir_crcb
    visible_strength = (vi_crcb - 0.5).abs().sum(dim=-3, keepdim=True)
    infrared_strength = (ir_crcb - 0.5).abs().sum(dim=-3, keepdim=True)
    total = visible_strength + infrared_strength
    blended = (visible_strength * vi_crcb + infrared_strength * ir_crcb) / total.clamp_min(1e-6)
    return torch.where(total > 1e-6, blended, torch.full_like(vi_crcb, 0.5))


def compose_colour(fused_luma: torch.Tensor, chroma: torch.Tensor | None) -> torch.Tensor:
    """``(..., 1, H, W)`` luma + optional ``(..., 2, H, W)`` chroma -> ``(..., 1 or 3, H, W)`` in [0, 1]."""
    if chroma is None:
        return fused_luma.clamp(0.0, 1.0)
    return ycrcb_to_rgb(torch.cat((fused_luma, chroma.to(fused_luma)), dim=-3))


@dataclass
class FusedPair:
    """One fused pair with the intermediates worth looking at (all on the CPU).

    image: the fused picture, ``uint8`` gray ``(H, W)`` or RGB ``(H, W, 3)``;
    fused_luma: the fused Y ``(1, H, W)`` in [0, 1];
    weight_ir / weight_vi: the attribution weights ``(1, H, W)``;
    attention: the last stage's attention map ``(1, H, W)`` in [0, 1] (``None`` without stages);
    segmentation: predicted class ids ``int64 (H, W)`` of the fused luma (when asked for).
    """

    image: np.ndarray
    fused_luma: torch.Tensor
    weight_ir: torch.Tensor
    weight_vi: torch.Tensor
    attention: torch.Tensor | None
    segmentation: torch.Tensor | None = None


def predict_classes(segmenter: torch.nn.Module, luma: torch.Tensor) -> torch.Tensor:
    """``argmax`` of the segmenter's logits in eval mode: ``(B, 1, H, W)`` -> ``int64 (B, H, W)``."""
    was_training = segmenter.training
    segmenter.eval()
    try:
        with torch.no_grad():
            return segmenter(luma).argmax(dim=1)
    finally:
        segmenter.train(was_training)


def fuse_pair(
    ir: np.ndarray | torch.Tensor,
    vi: np.ndarray | torch.Tensor,
    model: torch.nn.Module,
    segmenter: torch.nn.Module,
    device: torch.device | str | None = None,
    segment: bool = False,
    tile_size: int | None = None,
    overlap: int | None = None,
) -> FusedPair:
    """Fuse one pair and keep the weights, the last attention map and (``segment``) the classes.

    Inputs as for :func:`fuse`. Colour (docs/method.md §5): the luma is fused; the chroma is the
    visible image's, blended with the infrared one's where both are colour. The models must
    already be on ``device`` (default: the fusion model's device). ``tile_size``/``overlap``: see
    :func:`fuse_luma`.
    """
    ir_luma, ir_chroma = _luma_and_chroma(ir)
    vi_luma, vi_chroma = _luma_and_chroma(vi)
    if ir_luma.shape[-2:] != vi_luma.shape[-2:]:
        raise ValueError(f"infrared {tuple(ir_luma.shape[-2:])} and visible {tuple(vi_luma.shape[-2:])} sizes differ")
    target = torch.device(device) if device is not None else next(model.parameters()).device
    output = fuse_luma(model, segmenter, ir_luma[None].to(target), vi_luma[None].to(target), tile_size, overlap)
    fused = output.fused.detach()
    classes = _predicted_classes(segmenter, fused, tile_size)[0].cpu() if segment else None
    fused_luma = fused[0].cpu()
    attention = output.attention[-1][0].detach().cpu() if output.attention else None
    return FusedPair(
        image=tensor_to_array(compose_colour(fused_luma, blend_chroma(vi_chroma, ir_chroma))),
        fused_luma=fused_luma,
        weight_ir=output.weight_ir[0].detach().cpu(),
        weight_vi=output.weight_vi[0].detach().cpu(),
        attention=attention,
        segmentation=classes,
    )


def _predicted_classes(segmenter: torch.nn.Module, luma: torch.Tensor, tile_size: int | None) -> torch.Tensor:
    """:func:`predict_classes`, row band by row band for images larger than a tile (bounded memory)."""
    from uaafusion.tiling import needs_tiling

    if not needs_tiling(*luma.shape[-2:], tile_size):
        return predict_classes(segmenter, luma)
    assert tile_size is not None
    band = max(32, (tile_size * tile_size // luma.shape[-1]) // 32 * 32)
    return torch.cat([predict_classes(segmenter, luma[..., top:top + band, :])
                      for top in range(0, luma.shape[-2], band)], dim=-2)


def fuse(
    ir: np.ndarray | torch.Tensor,
    vi: np.ndarray | torch.Tensor,
    model: torch.nn.Module,
    segmenter: torch.nn.Module,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Fuse one pair; returns ``uint8`` gray ``(H, W)`` or RGB ``(H, W, 3)``.

    ``ir``/``vi``: ``uint8`` arrays ``(H, W)`` or ``(H, W, 3)``, or float tensors in [0, 1]
    ``(1, H, W)``/``(3, H, W)`` (RGB). Both must have the same height and width.
    """
    return fuse_pair(ir, vi, model, segmenter, device=device).image


# -- where the models come from --------------------------------------------------------------

MODEL_ARTIFACT = "model"  # a run's model folder (the pyfunc model; its artifacts/ holds the .pt checkpoint)
CHECKPOINT_NAME = "uaafusion.pt"


def load_models_for_inference(
    checkpoint: str | Path,
    device: torch.device | str = "cpu",
    internal_batch_size: int | None = INFERENCE_INTERNAL_BATCH_SIZE,
):
    """Load a checkpoint (``models/uaafusion.pt``) onto ``device``, both networks in eval mode.

    Returns the checkpoint's ``LoadedModels`` (``.fusion``, ``.segmenter``, ``.spec``). The fusion
    model's attribution runs ``internal_batch_size`` segmenter inputs per pass at 256x256 (fewer for
    larger images; None keeps the checkpoint's). Raises :class:`DataError` naming the file when it
    does not exist.
    """
    from uaafusion.models.checkpoint import load_models

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise DataError(
            f"{checkpoint}: model checkpoint not found. Train first (`dvc repro train` or `uaafusion train`), "
            "or pass --checkpoint PATH, --run MLFLOW_RUN_ID or --model models:/uaafusion@champion."
        )
    device = torch.device(device)
    loaded = load_models(checkpoint, map_location=device)
    loaded.fusion.to(device).eval()
    loaded.segmenter.to(device).eval()
    if internal_batch_size is not None and hasattr(loaded.fusion, "internal_batch_size"):
        loaded.fusion.internal_batch_size = internal_batch_size
    return loaded


def checkpoint_file(source: str | Path, tracking_uri: str | None, download_dir: Path) -> Path:
    """The local ``.pt`` file of ``source``: a path (returned as it is), ``runs:/RUN_ID`` (the checkpoint
    in the run's ``model`` folder, downloaded into ``download_dir``) or a registered ``models:/`` URI.

    ``tracking_uri``: the MLflow store (default: ``MLFLOW_TRACKING_URI``, else ``./mlflow.db``).
    """
    from uaafusion.errors import ConfigError
    from uaafusion.tracking import check_reachable
    from uaafusion.tracking import tracking_uri as default_tracking_uri

    text = str(source)
    if not text.startswith(("runs:/", "models:/")):
        return Path(source)
    store = tracking_uri or default_tracking_uri(Path("."))
    check_reachable(store)
    if text.startswith("runs:/"):
        run_id = text[len("runs:/"):].strip("/").split("/")[0]
        if not run_id:
            raise ConfigError(f"{text!r}: expected runs:/RUN_ID (the run id from `mlflow ui`).")
        return download_run_checkpoint(run_id, store, download_dir)
    return download_registered_checkpoint(text, store, download_dir)


def download_run_checkpoint(run_id: str, tracking_uri: str, destination: str | Path) -> Path:
    """Download the ``model`` folder of the MLflow run ``run_id`` into ``destination``; its checkpoint."""
    import mlflow.artifacts

    from uaafusion.tracking import TrackingError

    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=MODEL_ARTIFACT, dst_path=str(destination),
            tracking_uri=tracking_uri,
        )
    except Exception as error:  # noqa: BLE001 - MLflow raises many kinds; all mean "not available"
        raise TrackingError(
            f"cannot download the {MODEL_ARTIFACT} folder of MLflow run {run_id} from {tracking_uri} ({error}). "
            "Check the run id (`mlflow ui`), MLFLOW_TRACKING_URI, and that the run finished its train step."
        ) from error
    return _find_checkpoint_file(Path(local), f"run {run_id}")


def download_registered_checkpoint(model_uri: str, tracking_uri: str, destination: str | Path) -> Path:
    """Download a registered model's files and find its ``.pt`` checkpoint.

    ``model_uri``: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or ``models:/NAME/latest``,
    looked up in the registry at ``tracking_uri`` (the same store as the runs).
    """
    import mlflow.artifacts
    from mlflow import MlflowClient

    from uaafusion.tracking import TrackingError

    name, version_or_alias, is_alias = parse_model_uri(model_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        if is_alias:
            version = client.get_model_version_by_alias(name, version_or_alias).version
        elif version_or_alias == "latest":
            versions = client.search_model_versions(f"name='{name}'")
            if not versions:
                raise TrackingError(f"registered model {name!r} has no versions")
            version = max(versions, key=lambda item: int(item.version)).version
        else:
            version = version_or_alias
        download_uri = client.get_model_version_download_uri(name, version)
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=download_uri, dst_path=str(destination), tracking_uri=tracking_uri,
        )
    except Exception as error:  # noqa: BLE001 - MLflow raises many kinds; all mean "not available"
        raise TrackingError(
            f"cannot download {model_uri} from the model registry at {tracking_uri} ({error}). "
            "Check the name and alias (`mlflow ui`, Models tab) and MLFLOW_TRACKING_URI."
        ) from error
    return _find_checkpoint_file(Path(local), model_uri)


def parse_model_uri(model_uri: str) -> tuple[str, str, bool]:
    """``models:/NAME@ALIAS`` -> ``(NAME, ALIAS, True)``; ``models:/NAME/VERSION`` -> ``(NAME, VERSION, False)``."""
    from uaafusion.tracking import TrackingError

    prefix = "models:/"
    body = model_uri[len(prefix):].strip("/") if model_uri.startswith(prefix) else ""
    if "@" in body:
        name, _, alias = body.partition("@")
        if name and alias and "/" not in alias:
            return name, alias, True
    elif body.count("/") == 1:
        name, _, version = body.partition("/")
        if name and (version.isdigit() or version == "latest"):
            return name, version, False
    raise TrackingError(
        f"--model {model_uri!r}: expected models:/NAME@ALIAS (e.g. models:/uaafusion@champion), "
        "models:/NAME/VERSION or models:/NAME/latest."
    )


def _find_checkpoint_file(local: Path, source: str) -> Path:
    from uaafusion.tracking import TrackingError

    if local.is_file():
        return local
    candidates = sorted(local.rglob("*.pt"))
    preferred = [path for path in candidates if path.name == CHECKPOINT_NAME]
    if preferred or candidates:
        return (preferred or candidates)[0]
    raise TrackingError(f"{source}: the downloaded artifacts in {local} hold no .pt checkpoint.")


def _luma_and_chroma(image: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(image, np.ndarray):
        return split_luma_chroma(image)
    if image.ndim == 2:
        image = image[None]
    return split_luma_chroma(tensor_to_array(image))
