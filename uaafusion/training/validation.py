"""The validation after each round: fuse the test split, score segmentation and fusion quality."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from uaafusion.training.context import TrainingContext


def validate(context: TrainingContext, samples_dir: Path | None = None) -> dict[str, float]:
    """Fuse every test image (full size) and score it: mIoU of the segmenter on fused images
    and on each source, and the mean fusion metrics. With ``samples_dir``, the first
    ``report.samples`` images' panels go there as ``NAME.png`` (:func:`sample_panel`)."""
    from uaafusion.data.io import tensor_to_array, write_png
    from uaafusion.inference import fuse_luma
    from uaafusion.metrics.fusion import fusion_metrics
    from uaafusion.metrics.segmentation import ConfusionMatrix

    params = context.params
    dataset = context.dataset(params.data.test_split, crop=False)
    confusions = {source: ConfusionMatrix(params.data.num_classes, params.data.ignore_index)
                  for source in ("fused", "ir", "vi")}
    fusion_totals: dict[str, float] = {}
    context.segmenter.eval()
    for index in tqdm(range(len(dataset)), desc="validation", leave=False, disable=None):
        sample = dataset[index]
        ir = sample["ir"][None].to(context.device)
        vi = sample["vi"][None].to(context.device)
        output = fuse_luma(context.fusion, context.segmenter, ir, vi)
        with torch.no_grad():
            for source, image in (("fused", output.fused), ("ir", ir), ("vi", vi)):
                prediction = context.segmenter(image).argmax(dim=1)[0].cpu().numpy()
                confusions[source].update(prediction, sample["label"].numpy())
        fused_array = tensor_to_array(output.fused[0])
        scores = fusion_metrics(fused_array.astype(np.float64), tensor_to_array(sample["ir"]).astype(np.float64),
                                tensor_to_array(sample["vi"]).astype(np.float64))
        for key, value in scores.items():
            fusion_totals[key] = fusion_totals.get(key, 0.0) + float(value)
        if samples_dir is not None and index < params.report.samples:
            write_png(Path(samples_dir) / f"{sample['name']}.png",
                      sample_panel(sample["ir"], sample["vi"], output.fused[0], output.weight_ir[0]))
    metrics = {key: value / max(len(dataset), 1) for key, value in fusion_totals.items()}
    metrics["mIoU"] = float(confusions["fused"].miou())
    metrics["mIoU_ir"] = float(confusions["ir"].miou())
    metrics["mIoU_vi"] = float(confusions["vi"].miou())
    return metrics


def sample_panel(ir: torch.Tensor, vi: torch.Tensor, fused: torch.Tensor, weight_ir: torch.Tensor) -> np.ndarray:
    """Infrared, visible, fused and the infrared weight map (inferno colours) of one validation image,
    each ``(1, H, W)`` in [0, 1], side by side -> ``uint8 (H, 4 W + 6, 3)``."""
    from uaafusion.visualize import colourise_map, side_by_side

    return side_by_side([ir, vi, fused, colourise_map(weight_ir)])
