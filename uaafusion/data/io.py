"""Image files in and out, and colour conversions. The one place that reads or writes an image.

Conventions
- Arrays from :func:`read_image` are ``uint8``: gray ``(H, W)`` or colour ``(H, W, 3)`` RGB.
- Tensors are float in ``[0, 1]``, channels first: ``(1, H, W)`` gray/luma, ``(3, H, W)`` RGB/YCrCb.
- YCrCb is full-range BT.601 (JPEG/OpenCV convention): Cr, Cb are offset by 0.5 (0.5 = neutral).
- Luma for metrics is BT.601 rounded to integers, as OpenCV's ``BGR2GRAY`` does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from uaafusion.errors import DataError
from uaafusion.integrity import write_atomically

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

# BT.601 luma weights (R, G, B).
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def is_image_file(path: Path) -> bool:
    """True when ``path`` has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as ``uint8``: gray ``(H, W)`` or RGB ``(H, W, 3)``.

    16-bit gray images are scaled to 8 bit (``v * 255 / 65535``, rounded; one whose values all fit in 8
    bits holds 8-bit data and is read as it is); 16-bit colour images keep their high byte (Pillow);
    palette/alpha images are converted to RGB.
    Raises :class:`DataError` naming the file when it is missing, unreadable or truncated, or holds
    floating-point or 32-bit values (their scale is unknown: they are never guessed or clipped).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found. Check the path (and that the folder holds it).")
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode == "F" or (image.mode == "I" and not 0 <= np.min(image) <= np.max(image) <= 65535):
                raise DataError(f"{path}: a {'floating-point' if image.mode == 'F' else '32-bit integer'} image, "
                                "whose scale is unknown; convert it to an 8- or 16-bit image first.")
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(image, dtype=np.float64)
                peak = 65535.0 if array.max() > 255 else 255.0
                return np.clip(np.round(array * 255.0 / peak), 0, 255).astype(np.uint8)
            if image.mode in ("L", "1"):
                return np.asarray(image.convert("L"), dtype=np.uint8).copy()
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataError(
            f"{path}: cannot be read as an image ({error}). The file may be truncated or not an "
            "image; replace it or remove it (with its partner) from the dataset."
        ) from error


def read_label_image(path: str | Path) -> np.ndarray:
    """Read a class-index label PNG as ``int64 (H, W)`` (palette indices kept, not colours)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: label file not found.")
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
                return np.asarray(image, dtype=np.int64).copy()
            if image.mode == "RGB":
                array = np.asarray(image, dtype=np.int64)
                if not (np.array_equal(array[..., 0], array[..., 1])
                        and np.array_equal(array[..., 0], array[..., 2])):
                    raise DataError(
                        f"{path}: label image is colour (RGB) with unequal channels; labels must be "
                        "class-index images (one integer id per pixel, mode L or P)."
                    )
                return array[..., 0].copy()
            return np.asarray(image.convert("L"), dtype=np.int64).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{path}: cannot be read as a label image ({error}).") from error


def write_png(path: str | Path, array: np.ndarray) -> Path:
    """Write ``uint8`` gray ``(H, W)`` or RGB ``(H, W, 3)`` as PNG, creating parent folders; atomically
    (:func:`uaafusion.integrity.write_atomically`: a kill never leaves half an image)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.dtype != np.uint8:
        raise TypeError(f"write_png expects uint8, got {array.dtype} for {path}")
    write_atomically(path, lambda stream: Image.fromarray(array).save(stream, format="PNG"))
    return path


JPEG_QUALITY = 95
"""Quality of JPEG files written by :func:`write_image` (degraded copies of JPEG datasets)."""
PNG_COMPRESS_LEVEL = 1
"""zlib level of PNG files written by :func:`write_image`: lossless like any level, about 4x faster to
write than PIL's default 6 for files about 25% larger (degraded copies are derived, re-creatable data)."""


