"""``experiments/false_objects.py``: true, false and missed pixels per class, and where the false ones lie."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.false_objects import CLASS_NAMES, count_false_objects, main, pixel_errors, summarise
from tests.metrics.evaluation_fixtures import (
    BinningSegmenter, binning_prediction, read_gray, save_image, smooth_image, write_boxes)
from uaafusion.data.boxes import boxes_to_class_mask, read_yolo_boxes
from uaafusion.errors import ConfigError
from uaafusion.models import create_fusion_model, create_segmenter
from uaafusion.models.checkpoint import save_models

HEIGHT, WIDTH = 24, 32
NAMES = ("00001D", "00002N", "00003D")


def test_pixel_errors_by_hand() -> None:
    # classes: 0 background, 1 person, 2 car
    target = np.array([[1, 1, 0, 0, 2]])
    prediction = np.array([[1, 0, 1, 1, 1]])  # one hit, one miss, false on background twice and on the car once
    infrared = np.array([[1, 1, 1, 0, 0]])
    visible = np.array([[0, 0, 0, 1, 1]])
    counts = pixel_errors(prediction, target, 1, 3, {"ir": infrared, "vi": visible})
    assert counts == {"tp": 1, "fp": 3, "fn": 1, "fp_on_0": 2, "fp_on_2": 1, "fp_also_ir": 1, "fp_also_vi": 2}
    summary = summarise(counts, ("background", "person", "car"))
    assert summary["iou"] == pytest.approx(1 / 5) and summary["precision"] == pytest.approx(1 / 4)
    assert summary["recall"] == pytest.approx(1 / 2)
    assert summary["fp_share_on"] == {"background": pytest.approx(2 / 3), "car": pytest.approx(1 / 3)}
    assert summary["fp_share_also"] == {"ir": pytest.approx(1 / 3), "vi": pytest.approx(2 / 3)}
    nothing = summarise({"tp": 0, "fp": 0, "fn": 0}, ("background", "person"))
    assert nothing["iou"] is None and nothing["precision"] is None and nothing["recall"] is None


def _project(root: Path, classes: int = len(CLASS_NAMES)) -> tuple[Path, Path, Path]:
    """Three test pairs with a person and a car box, fused images, and a checkpoint whose segmenter has ``classes``."""
    for index, name in enumerate(NAMES):
        save_image(root / "test" / "ir" / f"{name}.png", smooth_image(HEIGHT, WIDTH, index))
        save_image(root / "test" / "vi" / f"{name}.png", smooth_image(HEIGHT, WIDTH, 10 + index))
        save_image(root / "fused" / f"{name}.png", smooth_image(HEIGHT, WIDTH, 20 + index))
    write_boxes(root / "test" / "boxes", {name: ["0 0.3 0.4 0.4 0.5", "2 0.75 0.6 0.4 0.5"] for name in NAMES})
    checkpoint = save_models(root / "models.pt", create_fusion_model("uaafusion", stages=1, features=4),
                             create_segmenter(num_classes=classes))
    return root / "test", root / "fused", checkpoint


def test_counts_match_the_segmenters_predictions_on_every_input_and_group(tmp_path: Path) -> None:
    test_dir, fused_dir, checkpoint = _project(tmp_path)
    inputs = count_false_objects(BinningSegmenter(len(CLASS_NAMES)), test_dir, {"ours": fused_dir},
                                 {"day": "*D"}, torch.device("cpu"))
    assert set(inputs) == {"ir", "vi", "ours"}
    folders = {"ir": test_dir / "ir", "vi": test_dir / "vi", "ours": fused_dir}
    for name, folder in folders.items():
        assert set(inputs[name]) == {"all", "day"}
        for group, members in (("all", NAMES), ("day", ("00001D", "00003D"))):
            for class_id, class_name in enumerate(CLASS_NAMES[1:], start=1):
                expected = {"tp": 0, "fp": 0, "fn": 0}
                for member in members:
                    prediction = binning_prediction(read_gray(folder / f"{member}.png"), len(CLASS_NAMES))
                    target = boxes_to_class_mask(read_yolo_boxes(test_dir / "boxes" / f"{member}.txt", HEIGHT, WIDTH, 3),
                                                 HEIGHT, WIDTH)
                    expected["tp"] += int(((prediction == class_id) & (target == class_id)).sum())
                    expected["fp"] += int(((prediction == class_id) & (target != class_id)).sum())
                    expected["fn"] += int(((prediction != class_id) & (target == class_id)).sum())
                summary = inputs[name][group][class_name]
                assert {key: summary[key] for key in expected} == expected, (name, group, class_name)
                assert sum(summary[f"fp_on_{label}"] for label in range(4) if label != class_id) == summary["fp"]
    # On the infrared image every false pixel is one the infrared prediction has: the share is 1.
    for summary in inputs["ir"]["all"].values():
        if summary["fp"]:
            assert summary["fp_share_also"]["ir"] == pytest.approx(1.0)


def test_the_command_writes_every_input_with_the_command_that_made_it(tmp_path: Path) -> None:
    test_dir, fused_dir, checkpoint = _project(tmp_path)
    out = tmp_path / "false-objects.json"
    arguments = ["--checkpoint", str(checkpoint), "--test", str(test_dir), "--fused", f"ours={fused_dir}",
                 "--group", "night=*N", "--device", "cpu", "--out", str(out)]
    assert main(arguments) == 0
    document = json.loads(out.read_text())
    assert document["command"].startswith("python experiments/false_objects.py")
    assert set(document["inputs"]) == {"ir", "vi", "ours"}
    for by_group in document["inputs"].values():
        assert set(by_group) == {"all", "night"} and set(by_group["all"]) == set(CLASS_NAMES[1:])
        pixels = sum(by_group["all"]["person"][key] for key in ("tp", "fn"))
        assert pixels > 0  # every image has a person box


def test_bad_inputs_are_named(tmp_path: Path) -> None:
    test_dir, fused_dir, checkpoint = _project(tmp_path, classes=3)
    with pytest.raises(ConfigError, match="the segmenter has 3 classes"):
        main(["--checkpoint", str(checkpoint), "--test", str(test_dir), "--device", "cpu",
              "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit):
        main(["--fused", "ir=somewhere"])
    with pytest.raises(SystemExit):
        main(["--group", "all=*"])
