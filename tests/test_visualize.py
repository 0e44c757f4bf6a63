"""Colourising maps and segmentations into uint8 RGB pictures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uaafusion.visualize import (
    IGNORE_COLOUR,
    colourise_map,
    colourise_segmentation,
    segmentation_palette,
    to_display_rgb,
)


def test_colourise_map_shapes_ends_and_clipping() -> None:
    values = torch.linspace(-0.5, 1.5, 7 * 9).reshape(1, 1, 7, 9)
    picture = colourise_map(values)
    assert picture.dtype == np.uint8 and picture.shape == (7, 9, 3)
    # Values beyond the range take the end colours.
    assert np.array_equal(picture[0, 0], colourise_map(np.zeros((1, 1)))[0, 0])
    assert np.array_equal(picture[-1, -1], colourise_map(np.ones((1, 1)))[0, 0])
    # inferno runs from dark to bright.
    assert picture[0, 0].sum() < picture[-1, -1].sum()


def test_colourise_map_stretch_constant_and_non_finite() -> None:
    stretched = colourise_map(np.array([[10.0, 20.0]]), value_range=None)
    assert np.array_equal(stretched[0, 0], colourise_map(np.zeros((1, 1)))[0, 0])
    assert np.array_equal(stretched[0, 1], colourise_map(np.ones((1, 1)))[0, 0])
    constant = colourise_map(np.full((3, 3), 4.0), value_range=None)
    assert (constant == constant[0, 0]).all()
    with_nan = colourise_map(np.array([[np.nan, 1.0]]))
    assert np.array_equal(with_nan[0, 0], colourise_map(np.zeros((1, 1)))[0, 0])
    with pytest.raises(ValueError):
        colourise_map(np.zeros((2, 3, 4)))


def test_segmentation_palette_is_distinct_with_black_background() -> None:
    for count in (2, 5, 10, 25):
        palette = segmentation_palette(count)
        assert palette.shape == (count, 3) and palette.dtype == np.uint8
        assert tuple(palette[0]) == (0, 0, 0)
    assert len({tuple(colour) for colour in segmentation_palette(10)}) == 10
    with pytest.raises(ValueError):
        segmentation_palette(0)


def test_colourise_segmentation_uses_palette_and_whitens_unknown() -> None:
    classes = torch.tensor([[0, 1, 2], [255, 7, 1]])
    picture = colourise_segmentation(classes, num_classes=3, ignore_index=255)
    palette = segmentation_palette(3)
    assert picture.shape == (2, 3, 3)
    assert tuple(picture[0, 1]) == tuple(palette[1]) == tuple(picture[1, 2])
    assert tuple(picture[0, 2]) == tuple(palette[2])
    assert tuple(picture[1, 0]) == IGNORE_COLOUR  # ignore_index
    assert tuple(picture[1, 1]) == IGNORE_COLOUR  # out of range


def test_to_display_rgb_accepts_arrays_and_tensors() -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert to_display_rgb(gray).shape == (3, 4, 3)
    assert np.array_equal(to_display_rgb(gray)[..., 2], gray)
    assert to_display_rgb(torch.ones(1, 3, 4))[0, 0].tolist() == [255, 255, 255]
    assert to_display_rgb(torch.zeros(3, 3, 4)).shape == (3, 4, 3)
    with pytest.raises(TypeError):
        to_display_rgb(np.zeros((3, 4), dtype=np.float32))
