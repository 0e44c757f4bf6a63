"""``experiments/segmenter_balance.py`` on the tiny synthetic data: variants trained, scored, recorded."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, write_tiny_params
from uaafusion.config import load_params
from uaafusion.data.synthetic import write_synthetic_dataset

sys.path.insert(0, str(REPO_ROOT))
from experiments.segmenter_balance import main, parse_variant  # noqa: E402


def test_variants_are_pretrained_scored_per_class_and_recorded(tmp_path: Path) -> None:
    data_root = tmp_path / "synthetic"
    params_file = write_tiny_params(tmp_path / "params.yaml", **{"data.root": str(data_root)})
    params = load_params(params_file)
    write_synthetic_dataset(params.synthetic, data_root)
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
