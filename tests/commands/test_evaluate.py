"""``uaafusion evaluate`` end to end: small folders the tests write, errors, JSON, and real MSRS data."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from tests.metrics.evaluation_fixtures import save_image, write_boxes, write_evaluation_folders, write_labels
from uaafusion.cli import main
from uaafusion.metrics.fusion import METRIC_NAMES

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"
NAMES = ("alpha", "beta", "gamma")


@pytest.fixture()
def folders(tmp_path: Path) -> dict[str, Path]:
    return write_evaluation_folders(tmp_path / "data", names=NAMES)


def _arguments(folders: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["evaluate", "--ir", str(folders["ir"]), "--vi", str(folders["vi"]), "--fused", str(folders["fused"]),
            "--out", str(out), "--no-progress", *extra]


def test_writes_json_and_prints_the_table(folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "reports" / "metrics.json"
    assert main(_arguments(folders, out)) == 0
    document = json.loads(out.read_text())
    assert {"per_image", "mean", "count"} <= set(document)
    assert document["count"] == 3
    assert sorted(document["per_image"]) == list(NAMES)
    assert list(document["mean"]) == list(METRIC_NAMES)
    assert all(set(values) == set(METRIC_NAMES) for values in document["per_image"].values())
    printed = capsys.readouterr().out
    assert "SSIM" in printed and "Qabf" in printed and "3 image(s)" in printed


def test_select_scores_a_subset_and_records_the_pattern(folders: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "subset.json"
    assert main(_arguments(folders, out, "--select", "[ab]*")) == 0
    document = json.loads(out.read_text())
    assert document["count"] == 2 and sorted(document["per_image"]) == ["alpha", "beta"]
    assert document["inputs"]["select"] == "[ab]*"


def test_missing_fused_files_are_listed(folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folders["fused"] / "beta.tif").unlink()
    (folders["fused"] / "gamma.tif").unlink()
    out = tmp_path / "metrics.json"
    assert main(_arguments(folders, out)) == 2
    error = capsys.readouterr().err
    assert "beta" in error and "gamma" in error and "alpha" not in error
    assert "fuse the missing pairs" in error
    assert not out.exists()


def test_size_mismatch_is_reported(folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_image(folders["fused"] / "gamma.tif", np.zeros((12, 16), dtype=np.uint8))
    assert main(_arguments(folders, tmp_path / "metrics.json")) == 2
    error = capsys.readouterr().err
    assert "size mismatch" in error and "gamma: fused 16x12 vs infrared 32x24" in error


def test_labels_out_of_range(folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = {name: np.zeros((24, 32), dtype=np.uint8) for name in NAMES}
    labels["alpha"][5, 5] = 9
    labels_dir = write_labels(tmp_path / "labels", labels)
    assert main(_arguments(folders, tmp_path / "metrics.json", "--labels", str(labels_dir), "--num-classes", "3")) == 2
    error = capsys.readouterr().err
    assert "alpha.png" in error and "[9]" in error and "outside 0..2" in error


def test_labels_and_boxes_are_exclusive(folders: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(_arguments(folders, tmp_path / "m.json", "--labels", str(tmp_path), "--boxes", str(tmp_path)))


def test_boxes_give_roi_ssim(folders: dict[str, Path], tmp_path: Path) -> None:
    boxes_dir = write_boxes(folders["ir"].parent / "boxes", {"alpha": ["0 0.5 0.5 0.5 0.5"], "beta": [], "gamma": []})
    out = tmp_path / "metrics.json"
    assert main(_arguments(folders, out, "--boxes", str(boxes_dir))) == 0
    document = json.loads(out.read_text())
    assert document["roi_count"] == 1
    assert document["per_image"]["beta"]["ROI_SSIM"] is None
    assert document["mean"]["ROI_SSIM"] == pytest.approx(document["per_image"]["alpha"]["ROI_SSIM"])


def test_segmenter_checkpoint(folders: dict[str, Path], tmp_path: Path) -> None:
    checkpoint = pytest.importorskip("uaafusion.models.checkpoint")
    from uaafusion.models import create_fusion_model, create_segmenter

    segmenter = create_segmenter(num_classes=4)
    fusion = create_fusion_model("uaafusion", stages=1, features=4)
    path = checkpoint.save_models(tmp_path / "models.pt", fusion, segmenter)
    boxes_dir = write_boxes(
        folders["ir"].parent / "boxes",
        {"alpha": ["0 0.5 0.5 0.5 0.5"], "beta": ["2 0.3 0.3 0.2 0.2"], "gamma": []},
        classes=["person", "bicycle", "car"],
    )
    out = tmp_path / "metrics.json"
    arguments = _arguments(folders, out, "--boxes", str(boxes_dir), "--segmenter", str(path), "--device", "cpu")
    assert main(arguments) == 0
    mean = json.loads(out.read_text())["mean"]
    for key in ("box_mIoU", "box_mIoU_ir", "box_mIoU_vi", "box_pixel_accuracy", "box_IoU/background", "box_IoU/car"):
        assert key in mean
    assert 0.0 <= mean["box_mIoU"] <= 1.0
    assert 0.0 <= mean["box_pixel_accuracy"] <= 1.0


@pytest.mark.realdata
def test_scores_seafusion_on_msrs_test(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    test_split = SHARED_DATASETS / "msrs-boxes" / "test"
    fused_dir = SHARED_DATASETS / "peers" / "seafusion-msrs"
    if not (test_split.is_dir() and fused_dir.is_dir()):
        pytest.skip(f"real data not found under {SHARED_DATASETS}")
    out = tmp_path / "seafusion.json"
    started = time.perf_counter()
    code = main([
        "evaluate", "--ir", str(test_split / "ir"), "--vi", str(test_split / "vi"), "--fused", str(fused_dir),
        "--boxes", str(test_split / "boxes"), "--out", str(out), "--no-progress",
    ])
    seconds = time.perf_counter() - started
    assert code == 0
    document = json.loads(out.read_text())
    mean = document["mean"]
    assert document["count"] == 60
    assert 5.0 < mean["EN"] < 8.0
    assert 0.5 < mean["SSIM"] < 2.0
    assert 0.2 < mean["Qabf"] < 1.0
    assert 20.0 < mean["SD"] < 80.0
    assert 0.3 < mean["VIF"] < 2.0
    assert 0.5 < mean["MI"] < 8.0
    assert mean["MI_bits"] == pytest.approx(mean["MI"] / np.log(2))
    assert 0.0 < mean["SCD"] < 2.0
    assert 0.0 < mean["ROI_SSIM"] < 2.0
    assert document["roi_count"] > 0
    print(f"SeAFusion on msrs-boxes/test: {seconds:.1f} s")
    assert "ROI_SSIM" in capsys.readouterr().out
