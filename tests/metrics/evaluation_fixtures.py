"""Small image/label folders and toy segmenters for the evaluation tests (also used by tests/commands)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from uaafusion.data.io import read_image, to_gray_uint8

# Extensions per folder: pairing is by stem, so they differ on purpose.
IR_EXTENSION = ".png"
VI_EXTENSION = ".bmp"
FUSED_EXTENSION = ".tif"


class BinningSegmenter(nn.Module):
    """Predicts class ``floor(x * C)`` (clipped) for gray input ``x`` in [0, 1]: known, exact predictions."""

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.scale = nn.Parameter(torch.ones(()), requires_grad=False)  # so .to()/.eval() behave as usual

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        centres = (torch.arange(self.num_classes, dtype=image.dtype, device=image.device) + 0.5).view(1, -1, 1, 1)
        return -(image * self.scale * self.num_classes - centres).abs()


def binning_prediction(gray: np.ndarray, num_classes: int) -> np.ndarray:
    """What :class:`BinningSegmenter` predicts for a gray ``uint8`` image (float32 input like the evaluator)."""
    segmenter = BinningSegmenter(num_classes)
    tensor = torch.from_numpy(gray).float().div(255.0).view(1, 1, *gray.shape)
    with torch.no_grad():
        return segmenter(tensor).argmax(dim=1)[0].numpy()


def smooth_image(height: int, width: int, seed: int) -> np.ndarray:
    """A gray ``uint8`` image with structure (blurred noise over a ramp)."""
    generator = np.random.default_rng(seed)
    noise = generator.uniform(0, 255, (height + 2, width + 2))
    blurred = sum(noise[dy:dy + height, dx:dx + width] for dy in range(3) for dx in range(3)) / 9
    ramp = np.linspace(-60, 60, width)[None, :]
    return np.clip(np.rint(blurred + ramp), 0, 255).astype(np.uint8)


def save_image(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` in the format of ``path``'s extension (png, bmp, tif, jpg)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def write_evaluation_folders(
    root: Path,
    names: tuple[str, ...] = ("alpha", "beta", "gamma"),
    height: int = 24,
    width: int = 32,
) -> dict[str, Path]:
    """Write ``root/{ir,vi,fused}`` (gray png, colour bmp, gray tif) for ``names``; returns the folders.

    The fused image is the mean of the infrared image and the visible luma.
    """
    folders = {role: root / role for role in ("ir", "vi", "fused")}
    for index, name in enumerate(names):
        ir = smooth_image(height, width, seed=3 * index)
        vi_rgb = np.stack([smooth_image(height, width, seed=3 * index + 1 + channel) for channel in (0, 1, 1)], axis=-1)
        fused = np.rint((ir.astype(float) + to_gray_uint8(vi_rgb)) / 2).astype(np.uint8)
        save_image(folders["ir"] / f"{name}{IR_EXTENSION}", ir)
        save_image(folders["vi"] / f"{name}{VI_EXTENSION}", vi_rgb)
        save_image(folders["fused"] / f"{name}{FUSED_EXTENSION}", fused)
    return folders


def read_gray(path: Path) -> np.ndarray:
    """Gray ``uint8`` of an image file, as the evaluator sees it."""
    return to_gray_uint8(read_image(path))


def write_labels(folder: Path, labels: dict[str, np.ndarray]) -> Path:
    """Class-index label PNGs (mode L) ``folder/NAME.png``."""
    for name, label in labels.items():
        save_image(folder / f"{name}.png", label.astype(np.uint8))
    return folder


def write_boxes(folder: Path, boxes: dict[str, list[str]], classes: list[str] | None = None) -> Path:
    """YOLO files ``folder/NAME.txt`` (lines ``class cx cy w h``) and, optionally, ``classes.txt`` beside the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in boxes.items():
        (folder / f"{name}.txt").write_text("".join(f"{line}\n" for line in lines))
    if classes is not None:
        (folder.parent / "classes.txt").write_text("".join(f"{index} {name}\n" for index, name in enumerate(classes)))
    return folder
