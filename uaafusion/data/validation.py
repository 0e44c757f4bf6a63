"""Checks of dataset files at dataset creation: cheap, cached, and explicit about what to fix.

What is checked here (without decoding whole images, except where noted):

- an image opens and has a size (PIL header);
- a PNG or JPEG file is complete (its end marker is present; when it is not, the image is decoded
  to confirm, so an unusual but valid file is never rejected);
- a label image decodes, has the size of its image pair, and holds only ids in
  ``0..num_classes-1`` or ``ignore_index`` (labels are decoded: they are small, one-channel files).

Results are cached per file (keyed by path, size and modification time), so creating the same
dataset again (training does, once per unit) costs almost nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from uaafusion.data.io import read_label_image
from uaafusion.errors import DataError

LOGGER = logging.getLogger(__name__)

# How many problems a message lists before summarising the rest.
MESSAGE_LIMIT = 20

_END_MARKERS: dict[str, bytes] = {"PNG": b"IEND", "JPEG": b"\xff\xd9"}
_TAIL_BYTES = 64

_FileKey = tuple[str, int, int]
_IMAGE_CACHE: dict[_FileKey, tuple[int, int] | str] = {}
_LABEL_CACHE: dict[tuple[_FileKey, int, int], tuple[tuple[int, int], tuple[int, ...]] | str] = {}


@dataclass(frozen=True)
class Problem:
    """One bad sample: its name and a message naming the file(s) and the fix."""

    name: str
    reason: str


def _file_key(path: Path) -> _FileKey:
    status = path.stat()
    return (str(path.resolve()), status.st_size, status.st_mtime_ns)


def image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of an image file from its header, after a cheap completeness check.

    Raises :class:`DataError` naming the file when it is missing, not an image, or truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found.")
    key = _file_key(path)
    cached = _IMAGE_CACHE.get(key)
    if cached is None:
        cached = _inspect_image(path)
        _IMAGE_CACHE[key] = cached
    if isinstance(cached, str):
        raise DataError(cached)
    return cached


def _inspect_image(path: Path) -> tuple[int, int] | str:
    """Header size, or the error message (cached either way)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            image_format, mode = image.format or "", image.mode
            if not _has_end_marker(path, image_format):
                image.load()  # confirm: raises on a truncated file
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        return (f"{path}: cannot be read as an image ({error}). The file may be truncated or not an "
                "image; replace it, or remove it together with its partner files.")
    if width < 1 or height < 1:
        return f"{path}: image has no pixels ({width}x{height}); replace it."
    if mode == "F":  # as read_image refuses it, from the header alone
        return f"{path}: a floating-point image, whose scale is unknown; convert it to an 8- or 16-bit image first."
    return (height, width)


def _has_end_marker(path: Path, image_format: str) -> bool:
    marker = _END_MARKERS.get(image_format.upper())
    if marker is None:
        return True
    with path.open("rb") as stream:
        stream.seek(0, 2)
        size = stream.tell()
        stream.seek(max(0, size - _TAIL_BYTES))
        return marker in stream.read()


def check_label_file(path: str | Path, height: int, width: int, num_classes: int, ignore_index: int) -> None:
    """Check a class-index label image against its pair's size and the allowed ids.

    Raises :class:`DataError` naming the file when it is unreadable, has another size than the
    image pair ``(height, width)``, or holds an id ``>= num_classes`` other than ``ignore_index``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: label file not found; every image pair needs one (same file name).")
    key = (_file_key(path), num_classes, ignore_index)
    cached = _LABEL_CACHE.get(key)
    if cached is None:
        cached = _inspect_label(path, num_classes, ignore_index)
        _LABEL_CACHE[key] = cached
    if isinstance(cached, str):
        raise DataError(cached)
    shape, bad_ids = cached
    if shape != (height, width):
        raise DataError(
            f"{path}: label is {shape[1]}x{shape[0]} (WxH) but its images are {width}x{height}; "
            "labels must have the size of their image pair. Replace or resize the label (nearest neighbour)."
        )
    if bad_ids:
        raise DataError(label_ids_message(path, bad_ids, num_classes, ignore_index))


def _inspect_label(path: Path, num_classes: int,
                   ignore_index: int) -> tuple[tuple[int, int], tuple[int, ...]] | str:
    try:
        label = read_label_image(path)
    except DataError as error:
        return str(error)
    return (label.shape[0], label.shape[1]), invalid_label_ids(label, num_classes, ignore_index)


def invalid_label_ids(label: np.ndarray, num_classes: int, ignore_index: int) -> tuple[int, ...]:
    """Sorted ids in ``label`` that are neither a class ``0..num_classes-1`` nor ``ignore_index``."""
    ids = np.unique(label)
    bad = ids[((ids < 0) | (ids >= num_classes)) & (ids != ignore_index)]
    return tuple(int(value) for value in bad)


def label_ids_message(path: Path, bad_ids: tuple[int, ...], num_classes: int, ignore_index: int) -> str:
    """The message for a label holding ids outside ``0..num_classes-1`` and ``ignore_index``."""
    shown = ", ".join(map(str, bad_ids[:10])) + (" ..." if len(bad_ids) > 10 else "")
    return (f"{path}: label ids {shown} are out of range: allowed are 0..{num_classes - 1} and "
            f"ignore_index {ignore_index}. Fix the label, or set data.num_classes / data.class_names "
            "(or data.ignore_index) in params.yaml to match the dataset.")


def resolve_problems(problems: list[Problem], on_bad_input: str, where: str) -> list[tuple[str, str]]:
    """Raise one :class:`DataError` listing every problem (strict), or return them to skip (skip).

    In skip mode a warning summarises what is left out; the caller keeps the list.
    """
    if not problems:
        return []
    if on_bad_input != "skip":
        lines = [f"  - {problem.reason}" for problem in problems[:MESSAGE_LIMIT]]
        if len(problems) > MESSAGE_LIMIT:
            lines.append(f"  ... and {len(problems) - MESSAGE_LIMIT} more")
        raise DataError(
            f"{where}: {len(problems)} bad sample(s):\n" + "\n".join(lines)
            + "\nFix or remove these files, or set data.on_bad_input: skip in params.yaml to leave "
              "the bad samples out."
        )
    skipped = [(problem.name, problem.reason) for problem in problems]
    preview = "; ".join(f"{name}: {reason}" for name, reason in skipped[:5])
    more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
    LOGGER.warning("%s: skipping %d bad sample(s) (data.on_bad_input: skip): %s%s",
                   where, len(skipped), preview, more)
    return skipped


def clear_caches() -> None:
    """Forget cached file checks (for tests that rewrite files within the same nanosecond)."""
    _IMAGE_CACHE.clear()
    _LABEL_CACHE.clear()
