"""The infrared guard: no object in the fused image where the infrared image shows none.

On MSRS the segmenter finds people by their heat, and most of what it loses on fused images
against the infrared image alone is false people: visible textures of the background that the
fused image carries and the segmenter reads as a person (reports/msrs/discussion.md, items 16
and 21). The guard is a label-free step after the fusion network:

1. ``region``: pixels the segmenter assigns to a guarded class on the fused image ``F`` and to the
   background (class 0) on the infrared image ``I`` (false objects); with ``missed``, also pixels it
   assigns to a guarded class on ``I`` and not to that class on ``F`` (objects the fusion lost);
2. ``alpha``: that region grown by ``radius`` pixels (city-block distance), blurred with a
   Gaussian of ``sigma`` pixels and scaled by ``gain`` (:data:`GUARD_GAIN`; clipped to [0, 1]), so
   that the region itself returns fully to the infrared image and the return fades out around it
   without a seam (``sigma`` 0: a hard edge, which the segmenter reads as new objects; item 21);
3. with ``keep`` classes, ``alpha`` is lowered to 0 on the pixels the segmenter assigns to a kept
   class on ``F`` and no guarded class on ``I`` (faded over ``keep_sigma`` pixels), so that the
   return to infrared does not spread over the objects the fusion shows better than the infrared
   image (cars on MSRS; item 27);
4. ``alpha I + (1 - alpha) F``.

It is off unless ``model.fusion.guard`` names classes (or ``uaafusion fuse --guard``). The fusion
loss never sees it (it trains the network's own output); every fused image made as inference makes
it does: ``uaafusion fuse``, the pipeline's evaluation and report, the validation, and the
segmentation stage's inputs under ``train.fused_mask: predicted``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as functional

GUARD_GAIN = 1.5
"""The blurred region is multiplied by this before clipping: the region's own pixels reach alpha 1
(on the MSRS training pairs 1.25 to 2 score alike, item 21 of reports/msrs/discussion.md)."""

DEFAULT_RADIUS = 16
"""Pixels the region grows by unless told otherwise."""

DEFAULT_SIGMA = 16.0
"""The Gaussian fade in pixels unless told otherwise. ``model.fusion.guard_radius``/``guard_sigma``
(uaafusion/config.py) and ``uaafusion fuse --guard-radius/--guard-sigma`` restate both defaults as
literals, so that loading params and building the CLI never import torch; tests/test_guard.py
holds them equal."""

BACKGROUND = 0
"""The class id of the background in every layout here."""


@dataclass(frozen=True)
class Guard:
    """Which classes are guarded (ids, never the background), whether objects the fusion lost are
    restored too (``missed``), how wide (``radius``, ``sigma``) and how full (``gain``) the return to
    infrared is, and which classes of the fused image it leaves alone (``keep``, faded over
    ``keep_sigma`` pixels; none by default)."""

    classes: tuple[int, ...]
    radius: int = DEFAULT_RADIUS
    sigma: float = DEFAULT_SIGMA
    missed: bool = False
    gain: float = GUARD_GAIN
    keep: tuple[int, ...] = ()
    keep_sigma: float = 0.0

    def __post_init__(self) -> None:
        if not self.classes or any(isinstance(c, bool) or not isinstance(c, int) or c <= BACKGROUND
                                   for c in self.classes):
            raise ValueError(f"guard classes must be non-empty ids >= 1 (0 is the background), got {self.classes!r}")
        if isinstance(self.radius, bool) or not isinstance(self.radius, int) or self.radius < 0:
            raise ValueError(f"guard radius must be an integer >= 0, got {self.radius!r}")
        if not self.sigma >= 0:
            raise ValueError(f"guard sigma must be >= 0 (0: a hard edge), got {self.sigma!r}")
        if not self.gain > 0:
            raise ValueError(f"guard gain must be > 0, got {self.gain!r}")
        if any(isinstance(c, bool) or not isinstance(c, int) or c <= BACKGROUND for c in self.keep):
            raise ValueError(f"guard keep classes must be ids >= 1 (0 is the background), got {self.keep!r}")
        if set(self.keep) & set(self.classes):
            raise ValueError(f"a class cannot be both guarded and kept, got guarded {self.classes!r}, kept {self.keep!r}")
        if not self.keep_sigma >= 0:
            raise ValueError(f"guard keep sigma must be >= 0 (0: a hard edge), got {self.keep_sigma!r}")

    def region(self, fused_classes: torch.Tensor, ir_classes: torch.Tensor) -> torch.Tensor:
        """``bool (B, H, W)``: a guarded class on the fused image and background on the infrared one;
        with ``missed``, also a guarded class on the infrared image that the fused image does not show."""
        region = torch.zeros_like(fused_classes, dtype=torch.bool)
        for class_id in self.classes:
            region |= fused_classes == class_id
        region &= ir_classes == BACKGROUND
        if self.missed:
            for class_id in self.classes:
                region |= (ir_classes == class_id) & (fused_classes != class_id)
        return region

    def alpha(self, region: torch.Tensor) -> torch.Tensor:
        """``(B, H, W)`` bool -> ``(B, 1, H, W)`` float in [0, 1]: how far each pixel returns to infrared."""
        grown = grow(region[:, None].float(), self.radius)
        if self.sigma == 0:
            return grown
        return (self.gain * gaussian_blur(grown, self.sigma)).clamp(0.0, 1.0)

    def kept(self, fused_classes: torch.Tensor, ir_classes: torch.Tensor | None = None) -> torch.Tensor:
        """``int64 (B, H, W)`` -> ``(B, 1, H, W)`` float in [0, 1]: how fully each pixel is kept from the
        return: 1 on a kept class of the fused image, except where ``ir_classes`` (when given) shows a
        guarded class, which the infrared image keeps; fading out around it as the gained blur over
        ``keep_sigma`` pixels (0: nowhere else); 0 everywhere without ``keep``."""
        kept = torch.zeros_like(fused_classes, dtype=torch.bool)
        for class_id in self.keep:
            kept |= fused_classes == class_id
        if ir_classes is not None:
            for class_id in self.classes:
                kept &= ir_classes != class_id
        kept = kept[:, None].float()
        if self.keep_sigma == 0 or not self.keep:
            return kept
        return torch.maximum(kept, (self.gain * gaussian_blur(kept, self.keep_sigma)).clamp(0.0, 1.0))

    def apply(self, fused: torch.Tensor, ir: torch.Tensor, segmenter: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """``fused, ir (B, 1, H, W)`` in [0, 1] -> ``(guarded (B, 1, H, W), alpha (B, 1, H, W))``.

        ``segmenter`` is run in eval mode without gradients on both images.
        """
        from uaafusion.inference import predict_classes

        return self.guarded(fused, ir, predict_classes(segmenter, fused), predict_classes(segmenter, ir))

    def guarded(self, fused: torch.Tensor, ir: torch.Tensor, fused_classes: torch.Tensor,
                ir_classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`apply` with the segmenter's classes ``int64 (B, H, W)`` of both images already known."""
        alpha = self.alpha(self.region(fused_classes, ir_classes))
        if self.keep:
            alpha = alpha * (1.0 - self.kept(fused_classes, ir_classes))
        alpha = alpha.to(fused.dtype)
        return alpha * ir + (1.0 - alpha) * fused, alpha


