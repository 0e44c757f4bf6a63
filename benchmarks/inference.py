"""Benchmark of inference: :func:`uaafusion.inference.fuse_luma` on one pair per size (default
640x480 and 1280x1024, width x height), scenes of the embedded generator.

``fuse_luma`` runs the whole method: the class mask ``argmax S((I+V)/2)``, the attribution weights
of the classes present and the unfolding stages. Per size: seconds per image (median and spread after
warm-up) and the peak memory of the first call (:class:`benchmarks.timing.PeakMemory`). The models are
a checkpoint's (the suite's default: ``models/uaafusion.pt``, what the default pipeline trains, when
it exists) or the params' models freshly initialised. The cost depends on the number of classes the
segmenter finds (one attribution copy per class present; an untrained segmenter often finds one),
so each case records it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.timing import PeakMemory, log, time_call
from benchmarks.training import synthetic_scenes
from uaafusion.config import Params

DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((640, 480), (1280, 1024))  # (width, height)
QUICK_SIZES: tuple[tuple[int, int], ...] = ((64, 48), (96, 80))


def benchmark_inference(params: Params, device: torch.device, sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
                        repeats: int = 3, warmup: int = 1, checkpoint: Path | None = None,
                        seed: int = 0) -> dict[str, dict[str, Any]]:
    """Time ``fuse_luma`` on one pair per size. Returns records keyed ``inference/<W>x<H>``."""
    from uaafusion.attribution import mask_from_logits
    from uaafusion.inference import fuse_luma, load_models_for_inference
    from uaafusion.training.builders import build_models

    if checkpoint is not None:
        loaded = load_models_for_inference(checkpoint, device)
        fusion, segmenter, source = loaded.fusion, loaded.segmenter, str(checkpoint)
    else:
        fusion, segmenter = (model.eval() for model in build_models(params, device))
        source = "params defaults (untrained, seeded)"
    records: dict[str, dict[str, Any]] = {}
    for width, height in sizes:
        log(f"inference {width}x{height}")
        _, ir, vi, _ = synthetic_scenes(1, height, width, params.data.num_classes, seed)
        ir, vi = ir.to(device), vi.to(device)

        def fuse(ir: torch.Tensor = ir, vi: torch.Tensor = vi) -> torch.Tensor:
            return fuse_luma(fusion, segmenter, ir, vi).fused

        # Memory first: the first call at this size allocates everything afresh. It is also the
        # first warm-up call (at 1280x1024 on a CPU each call takes minutes).
        with PeakMemory(device) as peak:
            fuse()
        summary, fused = time_call(fuse, device, repeats, max(0, warmup - 1))
        with torch.no_grad():
            classes_present = int((mask_from_logits(segmenter((ir + vi) / 2)).flatten(2).amax(2) > 0).sum())
        records[f"inference/{width}x{height}"] = {
            **summary, "warmup": max(1, warmup), "width": width, "height": height, "batch": 1,
            "ms_per_image": 1000.0 * summary["median_s"], "images_per_s": 1.0 / summary["median_s"],
            **peak.as_dict(), "peak_memory_call": "first call at this size (also the first warm-up call)",
            "classes_present": classes_present, "num_classes": params.data.num_classes,
            "fusion_stages": getattr(fusion, "stages", None),
            **{key: getattr(fusion, key, None)
               for key in ("attribution_steps", "attribution_engine", "attribution_scale")},
            "models": source, "device": str(device), "output_shape": list(fused.shape),
        }
    return records
