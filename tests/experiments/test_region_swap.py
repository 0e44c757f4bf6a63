"""``experiments/region_swap.py``: composites of a fused image and the infrared image, swapped inside boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from experiments.region_swap import VARIANTS, composite, main
from tests.metrics.evaluation_fixtures import read_gray, save_image, smooth_image, write_boxes
from uaafusion.errors import DataError

HEIGHT, WIDTH = 20, 40
NAMES = ("a", "b")


def _write_split(root: Path) -> tuple[Path, Path]:
    """``root/test/{ir,vi,boxes}`` and ``root/fused``: a person box on the left half, a car box on the right."""
    for index, name in enumerate(NAMES):
        save_image(root / "test" / "ir" / f"{name}.png", smooth_image(HEIGHT, WIDTH, index))
        save_image(root / "test" / "vi" / f"{name}.png", smooth_image(HEIGHT, WIDTH, 10 + index))
        save_image(root / "fused" / f"{name}.png", smooth_image(HEIGHT, WIDTH, 20 + index))
    # person: columns 0..9, rows 0..9; car: columns 20..39, rows 10..19
    write_boxes(root / "test" / "boxes", {name: ["0 0.125 0.25 0.25 0.5", "2 0.75 0.75 0.5 0.5"] for name in NAMES})
    return root / "test", root / "fused"


def test_swaps_exactly_the_pixels_inside_the_chosen_boxes(tmp_path: Path) -> None:
    test_dir, fused_dir = _write_split(tmp_path)
    assert main(["--test", str(test_dir), "--fused", str(fused_dir), "--out", str(tmp_path / "swap")]) == 0
    person = np.zeros((HEIGHT, WIDTH), dtype=bool)
    person[:10, :10] = True
    objects = person.copy()
    objects[10:, 20:] = True
    for name in NAMES:
        images = {"ir": read_gray(test_dir / "ir" / f"{name}.png"), "fused": read_gray(fused_dir / f"{name}.png")}
        for variant, (outside, inside, classes) in VARIANTS.items():
            region = person if classes is not None else objects
            written = read_gray(tmp_path / "swap" / variant / f"{name}.png")
            assert np.array_equal(written[region], images[inside][region]), variant
            assert np.array_equal(written[~region], images[outside][~region]), variant


def test_a_fused_folder_missing_a_pair_or_of_another_size_is_named(tmp_path: Path) -> None:
    test_dir, fused_dir = _write_split(tmp_path)
    (fused_dir / "b.png").unlink()
    with pytest.raises(DataError, match="no fused image for test pair 'b'"):
        main(["--test", str(test_dir), "--fused", str(fused_dir), "--out", str(tmp_path / "swap")])
    save_image(fused_dir / "b.png", smooth_image(HEIGHT + 2, WIDTH, 3))
    with pytest.raises(DataError, match=r"b\.png: size"):
        main(["--test", str(test_dir), "--fused", str(fused_dir), "--out", str(tmp_path / "swap")])
    with pytest.raises(DataError, match="shapes differ"):
        composite(np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8), np.zeros((2, 2), bool))
