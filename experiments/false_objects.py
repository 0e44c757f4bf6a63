"""Does the segmenter miss objects in a fused image, or see objects that are not there?

An IoU below the infrared image's can come from missed object pixels (recall) or from false
ones (precision). This experiment runs one segmenter on the test split's infrared and visible
images and on each given folder of fused images, and counts per object class the true, false and
missed pixels against the box masks, with precision and recall, over the whole split and over
groups of names (``--group day='*D'``). It also says where each input's false pixels of a class
lie: on which label (background, another class), and whether the segmenter also predicts that
class there on the infrared image or on the visible image alone (false objects a fused image
inherits from a source). ::

    python experiments/false_objects.py --checkpoint models/msrs/uaafusion.pt \\
        --fused ours=data/fused-msrs/ours --group day='*D' --group night='*N' \\
        --out reports/msrs-rerun/false-objects.json
"""

from __future__ import annotations

import argparse
import fnmatch
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
from uaafusion.errors import ConfigError  # noqa: E402
from uaafusion.inference import load_models_for_inference  # noqa: E402
from uaafusion.metrics.evaluate import (  # noqa: E402
    BACKGROUND_CLASS_NAME, DEFAULT_BOX_CLASS_NAMES, _predict_classes)

SOURCES = ("ir", "vi")
CLASS_NAMES = (BACKGROUND_CLASS_NAME, *DEFAULT_BOX_CLASS_NAMES)


def pixel_errors(prediction: np.ndarray, target: np.ndarray, class_id: int, num_classes: int,
                 source_predictions: dict[str, np.ndarray]) -> dict[str, int]:
    """Pixel counts of one class in one image: ``tp``, ``fp``, ``fn``; the false pixels by their
    label (``fp_on_<label id>``) and where each source's prediction is also ``class_id``
    (``fp_also_<source>``). All arrays ``int (H, W)`` of class ids."""
    predicted, expected = prediction == class_id, target == class_id
    false = predicted & ~expected
    counts = {"tp": int((predicted & expected).sum()), "fp": int(false.sum()), "fn": int((~predicted & expected).sum())}
    for label in range(num_classes):
        if label != class_id:
            counts[f"fp_on_{label}"] = int((false & (target == label)).sum())
    for source, source_prediction in source_predictions.items():
        counts[f"fp_also_{source}"] = int((false & (source_prediction == class_id)).sum())
    return counts


def summarise(counts: dict[str, int], class_names: tuple[str, ...]) -> dict[str, Any]:
    """IoU, precision and recall of summed :func:`pixel_errors` counts (None where undefined), and
    the false pixels' shares by label and by source."""
    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]

    def ratio(numerator: int, denominator: int) -> float | None:
        return numerator / denominator if denominator else None

    return {
        **counts,
        "iou": ratio(tp, tp + fp + fn), "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn),
        "fp_share_on": {class_names[int(key.removeprefix("fp_on_"))]: ratio(value, fp)
                        for key, value in counts.items() if key.startswith("fp_on_")},
        "fp_share_also": {key.removeprefix("fp_also_"): ratio(value, fp)
                          for key, value in counts.items() if key.startswith("fp_also_")},
    }


def count_false_objects(segmenter: torch.nn.Module, test_dir: Path, fused: dict[str, Path],
                        groups: dict[str, str], device: torch.device) -> dict[str, Any]:
    """``{input: {group: {class: summary}}}`` for ``ir``, ``vi`` and every ``fused`` folder; the
    group ``all`` holds every pair, the others the pairs whose name matches their pattern."""
    num_classes = len(CLASS_NAMES)
    inputs = (*SOURCES, *fused)
    totals: dict[str, dict[str, dict[int, dict[str, int]]]] = {
        name: {group: {} for group in ("all", *groups)} for name in inputs}
    segmenter.eval()
    with torch.inference_mode():
        channels = segmenter(torch.zeros(1, 1, 64, 64, device=device)).shape[1]
    if channels != num_classes:
        raise ConfigError(f"the segmenter has {channels} classes; the boxes need {num_classes} "
                          f"({', '.join(CLASS_NAMES)}).")
    for pair_name, grays, boxes in read_test_triples(test_dir, fused):
        height, width = grays["ir"].shape
        target = boxes_to_class_mask(boxes, height, width)
        predictions = dict(zip(grays, _predict_classes(segmenter, list(grays.values()), device, num_classes)))
        member_of = ["all", *(group for group, pattern in groups.items()
                              if fnmatch.fnmatchcase(pair_name, pattern))]
        sources = {source: predictions[source] for source in SOURCES}
        for name in inputs:
            for class_id in range(1, num_classes):
                counts = pixel_errors(predictions[name], target, class_id, num_classes, sources)
                for group in member_of:
                    total = totals[name][group].setdefault(class_id, dict.fromkeys(counts, 0))
                    for key, value in counts.items():
                        total[key] += value
    return {name: {group: {CLASS_NAMES[class_id]: summarise(counts, CLASS_NAMES)
                           for class_id, counts in by_class.items()}
                   for group, by_class in by_group.items()}
            for name, by_group in totals.items()}


def _named_folder(text: str) -> tuple[str, Path]:
    name, separator, folder = text.partition("=")
    if not separator or not name or not folder or name in SOURCES:
        raise argparse.ArgumentTypeError(f"--fused {text!r}: expected NAME=FOLDER with a NAME other than ir, vi.")
    return name, Path(folder)


def _group(text: str) -> tuple[str, str]:
    name, separator, pattern = text.partition("=")
    if not separator or not name or not pattern or name == "all":
        raise argparse.ArgumentTypeError(f"--group {text!r}: expected NAME=PATTERN (e.g. day='*D'), NAME not 'all'.")
    return name, pattern


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="models/msrs/uaafusion.pt", help="model whose segmenter is scored")
    parser.add_argument("--test", default="../shared/datasets/msrs-boxes/test", help="split with ir/, vi/, boxes/")
    parser.add_argument("--fused", type=_named_folder, action="append", default=[], help="NAME=FOLDER (repeatable)")
    parser.add_argument("--group", type=_group, action="append", default=[], help="NAME=PATTERN of names (repeatable)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--out", default="reports/msrs-rerun/false-objects.json", help="JSON to write")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    segmenter = load_models_for_inference(args.checkpoint, device).segmenter
    started = time.perf_counter()
    results = count_false_objects(segmenter, Path(args.test), dict(args.fused), dict(args.group), device)
    for name, by_group in results.items():
        person = by_group["all"]["person"]
        print(f"{name}: person IoU {person['iou']}, precision {person['precision']}, recall {person['recall']}")
    write_record(args.out, "false_objects.py", "", checkpoint=str(args.checkpoint),
                 seconds=round(time.perf_counter() - started, 1), inputs=results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
