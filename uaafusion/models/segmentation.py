"""The segmentation network ``S``: any segmentation-models-pytorch model, usable at any image size.

:func:`create_segmenter` builds an smp model (architecture and encoder by name, never a download)
and wraps it in :class:`PaddedSegmenter`, which

- pads the input to the multiple the architecture needs (reflect padding, replicate where the
  image is too small to reflect) and crops the logits back, so ``(B, 1, H, W) -> (B, C, H, W)``
  works for every ``H, W`` (odd ones too);
- makes batch size 1 usable in train mode: a BatchNorm layer that would see a single value per
  channel (DeepLabV3+'s image-pooling branch of ASPP, PSPNet's 1x1 pooling, the deepest encoder
  features of a tiny image) falls back to its running statistics for that call instead of
  failing with "Expected more than 1 value per channel when training". Its running statistics
  are not updated by such a call. Batches of 2 or more are unaffected;
- records the constructor arguments in :attr:`PaddedSegmenter.spec` so a checkpoint can rebuild it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as functional
from torch import nn

from uaafusion.errors import ConfigError

DEFAULT_ARCH = "DeepLabV3Plus"
DEFAULT_ENCODER = "mobilenet_v2"
_WEIGHT_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
_STATE_DICT_PREFIXES = ("model.encoder.", "encoder.", "module.", "model.")


def available_architectures() -> list[str]:
    """Names of the segmentation-models-pytorch architectures (as the classes spell them)."""
    import segmentation_models_pytorch as smp

    return [model_class.__name__ for model_class in smp.MODEL_ARCHITECTURES_MAPPING.values()]


def available_encoders() -> list[str]:
    """Names of the segmentation-models-pytorch encoders (``tu-<timm name>`` is accepted too)."""
    import segmentation_models_pytorch as smp

    return list(smp.encoders.get_encoder_names())


def _few(names: list[str], count: int = 12) -> str:
    shown = ", ".join(names[:count])
    return shown + (f", ... ({len(names)} in all)" if len(names) > count else "")


def _check_names(arch: str, encoder: str) -> type[nn.Module]:
    import segmentation_models_pytorch as smp

    model_class = smp.MODEL_ARCHITECTURES_MAPPING.get(str(arch).lower())
    if model_class is None:
        raise ConfigError(
            f"model.segmenter.arch = {arch!r} is not a segmentation-models-pytorch architecture; "
            f"allowed: {_few(available_architectures())}."
        )
    if encoder.startswith("tu-"):
        import timm

        if not timm.is_model(encoder[3:]):
            raise ConfigError(
                f"model.segmenter.encoder = {encoder!r}: timm has no model named {encoder[3:]!r}."
            )
    elif encoder not in available_encoders():
        preferred = ["mobilenet_v2", "resnet18", "resnet34", "resnet50", "efficientnet-b0", "mit_b0"]
        others = [name for name in available_encoders() if name not in preferred]
        raise ConfigError(
            f"model.segmenter.encoder = {encoder!r} is not a segmentation-models-pytorch encoder; "
            f"allowed include: {_few(preferred + others)} (or 'tu-<timm model name>')."
        )
    return model_class


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            loaded: Any = load_file(str(path))
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file is reported the same way
        raise ConfigError(
            f"model.segmenter.encoder_weights = {str(path)!r}: cannot be read as a state dict ({error})."
        ) from error
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(value, torch.Tensor) for value in loaded.values()):
        raise ConfigError(
            f"model.segmenter.encoder_weights = {str(path)!r}: expected a state dict "
            "(a mapping of parameter names to tensors) of the encoder."
        )
    return loaded


def _strip_prefix(state: dict[str, torch.Tensor], expected_keys: set[str]) -> dict[str, torch.Tensor]:
    if set(state) & expected_keys:
        return state
    for prefix in _STATE_DICT_PREFIXES:
        stripped = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
        if set(stripped) & expected_keys:
            return stripped
    return state


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> None:
    """Load a local state-dict file into an smp encoder (in place).

    Keys may carry an ``encoder.`` / ``model.encoder.`` prefix. A first convolution saved for
    3 input channels is summed over its input channels when the encoder takes 1 channel (the
    usual gray-input adaptation). Raises :class:`ConfigError` for a missing/unreadable file or
    tensors that do not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"model.segmenter.encoder_weights = {str(path)!r}: file not found. Give a local state-dict "
            "file of the encoder, or null for random initialisation."
        )
    own_state = encoder.state_dict()
    state = _strip_prefix(_read_state_dict(path), set(own_state))
    adapted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        target = own_state.get(key)
        if target is not None and value.shape != target.shape and value.dim() == 4 and target.dim() == 4 \
                and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:] \
                and target.shape[1] == 1:
            value = value.sum(dim=1, keepdim=True)
        adapted[key] = value
    missing = sorted(set(own_state) - set(adapted))
    unexpected = sorted(set(adapted) - set(own_state))
    mismatched = sorted(key for key in set(adapted) & set(own_state) if adapted[key].shape != own_state[key].shape)
    if missing or unexpected or mismatched:
        raise ConfigError(
            f"model.segmenter.encoder_weights = {str(path)!r} does not fit the encoder: "
            f"{len(missing)} missing key(s) {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, "
            f"{len(mismatched)} of another shape {mismatched[:3]}. Use weights saved for the same encoder."
        )
    encoder.load_state_dict(adapted)