def guard_from_spec(classes, radius: int = DEFAULT_RADIUS, sigma: float = DEFAULT_SIGMA,
                    missed: bool = False, keep=(), keep_sigma: float = 0.0) -> Guard | None:
    """A :class:`Guard` from a model spec's ``guard_classes``/``_radius``/``_sigma``/``_missed``/``_keep``/
    ``_keep_sigma``; None when no class."""
    if not classes:
        return None
    return Guard(tuple(classes), radius, float(sigma), bool(missed), keep=tuple(keep), keep_sigma=float(keep_sigma))


def grow(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Dilate ``(B, 1, H, W)`` in {0, 1} by ``radius`` steps of the 4-neighbour cross (a diamond)."""
    for _ in range(radius):
        vertical = functional.max_pool2d(mask, (3, 1), stride=1, padding=(1, 0))
        horizontal = functional.max_pool2d(mask, (1, 3), stride=1, padding=(0, 1))
        mask = torch.maximum(vertical, horizontal)
    return mask


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, 1, H, W)``, kernel truncated at 4 sigma, edges replicated."""
    half = max(1, int(4.0 * sigma + 0.5))
    offsets = torch.arange(-half, half + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    padded = functional.pad(image, (half, half, 0, 0), mode="replicate")
    blurred = functional.conv2d(padded, kernel.view(1, 1, 1, -1))
    padded = functional.pad(blurred, (0, 0, half, half), mode="replicate")
    return functional.conv2d(padded, kernel.view(1, 1, -1, 1))
