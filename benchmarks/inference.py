"""Benchmark of inference: fusing one image pair with :func:`uaafusion.inference.fuse_luma`.

Per size (default 640x480 and 1280x1024, width x height): milliseconds per image (median and
spread over repeated runs after warm-up, :mod:`benchmarks.timing`) and the peak memory of one
call (CUDA: bytes allocated by torch at the peak; CPU: growth of the peak resident set size).
The models are a checkpoint's (the suite's default: ``models/uaafusion.pt``, what the default
pipeline trains and ``uaafusion fuse`` uses, when it exists) or the params' models freshly
initialised (:func:`uaafusion.training.builders.build_models`). The cost does not depend on the
trained values but on the number of classes the segmenter finds (one attribution copy per class
present): an untrained segmenter often finds one class only, which makes inference look cheaper
than it is; the number found is recorded with each case. The inputs are scenes of the embedded
synthetic generator at that size. ``fuse_luma`` runs the whole method: the class mask
``argmax S((I+V)/2)``, the attribution weights of the classes present, and the unfolding stages.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.timing import PeakMemory, time_call
from benchmarks.training import synthetic_scenes
from uaafusion.config import Params

DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((640, 480), (1280, 1024))  # (width, height)
QUICK_SIZES: tuple[tuple[int, int], ...] = ((64, 48), (96, 80))


def load_inference_models(params: Params, device: torch.device, checkpoint: str | Path | None = None,
                          ) -> tuple[torch.nn.Module, torch.nn.Module, str]:
    """``(fusion, segmenter, source)`` in eval mode: the checkpoint's models, or the params' defaults."""
    if checkpoint is not None:
        from uaafusion.inference import load_models_for_inference

        loaded = load_models_for_inference(checkpoint, device)
        return loaded.fusion, loaded.segmenter, str(checkpoint)
    from uaafusion.training.builders import build_models

    fusion, segmenter = build_models(params, device)
    return fusion.eval(), segmenter.eval(), "params defaults (untrained, seeded)"


def benchmark_inference(params: Params, device: torch.device | str = "cpu",
                        sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES, repeats: int = 3, warmup: int = 1,
                        checkpoint: str | Path | None = None, seed: int = 0,
                        log: Callable[[str], None] | None = None) -> dict[str, dict[str, Any]]:
    """Time ``fuse_luma`` on one pair per size. Returns records keyed ``inference/<W>x<H>``."""
    from uaafusion.attribution import mask_from_logits
    from uaafusion.inference import fuse_luma

    torch_device = torch.device(device)
    fusion, segmenter, source = load_inference_models(params, torch_device, checkpoint)
    records: dict[str, dict[str, Any]] = {}
    for width, height in sizes:
        if log is not None:
            log(f"inference {width}x{height}")
        _, ir, vi, _ = synthetic_scenes(1, height, width, params.data.num_classes, seed)
        ir, vi = ir.to(torch_device), vi.to(torch_device)

        def fuse(ir: torch.Tensor = ir, vi: torch.Tensor = vi) -> torch.Tensor:
            return fuse_luma(fusion, segmenter, ir, vi).fused

        # Memory first: the first call at this size allocates everything it needs afresh. It is
        # also the first warm-up call (at 1280x1024 on a CPU each call takes minutes).
        with PeakMemory(torch_device) as peak:
            fused = fuse()
        summary, fused = time_call(fuse, torch_device, repeats, max(0, warmup - 1))
        summary["warmup"] = max(1, warmup)
        with torch.no_grad():
            classes_present = int((mask_from_logits(segmenter((ir + vi) / 2)).flatten(2).amax(2) > 0).sum())
        records[f"inference/{width}x{height}"] = {
            **summary,
            "width": width, "height": height, "batch": 1,
            "ms_per_image": 1000.0 * summary["median_s"],
            "images_per_s": 1.0 / summary["median_s"],
            **peak.as_dict(),
            "peak_memory_call": "first call at this size (also the first warm-up call)",
            "classes_present": classes_present,
            "num_classes": params.data.num_classes,
            "fusion_stages": getattr(fusion, "stages", None),
            "attribution_steps": getattr(fusion, "attribution_steps", None),
            "attribution_engine": getattr(fusion, "attribution_engine", None),
            "attribution_scale": getattr(fusion, "attribution_scale", None),
            "models": source,
            "device": str(torch_device),
            "output_shape": list(fused.shape),
        }
    return records
