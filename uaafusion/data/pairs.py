"""Pairing files of two (or more) folders by name: ``ir/0001.png`` <-> ``vi/0001.jpg``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from uaafusion.data.io import is_image_file
from uaafusion.errors import DataError


@dataclass(frozen=True)
class ImagePair:
    """An infrared/visible pair found on disk; ``name`` is the shared file stem."""

    name: str
    ir_path: Path
    vi_path: Path


def index_images(folder: str | Path, role: str) -> dict[str, Path]:
    """Map file stem -> image path for the image files directly in ``folder``.

    ``role`` names the folder in messages ("infrared", "visible", "fused"). An absent or empty
    folder, or two files with the same stem, raise :class:`DataError`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: {role} folder not found; check the path.")
    index: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or not is_image_file(path):
            continue
        if path.stem in index:
            raise DataError(
                f"{folder}: two {role} images share the name '{path.stem}' "
                f"({index[path.stem].name}, {path.name}); keep one."
            )
        index[path.stem] = path
    if not index:
        raise DataError(f"{folder}: {role} folder holds no images (png, jpg, jpeg, bmp, tif, tiff); put the "
                        "images there or point to the folder that holds them.")
    return index


def find_pairs(ir_dir: str | Path, vi_dir: str | Path) -> list[ImagePair]:
    """Pair infrared and visible images by stem (extensions may differ), sorted by name.

    A file without its partner raises :class:`DataError` listing every unpaired name.
    """
    infrared = index_images(ir_dir, "infrared")
    visible = index_images(vi_dir, "visible")
    missing_visible = sorted(set(infrared) - set(visible))
    missing_infrared = sorted(set(visible) - set(infrared))
    if missing_visible or missing_infrared:
        problems = []
        if missing_visible:
            problems.append(f"no visible partner in {vi_dir} for: "
                            f"{_preview([str(infrared[name]) for name in missing_visible])}")
        if missing_infrared:
            problems.append(f"no infrared partner in {ir_dir} for: "
                            f"{_preview([str(visible[name]) for name in missing_infrared])}")
        raise DataError(
            "; ".join(problems) + ". Add the missing files or remove the unpaired ones "
            "(pairs are matched by file name without extension)."
        )
    return [ImagePair(name, infrared[name], visible[name]) for name in sorted(infrared)]


def _preview(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")