def write_image(path: str | Path, array: np.ndarray) -> Path:
    """Write ``uint8`` gray ``(H, W)`` or RGB ``(H, W, 3)`` in the format of the file extension (PNG,
    JPEG at quality :data:`JPEG_QUALITY`, BMP, TIFF), creating parent folders."""
    path = Path(path)
    if not is_image_file(path):
        raise DataError(f"{path}: not an image file name; allowed extensions: {', '.join(IMAGE_EXTENSIONS)}.")
    if array.dtype != np.uint8:
        raise TypeError(f"write_image expects uint8, got {array.dtype} for {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    options = ({"quality": JPEG_QUALITY} if suffix in (".jpg", ".jpeg")
               else {"compress_level": PNG_COMPRESS_LEVEL} if suffix == ".png" else {})
    image_format = Image.registered_extensions()[suffix]
    write_atomically(path, lambda stream: Image.fromarray(array).save(stream, format=image_format, **options))
    return path


def is_gray(array: np.ndarray) -> bool:
    """True for a gray ``(H, W)`` image or a colour one whose three channels are equal (gray stored as RGB)."""
    return array.ndim == 2 or (np.array_equal(array[..., 0], array[..., 1])
                               and np.array_equal(array[..., 0], array[..., 2]))


def to_gray_uint8(array: np.ndarray) -> np.ndarray:
    """BT.601 luma of an 8-bit image, rounded as OpenCV's BGR2GRAY: ``(H, W[, 3]) -> (H, W)`` uint8."""
    if array.ndim == 2:
        return array.astype(np.uint8, copy=False)
    rgb = array[..., :3].astype(np.float64)
    luma = rgb[..., 0] * LUMA_WEIGHTS[0] + rgb[..., 1] * LUMA_WEIGHTS[1] + rgb[..., 2] * LUMA_WEIGHTS[2]
    return np.clip(np.round(luma), 0, 255).astype(np.uint8)


def rgb_to_ycrcb(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in ``[0, 1]`` ``(..., 3, H, W)`` -> YCrCb ``(..., 3, H, W)`` (Cr, Cb offset by 0.5)."""
    red, green, blue = rgb.unbind(dim=-3)
    luma = LUMA_WEIGHTS[0] * red + LUMA_WEIGHTS[1] * green + LUMA_WEIGHTS[2] * blue
    chroma_red = (red - luma) * 0.713 + 0.5
    chroma_blue = (blue - luma) * 0.564 + 0.5
    return torch.stack((luma, chroma_red, chroma_blue), dim=-3)


def ycrcb_to_rgb(ycrcb: torch.Tensor) -> torch.Tensor:
    """YCrCb ``(..., 3, H, W)`` (Cr, Cb offset by 0.5) -> RGB clamped to ``[0, 1]``."""
    luma, chroma_red, chroma_blue = ycrcb.unbind(dim=-3)
    red = luma + 1.403 * (chroma_red - 0.5)
    green = luma - 0.714 * (chroma_red - 0.5) - 0.344 * (chroma_blue - 0.5)
    blue = luma + 1.773 * (chroma_blue - 0.5)
    return torch.stack((red, green, blue), dim=-3).clamp(0.0, 1.0)


def array_to_tensor(array: np.ndarray) -> torch.Tensor:
    """``uint8 (H, W)`` -> ``(1, H, W)``; ``uint8 (H, W, 3)`` -> ``(3, H, W)``; float in ``[0, 1]``."""
    array = np.ascontiguousarray(array)
    if not array.flags.writeable:  # e.g. np.asarray(PIL image): torch warns on read-only memory
        array = array.copy()
    tensor = torch.from_numpy(array).float().div_(255.0)
    if tensor.ndim == 2:
        return tensor.unsqueeze(0)
    return tensor.permute(2, 0, 1).contiguous()


def tensor_to_array(tensor: torch.Tensor) -> np.ndarray:
    """Float ``(1, H, W)`` or ``(3, H, W)`` in ``[0, 1]`` -> ``uint8 (H, W)`` or ``(H, W, 3)``."""
    values = tensor.detach().float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).cpu()
    if values.shape[0] == 1:
        return values[0].numpy()
    return values.permute(1, 2, 0).numpy()


def split_luma_chroma(array: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
    """An 8-bit image -> (luma ``(1, H, W)``, chroma ``(2, H, W)`` or ``None`` for gray input).

    Colour images whose three channels are equal (gray stored as RGB, as in TNO) count as gray.
    """
    if is_gray(array):
        gray = array if array.ndim == 2 else array[..., 0]
        return array_to_tensor(gray), None
    ycrcb = rgb_to_ycrcb(array_to_tensor(array))
    return ycrcb[:1].contiguous(), ycrcb[1:].contiguous()
