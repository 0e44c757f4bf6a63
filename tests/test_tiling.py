"""Tiled inference: tiles cover the image, blend without seams and match untiled fusion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.commands.test_fuse import make_tiny_models
from uaafusion.errors import ConfigError
from uaafusion.inference import fuse_luma
from uaafusion.tiling import check_tiling, feather, fuse_tiled, needs_tiling, tile_starts

MSRS_TEST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "msrs-boxes" / "test"


@pytest.mark.parametrize(("length", "tile", "overlap"), [(100, 100, 16), (101, 64, 16), (1000, 256, 64), (257, 128, 8)])
def test_tiles_cover_the_image_with_the_overlap(length: int, tile: int, overlap: int) -> None:
    starts = tile_starts(length, tile, overlap)
    covered = torch.zeros(length, dtype=torch.bool)
    for start in starts:
        assert 0 <= start and start + tile <= length or (starts == [0] and tile >= length)
        covered[start:start + tile] = True
    assert bool(covered.all())
    assert starts[-1] + min(tile, length) == length
    for first, second in zip(starts, starts[1:]):
        assert first + tile - second >= overlap


def test_feather_ramps_only_towards_other_tiles() -> None:
    inner = feather(start=100, size=200, length=1000, overlap=50)
    assert float(inner.min()) > 0 and float(inner.max()) == 1.0
    assert inner[0] < inner[25] < inner[60] == 1.0 and inner[-1] < inner[-26] < 1.0
    border = feather(start=0, size=200, length=200, overlap=50)
    assert torch.equal(border, torch.ones(200))


def test_needs_tiling_and_bad_arguments() -> None:
    assert not needs_tiling(480, 640, None) and not needs_tiling(480, 640, 1280)
    assert needs_tiling(2160, 3840, 1280)
    for tile_size, overlap, name in ((32, 8, "tile_size"), (256, 128, "overlap"), (256, 0, "overlap")):
        with pytest.raises(ConfigError, match=name):
            check_tiling(tile_size, overlap)
    assert check_tiling(None) is None and check_tiling(1280) == 64 and check_tiling(128) == 32
    assert check_tiling(256, 16) == 16


def real_pair(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The luma of an MSRS test pair, resized to ``height x width`` (bicubic)."""
    if not MSRS_TEST.is_dir():
        pytest.skip(f"{MSRS_TEST} not present")
    from uaafusion.data.io import read_image, split_luma_chroma

    name = sorted((MSRS_TEST / "ir").iterdir())[3].name
    lumas = [split_luma_chroma(read_image(MSRS_TEST / role / name))[0][None] for role in ("ir", "vi")]
    return tuple(torch.nn.functional.interpolate(luma, size=(height, width), mode="bicubic",
                                                 align_corners=False).clamp(0, 1) for luma in lumas)


def test_a_tiled_image_matches_the_untiled_one_on_a_real_pair() -> None:
    """No visible seam: the tiled fused image is within a tenth of a grey level on average of the
    untiled one, and no pixel differs by more than a few grey levels."""
    fusion, segmenter = make_tiny_models()
    fusion.attribution_scale = 0.25  # below the tile's cap: both compute the same weights
    fusion.eval(), segmenter.eval()
    ir, vi = real_pair(240, 320)
    untiled = fuse_luma(fusion, segmenter, ir, vi, tile_size=None).fused
    tiled = fuse_luma(fusion, segmenter, ir, vi, tile_size=128, overlap=32)
    assert tiled.fused.shape == untiled.shape == (1, 1, 240, 320)
    difference = (tiled.fused - untiled).abs() * 255
    assert float(difference.mean()) < 0.5
    assert float(difference.max()) < 8
    assert len(tiled.attention) == 1 and tiled.attention[0].shape == (1, 1, 240, 320)


def test_tiling_needs_a_model_that_can_give_its_mask_and_weights() -> None:
    class PlainAverage(torch.nn.Module):
        def forward(self, ir, vi, segmenter, mask=None, weights=None):  # pragma: no cover - never reached
            raise AssertionError

    with pytest.raises(ConfigError, match="predicted_mask.*tile_size=None"):
        fuse_tiled(PlainAverage(), torch.nn.Identity(), torch.zeros(1, 1, 300, 300), torch.zeros(1, 1, 300, 300), 256)


def test_fused_size_is_kept_for_an_image_thinner_than_a_tile() -> None:
    fusion, segmenter = make_tiny_models()
    fusion.eval(), segmenter.eval()
    rng = np.random.default_rng(0)
    ir, vi = (torch.from_numpy(rng.random((1, 1, 40, 400), dtype=np.float32)) for _ in range(2))
    output = fuse_luma(fusion, segmenter, ir, vi, tile_size=96, overlap=16)
    assert output.fused.shape == (1, 1, 40, 400)
    assert bool(torch.isfinite(output.fused).all())