def _batch_norm_pre_hook(module: nn.Module, args: tuple[Any, ...]) -> None:
    """Switch a BatchNorm layer to running statistics when it would see one value per channel."""
    inputs = args[0]
    if module.training and isinstance(inputs, torch.Tensor) and inputs.dim() >= 2 \
            and inputs.numel() == inputs.shape[1]:
        module.training = False
        module._uaafusion_single_value_fallback = True  # type: ignore[attr-defined]


def _batch_norm_post_hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
    if getattr(module, "_uaafusion_single_value_fallback", False):
        module.training = True
        module._uaafusion_single_value_fallback = False  # type: ignore[attr-defined]


class PaddedSegmenter(nn.Module):
    """An smp segmentation model that accepts any input size.

    Input ``(B, in_channels, H, W)`` -> logits ``(B, num_classes, H, W)``. The input is padded
    (reflect, or replicate where a side is too short to reflect) at the bottom/right to a multiple
    of :attr:`pad_multiple`, and the logits are cropped back.
    """

    def __init__(self, model: nn.Module, num_classes: int, pad_multiple: int, spec: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.num_classes = int(num_classes)
        self.pad_multiple = int(pad_multiple)
        self.spec = dict(spec)
        for module in self.model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.register_forward_pre_hook(_batch_norm_pre_hook)
                module.register_forward_hook(_batch_norm_post_hook)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``image (B, in_channels, H, W)`` -> logits ``(B, num_classes, H, W)``."""
        if image.dim() != 4:
            raise ValueError(f"segmenter input must be (B, C, H, W), got shape {tuple(image.shape)}")
        height, width = image.shape[-2:]
        padded_height = math.ceil(height / self.pad_multiple) * self.pad_multiple
        padded_width = math.ceil(width / self.pad_multiple) * self.pad_multiple
        pad_bottom, pad_right = padded_height - height, padded_width - width
        padded = image
        if pad_bottom or pad_right:
            mode = "reflect" if pad_bottom < height and pad_right < width else "replicate"
            padded = functional.pad(image, (0, pad_right, 0, pad_bottom), mode=mode)
        logits = self.model(padded)
        if isinstance(logits, (tuple, list)):  # smp models with an auxiliary classification head
            logits = logits[0]
        if logits.shape[-2:] != padded.shape[-2:]:
            raise ConfigError(
                f"segmenter {self.spec.get('arch')}/{self.spec.get('encoder')} returned logits of size "
                f"{tuple(logits.shape[-2:])} for an input of size {tuple(padded.shape[-2:])}; this "
                "architecture/encoder/kwargs combination does not keep the resolution. Choose another "
                "(e.g. DeepLabV3Plus or Unet with the default encoder_depth)."
            )
        return logits[..., :height, :width]


def create_segmenter(
    arch: str = DEFAULT_ARCH,
    encoder: str = DEFAULT_ENCODER,
    num_classes: int = 5,
    encoder_weights: str | Path | None = None,
    in_channels: int = 1,
    pad_multiple: int | None = None,
    **smp_kwargs: Any,
) -> PaddedSegmenter:
    """Build the segmentation network ``S``: ``(B, in_channels, H, W) -> logits (B, num_classes, H, W)``.

    ``arch``: an smp architecture name (``DeepLabV3Plus``, ``Unet``, ``FPN``, ... case-insensitive);
    ``encoder``: an smp encoder name (``mobilenet_v2``, ``resnet18``, ... or ``tu-<timm name>``);
    ``encoder_weights``: ``None`` (random initialisation), the path of a local state-dict file of the
    encoder, or named weights such as ``"imagenet"``, which segmentation-models-pytorch downloads (on
    a machine with internet; elsewhere give the file it saved);
    ``pad_multiple``: override the padding multiple (default ``max(2**encoder_depth, output stride)``);
    ``smp_kwargs``: passed to ``smp.create_model`` (``encoder_depth``, ``decoder_channels``, ...).
    Raises :class:`ConfigError` for unknown names or unusable weights.
    """
    import segmentation_models_pytorch as smp

    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"segmenter num_classes = {num_classes!r}: expected an integer >= 1.")
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ConfigError(f"segmenter in_channels = {in_channels!r}: expected an integer >= 1.")
    weights_path: Path | None = None
    named_weights: str | None = None
    if encoder_weights is not None:
        candidate = Path(encoder_weights)
        looks_like_path = candidate.is_file() or candidate.suffix.lower() in _WEIGHT_FILE_SUFFIXES \
            or "/" in str(encoder_weights) or "\\" in str(encoder_weights)
        if looks_like_path:
            weights_path = candidate
        else:
            named_weights = str(encoder_weights)  # segmentation-models-pytorch's own download
    _check_names(arch, encoder)
    try:
        model = smp.create_model(
            arch, encoder_name=encoder, encoder_weights=named_weights, in_channels=in_channels,
            classes=num_classes, **smp_kwargs,
        )
    except (TypeError, ValueError, KeyError, AssertionError) as error:
        raise ConfigError(
            f"segmenter {arch}/{encoder} with arguments {smp_kwargs}"
            f"{f' and encoder_weights {named_weights!r}' if named_weights else ''} cannot be built: {error}"
        ) from error
    except OSError as error:  # the download failed (no internet, a proxy): URLError is an OSError
        raise ConfigError(
            f"model.segmenter.encoder_weights = {named_weights!r}: segmentation-models-pytorch could not "
            f"download them ({error}). Without internet, save the encoder's weights on a machine that has it "
            "(torch.save(model.encoder.state_dict(), PATH)) and give that PATH, or null for random initialisation."
        ) from error
    if weights_path is not None:
        load_encoder_weights(model.encoder, weights_path)
    if pad_multiple is None:
        depth = int(getattr(model.encoder, "_depth", smp_kwargs.get("encoder_depth", 5)))
        stride = int(getattr(model.encoder, "output_stride", 2**depth))
        pad_multiple = max(2**depth, stride)
    if pad_multiple < 1:
        raise ConfigError(f"segmenter pad_multiple = {pad_multiple!r}: expected an integer >= 1.")
    spec: dict[str, Any] = {
        "arch": arch, "encoder": encoder, "num_classes": num_classes, "in_channels": in_channels,
        "pad_multiple": pad_multiple, **smp_kwargs,
    }
    return PaddedSegmenter(model, num_classes=num_classes, pad_multiple=pad_multiple, spec=spec)
