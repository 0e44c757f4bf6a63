"""Choose the infrared guard's width on a labelled split (the training pairs, not the test ones).

The infrared guard (``uaafusion/guard.py``) returns the fused image to the infrared one where the
segmenter sees a guarded class on the fused image and background on the infrared image. How far
around that region it reaches (``radius``), how softly (``sigma``) and how fully (``gain``; the package
keeps :data:`uaafusion.guard.GUARD_GAIN`) are chosen here: for every setting (``--missed yes``:
restoring lost objects too; ``--missed all``: returning every pixel the segmenter calls a guarded class
on the infrared image, :class:`InfraredObjectsGuard`), each pair's saved fused image is guarded (as ``uaafusion fuse --guard``
would guard the network's output, here on the saved 8-bit luma), the segmenter predicts the guarded
image, and the box-mask confusion matrices of the whole split give its set-level mIoU, beside the
unguarded fused image's and the infrared image's. Pick on the training split; score the pick once on the test
split with ``uaafusion fuse --guard`` and ``uaafusion evaluate``. ::

    python experiments/guard_sweep.py --checkpoint models/msrs/uaafusion.pt \\
        --split ../shared/datasets/msrs-boxes/train --fused data/fused-msrs-train/ours \\
        --radii 8,16,24 --sigmas 8,16 --out reports/msrs-rerun/guard-sweep.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.record import write_record  # noqa: E402
from experiments.region_swap import read_test_triples  # noqa: E402
from uaafusion.data.boxes import boxes_to_class_mask  # noqa: E402
from uaafusion.device import resolve_device  # noqa: E402
from uaafusion.guard import GUARD_GAIN, Guard  # noqa: E402
from uaafusion.inference import load_models_for_inference, predict_classes  # noqa: E402
from uaafusion.metrics.evaluate import BACKGROUND_CLASS_NAME, DEFAULT_BOX_CLASS_NAMES  # noqa: E402
from uaafusion.metrics.segmentation import ConfusionMatrix  # noqa: E402

CLASS_NAMES = (BACKGROUND_CLASS_NAME, *DEFAULT_BOX_CLASS_NAMES)
MISSED_CHOICES = ("no", "yes", "all")


class InfraredObjectsGuard(Guard):
    """The guard with the widest region tried (discussion item 24): false objects as :class:`Guard`'s,
    and every pixel the segmenter assigns to a guarded class on the infrared image, whatever it
    sees on the fused image (``missed`` only takes those it does not see there)."""

    def region(self, fused_classes: torch.Tensor, ir_classes: torch.Tensor) -> torch.Tensor:
        """``bool (B, H, W)``: :meth:`Guard.region` (its lost objects lie inside the infrared ones) or a
        guarded class on ``I``."""
        on_infrared = torch.zeros_like(ir_classes, dtype=torch.bool)
        for class_id in self.classes:
            on_infrared |= ir_classes == class_id
        return super().region(fused_classes, ir_classes) | on_infrared


def make_guard(classes: tuple[int, ...], radius: int, sigma: float, missed: str, gain: float,
               keep: tuple[int, ...] = (), keep_sigma: float = 0.0) -> Guard:
    """The guard of one ``--missed`` choice (see :data:`MISSED_CHOICES`), leaving the ``keep`` classes
    of the fused image alone (faded over ``keep_sigma`` pixels)."""
    kind = InfraredObjectsGuard if missed == "all" else Guard
    return kind(classes, radius, sigma, missed != "no", gain, keep, keep_sigma)


def scores(matrix: ConfusionMatrix) -> dict[str, Any]:
    """Set-level ``mIoU`` and per-class IoU, as ``uaafusion evaluate`` defines them (a class absent
    from both the boxes and the predictions is left out of the mean; its IoU is ``None``)."""
    iou = matrix.per_class_iou()
    return {"mIoU": matrix.miou(),
            "IoU": {name: None if np.isnan(value) else float(value) for name, value in zip(CLASS_NAMES, iou)}}


def guard_name(guard: Guard) -> str:
    """``radius R, sigma S[, missed | , all infrared objects][, gain G][, keep car sigma K]`` (the gain only
    when it is not the default)."""
    restored = (", all infrared objects" if isinstance(guard, InfraredObjectsGuard)
                else ", missed" if guard.missed else "")
    return (f"radius {guard.radius}, sigma {guard.sigma:g}{restored}"
            f"{'' if guard.gain == GUARD_GAIN else f', gain {guard.gain:g}'}"
            f"{f', keep {joined_names(guard.keep)} sigma {guard.keep_sigma:g}' if guard.keep else ''}")


def joined_names(class_ids: tuple[int, ...]) -> str:
    """``(3,)`` -> ``car``: class ids as their names, joined by ``+``."""
    return "+".join(CLASS_NAMES[class_id] for class_id in class_ids)


def sweep(segmenter: torch.nn.Module, split: Path, fused: Path, guards: dict[str, Guard],
          device: torch.device) -> dict[str, Any]:
    """Set-level scores of the infrared, the fused and every guarded image of ``split`` (boxes as
    classes 0 = background, 1.. = box class + 1), and each guard's mean alpha."""
    matrices = {key: ConfusionMatrix(len(CLASS_NAMES)) for key in ("infrared", "fused", *guards)}
    alpha_sums = dict.fromkeys(guards, 0.0)
    pixels = 0
    for _, images, boxes in read_test_triples(split, {"fused": fused}):
        height, width = images["ir"].shape
        target = boxes_to_class_mask(boxes, height, width)
        ir, fused_luma = (torch.from_numpy(images[key]).to(device, torch.float32).div(255.0)[None, None]
                          for key in ("ir", "fused"))
        ir_classes, fused_classes = predict_classes(segmenter, ir), predict_classes(segmenter, fused_luma)
        matrices["infrared"].update(ir_classes[0], target)
        matrices["fused"].update(fused_classes[0], target)
        pixels += height * width
        for key, guard in guards.items():
            guarded, alpha = guard.guarded(fused_luma, ir, fused_classes, ir_classes)
            guarded = guarded.mul(255.0).round().div(255.0)  # as the saved 8-bit image would be
            matrices[key].update(predict_classes(segmenter, guarded)[0], target)
            alpha_sums[key] += float(alpha.sum())
    results = {key: scores(matrix) for key, matrix in matrices.items()}
    for key in guards:
        results[key]["mean_alpha"] = alpha_sums[key] / pixels
    return results


