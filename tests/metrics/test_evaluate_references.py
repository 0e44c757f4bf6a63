"""evaluate_folders with clean references: fusion metrics against the references, the segmenter on the inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.metrics.evaluation_fixtures import (
    IR_EXTENSION,
    VI_EXTENSION,
    BinningSegmenter,
    save_image,
    write_boxes,
    write_evaluation_folders,
)
from uaafusion.cli import main
from uaafusion.data.io import read_image
from uaafusion.errors import DataError
from uaafusion.metrics.evaluate import evaluate_folders
from uaafusion.metrics.fusion import METRIC_NAMES

NAMES = ("alpha", "beta", "gamma")
HEIGHT, WIDTH = 24, 32
FUSED_ONLY = {"EN", "SD", "SF", "AG"}  # depend on F alone
FUSION_KEYS = (*METRIC_NAMES, "ROI_SSIM", "ROI_SSIM_ir", "ROI_SSIM_vi")
BOXES = {"alpha": ["0 0.5 0.5 0.5 0.5"], "beta": ["2 0.25 0.5 0.5 1.0", "1 0.75 0.5 0.2 0.2"], "gamma": ["1 0.4 0.4 0.6 0.6"]}


@pytest.fixture()
def folders(tmp_path: Path) -> dict[str, Path]:
    """Clean ``ir``/``vi``/``fused`` plus degraded inputs ``deg_ir`` (inverted) and ``deg_vi`` (noisy), and boxes."""
    clean = write_evaluation_folders(tmp_path / "clean", names=NAMES, height=HEIGHT, width=WIDTH)
    generator = np.random.default_rng(0)
    folders = dict(clean, deg_ir=tmp_path / "deg" / "ir", deg_vi=tmp_path / "deg" / "vi")
    for name in NAMES:
        save_image(folders["deg_ir"] / f"{name}{IR_EXTENSION}", 255 - read_image(clean["ir"] / f"{name}{IR_EXTENSION}"))
        noisy = read_image(clean["vi"] / f"{name}{VI_EXTENSION}").astype(int) + generator.integers(-60, 60, (HEIGHT, WIDTH, 3))
        save_image(folders["deg_vi"] / f"{name}{VI_EXTENSION}", np.clip(noisy, 0, 255).astype(np.uint8))
    folders["boxes"] = write_boxes(tmp_path / "boxes", BOXES, classes=["person", "bicycle", "car"])
    return folders


def _evaluate(folders: dict[str, Path], ir: str, vi: str, **kwargs: object) -> dict:
    return evaluate_folders(folders[ir], folders[vi], folders["fused"], boxes_dir=folders["boxes"],
                            segmenter=BinningSegmenter(4), progress=False, **kwargs)


def test_fusion_metrics_use_the_references_and_the_segmenter_the_inputs(folders: dict[str, Path]) -> None:
    referenced = _evaluate(folders, "deg_ir", "deg_vi", reference_ir_dir=folders["ir"], reference_vi_dir=folders["vi"])
    clean = _evaluate(folders, "ir", "vi")
    degraded = _evaluate(folders, "deg_ir", "deg_vi")
    assert referenced["count"] == 3
    for name in NAMES:
        for key in FUSION_KEYS:
            assert referenced["per_image"][name][key] == clean["per_image"][name][key], (name, key)
            if key not in FUSED_ONLY:
                assert referenced["per_image"][name][key] != degraded["per_image"][name][key], (name, key)
    for key in FUSION_KEYS:
        assert referenced["mean"][key] == clean["mean"][key], key
    # The segmenter scores the inputs the fusion saw: the degraded ones.
    segmentation = [key for key in degraded["mean"] if key.startswith("box_")]
    assert {"box_mIoU", "box_mIoU_ir", "box_mIoU_vi", "box_IoU_ir/person"} <= set(segmentation)
    for key in segmentation:
        assert referenced["mean"][key] == degraded["mean"][key], key
    assert referenced["confusion"] == degraded["confusion"]
    assert referenced["mean"]["box_mIoU_ir"] != clean["mean"]["box_mIoU_ir"]  # inverting changed the predictions
    assert referenced["mean"]["box_mIoU"] == clean["mean"]["box_mIoU"]  # same fused images
    json.dumps(referenced, allow_nan=False)


def test_one_reference_alone_replaces_only_its_source(folders: dict[str, Path]) -> None:
    referenced = evaluate_folders(folders["deg_ir"], folders["deg_vi"], folders["fused"], progress=False,
                                  reference_ir_dir=folders["ir"])
    expected = evaluate_folders(folders["ir"], folders["deg_vi"], folders["fused"], progress=False)
    assert referenced["per_image"] == expected["per_image"]


@pytest.mark.parametrize("role", ["ir", "vi"])
def test_a_reference_missing_a_name_is_named(folders: dict[str, Path], tmp_path: Path, role: str) -> None:
    reference = tmp_path / "partial"
    shutil.copytree(folders[role], reference)
    next(reference.glob("beta.*")).unlink()
    references = {"reference_ir_dir": folders["ir"], "reference_vi_dir": folders["vi"], f"reference_{role}_dir": reference}
    with pytest.raises(DataError) as caught:
        _evaluate(folders, "deg_ir", "deg_vi", **references)
    message = str(caught.value)
    assert str(reference) in message and "beta" in message and "alpha" not in message
    assert f"--reference-{role} " in message


def test_a_reference_of_another_size_is_a_size_mismatch(folders: dict[str, Path], tmp_path: Path) -> None:
    reference = tmp_path / "resized"
    shutil.copytree(folders["ir"], reference)
    save_image(reference / f"gamma{IR_EXTENSION}", np.zeros((HEIGHT, WIDTH + 4), dtype=np.uint8))
    with pytest.raises(DataError) as caught:
        _evaluate(folders, "deg_ir", "deg_vi", reference_ir_dir=reference)
    message = str(caught.value)
    assert "size mismatch" in message and "gamma: reference infrared 36x24 vs infrared 32x24" in message


def test_an_unreadable_reference_is_named(folders: dict[str, Path], tmp_path: Path) -> None:
    reference = tmp_path / "broken"
    shutil.copytree(folders["ir"], reference)
    (reference / f"alpha{IR_EXTENSION}").write_bytes(b"garbage" * 20)
    with pytest.raises(DataError, match="alpha"):
        _evaluate(folders, "deg_ir", "deg_vi", reference_ir_dir=reference)


def test_cli_records_the_references(folders: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "scores.json"
    arguments = ["evaluate", "--ir", str(folders["deg_ir"]), "--vi", str(folders["deg_vi"]), "--fused",
                 str(folders["fused"]), "--out", str(out), "--no-progress"]
    assert main([*arguments, "--reference-ir", str(folders["ir"]), "--reference-vi", str(folders["vi"])]) == 0
    document = json.loads(out.read_text())
    assert document["inputs"]["reference_ir"] == str(folders["ir"])
    assert document["inputs"]["reference_vi"] == str(folders["vi"])
    expected = evaluate_folders(folders["ir"], folders["vi"], folders["fused"], progress=False)
    assert document["mean"] == expected["mean"]

    assert main(arguments) == 0
    document = json.loads(out.read_text())
    assert document["inputs"]["reference_ir"] is None and document["inputs"]["reference_vi"] is None
    assert document["mean"]["VIF"] != expected["mean"]["VIF"]
