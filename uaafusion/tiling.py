"""Tiled inference: images of any size in bounded memory (docs/inference.md, "Large images").

Above ``tile_size x tile_size`` pixels the fusion network runs on overlapping tiles:

1. the class mask is computed once on the whole image (a forward pass without a graph);
2. the attribution weights are computed once on the whole image, with the attribution image capped
   at ``tile_size^2`` pixels (the region scores are one number per class region; the weight maps
   are spread over the full-resolution mask). This is the one deviation from untiled inference
   beyond the seams, and only for images larger than a tile;
3. each tile runs the unfolding stages with its crop of the mask and the weights;
4. the tiles are blended with weights that ramp linearly across the overlap, so no seam shows.

The memory of step 3 is that of one tile, whatever the image size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from uaafusion.errors import ConfigError

DEFAULT_OVERLAP = 64  # pixels shared by neighbouring tiles (at most a quarter of the tile side)


def default_overlap(tile_size: int) -> int:
    """:data:`DEFAULT_OVERLAP`, or a quarter of a smaller tile's side."""
    return max(1, min(DEFAULT_OVERLAP, tile_size // 4))


@dataclass
class TiledOutput:
    """What tiled fusion returns, all ``(B, 1, H, W)``: the fused luma, the weights and the last attention map."""

    fused: torch.Tensor
    weight_ir: torch.Tensor
    weight_vi: torch.Tensor
    attention: list[torch.Tensor]


def needs_tiling(height: int, width: int, tile_size: int | None) -> bool:
    """True when an image of ``height x width`` has more pixels than one ``tile_size`` square."""
    return tile_size is not None and height * width > tile_size * tile_size


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels covering ``length`` with at least ``overlap`` shared.

    The last tile ends at the image border; ``[0]`` when one tile covers everything.
    """
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]


def feather(start: int, size: int, length: int, overlap: int) -> torch.Tensor:
    """Blend weights ``(size,)`` of a tile at ``start``: a linear ramp over ``overlap`` pixels on each
    side that touches another tile, 1 elsewhere (and at the image borders). Always > 0."""
    position = torch.arange(size, dtype=torch.float32) + 0.5
    weight = torch.ones(size)
    if start > 0:
        weight = torch.minimum(weight, position / overlap)
    if start + size < length:
        weight = torch.minimum(weight, (size - position + 1.0) / overlap)
    return weight.clamp_min(1e-3)


def check_tiling(tile_size: int | None, overlap: int | None = None) -> int | None:
    """The overlap to use (``overlap``, or :func:`default_overlap` when None; None without tiling).

    Raises :class:`ConfigError` naming the argument when the tile size or the overlap cannot work.
    """
    if tile_size is None:
        return None
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 64:
        raise ConfigError(f"tile_size = {tile_size!r}: expected an integer >= 64 (pixels per tile side) or None.")
    if overlap is None:
        return default_overlap(tile_size)
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 < overlap < tile_size // 2:
        raise ConfigError(f"overlap = {overlap!r}: expected an integer in [1, tile_size / 2) = [1, {tile_size // 2}).")
    return overlap


def fuse_tiled(
    model: nn.Module,
    segmenter: nn.Module,
    ir: torch.Tensor,
    vi: torch.Tensor,
    tile_size: int,
    overlap: int | None = None,
) -> TiledOutput:
    """Fuse ``ir, vi (B, 1, H, W)`` tile by tile (the models in eval mode, no parameter gradients).

    ``model`` must offer ``predicted_mask(segmenter, ir, vi)`` and
    ``attribution_weights(segmenter, ir, vi, mask, max_pixels)`` (the unfolding network does).
    ``overlap`` defaults to :func:`default_overlap`.
    """
    overlap = check_tiling(tile_size, overlap)
    assert overlap is not None
    for method in ("predicted_mask", "attribution_weights"):
        if not callable(getattr(model, method, None)):
            raise ConfigError(
                f"fusion model {type(model).__name__} has no {method}(); it cannot fuse tiles. "
                "Fuse without tiling (tile_size=None, --tile-size 0)."
            )
    height, width = ir.shape[-2:]
    mask = model.predicted_mask(segmenter, ir, vi)
    weight_ir, weight_vi = model.attribution_weights(segmenter, ir, vi, mask, max_pixels=tile_size * tile_size)
    fused = torch.zeros_like(ir)
    attention = torch.zeros_like(ir)
    has_attention = False
    total = torch.zeros((1, 1, height, width), dtype=ir.dtype, device=ir.device)
    tile_height, tile_width = min(tile_size, height), min(tile_size, width)
    for top in tile_starts(height, tile_height, overlap):
        for left in tile_starts(width, tile_width, overlap):
            rows, columns = slice(top, top + tile_height), slice(left, left + tile_width)
            with torch.no_grad():
                output = model(ir[..., rows, columns], vi[..., rows, columns], segmenter,
                               mask=mask[..., rows, columns],
                               weights=(weight_ir[..., rows, columns], weight_vi[..., rows, columns]))
            blend = torch.outer(feather(top, tile_height, height, overlap),
                                feather(left, tile_width, width, overlap)).to(ir)
            fused[..., rows, columns] += output.fused * blend
            if output.attention:
                has_attention = True
                attention[..., rows, columns] += output.attention[-1] * blend
            total[..., rows, columns] += blend
    return TiledOutput(fused / total, weight_ir, weight_vi, [attention / total] if has_attention else [])