def class_ids(text: str) -> tuple[int, ...]:
    """``person,car`` -> ``(1, 3)``; SystemExit naming the class when it is not one of :data:`CLASS_NAMES`."""
    names = [name.strip() for name in text.split(",")]
    unknown = [name for name in names if name not in CLASS_NAMES[1:]]
    if unknown:
        raise SystemExit(f"unknown class {', '.join(unknown)}: expected names from {', '.join(CLASS_NAMES[1:])}")
    return tuple(CLASS_NAMES.index(name) for name in names)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="models/msrs/uaafusion.pt", help="the model whose segmenter guards")
    parser.add_argument("--split", default="../shared/datasets/msrs-boxes/train", help="split with ir/, vi/, boxes/")
    parser.add_argument("--fused", default="data/fused-msrs-train/ours", help="the model's fused images of that split")
    parser.add_argument("--classes", default="person", help="guarded class names, comma-separated")
    parser.add_argument("--radii", default="8,16,24", help="radii to try (pixels), comma-separated")
    parser.add_argument("--sigmas", default="8,16", help="Gaussian fades to try (pixels), comma-separated")
    parser.add_argument("--missed", default="no",
                        help="no, yes, all or a comma-separated list of them: no restoring, restoring lost objects, "
                             "returning every infrared object")
    parser.add_argument("--gains", default=f"{GUARD_GAIN:g}",
                        help=f"how far the blurred region is scaled before clipping (default {GUARD_GAIN:g}), comma-separated")
    parser.add_argument("--keep", default="",
                        help="class names of the fused image the guard leaves alone (e.g. car), comma-separated; "
                             "each setting is tried with and without them")
    parser.add_argument("--keep-sigmas", default="0",
                        help="fades of the kept classes to try (pixels), comma-separated")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="reports/msrs-rerun/guard-sweep.json")
    args = parser.parse_args(argv)
    if not set(args.missed.split(",")) <= set(MISSED_CHOICES):
        parser.error(f"--missed {args.missed!r}: expected a comma-separated list of {', '.join(MISSED_CHOICES)}")
    device = resolve_device(args.device)
    models = load_models_for_inference(args.checkpoint, device)
    classes = class_ids(args.classes)
    keeps = [((), 0.0)] + ([(class_ids(args.keep), float(keep_sigma)) for keep_sigma in args.keep_sigmas.split(",")]
                           if args.keep else [])
    guards = {guard_name(guard): guard
              for missed in args.missed.split(",")
              for radius in map(int, args.radii.split(",")) for sigma in map(float, args.sigmas.split(","))
              for gain in map(float, args.gains.split(","))
              for keep, keep_sigma in keeps
              for guard in [make_guard(classes, radius, sigma, missed, gain, keep, keep_sigma)]}
    started = time.perf_counter()
    results = sweep(models.segmenter, Path(args.split), Path(args.fused), guards, device)
    for key, result in results.items():
        per_class = ", ".join(f"{name} {'-' if value is None else f'{value:.3f}'}"
                              for name, value in result["IoU"].items())
        print(f"{key:24s} mIoU {result['mIoU']:.4f} ({per_class})")
    write_record(args.out, "guard_sweep.py", params="", split=args.split, fused=args.fused,
                 checkpoint=args.checkpoint, classes=args.classes, keep=args.keep,
                 seconds=round(time.perf_counter() - started, 1), results=results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
