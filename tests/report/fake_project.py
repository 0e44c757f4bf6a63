"""A small fake project for the report tests: params, an msrs-layout test split, a model, the
evaluate step's outputs, training CSVs and fused images; and a reader of the HTML tables."""

from __future__ import annotations

import csv
import html
import json
import re
from pathlib import Path

import numpy as np
import yaml

from uaafusion.data.io import write_png
from uaafusion.metrics.comparison import compare_methods
from uaafusion.method_names import OUR_METHOD
from uaafusion.paths import ProjectPaths
from uaafusion.report import FUSION_METRICS

CLASS_NAMES = ["background", "road", "person"]
SAMPLE_NAMES = ["s1", "s2", "s3"]
HEIGHT, WIDTH = 40, 52
METHODS = ["ours", "average", "maximum", "peerX"]


def project_params(**extra: object) -> dict:
    params = {
        "device": "cpu",
        "data": {"layout": "msrs", "root": "data/tiny", "num_classes": 3, "class_names": CLASS_NAMES},
        "model": {"fusion": {"stages": 1, "features": 8}},
        "evaluate": {"peers": {"peerX": "data/peer"}},
        "report": {"samples": 2},
    }
    params.update(extra)
    return params


def write_params(path: Path, **extra: object) -> Path:
    """``project_params(**extra)`` as YAML at ``path``, with ``dvc.yaml`` beside it (the project root marker)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(project_params(**extra)))
    (path.parent / "dvc.yaml").write_text("stages: {}\n")
    return path


def write_tiny_dataset(root: Path) -> None:
    """msrs layout: ``test/{ir,vi,Label}/NAME.png``, one visible image in colour."""
    generator = np.random.default_rng(0)
    rows, columns = np.mgrid[0:HEIGHT, 0:WIDTH]
    for index, name in enumerate(SAMPLE_NAMES):
        ir = ((np.sin(columns / 5.0 + index) + 1) * 100 + generator.integers(0, 40, (HEIGHT, WIDTH))).astype(np.uint8)
        vi_gray = ((rows * 255) // HEIGHT).astype(np.uint8)
        vi = np.stack([vi_gray, 255 - vi_gray, ir], axis=-1) if index == 0 else vi_gray
        label = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
        label[HEIGHT // 2:, :] = 1
        label[5:15, 10 + index * 5:20 + index * 5] = 2
        label[0, :] = 255  # unknown pixels
        for folder, image in (("ir", ir), ("vi", vi), ("Label", label)):
            write_png(root / "test" / folder / f"{name}.png", image)


def write_models(path: Path) -> None:
    import torch

    from uaafusion.models import create_fusion_model, create_segmenter
    from uaafusion.models.checkpoint import save_models

    torch.manual_seed(0)
    segmenter = create_segmenter("Unet", "mobilenet_v2", num_classes=3, encoder_depth=3, decoder_channels=(16, 8, 4))
    save_models(path, create_fusion_model("uaafusion", stages=1, features=8, attribution_steps=2), segmenter)


def fake_confusion(correct: int) -> list[list[int]]:
    """A 3-class confusion matrix with ``correct`` pixels on the diagonal per class and 5 off it."""
    return [[correct if target == prediction else 5 for prediction in range(3)] for target in range(3)]


def write_evaluation(paths: ProjectPaths, comparison: bool = True) -> dict:
    """``evaluation.json`` and (with ``comparison``) ``comparison.json``, as the evaluate step writes them.

    ours best on most metrics; peerX best on SD; maximum ties ours on SSIM; average lacks VIF. Per
    image, EN is the method's offset plus the image's; ours and average carry confusion matrices
    (their segmenter finds more on the fused images than on the infrared ones).
    """
    evaluation = {}
    for method, offset in zip(METHODS, (0.3, 0.0, 0.1, 0.2)):
        means = {metric: 1.0 + offset + 0.01 * position for position, metric in enumerate(FUSION_METRICS)}
        means.update({"mIoU": 0.4 + offset, "mIoU_ir": 0.3, "mIoU_vi": 0.35, "pixel_accuracy": 0.8 + offset,
                      "IoU/background": 0.9, "IoU/road": 0.5 + offset, "IoU/person": 0.1 + offset})
        per_image = {name: {"EN": 1.0 + offset + 0.1 * index} for index, name in enumerate(SAMPLE_NAMES)}
        evaluation[method] = {"per_image": per_image, "mean": means, "count": 3}
        if method in ("ours", "average"):
            fused = 100 if method == "ours" else 60
            matrices = (("mIoU", fused), ("mIoU_ir", 40), ("mIoU_vi", fused))
            evaluation[method]["confusion"] = {key: {name: fake_confusion(correct) for name in SAMPLE_NAMES}
                                               for key, correct in matrices}
    evaluation["peerX"]["mean"]["SD"] = 99.0
    evaluation["maximum"]["mean"]["SSIM"] = evaluation["ours"]["mean"]["SSIM"]
    evaluation["average"]["mean"]["VIF"] = None
    paths.reports.mkdir(parents=True, exist_ok=True)
    paths.evaluation.write_text(json.dumps(evaluation))
    if comparison:
        unordered = dict(reversed(evaluation.items()))  # the report orders the methods itself
        paths.comparison.write_text(json.dumps(compare_methods(unordered, OUR_METHOD, skip_unpaired=True).to_json()))
    return evaluation


def write_training_csvs(paths: ProjectPaths) -> None:
    paths.training_plots.mkdir(parents=True, exist_ok=True)
    with open(paths.training_plots / "steps.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "stage", "loss", "loss_intensity", "loss_segmentation"])
        for step in range(30):
            stage = "pretrain" if step < 10 else ("fusion" if step < 20 else "segmentation")
            writer.writerow([step, stage, 2.0 / (step + 1) + 0.1, 1.0 / (step + 1), "" if stage == "fusion" else 0.5])
    with open(paths.training_plots / "rounds.csv", "w", newline="") as handle:
        columns = ["step", "round", *FUSION_METRICS, "mIoU", "mIoU_ir", "mIoU_vi"]
        writer = csv.writer(handle)
        writer.writerow(columns)
        for round_index in (1, 2):
            writer.writerow([round_index * 10, round_index, *[round_index + 0.1 * k for k in range(len(columns) - 2)]])


def write_fused_images(paths: ProjectPaths) -> None:
    for method in ("ours", "average", "maximum"):
        for name in SAMPLE_NAMES[:2]:
            write_png(paths.fused / method / f"{name}.png", np.full((HEIGHT, WIDTH), 128, dtype=np.uint8))


Table = list[list[tuple[str, bool]]]
"""Rows of ``(cell text, marked best)``, the header row first."""


def read_tables(html_text: str) -> list[Table]:
    """Every ``<table>`` of a page, in page order."""
    def cell(attributes: str, inner: str) -> tuple[str, bool]:
        return html.unescape(re.sub(r"<[^>]+>", "", inner)).strip(), 'class="best"' in attributes
    return [[[cell(*match) for match in re.findall(r"<t[dh]([^>]*)>(.*?)</t[dh]>", row, re.S)]
             for row in re.findall(r"<tr.*?</tr>", table, re.S)]
            for table in re.findall(r"<table.*?</table>", html_text, re.S)]


def texts(row: list[tuple[str, bool]]) -> list[str]:
    return [text for text, _ in row]


def column_best(table: Table, column: str) -> set[str]:
    """The row names whose cell in ``column`` is marked best."""
    position = texts(table[0]).index(column)
    return {row[0][0] for row in table[1:] if row[position][1]}
