"""Run names, lineage tags, dataset inputs, nested runs' params and metric names that line up."""

from __future__ import annotations

import datetime
import subprocess
from pathlib import Path

import pytest
import torch

from tests.helpers import tiny_params_dict
from uaafusion.config import params_from_dict
from uaafusion.lineage import (
    dataset_record,
    run_name,
    run_tags,
    stage_kind,
    stage_params,
    unified_segmentation_names,
)

NOON = datetime.datetime(2026, 12, 6, 12, 5)


@pytest.fixture()
def tiny_data(tmp_path: Path) -> Path:
    """The embedded synthetic dataset at the tiny test size (6 training, 2 test pairs)."""
    from uaafusion.data.synthetic import write_synthetic_dataset

    write_synthetic_dataset(params_from_dict(tiny_params_dict()).synthetic, tmp_path / "synthetic")
    return tmp_path / "synthetic"


def test_the_run_name_is_the_given_one_else_the_dvc_experiment_else_params_stem_and_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    assert run_name(None, "params/msrs-boxes.yaml", NOON) == "msrs-boxes-1206-1205"
    monkeypatch.setenv("DVC_EXP_NAME", "bushy-sofa")
    assert run_name("  ", "params.yaml", NOON) == "bushy-sofa"
    assert run_name("seed-7", "params.yaml", NOON) == "seed-7"


def test_tags_name_the_params_file_commit_dirty_flag_experiment_and_device(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DVC_EXP_NAME", "bushy-sofa")
    params_file = tmp_path / "params" / "msrs.yaml"
    params_file.parent.mkdir()
    params_file.write_text("seed: 0\n")
    outside_git = run_tags(tmp_path, params_file, torch.device("cpu"))
    assert "mlflow.source.git.commit" not in outside_git and "uaafusion.git_dirty" not in outside_git

    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "params"], check=True)
    tags = run_tags(tmp_path, params_file, torch.device("cpu"))
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert tags["mlflow.source.git.commit"] == commit
    assert tags["uaafusion.git_dirty"] == "false"
    assert tags["uaafusion.params_file"] == "params/msrs.yaml"
    assert tags["mlflow.source.name"] == "uaafusion train --params params/msrs.yaml"
    assert tags["dvc.experiment"] == "bushy-sofa"
    assert tags["uaafusion.device"] == "cpu" and tags["uaafusion.device_name"]
    params_file.write_text("seed: 1\n")
    assert run_tags(tmp_path, params_file, torch.device("cpu"))["uaafusion.git_dirty"] == "true"


def test_a_dataset_record_counts_the_pairs_and_its_digest_follows_the_files(tiny_data: Path) -> None:
    params = params_from_dict(tiny_params_dict(**{"data.root": str(tiny_data)}))
    train = dataset_record(params, "train")
    assert (train.name, train.pairs, train.profile) == (f"{tiny_data.name}/train", 6, {"num_pairs": 6})
    assert Path(train.source) == (tiny_data / "train").resolve()
    assert dataset_record(params, "train") == train
    assert dataset_record(params, "test").digest != train.digest
    victim = sorted((tiny_data / "train" / "ir").iterdir())[0]
    victim.write_bytes(victim.read_bytes() + b"\0")  # same name, other size
    assert dataset_record(params, "train").digest != train.digest


def test_nested_runs_carry_their_stages_params() -> None:
    params = params_from_dict(tiny_params_dict())
    assert stage_kind("round-2/fusion") == ("fusion", 2) and stage_kind("pretrain") == ("pretrain", None)
    fusion = stage_params(params, "round-2/fusion")
    assert fusion["round"] == 2 and fusion["train.lr_fusion"] == params.train.lr_fusion
    assert fusion["attribution.steps"] == 2 and "train.lr_segmenter" not in fusion
    segmentation = stage_params(params, "round-1/segmentation")
    assert "model.segmenter.arch" in segmentation and "attribution.steps" not in segmentation
    assert set(stage_params(params, "evaluate")) >= {"evaluate.peers", "evaluate.degraded.kinds"}
    assert set(stage_params(params, "report")) == {"report.samples", "report.discussion"}


def test_box_label_metrics_take_the_plain_names_unless_pixel_labels_have_them() -> None:
    boxes = {"box_mIoU": 0.5, "box_IoU/car": 0.4, "ours/box_mIoU-box_mIoU_ir": 0.1, "VIF": 0.7}
    assert unified_segmentation_names(boxes) == (
        {"mIoU": 0.5, "IoU/car": 0.4, "ours/mIoU-mIoU_ir": 0.1, "VIF": 0.7}, "box")
    both = {"mIoU": 0.6, "box_mIoU": 0.5}
    assert unified_segmentation_names(both) == (both, "pixel")
