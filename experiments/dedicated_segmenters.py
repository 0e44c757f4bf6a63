"""Is the fused image a better input for segmentation than either source? One segmenter per input.

``uaafusion evaluate`` scores the trained model's own segmenter (the one in the loop, trained on
infrared, visible and fused images together) on each input. Fusion papers also score a different
way: a segmentation network retrained on each method's images. This experiment does that. For each
input kind it trains a fresh segmenter with the preset's segmenter recipe (architecture, seed,
class-weighted cross-entropy + Dice, object-centred crops, crop and batch size, AdamW, learning-rate
schedule, gradient clipping) on the training images of that kind, then scores it on the test
images of the same kind: box-mask (or label) IoU per class over the whole test images. Every kind
sees the same crops in the same order; only the pixels differ.

Kinds: ``infrared``, ``visible``, ``average`` and ``maximum`` (of the two lumas), plus each
``--fused NAME=TRAIN_FOLDER,TEST_FOLDER`` (fused images of both splits, matched to the pairs by
file name, scored on their luma). The model's own segmenter (``--checkpoint``) is scored on every
kind too (``shared``), which ties the numbers to ``uaafusion evaluate``'s.

``--train-pairs N`` trains on N of the training pairs only (the first N of one fixed random order,
so that smaller subsets lie inside larger ones; every kind gets the same pairs; the class weights
stay those of the whole split) and scores on the whole test split: a learning curve, to ask whether
more labelled pairs would close a gap between two kinds. Give ``--epochs`` so that every size takes
the same number of optimiser steps (with the preset's batch of 4: 120 pairs 24 epochs, 60 pairs 48,
30 pairs 103).

    uaafusion fuse --ir ../shared/datasets/msrs-boxes/train/ir --vi ../shared/datasets/msrs-boxes/train/vi \\
        --out data/fused-msrs-train/ours --checkpoint models/msrs/uaafusion.pt
    python experiments/dedicated_segmenters.py --params params/msrs-boxes.yaml \\
        --fused ours=data/fused-msrs-train/ours,data/fused-msrs/ours --checkpoint models/msrs/uaafusion.pt \\
        --out reports/msrs/dedicated-segmenters.json

Trained segmenters are kept under ``--work`` (default ``checkpoints/experiments/dedicated``), keyed
by the params and the package's code (as training runs are), the kind's images, the epochs and the
seed; a second call (or one after a kill) trains only what is missing. ``--kinds`` trains and
scores only the kinds it names.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.record import write_record  # noqa: E402
from uaafusion.config import Params, load_params  # noqa: E402
from uaafusion.data.datasets import FusionDataset, create_dataset, crop_padded  # noqa: E402
from uaafusion.data.io import read_image, to_gray_uint8  # noqa: E402
from uaafusion.data.pairs import index_images  # noqa: E402
from uaafusion.errors import DataError  # noqa: E402
from uaafusion.metrics.segmentation import ConfusionMatrix  # noqa: E402
from uaafusion.paths import ProjectPaths, project_root_for  # noqa: E402
from uaafusion.steps import with_absolute_data_root  # noqa: E402

SOURCE_KINDS = ("infrared", "visible", "average", "maximum")


@dataclass
class SplitImages:
    """One split's whole images per kind (each ``(1, H, W)`` float32 in [0, 1]) and labels ``(H, W)`` int64."""

    names: list[str]
    images: dict[str, list[torch.Tensor]]
    labels: list[torch.Tensor]

    def subset(self, indices: list[int]) -> SplitImages:
        """The pairs at ``indices`` (in that order), every kind alike."""
        return SplitImages(names=[self.names[index] for index in indices],
                           images={kind: [images[index] for index in indices] for kind, images in self.images.items()},
                           labels=[self.labels[index] for index in indices])


class Cropper(Protocol):
    """What training needs of a cropping dataset: each sample's crop box, chosen per epoch."""

    def set_epoch(self, epoch: int) -> None: ...

    def crop_box(self, index: int) -> tuple[int, int, int, int]: ...


@dataclass
class SubsetCropper:
    """``cropper``'s crops for a subset of its samples: sample ``i`` here is ``indices[i]`` there, so a
    pair gets the same crops whichever subset it is in."""

    cropper: Cropper
    indices: list[int]

    def set_epoch(self, epoch: int) -> None:
        self.cropper.set_epoch(epoch)

    def crop_box(self, index: int) -> tuple[int, int, int, int]:
        return self.cropper.crop_box(self.indices[index])


