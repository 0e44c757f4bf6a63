"""``experiments/segmenter_balance.py`` on the tiny synthetic data: variants trained, scored, recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.segmenter_balance import main, parse_variant
from uaafusion.config import Params


def test_variants_are_pretrained_scored_per_class_and_recorded(tiny_project: tuple[Path, Params], tmp_path: Path,
                                                               ) -> None:
    params_file, params = tiny_project
    out = tmp_path / "balance.json"
    arguments = ["--params", str(params_file), "--out", str(out), "--work", str(tmp_path / "work"),
                 "--variant", "plain:loss.class_balance=0", "--variant", "balanced:loss.class_balance=0.5",
                 "--fused", f"missing={tmp_path / 'nowhere'}"]
    assert main(arguments) == 0
    document = json.loads(out.read_text())
    assert set(document["variants"]) == {"plain", "balanced"}
    names = list(params.data.class_names)
    for name, variant in document["variants"].items():
        assert Path(variant["run_dir"]).name.startswith(f"{name}-")
        assert variant["pretrain_epochs"] == params.train.pretrain_epochs
        for source in ("ir", "vi", "average"):
            scores = variant["scores"][source]
            assert 0.0 <= scores["mIoU"] <= 1.0 and list(scores["iou"]) == names
            assert sum(scores["predicted_share"].values()) == pytest.approx(1.0)
        assert variant["fused"] == {}  # the missing folder was skipped, not an error
    assert "class_weights" not in document["variants"]["plain"]
    assert document["variants"]["balanced"]["class_weights"]["class_balance"] == 0.5
    # Trained variants are not trained again: a second call only scores them (same numbers).
    assert main(arguments) == 0
    again = json.loads(out.read_text())
    assert again["variants"]["balanced"]["scores"] == document["variants"]["balanced"]["scores"]


def test_bad_variant_is_refused_with_the_expected_form() -> None:
    assert parse_variant("b:loss.class_balance=0.5,data.crop_size=64") == (
        "b", {"loss.class_balance": 0.5, "data.crop_size": 64})
    with pytest.raises(SystemExit, match="NAME:KEY=VALUE"):
        parse_variant("no-assignments")
