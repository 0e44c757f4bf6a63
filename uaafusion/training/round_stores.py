"""Per-round stores of the full training images: attribution weights and fused images.

The segmenter does not change from the start of a round's fusion stage to the start of its
segmentation stage, so the weights of a training image are computed once per round on the whole
image, kept in the run folder (both stages and a resumed run share them) and cropped with each
training crop (docs/method.md §1).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from uaafusion.failpoints import reach
from uaafusion.integrity import DamagedFileError, load_verified, save_verified
from uaafusion.models import exact_inference
from uaafusion.training.context import TrainingContext

if TYPE_CHECKING:
    from uaafusion.attribution import WeightCache

LOGGER = logging.getLogger(__name__)


def attribution_mask(fusion: torch.nn.Module, segmenter: torch.nn.Module, ir: torch.Tensor, vi: torch.Tensor,
                     labels: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """One-hot class mask ``(B, C, H, W)`` for the fusion stage's attribution from ``labels (B, H, W)``;
    an image without any label gets the fusion model's inference mask
    (:meth:`~uaafusion.models.unfolding.UnfoldingFusionNet.predicted_mask`), the one ``uaafusion fuse`` uses."""
    from uaafusion.attribution import labels_to_one_hot

    mask = labels_to_one_hot(labels, num_classes, ignore_index)
    unlabeled = (labels == ignore_index).flatten(1).all(dim=1)
    if bool(unlabeled.any()):
        predicted_mask = fusion.predicted_mask(segmenter, ir, vi).to(mask.dtype)
        mask = torch.where(unlabeled[:, None, None, None], predicted_mask, mask)
    return mask


def sample_mask(context: TrainingContext, sample: dict[str, Any], ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """One-hot ``(1, C, H, W)`` class mask of one full training image ``ir, vi (1, 1, H, W)`` (its labels)."""
    data = context.params.data
    labels = sample["label"][None].to(context.device)
    return attribution_mask(context.fusion, context.segmenter, ir, vi, labels, data.num_classes, data.ignore_index)


def round_weights(context: TrainingContext, round_index: int) -> Mapping[str, torch.Tensor]:
    """This round's infrared weights ``(1, H, W)`` of every full training image, by name: loaded from
    the run folder, or computed (:func:`_compute_weights`) and kept there."""
    def compute() -> dict[str, torch.Tensor]:
        cache = _compute_weights(context)
        return {name: cache[name] for name in context.dataset(context.params.data.train_split, crop=False).names}

    return _kept_in_run_folder(context.run_dir / f"weights-round-{round_index}.pt", compute)


def _compute_weights(context: TrainingContext) -> WeightCache:
    """Attribution weights of every full training image with its label mask, batched over
    ``data.batch_size`` images of the same size (:class:`~uaafusion.attribution.WeightCache`)."""
    from uaafusion.attribution import WeightCache

    params = context.params
    segmenter = context.segmenter
    segmenter.eval()
    attribution = params.attribution
    cache = WeightCache(steps=attribution.steps, method=attribution.method,
                        internal_batch_size=attribution.internal_batch_size,
                        engine=attribution.engine, scale=attribution.scale)
    dataset = context.dataset(params.data.train_split, crop=False)
    chunk = max(1, params.data.batch_size)
    for start in tqdm(range(0, len(dataset), chunk), desc="attribution weights", leave=False, disable=None):
        samples = [dataset[index] for index in range(start, min(start + chunk, len(dataset)))]
        names, ir_list, vi_list, class_masks = [], [], [], []
        for sample in samples:
            ir = sample["ir"][None].to(context.device)
            vi = sample["vi"][None].to(context.device)
            class_masks.append(sample_mask(context, sample, ir, vi)[0])
            names.append(sample["name"])
            ir_list.append(ir[0])
            vi_list.append(vi[0])
        cache.get_or_compute(names, ir_list, vi_list, class_masks, segmenter)
        reach(f"attribution:{len(cache)}")
    return cache


def _kept_in_run_folder(path: Path, compute: Callable[[], dict[str, torch.Tensor]]) -> Mapping[str, torch.Tensor]:
    """A per-round store of tensors by image name: loaded from ``path`` when a run (or the round's
    other stage) has kept it there, else made by ``compute()`` and kept there for the next reader. A
    damaged store (truncated, changed, no digest) is made again, with a warning naming it."""
    if path.is_file():
        try:
            return load_verified(path)
        except DamagedFileError as error:
            LOGGER.warning("%s; computing it again", error)
    store = compute()
    save_verified(store, path)
    return store


def fused_image_store(context: TrainingContext, weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fused image ``(1, H, W)`` of every full training image from the frozen fusion network, with the
    fusion stage's label mask and this round's ``weights`` (:func:`round_weights`)."""
    params = context.params
    fusion, segmenter = context.fusion, context.segmenter
    fusion.eval()
    segmenter.eval()
    store: dict[str, torch.Tensor] = {}
    dataset = context.dataset(params.data.train_split, crop=False)
    for index in tqdm(range(len(dataset)), desc="fusing training images", leave=False, disable=None):
        sample = dataset[index]
        ir = sample["ir"][None].to(context.device)
        vi = sample["vi"][None].to(context.device)
        mask = sample_mask(context, sample, ir, vi)
        weight_ir = weights[sample["name"]][None].to(context.device)
        with torch.no_grad(), exact_inference(fusion):
            output = fusion(ir, vi, segmenter, mask=mask, weights=(weight_ir, 1.0 - weight_ir))
        store[sample["name"]] = output.fused[0].detach().cpu()
    return store


def crop_stored(store: Mapping[str, torch.Tensor], batch: dict[str, Any], device: torch.device) -> torch.Tensor:
    """Crop each sample's stored full-image map with the sample's crop box -> ``(B, 1, h, w)``.

    Crops reaching past the image (padded samples) are reflect-padded, as the dataset pads images.
    """
    from uaafusion.data.datasets import crop_padded

    height, width = batch["ir"].shape[-2:]
    # torch.stack makes the one contiguous copy (the crops may be strided views of the stored maps).
    crops = [torch.from_numpy(crop_padded(store[name].numpy(), tuple(int(value) for value in box), (height, width)))
             for name, box in zip(batch["name"], batch["crop"])]
    return torch.stack(crops).to(device)
