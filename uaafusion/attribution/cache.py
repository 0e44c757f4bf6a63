"""Per-round cache of the training images' full-image attribution weights (docs/method.md §1).

In the alternating schedule the segmenter is frozen for a whole fusion stage, so each training
image's weights are computed once per round on the whole image and cropped with each training crop.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from uaafusion.attribution.integrated import (
    DEFAULT_ENGINE,
    DEFAULT_EPS,
    DEFAULT_INTERNAL_BATCH_SIZE,
    check_method,
    modality_weights,
)
from uaafusion.errors import DataError
from uaafusion.folding import weights_signature

CropBox = tuple[int, int, int, int]  # (top, left, height, width)


def segmenter_fingerprint(segmenter: nn.Module) -> str:
    """A hash of every parameter and buffer of ``segmenter`` (names, shapes, dtypes, values)."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in segmenter.state_dict(keep_vars=False).items():
        data = tensor.detach()
        digest.update(f"{name}|{tuple(data.shape)}|{data.dtype}|".encode())
        if data.numel():
            digest.update(data.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _as_samples(value: torch.Tensor | Sequence[torch.Tensor], what: str) -> list[torch.Tensor]:
    """A batch ``(B, C, H, W)`` or a list of per-sample ``(C, H, W)`` / ``(1, C, H, W)`` -> list of ``(C, H, W)``."""
    if isinstance(value, torch.Tensor):
        if value.dim() != 4:
            raise DataError(f"{what} must be (B, C, H, W), got shape {tuple(value.shape)}")
        return list(value.unbind(0))
    samples = []
    for item in value:
        if item.dim() == 4 and item.shape[0] == 1:
            item = item[0]
        if item.dim() != 3:
            raise DataError(f"each {what} sample must be (C, H, W), got shape {tuple(item.shape)}")
        samples.append(item)
    return samples


def _crop_box(box: Any) -> CropBox:
    values = box.tolist() if isinstance(box, torch.Tensor) else list(box)
    if len(values) != 4:
        raise DataError(f"a crop box is (top, left, height, width), got {values!r}")
    return int(values[0]), int(values[1]), int(values[2]), int(values[3])


class WeightCache:
    """Full-image attribution weights of the training images, computed once per round.

    Entries are keyed by sample name and are valid for one state of the segmenter (a fingerprint
    of its weights) and one attribution setting (``steps``, ``method``): when either changes, the
    cache empties itself (counted in :attr:`invalidations`). Only ``w_ir`` is stored
    (``w_vi = 1 - w_ir``), on ``storage_device`` (CPU by default: full images can be large).

    Counters: :attr:`hits` and :attr:`misses` (per sample).
    """

    def __init__(
        self,
        steps: int = 5,
        method: str = "riemann_right",
        internal_batch_size: int | None = DEFAULT_INTERNAL_BATCH_SIZE,
        eps: float = DEFAULT_EPS,
        storage_device: str | torch.device = "cpu",
        engine: str = DEFAULT_ENGINE,
        scale: float = 1.0,
    ) -> None:
        check_method(method, steps)
        self.engine = engine
        self.scale = scale
        self.steps = steps
        self.method = method
        self.internal_batch_size = internal_batch_size
        self.eps = eps
        self.storage_device = torch.device(storage_device)
        self.hits = 0
        self.misses = 0
        self.invalidations = 0
        self._weights_ir: dict[str, torch.Tensor] = {}
        self._key: tuple[Any, ...] | None = None
        self._signature: tuple[Any, ...] | None = None
        self._fingerprint: str | None = None

    def __len__(self) -> int:
        return len(self._weights_ir)

    def __contains__(self, name: object) -> bool:
        return name in self._weights_ir

    def __getitem__(self, name: str) -> torch.Tensor:
        """The stored full-image infrared weight ``(1, H, W)`` of sample ``name``."""
        return self._weights_ir[name]

    def clear(self) -> None:
        """Drop every entry (counters are kept)."""
        self._weights_ir.clear()

    def stats(self) -> dict[str, int]:
        """``{"hits", "misses", "invalidations", "entries"}``."""
        return {"hits": self.hits, "misses": self.misses, "invalidations": self.invalidations, "entries": len(self)}

    def fingerprint(self, segmenter: nn.Module) -> str:
        """:func:`segmenter_fingerprint`, recomputed only when a tensor of the segmenter was replaced or modified in place."""
        signature = (id(segmenter), weights_signature(segmenter))
        if signature != self._signature or self._fingerprint is None:
            self._fingerprint = segmenter_fingerprint(segmenter)
            self._signature = signature
        return self._fingerprint

    def _validate(self, segmenter: nn.Module, steps: int, method: str) -> None:
        key = (self.fingerprint(segmenter), steps, method)
        if key != self._key:
            if self._key is not None and self._weights_ir:
                self.invalidations += 1
            self._weights_ir.clear()
            self._key = key

    def get_or_compute(
        self,
        names: Sequence[str],
        ir: torch.Tensor | Sequence[torch.Tensor],
        vi: torch.Tensor | Sequence[torch.Tensor],
        mask: torch.Tensor | Sequence[torch.Tensor],
        segmenter: nn.Module,
        steps: int | Sequence[Any] | torch.Tensor | None = None,
        method: str | None = None,
        internal_batch_size: int | None = None,
        crop_boxes: Sequence[Any] | torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights ``(w_ir, w_vi)``, each ``(B, 1, h, w)``, of the named samples, from the cache where possible.

        ir, vi: the FULL images, ``(B, 1, H, W)`` or a list of ``(1, H_i, W_i)`` (sizes may differ);
        mask: their one-hot masks ``(B, C, H, W)`` or a list of ``(C, H_i, W_i)``; crop_boxes: per
        sample ``(top, left, height, width)`` of the training crop (all crops the same size), or None
        for the whole images. ``steps``/``method``/``internal_batch_size`` default to the cache's
        own. The contract's short form ``get_or_compute(names, ir, vi, mask, segmenter, crop_boxes)``
        works too: boxes given in the ``steps`` position are taken as ``crop_boxes``. Missing
        samples are computed together (grouped by image size) with :func:`modality_weights`.
        Results are on ``ir``'s device and dtype.
        """
        if steps is not None and not isinstance(steps, int):
            if crop_boxes is not None:
                raise DataError("get_or_compute: steps must be an integer (crop boxes were given twice)")
            steps, crop_boxes = None, steps
        steps = self.steps if steps is None else steps
        method = self.method if method is None else method
        internal_batch_size = self.internal_batch_size if internal_batch_size is None else internal_batch_size
        check_method(method, steps)
        names = [str(name) for name in names]
        ir_samples, vi_samples = _as_samples(ir, "ir"), _as_samples(vi, "vi")
        mask_samples = _as_samples(mask, "mask")
        if not len(names) == len(ir_samples) == len(vi_samples) == len(mask_samples):
            raise DataError(
                f"get_or_compute needs one name, ir, vi and mask per sample; got {len(names)} names, "
                f"{len(ir_samples)} ir, {len(vi_samples)} vi, {len(mask_samples)} masks"
            )
        self._validate(segmenter, steps, method)
        missing: dict[tuple[int, int], list[int]] = {}
        seen: set[str] = set()
        for index, name in enumerate(names):
            if name in self._weights_ir:
                self.hits += 1
            elif name not in seen:
                self.misses += 1
                seen.add(name)
                missing.setdefault(tuple(ir_samples[index].shape[-2:]), []).append(index)
            else:
                self.hits += 1  # a repeated name in the same batch: computed once
        for indices in missing.values():
            weight_ir, _ = modality_weights(
                segmenter,
                torch.stack([ir_samples[i] for i in indices]),
                torch.stack([vi_samples[i] for i in indices]),
                torch.stack([mask_samples[i] for i in indices]),
                steps, method, internal_batch_size, self.eps, self.engine, self.scale,
            )
            for position, index in enumerate(indices):
                self._weights_ir[names[index]] = weight_ir[position].detach().to(self.storage_device)
        crops = []
        boxes = None if crop_boxes is None else [_crop_box(box) for box in crop_boxes]
        if boxes is not None and len(boxes) != len(names):
            raise DataError(f"get_or_compute got {len(boxes)} crop boxes for {len(names)} samples")
        for index, name in enumerate(names):
            full = self._weights_ir[name]
            if boxes is not None:
                top, left, height, width = boxes[index]
                if top < 0 or left < 0 or height < 1 or width < 1 \
                        or top + height > full.shape[-2] or left + width > full.shape[-1]:
                    raise DataError(
                        f"crop box {boxes[index]} of sample {name!r} is outside its image of size {tuple(full.shape[-2:])}"
                    )
                full = full[:, top:top + height, left:left + width]
            crops.append(full)
        if len({tuple(crop.shape) for crop in crops}) > 1:
            raise DataError("the requested weights have different sizes; pass crop boxes of one size")
        reference = ir_samples[0]
        weight_ir = torch.stack(crops).to(device=reference.device, dtype=reference.dtype)
        return weight_ir, 1.0 - weight_ir
