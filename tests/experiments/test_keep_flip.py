"""``experiments/keep_flip.py``: where the people go that the guard's ``keep`` loses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.guard_sweep import CLASS_NAMES
from experiments.keep_flip import keep_flip, main
from tests.metrics.evaluation_fixtures import BinningSegmenter, save_image, write_boxes
from uaafusion.guard import Guard
from uaafusion.models import create_fusion_model, create_segmenter
from uaafusion.models.checkpoint import save_models

HEIGHT, WIDTH = 40, 64
COLD, WARM, CAR = 25, 90, 200   # bins of BinningSegmenter(4): background, person, car
PERSON_ID, CAR_ID = CLASS_NAMES.index("person"), CLASS_NAMES.index("car")


def _split(root: Path) -> tuple[Path, Path]:
    """One pair with a person box (rows 10-20, columns 10-30) that is warm on infrared only in its left
    half; the fused image shows the whole box as a car. The plain guard returns the left half to
    infrared, and its fade over the right half mixes car and cold into person values."""
    ir = np.full((HEIGHT, WIDTH), COLD, np.uint8)
    ir[10:20, 10:20] = WARM
    fused = np.full((HEIGHT, WIDTH), COLD, np.uint8)
    fused[10:20, 10:30] = CAR
    save_image(root / "split" / "ir" / "00001D.png", ir)
    save_image(root / "split" / "vi" / "00001D.png", fused)
    save_image(root / "fused" / "00001D.png", fused)
    write_boxes(root / "split" / "boxes", {"00001D": ["0 0.3125 0.375 0.3125 0.25"]})
    return root / "split", root / "fused"


def test_people_the_fade_found_on_a_fused_car_are_lost_to_the_kept_car(tmp_path: Path) -> None:
    split, fused = _split(tmp_path)
    plain = Guard((PERSON_ID,), radius=0, sigma=2.0, missed=True)
    keeping = Guard((PERSON_ID,), radius=0, sigma=2.0, missed=True, keep=(CAR_ID,))
    totals = keep_flip(BinningSegmenter(len(CLASS_NAMES)), split, fused, plain, keeping, torch.device("cpu"))
    # Kept: the fused car where the infrared image shows no person, all of it inside the person box.
    assert totals["kept"] == {"background": 0, "person": 100, "bicycle": 0, "car": 0}
    lost = totals["person_lost"]
    assert lost["pixels"] > 0 and lost["on_kept"] == lost["pixels"] and lost["off_kept"] == 0
    assert lost["called"]["car"] == lost["pixels"]          # the kept car is read as a car again
    assert totals["plain"]["true_person"] - totals["keep"]["true_person"] == lost["pixels"]
    # The infrared half, returned by both guards, but for its four corners, where the blurred alpha
    # mixes warm and car into bicycle values.
    assert totals["keep"]["true_person"] == 96
    assert totals["false_person_added"]["pixels"] == 0 and totals["plain"]["false_person"] == 0


def test_a_guard_without_keep_classes_is_refused(tmp_path: Path) -> None:
    split, fused = _split(tmp_path)
    plain = Guard((PERSON_ID,), missed=True)
    with pytest.raises(ValueError, match="--keep"):
        keep_flip(BinningSegmenter(len(CLASS_NAMES)), split, fused, plain, plain, torch.device("cpu"))


def test_the_command_records_the_counts_and_how_to_reproduce_them(tmp_path: Path) -> None:
    split, fused = _split(tmp_path)
    checkpoint = save_models(tmp_path / "models.pt", create_fusion_model("uaafusion", stages=1, features=4),
                             create_segmenter(num_classes=len(CLASS_NAMES)))
    out = tmp_path / "flip.json"
    assert main(["--checkpoint", str(checkpoint), "--split", str(split), "--fused", str(fused), "--radius", "2",
                 "--sigma", "2", "--keep", "car", "--keep-sigma", "0", "--device", "cpu", "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    assert document["command"].startswith("python experiments/keep_flip.py") and document["keep"] == "car"
    results = document["results"]
    assert set(results) == {"kept", "person_lost", "false_person_added", "plain", "keep"}
    assert sum(results["kept"].values()) >= 0 and set(results["kept"]) == set(CLASS_NAMES)
    with pytest.raises(SystemExit, match="truck"):
        main(["--checkpoint", str(checkpoint), "--split", str(split), "--fused", str(fused), "--keep", "truck",
              "--device", "cpu", "--out", str(out)])
