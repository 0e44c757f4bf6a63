"""Turning maps and segmentations into 8-bit RGB pictures (for ``uaafusion fuse --save-maps`` and the report).

- :func:`colourise_map`: a float map ``(H, W)`` (weights, attention) through a matplotlib colour map;
- :func:`segmentation_palette` / :func:`colourise_segmentation`: class ids ``(H, W)`` to a fixed palette
  (class 0, usually background, is black; unknown pixels (``ignore_index``) are white);
- :func:`to_display_rgb`: any image (``uint8`` array or float tensor) as ``uint8 (H, W, 3)``;
- :func:`side_by_side`: pictures of one height in a row (the validation's sample panels).

Everything returns ``uint8`` arrays ready for :func:`uaafusion.data.io.write_png` or ``imshow``.
"""

from __future__ import annotations

import numpy as np
import torch

# Distinct, colour-blind-friendly-ish colours for the first classes (after black background);
# further classes take colours from matplotlib's tab20.
_BASE_PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (128, 64, 128),   # road-like purple
    (220, 20, 60),    # person-like crimson
    (0, 0, 230),      # car-like blue
    (255, 200, 0),    # bicycle-like yellow
    (0, 170, 120),
    (255, 110, 0),
    (150, 80, 220),
    (0, 200, 255),
    (140, 100, 40),
)
IGNORE_COLOUR: tuple[int, int, int] = (255, 255, 255)
DEFAULT_MAP_COLOURS = "inferno"


def _as_numpy_2d(values: np.ndarray | torch.Tensor) -> np.ndarray:
    """A ``(H, W)`` (or ``(1, H, W)`` / ``(1, 1, H, W)``) map as a float64 numpy array."""
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().numpy()
    array = np.asarray(values, dtype=np.float64)
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"expected a single-channel map (H, W), got shape {array.shape}")
    return array


def colourise_map(
    values: np.ndarray | torch.Tensor,
    colour_map: str = DEFAULT_MAP_COLOURS,
    value_range: tuple[float, float] | None = (0.0, 1.0),
) -> np.ndarray:
    """Colour a single-channel float map ``(H, W)`` -> ``uint8 (H, W, 3)``.

    ``value_range``: the values mapped to the two ends of the colour map; ``None`` stretches the
    map's own minimum..maximum (a constant map becomes the colour map's middle colour).
    Non-finite values are drawn as the low end.
    """
    from matplotlib import colormaps

    array = _as_numpy_2d(values)
    array = np.where(np.isfinite(array), array, np.nan)
    if value_range is None:
        low, high = (float(np.nanmin(array)), float(np.nanmax(array))) if np.isfinite(array).any() else (0.0, 1.0)
    else:
        low, high = value_range
    if high - low <= 1e-12:
        scaled = np.full_like(array, 0.5)
    else:
        scaled = (array - low) / (high - low)
    scaled = np.clip(np.nan_to_num(scaled, nan=0.0), 0.0, 1.0)
    rgba = colormaps[colour_map](scaled)
    return np.round(rgba[..., :3] * 255.0).astype(np.uint8)


def segmentation_palette(num_classes: int) -> np.ndarray:
    """``uint8 (num_classes, 3)``: class 0 black, then fixed distinct colours (tab20 after ten)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    colours = list(_BASE_PALETTE[:num_classes])
    if num_classes > len(_BASE_PALETTE):
        from matplotlib import colormaps

        table = colormaps["tab20"]
        for index in range(num_classes - len(_BASE_PALETTE)):
            red, green, blue, _ = table(index % 20)
            colours.append((round(red * 255), round(green * 255), round(blue * 255)))
    return np.asarray(colours, dtype=np.uint8)


def colourise_segmentation(
    classes: np.ndarray | torch.Tensor, num_classes: int, ignore_index: int | None = 255
) -> np.ndarray:
    """Class ids ``(H, W)`` -> ``uint8 (H, W, 3)`` with :func:`segmentation_palette`.

    Pixels equal to ``ignore_index`` are white; ids outside ``0..num_classes-1`` are white too.
    """
    if isinstance(classes, torch.Tensor):
        classes = classes.detach().cpu().numpy()
    ids = np.asarray(classes)
    while ids.ndim > 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.ndim != 2:
        raise ValueError(f"expected class ids (H, W), got shape {ids.shape}")
    ids = ids.astype(np.int64)
    palette = segmentation_palette(num_classes)
    known = (ids >= 0) & (ids < num_classes)
    if ignore_index is not None:
        known &= ids != ignore_index
    picture = np.empty((*ids.shape, 3), dtype=np.uint8)
    picture[...] = IGNORE_COLOUR
    picture[known] = palette[ids[known]]
    return picture


def to_display_rgb(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """An image as ``uint8 (H, W, 3)``: gray is repeated into three channels.

    Accepts ``uint8`` arrays ``(H, W)`` / ``(H, W, 3)`` or float tensors in [0, 1]
    ``(1, H, W)`` / ``(3, H, W)`` (channels first).
    """
    if isinstance(image, torch.Tensor):
        from uaafusion.data.io import tensor_to_array

        tensor = image.detach()
        if tensor.ndim == 2:
            tensor = tensor[None]
        image = tensor_to_array(tensor)
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image array, got {array.dtype}")
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=-1)
    if array.ndim == 3 and array.shape[-1] == 3:
        return array
    raise ValueError(f"expected an image (H, W) or (H, W, 3), got shape {array.shape}")


def side_by_side(pictures: list[np.ndarray | torch.Tensor], gap: int = 2) -> np.ndarray:
    """Pictures of the same height (anything :func:`to_display_rgb` takes) in one row, with ``gap`` white
    columns between them -> ``uint8 (H, sum of widths + gaps, 3)``."""
    shown = [to_display_rgb(picture) for picture in pictures]
    heights = {picture.shape[0] for picture in shown}
    if len(heights) != 1:
        raise ValueError(f"side_by_side needs pictures of one height, got heights {sorted(heights)}")
    spacer = np.full((shown[0].shape[0], gap, 3), 255, np.uint8)
    row: list[np.ndarray] = []
    for index, picture in enumerate(shown):
        row += [spacer, picture] if index else [picture]
    return np.concatenate(row, axis=1)
