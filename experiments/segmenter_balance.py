"""Does the segmenter learn the rare classes? Pretraining variants on a preset, scored per class.

The MSRS run's segmenter predicted background almost everywhere (reports/msrs/discussion.md).
This experiment pretrains the segmenter alone (``train.rounds=0``: the preset's
``pretrain_epochs`` on the infrared and visible sources, nothing else) once per variant of the
params, then scores it on the whole test images: per-class IoU on the infrared, the visible and
the pixel-average image (the average stands in for a fused image). Same seed, same data, same
number of steps; only the variant's keys differ.

    python experiments/segmenter_balance.py --params params/msrs-boxes.yaml \\
        --out reports/msrs/segmenter-balance.json

Default variants: ``plain`` (``loss.class_balance=0``, ``data.object_crops=0``: the committed
run's settings), ``balanced`` (class weights ``1/sqrt(frequency)`` and half the crops centred on a
box). ``--variant NAME:KEY=VALUE,KEY=VALUE`` replaces them. Run folders go under ``--work``
(default ``checkpoints/experiments``); a variant already trained there is only scored again.

``--fused NAME=FOLDER`` (repeatable) also scores each variant's segmenter on existing fused test
images (box-mask IoU on the fused image and on each source, :func:`evaluate_folders`), e.g. the
committed run's outputs and a peer's; folders that do not exist are skipped with a message.
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
from uaafusion.config import Params, load_params, parse_overrides  # noqa: E402
from uaafusion.data.datasets import create_dataset  # noqa: E402
from uaafusion.metrics.segmentation import ConfusionMatrix  # noqa: E402
from uaafusion.paths import ProjectPaths, project_root_for  # noqa: E402
from uaafusion.steps import with_absolute_data_root  # noqa: E402
from uaafusion.training import run_training  # noqa: E402
from uaafusion.training.stages import open_training, run_fingerprint  # noqa: E402

DEFAULT_VARIANTS = {
    "plain": {"loss.class_balance": 0.0, "data.object_crops": 0.0},
    "balanced": {"loss.class_balance": 0.5, "data.object_crops": 0.5},
}
INPUTS = ("ir", "vi", "average")


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``"NAME:KEY=VALUE,KEY=VALUE"`` -> ``(NAME, {KEY: VALUE})``; values are read as YAML."""
    name, _, assignments = text.partition(":")
    if not name or not assignments:
        raise SystemExit(f"--variant {text!r}: expected NAME:KEY=VALUE[,KEY=VALUE...]")
    return name, parse_overrides(assignments.split(","))


def score_segmenter(segmenter: torch.nn.Module, params: Params, device: torch.device) -> dict[str, Any]:
    """Per-class IoU and mIoU of ``segmenter`` on the test split's whole images, per input."""
    dataset = create_dataset(params.data, params.data.test_split, crop=False)
    confusions = {name: ConfusionMatrix(params.data.num_classes, params.data.ignore_index) for name in INPUTS}
    predicted_share = {name: torch.zeros(params.data.num_classes, dtype=torch.float64) for name in INPUTS}
    segmenter.eval()
    with torch.inference_mode():
        for index in range(len(dataset)):
            sample = dataset[index]
            ir, vi = sample["ir"][None].to(device), sample["vi"][None].to(device)
            for name, image in (("ir", ir), ("vi", vi), ("average", (ir + vi) / 2)):
                prediction = segmenter(image).argmax(dim=1)[0].cpu()
                confusions[name].update(prediction.numpy(), sample["label"].numpy())
                predicted_share[name] += torch.bincount(prediction.flatten(), minlength=params.data.num_classes)
    names = list(params.data.class_names)
    return {
        name: {
            "mIoU": float(confusions[name].miou()),
            "iou": dict(zip(names, (float(value) for value in confusions[name].per_class_iou()))),
            "predicted_share": dict(zip(names, (predicted_share[name] / predicted_share[name].sum()).tolist())),
        }
        for name in INPUTS
    }


def score_fused_folders(segmenter: torch.nn.Module, params: Params, folders: dict[str, Path],
                        device: torch.device) -> dict[str, Any]:
    """IoU of ``segmenter`` (box masks or labels) on each folder's fused test images and on the sources."""
    from uaafusion.data.datasets import layout_folders, split_directory
    from uaafusion.metrics.evaluate import evaluate_folders

    split = layout_folders(params.data.layout, split_directory(params.data.layout, params.data.root,
                                                               params.data.test_split))
    results = {}
    for name, folder in folders.items():
        if not folder.is_dir():
            print(f"  fused folder {name}={folder} does not exist: skipped", flush=True)
            continue
        mean = evaluate_folders(split.ir, split.vi, folder, labels_dir=split.label, boxes_dir=split.boxes,
                                segmenter=segmenter,
                                num_classes=params.data.num_classes, class_names=params.data.class_names,
                                ignore_index=params.data.ignore_index, device=device, progress=False)["mean"]
        results[name] = {key: mean[key] for key in sorted(mean) if "IoU" in key}
    return results


def run_variant(name: str, overrides: dict[str, Any], work: Path, params_file: Path,
                fused_folders: dict[str, Path]) -> dict[str, Any]:
    """Pretrain the segmenter of one variant (resuming a finished or killed run) and score it."""
    variant_params = load_params(params_file, {**overrides, "train.rounds": 0})
    variant_params = with_absolute_data_root(variant_params, ProjectPaths.at(project_root_for(params_file)))
    run_dir = work / f"{name}-{run_fingerprint(variant_params)}"
    started = time.perf_counter()
    run_training(variant_params, run_dir)
    seconds = time.perf_counter() - started
    context = open_training(variant_params, run_dir)
    result = {"overrides": overrides, "run_dir": str(run_dir), "train_seconds": round(seconds, 1),
              "pretrain_epochs": variant_params.train.pretrain_epochs,
              "scores": score_segmenter(context.segmenter, variant_params, context.device)}
    if fused_folders:
        result["fused"] = score_fused_folders(context.segmenter, variant_params, fused_folders, context.device)
    weights_file = run_dir / "class_weights.json"
    if weights_file.is_file():
        result["class_weights"] = json.loads(weights_file.read_text())
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params/msrs-boxes.yaml", help="preset to start from")
    parser.add_argument("--out", default="reports/msrs/segmenter-balance.json", help="JSON to write")
    parser.add_argument("--work", default="checkpoints/experiments", help="run folders of the variants")
    parser.add_argument("--variant", action="append", default=[], help="NAME:KEY=VALUE[,KEY=VALUE...] (repeatable)")
    parser.add_argument("--fused", action="append", default=[], metavar="NAME=FOLDER",
                        help="fused test images to score each segmenter on (repeatable)")
    args = parser.parse_args(argv)
    fused_folders = {name: Path(folder) for name, folder in parse_overrides(args.fused).items()}
    variants = dict(parse_variant(text) for text in args.variant) if args.variant else DEFAULT_VARIANTS
    params_file = Path(args.params).resolve()
    results = {}
    for name, overrides in variants.items():
        print(f"variant {name}: {overrides}", flush=True)
        results[name] = run_variant(name, overrides, Path(args.work), params_file, fused_folders)
        scores = results[name]["scores"]
        print(json.dumps({source: {"mIoU": round(value["mIoU"], 4), **{k: round(v, 4) for k, v in value["iou"].items()}}
                          for source, value in scores.items()}), flush=True)
    write_record(args.out, "segmenter_balance.py", args.params, variants=results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