def nested_subset(count: int, size: int, seed: int = 0) -> list[int]:
    """The first ``size`` of one fixed random order of ``range(count)`` (sorted): for one ``seed``, a
    smaller subset lies inside every larger one."""
    if not 1 <= size <= count:
        raise SystemExit(f"--train-pairs {size}: expected 1 to {count} (the training split's pairs)")
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[:size])


def parse_fused(texts: list[str]) -> dict[str, tuple[Path, Path]]:
    """``["NAME=TRAIN,TEST", ...]`` -> ``{NAME: (TRAIN, TEST)}``."""
    folders: dict[str, tuple[Path, Path]] = {}
    for text in texts:
        name, _, value = text.partition("=")
        train, _, test = value.partition(",")
        if not name or not train or not test:
            raise SystemExit(f"--fused {text!r}: expected NAME=TRAIN_FOLDER,TEST_FOLDER")
        if name in SOURCE_KINDS or name in folders:
            raise SystemExit(f"--fused {text!r}: the name {name!r} is taken; choose another")
        folders[name] = (Path(train), Path(test))
    return folders


def select_kinds(text: str | None, available: list[str]) -> list[str]:
    """The kinds named in ``text`` (comma-separated, in the order given), or all of ``available``."""
    if text is None:
        return available
    kinds = [kind.strip() for kind in text.split(",") if kind.strip()]
    unknown = [kind for kind in kinds if kind not in available]
    if not kinds or unknown:
        raise SystemExit(f"--kinds {text!r}: unknown or empty; choose from {', '.join(available)} "
                         "(fused kinds come from --fused NAME=...)")
    return kinds


