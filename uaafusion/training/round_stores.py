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
from typing import Any

import torch
from tqdm import tqdm

from uaafusion import ddp
from uaafusion.failpoints import reach
from uaafusion.integrity import DamagedFileError, load_verified, save_verified
from uaafusion.models import exact_inference
from uaafusion.training.context import TrainingContext

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
        dataset = context.dataset(context.params.data.train_split, crop=False)
        chunks = _attribution_chunks(len(dataset), context.params.data.batch_size)
        weights = ddp.gather_shards(chunks, lambda mine: _compute_weights(context, dataset, mine))
        return {name: weights[name] for name in dataset.names}

    return _kept_in_run_folder(context.run_dir / f"weights-round-{round_index}.pt", compute)


def _attribution_chunks(size: int, batch_size: int) -> list[range]:
    """Indices of ``size`` training images in batches of ``batch_size`` (one attribution batch each)."""
    chunk = max(1, batch_size)
    return [range(start, min(start + chunk, size)) for start in range(0, size, chunk)]


def _compute_weights(context: TrainingContext, dataset: Any, chunks: list[range]) -> dict[str, torch.Tensor]:
    """Attribution weights ``(1, H, W)`` by name of the full training images of ``dataset`` in ``chunks``
    (this process's share of :func:`_attribution_chunks`), each with its label mask, one batch per chunk
    (:class:`~uaafusion.attribution.WeightCache`)."""
    from uaafusion.attribution import WeightCache

    params = context.params
    segmenter = context.segmenter
    segmenter.eval()
    attribution = params.attribution
    cache = WeightCache(steps=attribution.steps, method=attribution.method,
                        internal_batch_size=attribution.internal_batch_size,
                        engine=attribution.engine, scale=attribution.scale)
    names: list[str] = []
    for indices in tqdm(chunks, desc="attribution weights", leave=False, disable=ddp.progress_disabled()):
        samples = [dataset[index] for index in indices]
        chunk_names, ir_list, vi_list, class_masks = [], [], [], []
        for sample in samples:
            ir = sample["ir"][None].to(context.device)
            vi = sample["vi"][None].to(context.device)
            class_masks.append(sample_mask(context, sample, ir, vi)[0])
            chunk_names.append(sample["name"])
            ir_list.append(ir[0])
            vi_list.append(vi[0])
        cache.get_or_compute(chunk_names, ir_list, vi_list, class_masks, segmenter)
        names += chunk_names
        reach(f"attribution:{len(cache)}")
    return {name: cache[name] for name in names}


def _kept_in_run_folder(path: Path, compute: Callable[[], dict[str, torch.Tensor]]) -> Mapping[str, torch.Tensor]:
    """A per-round store of tensors by image name: loaded from ``path`` when a run (or the round's
    other stage) has kept it there, else made by ``compute()`` and kept there for the next reader. A
    damaged store (truncated, changed, no digest) is made again, with a warning naming it. Several
    training processes make it together (``compute`` gathers their shares) and rank 0 keeps it."""
    store: Mapping[str, torch.Tensor] | None = None
    if ddp.from_main(path.is_file()):  # every process takes the same path: computing is collective
        try:
            store = load_verified(path)
        except DamagedFileError as error:
            LOGGER.warning("%s; computing it again", error)
    if ddp.from_main(store is not None):
        return store if store is not None else load_verified(path)
    store = compute()
    if ddp.is_main():
        save_verified(store, path)
    return store


def fused_image_store(context: TrainingContext, weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fused image ``(1, H, W)`` of every full training image from the frozen fusion network, with the
    fusion stage's label mask and this round's ``weights`` (:func:`round_weights`)."""
    params = context.params
    fusion, segmenter = context.fusion, context.segmenter
    fusion.eval()
    segmenter.eval()
    dataset = context.dataset(params.data.train_split, crop=False)

    def fuse(indices: list[int]) -> dict[str, torch.Tensor]:
        fused: dict[str, torch.Tensor] = {}
        for index in tqdm(indices, desc="fusing training images", leave=False, disable=ddp.progress_disabled()):
            sample = dataset[index]
            ir = sample["ir"][None].to(context.device)
            vi = sample["vi"][None].to(context.device)
            mask = sample_mask(context, sample, ir, vi)
            weight_ir = weights[sample["name"]][None].to(context.device)
            with torch.no_grad(), exact_inference(fusion):
                output = fusion(ir, vi, segmenter, mask=mask, weights=(weight_ir, 1.0 - weight_ir))
            fused[sample["name"]] = output.fused[0].detach().cpu()
        return fused

    store = ddp.gather_shards(range(len(dataset)), fuse)  # each process fuses its share
    return {name: store[name] for name in dataset.names}


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
