"""``experiments/guard_sweep.py``: the infrared guard scored per setting on a labelled split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.guard_sweep import CLASS_NAMES, InfraredObjectsGuard, main, scores, sweep
from tests.metrics.evaluation_fixtures import BinningSegmenter, save_image, write_boxes
from uaafusion.guard import Guard
from uaafusion.metrics.segmentation import ConfusionMatrix
from uaafusion.models import create_fusion_model, create_segmenter
from uaafusion.models.checkpoint import save_models

HEIGHT, WIDTH = 40, 64
COLD, WARM, TEXTURE = 25, 90, 100   # bins of BinningSegmenter(4): background, person, person


def _split(root: Path) -> tuple[Path, Path]:
    """Two pairs, each with one person box that is warm on infrared; the fused images also carry a
    person-like texture far from it, where the infrared image is cold."""
    for name in ("00001D", "00002N"):
        ir = np.full((HEIGHT, WIDTH), COLD, np.uint8)
        ir[10:20, 10:20] = WARM
        fused = ir.copy()
        fused[10:20, 44:54] = TEXTURE
        save_image(root / "split" / "ir" / f"{name}.png", ir)
        save_image(root / "split" / "vi" / f"{name}.png", fused)
        save_image(root / "fused" / f"{name}.png", fused)
    write_boxes(root / "split" / "boxes", {name: ["0 0.234375 0.375 0.15625 0.25"] for name in ("00001D", "00002N")})
    return root / "split", root / "fused"


def test_scores_by_hand_as_uaafusion_evaluate_defines_them() -> None:
    matrix = ConfusionMatrix(len(CLASS_NAMES))
    matrix.update(np.array([[0, 1, 1, 3]]), np.array([[0, 1, 0, 3]]))
    result = scores(matrix)
    # No bicycle in the boxes nor in the predictions: no IoU, and left out of the mean.
    assert result["IoU"] == {"background": 0.5, "person": 0.5, "bicycle": None, "car": 1.0}
    assert result["mIoU"] == pytest.approx(2 / 3)
    matrix.update(np.array([[0]]), np.array([[2]]))  # a bicycle pixel missed: bicycle IoU 0, counted
    result = scores(matrix)
    assert result["IoU"]["bicycle"] == 0.0 and result["IoU"]["background"] == pytest.approx(1 / 3)
    assert result["mIoU"] == pytest.approx((1 / 3 + 0.5 + 0.0 + 1.0) / 4)


def test_a_guard_removes_the_false_person_and_scores_like_the_infrared_image(tmp_path: Path) -> None:
    split, fused = _split(tmp_path)
    guards = {"narrow": Guard((1,), radius=2, sigma=1.0)}
    results = sweep(BinningSegmenter(len(CLASS_NAMES)), split, fused, guards, torch.device("cpu"))
    assert results["fused"]["IoU"]["person"] == pytest.approx(0.5)    # 200 true of 400 predicted pixels
    assert results["infrared"]["IoU"]["person"] == pytest.approx(1.0)
    assert results["narrow"]["IoU"] == results["infrared"]["IoU"]    # the texture went back to cold infrared
    assert 0 < results["narrow"]["mean_alpha"] < 1


def test_the_command_records_every_setting(tmp_path: Path) -> None:
    split, fused = _split(tmp_path)
    checkpoint = save_models(tmp_path / "models.pt", create_fusion_model("uaafusion", stages=1, features=4),
                             create_segmenter(num_classes=len(CLASS_NAMES)))
    out = tmp_path / "sweep.json"
    assert main(["--checkpoint", str(checkpoint), "--split", str(split), "--fused", str(fused),
                 "--radii", "2,4", "--sigmas", "1", "--device", "cpu", "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    assert document["command"].startswith("python experiments/guard_sweep.py")
    assert set(document["results"]) == {"infrared", "fused", "radius 2, sigma 1", "radius 4, sigma 1"}
    for result in document["results"].values():
        assert 0 <= result["mIoU"] <= 1 and set(result["IoU"]) == set(CLASS_NAMES)


def test_gains_are_named_in_the_record(tmp_path: Path) -> None:
    split, fused = _split(tmp_path)
    checkpoint = save_models(tmp_path / "models.pt", create_fusion_model("uaafusion", stages=1, features=4),
                             create_segmenter(num_classes=len(CLASS_NAMES)))
    out = tmp_path / "sweep.json"
    assert main(["--checkpoint", str(checkpoint), "--split", str(split), "--fused", str(fused), "--radii", "2",
                 "--sigmas", "2", "--missed", "yes", "--gains", "1,1.5,3", "--device", "cpu", "--out", str(out)]) == 0
    assert set(json.loads(out.read_text())["results"]) == {
        "infrared", "fused", "radius 2, sigma 2, missed, gain 1", "radius 2, sigma 2, missed",
        "radius 2, sigma 2, missed, gain 3"}


def test_a_larger_gain_returns_more_around_the_false_person(tmp_path: Path) -> None:
    split, fused = _split(tmp_path)
    guards = {f"gain {gain:g}": Guard((1,), radius=1, sigma=2.0, gain=gain) for gain in (1.0, 1.5, 3.0)}
    results = sweep(BinningSegmenter(len(CLASS_NAMES)), split, fused, guards, torch.device("cpu"))
    alphas = [results[key]["mean_alpha"] for key in guards]
    assert 0 < alphas[0] < alphas[1] < alphas[2] < 1


def test_the_widest_guard_returns_every_infrared_object_and_the_false_ones() -> None:
    # Pixels: person on both, person on fused only (false), person on infrared only (lost), car on fused only.
    fused_classes = torch.tensor([[[1, 1, 0, 3, 0]]])
    ir_classes = torch.tensor([[[1, 0, 1, 0, 0]]])
    assert Guard((1,), missed=True).region(fused_classes, ir_classes).tolist() == [[[False, True, True, False, False]]]
    assert InfraredObjectsGuard((1,)).region(fused_classes, ir_classes).tolist() == [[[True, True, True, False, False]]]
    assert InfraredObjectsGuard((1, 3)).region(fused_classes, ir_classes).tolist() == [[[True, True, True, True, False]]]


def test_missed_all_is_named_in_the_record_and_a_wrong_choice_is_refused(tmp_path: Path) -> None:
    split, fused = _split(tmp_path)
    checkpoint = save_models(tmp_path / "models.pt", create_fusion_model("uaafusion", stages=1, features=4),
                             create_segmenter(num_classes=len(CLASS_NAMES)))
    out = tmp_path / "sweep.json"
    common = ["--checkpoint", str(checkpoint), "--split", str(split), "--fused", str(fused), "--radii", "2",
              "--sigmas", "2", "--device", "cpu", "--out", str(out)]
    assert main([*common, "--missed", "yes,all"]) == 0
    assert set(json.loads(out.read_text())["results"]) == {
        "infrared", "fused", "radius 2, sigma 2, missed", "radius 2, sigma 2, all infrared objects"}
    with pytest.raises(SystemExit):
        main([*common, "--missed", "every"])


def test_keep_settings_are_tried_beside_the_plain_guard_and_named_in_the_record(tmp_path: Path) -> None:
    split, fused = _split(tmp_path)
    checkpoint = save_models(tmp_path / "models.pt", create_fusion_model("uaafusion", stages=1, features=4),
                             create_segmenter(num_classes=len(CLASS_NAMES)))
    out = tmp_path / "sweep.json"
    common = ["--checkpoint", str(checkpoint), "--split", str(split), "--fused", str(fused), "--radii", "2",
              "--sigmas", "2", "--missed", "yes", "--device", "cpu", "--out", str(out)]
    assert main([*common, "--keep", "car", "--keep-sigmas", "0,4"]) == 0
    assert set(json.loads(out.read_text())["results"]) == {
        "infrared", "fused", "radius 2, sigma 2, missed", "radius 2, sigma 2, missed, keep car sigma 0",
        "radius 2, sigma 2, missed, keep car sigma 4"}
    with pytest.raises(SystemExit, match="truck"):
        main([*common, "--keep", "truck"])


def test_a_kept_car_beside_a_false_person_scores_as_fused(tmp_path: Path) -> None:
    """Fused images with a false person and, next to it, a car box the fused image shows: the plain
    guard's fade spreads over the car and changes its pixels; with the car kept, its pixels, and so
    its IoU, stay as the fused image's."""
    for name in ("00001D", "00002N"):
        ir = np.full((HEIGHT, WIDTH), COLD, np.uint8)
        fused_image = ir.copy()
        fused_image[10:20, 10:20] = TEXTURE   # a false person
        fused_image[10:20, 22:40] = 200       # a car (bin 3 of BinningSegmenter(4)) 2 px to its right
        save_image(tmp_path / "split" / "ir" / f"{name}.png", ir)
        save_image(tmp_path / "split" / "vi" / f"{name}.png", fused_image)
        save_image(tmp_path / "fused" / f"{name}.png", fused_image)
    write_boxes(tmp_path / "split" / "boxes", {name: ["2 0.484375 0.375 0.28125 0.25"] for name in ("00001D", "00002N")})
    guards = {"plain": Guard((1,), radius=2, sigma=4.0), "keep": Guard((1,), radius=2, sigma=4.0, keep=(3,))}
    results = sweep(BinningSegmenter(len(CLASS_NAMES)), tmp_path / "split", tmp_path / "fused", guards,
                    torch.device("cpu"))
    assert results["fused"]["IoU"]["car"] == pytest.approx(1.0)
    assert results["plain"]["IoU"]["car"] < 1.0
    assert results["keep"]["IoU"]["car"] == pytest.approx(1.0)
    assert results["keep"]["IoU"]["person"] in (None, 0.0) and results["keep"]["mIoU"] > results["plain"]["mIoU"]