def read_fused_luma(folder: Path, names: list[str], sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
    """The fused images of ``names`` in ``folder`` as luma ``(1, H, W)``; each must match its pair's size."""
    index = index_images(folder, "fused")
    missing = [name for name in names if name not in index]
    if missing:
        raise DataError(f"{folder}: no fused image for {len(missing)} of the {len(names)} pairs "
                        f"(e.g. {', '.join(missing[:5])}); fuse the split into this folder first.")
    lumas = []
    for name, size in zip(names, sizes):
        gray = to_gray_uint8(read_image(index[name]))
        if gray.shape != size:
            raise DataError(f"{index[name]}: fused image is {gray.shape[1]}x{gray.shape[0]} but its pair is "
                            f"{size[1]}x{size[0]}; fuse the pair again.")
        lumas.append(torch.from_numpy(gray.astype(np.float32) / 255.0)[None])
    return lumas


def load_split(dataset: FusionDataset, fused: dict[str, Path]) -> SplitImages:
    """Every kind's whole images of ``dataset`` (built with ``crop=False``) and its labels."""
    images: dict[str, list[torch.Tensor]] = {kind: [] for kind in SOURCE_KINDS}
    labels = []
    for index in range(len(dataset)):
        sample = dataset[index]
        ir, vi = sample["ir"], sample["vi"]
        for kind, image in zip(SOURCE_KINDS, (ir, vi, (ir + vi) / 2, torch.maximum(ir, vi))):
            images[kind].append(image)
        labels.append(sample["label"])
    sizes = [tuple(label.shape) for label in labels]
    for name, folder in fused.items():
        images[name] = read_fused_luma(folder, dataset.names, sizes)
    return SplitImages(names=dataset.names, images=images, labels=labels)


def crop_batch(images: list[torch.Tensor], labels: list[torch.Tensor], indices: list[int],
               boxes: list[tuple[int, int, int, int]], crop_size: int, ignore_index: int,
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Crops ``(B, 1, s, s)`` and their labels ``(B, s, s)``; crops of images smaller than ``s`` are
    reflect-padded (labels padded with ``ignore_index``), as the training data pads them."""
    size = (crop_size, crop_size)  # torch.stack makes the one contiguous copy of the (strided) crops
    crops = [torch.from_numpy(crop_padded(images[index].numpy(), box, size)) for index, box in zip(indices, boxes)]
    crop_labels = [torch.from_numpy(crop_padded(labels[index].numpy(), box, size, fill=ignore_index))
                   for index, box in zip(indices, boxes)]
    return torch.stack(crops), torch.stack(crop_labels)


def class_weights_for(params: Params, dataset: FusionDataset) -> torch.Tensor | None:
    """The preset's cross-entropy class weights (``loss.class_balance``; None when 0)."""
    from uaafusion.losses import class_balance_weights

    if params.loss.class_balance <= 0:
        return None
    return torch.tensor(class_balance_weights(dataset.class_pixel_counts(), params.loss.class_balance),
                        dtype=torch.float32)


def train_segmenter(params: Params, images: list[torch.Tensor], labels: list[torch.Tensor],
                    cropper: Cropper, epochs: int, seed: int, device: torch.device,
                    class_weights: torch.Tensor | None) -> torch.nn.Module:
    """A fresh segmenter trained ``epochs`` epochs on crops of ``images`` (the crops of ``cropper``)."""
    from uaafusion.losses import segmentation_loss
    from uaafusion.models import create_segmenter
    from uaafusion.training.builders import build_optimizer, build_scheduler, model_spec

    torch.manual_seed(seed)
    segmenter = create_segmenter(**model_spec(params)["segmenter"]).to(device)
    segmenter.train()
    train = params.train
    optimizer = build_optimizer(segmenter, train.lr_segmenter, train.weight_decay)
    scheduler = build_scheduler(optimizer, train.lr_schedule, epochs)
    weights = class_weights.to(device) if class_weights is not None else None
    count, batch_size = len(images), min(params.data.batch_size, len(images))
    drop_last = count >= 2 * batch_size
    for epoch in range(epochs):
        epoch_seed = seed * 1_000_003 + epoch
        cropper.set_epoch(epoch_seed)
        order = torch.randperm(count, generator=torch.Generator().manual_seed(epoch_seed)).tolist()
        stop = count - count % batch_size if drop_last else count
        for start in range(0, stop, batch_size):
            indices = order[start:start + batch_size]
            boxes = [cropper.crop_box(index) for index in indices]
            image, label = crop_batch(images, labels, indices, boxes, params.data.crop_size, params.data.ignore_index)
            optimizer.zero_grad(set_to_none=True)
            loss = segmentation_loss(segmenter(image.to(device)), label.to(device), params.data.ignore_index,
                                     params.loss.dice, weights)
            if not torch.isfinite(loss):
                raise RuntimeError(f"segmentation loss is {loss.item()} at epoch {epoch + 1}; lower train.lr_segmenter")
            loss.backward()
            if train.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(segmenter.parameters(), train.grad_clip)
            optimizer.step()
        scheduler.step()
    return segmenter.eval()


def score(segmenter: torch.nn.Module, images: list[torch.Tensor], labels: list[torch.Tensor], params: Params,
          device: torch.device) -> dict[str, Any]:
    """Set-level mIoU and per-class IoU of ``segmenter`` on whole images (one confusion matrix)."""
    confusion = ConfusionMatrix(params.data.num_classes, params.data.ignore_index)
    segmenter.eval()
    with torch.inference_mode():
        for image, label in zip(images, labels):
            prediction = segmenter(image[None].to(device)).argmax(dim=1)[0].cpu()
            confusion.update(prediction.numpy(), label.numpy())
    return {"mIoU": float(confusion.miou()),
            "iou": dict(zip(params.data.class_names, (float(value) for value in confusion.per_class_iou())))}


def images_digest(images: list[torch.Tensor]) -> str:
    """A short hash of a kind's training images (keys the kept segmenters)."""
    digest = hashlib.blake2b(digest_size=8)
    for image in images:
        digest.update(image.numpy().tobytes())
    return digest.hexdigest()


def dedicated_segmenter(params: Params, kind: str, train: SplitImages, cropper: Cropper, epochs: int,
                        seed: int, device: torch.device, class_weights: torch.Tensor | None,
                        work: Path) -> tuple[torch.nn.Module, float | None]:
    """The kind's trained segmenter, from ``work`` when kept there; returns ``(segmenter, seconds trained)``."""
    from uaafusion.models import create_segmenter
    from uaafusion.training.builders import model_spec
    from uaafusion.training.stages import run_fingerprint
    from uaafusion.training.state import save_atomically

    key = f"{kind}-seed{seed}-epochs{epochs}-{run_fingerprint(params)[:12]}-{images_digest(train.images[kind])}"
    path = work / f"{key}.pt"
    if path.is_file():
        segmenter = create_segmenter(**model_spec(params)["segmenter"]).to(device)
        segmenter.load_state_dict(torch.load(path, map_location=device, weights_only=True))
        return segmenter.eval(), None
    started = time.perf_counter()
    segmenter = train_segmenter(params, train.images[kind], train.labels, cropper, epochs, seed, device,
                                class_weights)
    seconds = time.perf_counter() - started
    work.mkdir(parents=True, exist_ok=True)
    save_atomically(segmenter.state_dict(), path)
    return segmenter, seconds


def main(argv: list[str] | None = None) -> int:
    from uaafusion.device import resolve_device
    from uaafusion.models.checkpoint import load_models

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params/msrs-boxes.yaml", help="preset: data and segmenter recipe")
    parser.add_argument("--fused", action="append", default=[], metavar="NAME=TRAIN,TEST",
                        help="fused images of the training and the test split (repeatable)")
    parser.add_argument("--checkpoint", help="also score this model's own segmenter on every kind")
    parser.add_argument("--epochs", type=int, default=24,
                        help="epochs per segmenter (24: as many segmenter passes as the preset's in-loop one)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (one segmenter per kind and seed)")
    parser.add_argument("--kinds", help="comma-separated kinds to train and score (default: the four source kinds "
                                         "and every --fused name)")
    parser.add_argument("--train-pairs", type=int,
                        help="train on this many of the training pairs (a fixed random subset; default: all)")
    parser.add_argument("--out", default="reports/msrs/dedicated-segmenters.json", help="JSON to write")
    parser.add_argument("--work", default="checkpoints/experiments/dedicated", help="where trained segmenters are kept")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        raise SystemExit(f"--epochs {args.epochs}: expected at least 1")
    seeds = [int(text) for text in args.seeds.split(",") if text.strip()]
    fused = parse_fused(args.fused)
    params_file = Path(args.params).resolve()
    params = with_absolute_data_root(load_params(params_file), ProjectPaths.at(project_root_for(params_file)))
    device = resolve_device(params.device)
    data = params.data
    train_full = create_dataset(data, data.train_split, crop=False)
    test_full = create_dataset(data, data.test_split, crop=False)
    chosen = None if args.train_pairs is None else nested_subset(len(train_full), args.train_pairs)  # before any read
    train = load_split(train_full, {name: folders[0] for name, folders in fused.items()})
    if chosen is not None:
        train = train.subset(chosen)
    test = load_split(test_full, {name: folders[1] for name, folders in fused.items()})
    kinds = select_kinds(args.kinds, [*SOURCE_KINDS, *fused])
    class_weights = class_weights_for(params, train_full)
    results: dict[str, Any] = {}
    for seed in seeds:
        cropper: Cropper = create_dataset(data, data.train_split, crop=True, seed=seed)
        if chosen is not None:
            cropper = SubsetCropper(cropper, chosen)
        results[str(seed)] = {}
        for kind in kinds:
            segmenter, seconds = dedicated_segmenter(params, kind, train, cropper, args.epochs, seed, device,
                                                     class_weights, Path(args.work))
            scores = score(segmenter, test.images[kind], test.labels, params, device)
            results[str(seed)][kind] = {**scores, "train_seconds": None if seconds is None else round(seconds, 1)}
            origin = "kept" if seconds is None else f"trained in {seconds:.0f} s"
            print(f"seed {seed}, {kind} ({origin}): mIoU {scores['mIoU']:.4f}, "
                  + ", ".join(f"{name} {value:.4f}" for name, value in scores["iou"].items()), flush=True)
    shared = None
    if args.checkpoint:
        segmenter = load_models(args.checkpoint, map_location=device).segmenter.to(device)
        shared = {kind: score(segmenter, test.images[kind], test.labels, params, device) for kind in kinds}
    mean = {kind: float(np.mean([results[str(seed)][kind]["mIoU"] for seed in seeds])) for kind in kinds}
    write_record(args.out, "dedicated_segmenters.py", args.params, epochs=args.epochs, seeds=seeds,
                 kinds={kind: ({"train": str(fused[kind][0]), "test": str(fused[kind][1])} if kind in fused
                               else "computed from the pair") for kind in kinds},
                 class_weights=None if class_weights is None else class_weights.tolist(),
                 train_images=len(train.names), test_images=len(test.names),
                 train_pairs=None if chosen is None else train.names,
                 dedicated=results, dedicated_mean_mIoU=mean, shared=shared, shared_checkpoint=args.checkpoint)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
