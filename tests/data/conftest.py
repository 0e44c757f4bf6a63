"""Fixtures for the data-layer tests: small datasets written into ``tmp_path`` on demand."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from uaafusion.config import DataConfig
from uaafusion.data import validation

# Folder names per layout: (infrared, visible, labels or boxes).
LAYOUT_DIRS: dict[str, tuple[str, str, str | None]] = {
    "msrs": ("ir", "vi", "Label"),
    "fmb": ("Infrared", "Visible", "Label"),
    "boxes": ("ir", "vi", "boxes"),
    "pairs": ("ir", "vi", None),
}


def random_image(rng: np.random.Generator, height: int, width: int, color: bool) -> np.ndarray:
    """``uint8 (H, W)`` or ``(H, W, 3)`` noise."""
    shape = (height, width, 3) if color else (height, width)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def save(path: Path, array: np.ndarray) -> Path:
    """Write an array as an image (format from the extension), creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


@dataclasses.dataclass
class FixtureDataset:
    """What :func:`make_dataset` wrote: the root, the split folder, and the arrays per name."""

    root: Path
    split_dir: Path
    layout: str
    ir: dict[str, np.ndarray]
    vi: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    boxes: dict[str, list[str]]
    extra_folder: str | None

    def folder(self, role: str) -> Path:
        """``role`` in ``ir``, ``vi``, ``label`` (labels or boxes): that folder of the split."""
        ir_dir, vi_dir, _ = LAYOUT_DIRS[self.layout]
        return self.split_dir / {"ir": ir_dir, "vi": vi_dir, "label": str(self.extra_folder)}[role]


MakeDataset = Callable[..., FixtureDataset]


@pytest.fixture(autouse=True)
def _fresh_validation_cache() -> None:
    """Files are rewritten between tests: start each test with empty check caches."""
    validation.clear_caches()


@pytest.fixture
def make_dataset(tmp_path: Path) -> MakeDataset:
    """Factory writing a dataset of ``count`` pairs into ``tmp_path/<root_name>``.

    ``layout``: msrs | fmb | boxes | pairs; ``split``: sub-folder (``None``: directly in the root);
    ``size``: (H, W); ``ir_color``/``vi_color``: RGB files; ``vi_ext``: extension of visible files;
    ``num_classes``: label ids drawn from ``0..num_classes-1``; ``label_dir``: msrs label folder name.
    """

    def make(layout: str = "msrs", count: int = 3, size: tuple[int, int] = (24, 32), split: str | None = "train",
             ir_color: bool = False, vi_color: bool = True, vi_ext: str = ".png", num_classes: int = 5,
             label_dir: str | None = None, root_name: str = "dataset", seed: int = 0) -> FixtureDataset:
        rng = np.random.default_rng(seed)
        root = tmp_path / root_name
        split_dir = root / split if split else root
        ir_dir, vi_dir, extra_dir = LAYOUT_DIRS[layout]
        if layout == "msrs" and label_dir is not None:
            extra_dir = label_dir
        written = FixtureDataset(root, split_dir, layout, {}, {}, {}, {}, extra_dir)
        height, width = size
        for index in range(count):
            name = f"pair_{index:02d}"
            written.ir[name] = random_image(rng, height, width, ir_color)
            written.vi[name] = random_image(rng, height, width, vi_color)
            save(split_dir / ir_dir / f"{name}.png", written.ir[name])
            save(split_dir / vi_dir / f"{name}{vi_ext}", written.vi[name])
            if layout in ("msrs", "fmb"):
                written.labels[name] = rng.integers(0, num_classes, size=(height, width), dtype=np.uint8)
                save(split_dir / extra_dir / f"{name}.png", written.labels[name])
            elif layout == "boxes":
                lines = [f"{index % max(1, num_classes - 1)} 0.5 0.5 0.5 0.5", "0 0.25 0.25 0.2 0.2"]
                written.boxes[name] = lines
                (split_dir / extra_dir).mkdir(parents=True, exist_ok=True)
                (split_dir / extra_dir / f"{name}.txt").write_text("\n".join(lines) + "\n")
        return written

    return make


def data_config(root: Path, layout: str = "msrs", **changes: Any) -> DataConfig:
    """A :class:`DataConfig` for a fixture dataset; ``num_classes`` also sets matching class names."""
    num_classes = changes.pop("num_classes", 5)
    names = tuple(f"class{index}" for index in range(num_classes))
    return DataConfig(layout=layout, root=str(root), num_classes=num_classes, class_names=names, **changes)


@pytest.fixture
def config_for() -> Callable[..., DataConfig]:
    """``config_for(root, layout="msrs", **DataConfig fields)``."""
    return data_config
