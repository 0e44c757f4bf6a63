"""Does the class mask behind the fused image decide what the segmenter finds in it?

Training fuses with the class mask taken from the labels (METHOD.md: the attribution weights are
constant per labelled region, and the attention gradients are taken against that mask); inference
uses a label-free mask (``model.fusion.inference_mask``: ``argmax S((I+V)/2)`` or
``argmax S(I)``). With box labels the label mask draws each box into the
training fused images (the weights jump at the box edges), so a segmenter trained on those
images may learn the boxes from the fusion instead of from the scene. This experiment fuses the
same images of a trained model both ways, and with each label-free mask (``argmax S((I+V)/2)``
of the pixel average, ``argmax S(I)`` of the infrared image, ``argmax S(F)`` of the image fused as
inference does), and two masks from both sources' segmentations (per pixel the more confident of
``S(I)`` and ``S(V)``, and the union of their objects), and scores
its segmenter on each, per class, next to the infrared and the visible image alone:

    python experiments/mask_source.py --params params/msrs-boxes.yaml \\
        --out reports/msrs/mask-source.json

``--checkpoint`` defaults to the preset's ``outputs.models``/``uaafusion.pt``; ``--split`` (repeatable)
defaults to the test split; ``--limit N`` scores only the first N images of each split.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.record import write_record  # noqa: E402
from uaafusion.attribution import labels_to_one_hot, mask_from_logits  # noqa: E402
from uaafusion.config import Params, load_params  # noqa: E402
from uaafusion.data.datasets import create_dataset  # noqa: E402
from uaafusion.device import resolve_device  # noqa: E402
from uaafusion.inference import fuse_luma, load_models_for_inference  # noqa: E402
from uaafusion.metrics.segmentation import ConfusionMatrix  # noqa: E402
from uaafusion.paths import ProjectPaths, project_root_for  # noqa: E402
from uaafusion.steps import with_absolute_data_root  # noqa: E402

INPUTS = ("ir", "vi", "fused_predicted_mask", "fused_label_mask", "fused_average_mask", "fused_infrared_mask",
          "fused_second_pass_mask", "fused_confident_mask", "fused_union_mask")


def two_source_masks(infrared_logits: torch.Tensor, visible_logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """Two label-free masks from both sources' segmentations ``S(I), S(V)`` (logits ``(B, C, H, W)``),
    one-hot ``(B, C, H, W)``.

    ``confident``: per pixel, the class of whichever of ``S(I)`` and ``S(V)`` is more confident
    (higher top softmax probability; infrared on ties); ``union``: the infrared class where it is
    not background (id 0), else the visible one (objects found in either source).
    """
    infrared_top = infrared_logits.softmax(dim=1).max(dim=1)
    visible_top = visible_logits.softmax(dim=1).max(dim=1)
    confident = torch.where(infrared_top.values >= visible_top.values, infrared_top.indices, visible_top.indices)
    union = torch.where(infrared_top.indices > 0, infrared_top.indices, visible_top.indices)
    classes = infrared_logits.shape[1]
    # Every class id is a real class here: no pixel is ignored.
    return {name: labels_to_one_hot(ids, classes, ignore_index=-1).to(infrared_logits.dtype)
            for name, ids in (("confident", confident), ("union", union))}


def score_mask_sources(fusion: torch.nn.Module, segmenter: torch.nn.Module, params: Params, split: str,
                       device: torch.device, limit: int | None = None) -> dict[str, Any]:
    """Per-class IoU and mIoU of ``segmenter`` on the whole images of ``split``: each source alone,
    the image fused with the predicted mask (as ``uaafusion fuse`` does: the model's
    ``inference_mask``), with the label mask (as training does), with ``argmax S((I+V)/2)`` (the
    pixel average's mask), with ``argmax S(I)`` (the infrared image's mask) and with ``argmax S(F)``
    of the predicted-mask fused image (a second pass), and with each of :func:`two_source_masks`; plus the mean absolute difference
    of the predicted-mask and label-mask fused images inside and outside the labelled objects
    (label id > 0)."""
    data = params.data
    dataset = create_dataset(data, split, crop=False)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    confusions = {name: ConfusionMatrix(data.num_classes, data.ignore_index) for name in INPUTS}
    difference = {"objects": [0.0, 0], "background": [0.0, 0]}
    model_mask = getattr(fusion, "inference_mask", "average")  # what fuse_luma fuses with
    fusion.eval()
    segmenter.eval()
    for index in range(count):
        sample = dataset[index]
        ir, vi = sample["ir"][None].to(device), sample["vi"][None].to(device)
        labels = sample["label"][None].to(device)
        label_mask = labels_to_one_hot(labels, data.num_classes, data.ignore_index)
        with torch.no_grad():
            predicted = fuse_luma(fusion, segmenter, ir, vi).fused
            images = {"ir": ir, "vi": vi, "fused_predicted_mask": predicted,
                      "fused_label_mask": fusion(ir, vi, segmenter, mask=label_mask).fused}
            for source, image in (("average", (ir + vi) / 2), ("infrared", ir)):
                if source == model_mask:  # the image inference already made
                    images[f"fused_{source}_mask"] = predicted
                else:
                    mask = mask_from_logits(segmenter(image))
                    images[f"fused_{source}_mask"] = fusion(ir, vi, segmenter, mask=mask).fused
            second_mask = mask_from_logits(segmenter(predicted))
            images["fused_second_pass_mask"] = fusion(ir, vi, segmenter, mask=second_mask).fused
            for source, mask in two_source_masks(segmenter(ir), segmenter(vi)).items():
                images[f"fused_{source}_mask"] = fusion(ir, vi, segmenter, mask=mask).fused
            for name, image in images.items():
                prediction = segmenter(image).argmax(dim=1)[0].cpu()
                confusions[name].update(prediction.numpy(), sample["label"].numpy())
        gap = (predicted - images["fused_label_mask"]).abs()[0, 0].cpu()
        objects = (sample["label"] > 0) & (sample["label"] != data.ignore_index)
        for region, where in (("objects", objects), ("background", ~objects)):
            difference[region][0] += float(gap[where].sum())
            difference[region][1] += int(where.sum())
    names = list(data.class_names)
    return {
        "images": count,
        "inference_mask": model_mask,
        "scores": {name: {"mIoU": float(confusions[name].miou()),
                          "iou": dict(zip(names, (float(value) for value in confusions[name].per_class_iou())))}
                   for name in INPUTS},
        "mean_abs_difference_of_the_fused_images": {
            region: (total / pixels if pixels else None) for region, (total, pixels) in difference.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params/msrs-boxes.yaml", help="the preset the model was trained with")
    parser.add_argument("--checkpoint", default=None, help="default: <outputs.models>/uaafusion.pt of the preset")
    parser.add_argument("--split", action="append", default=[], help="splits to score (default: the test split)")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N images of each split")
    parser.add_argument("--out", default="reports/msrs/mask-source.json", help="JSON to write")
    args = parser.parse_args(argv)
    params_file = Path(args.params).resolve()
    params = load_params(params_file)
    paths = ProjectPaths.at(project_root_for(params_file), params.outputs)
    params = with_absolute_data_root(params, paths)
    checkpoint = Path(args.checkpoint) if args.checkpoint else paths.models / "uaafusion.pt"
    device = resolve_device(params.device)
    models = load_models_for_inference(checkpoint, device)
    started = time.perf_counter()
    results = {}
    for split in args.split or [params.data.test_split]:
        print(f"split {split}", flush=True)
        results[split] = score_mask_sources(models.fusion, models.segmenter, params, split, device, args.limit)
        print(json.dumps({name: round(value["mIoU"], 4) for name, value in results[split]["scores"].items()}),
              flush=True)
    write_record(args.out, "mask_source.py", args.params, checkpoint=str(checkpoint),
                 seconds=round(time.perf_counter() - started, 1), splits=results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
