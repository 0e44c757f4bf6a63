"""``uaafusion compare`` end to end: two methods evaluated by ``uaafusion evaluate``, then compared."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.metrics.evaluation_fixtures import read_gray, save_image, write_boxes, write_evaluation_folders
from uaafusion.cli import main
from uaafusion.metrics.comparison import set_miou

NAMES = tuple(f"image{index}" for index in range(6))


@pytest.fixture(scope="module")
def evaluations(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``uaafusion evaluate`` outputs (boxes and a segmenter) for the mean of the sources and for the infrared image."""
    from uaafusion.models import create_fusion_model, create_segmenter
    from uaafusion.models.checkpoint import save_models

    root = tmp_path_factory.mktemp("compare")
    folders = write_evaluation_folders(root / "data", names=NAMES, height=32, width=48)
    infrared_as_fused = root / "data" / "infrared"
    for name in NAMES:
        save_image(infrared_as_fused / f"{name}.png", read_gray(folders["ir"] / f"{name}.png"))
    boxes = write_boxes(root / "data" / "boxes", {name: [f"{index % 3} 0.5 0.5 0.5 0.6"] for index, name in enumerate(NAMES)},
                        classes=["person", "bicycle", "car"])
    torch.manual_seed(0)
    checkpoint = save_models(root / "models.pt", create_fusion_model("uaafusion", stages=1, features=4),
                             create_segmenter(num_classes=4))
    outputs = {}
    for method, fused in (("mean", folders["fused"]), ("infrared", infrared_as_fused)):
        outputs[method] = root / f"{method}.json"
        assert main(["evaluate", "--ir", str(folders["ir"]), "--vi", str(folders["vi"]), "--fused", str(fused),
                     "--boxes", str(boxes), "--segmenter", str(checkpoint), "--device", "cpu", "--no-progress",
                     "--out", str(outputs[method])]) == 0
    return outputs


def test_compares_methods_and_sources(evaluations: dict[str, Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "comparison.json"
    code = main(["compare", f"ours={evaluations['mean']}", str(evaluations["infrared"]), "--resamples", "300",
                 "--out", str(out)])
    assert code == 0
    document = json.loads(out.read_text())
    assert document["reference"] == "ours" and document["resamples"] == 300
    ours, infrared = (json.loads(evaluations[key].read_text()) for key in ("mean", "infrared"))
    against = document["against"]["infrared"]
    assert {"VIF", "Qabf", "SSIM", "ROI_SSIM", "box_mIoU"} <= set(against)
    assert against["VIF"]["estimate"] == pytest.approx(ours["mean"]["VIF"] - infrared["mean"]["VIF"])
    assert against["box_mIoU"]["estimate"] == pytest.approx(ours["mean"]["box_mIoU"] - infrared["mean"]["box_mIoU"])
    for value in against.values():
        assert value["low"] <= value["estimate"] <= value["high"] or value["low"] == value["high"]
    # The infrared image as the fused image: the segmenter sees the same pixels as on the infrared source.
    infrared_vs_source = document["sources"]["infrared"]["box_mIoU - box_mIoU_ir"]
    assert (infrared_vs_source["estimate"], infrared_vs_source["low"], infrared_vs_source["high"]) == (0.0, 0.0, 0.0)
    assert infrared_vs_source["verdict"] == "unclear"
    fused = sum(np.asarray(matrix) for matrix in ours["confusion"]["box_mIoU"].values())
    visible = sum(np.asarray(matrix) for matrix in ours["confusion"]["box_mIoU_vi"].values())
    assert document["sources"]["ours"]["box_mIoU - box_mIoU_vi"]["estimate"] == pytest.approx(
        set_miou(fused) - set_miou(visible))
    printed = capsys.readouterr().out
    assert "ours - infrared" in printed and "ours: fused - each source alone" in printed


def test_chosen_metrics_and_reference(evaluations: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "comparison.json"
    assert main(["compare", str(evaluations["mean"]), str(evaluations["infrared"]), "--reference", "infrared",
                 "--metrics", "SSIM,box_mIoU", "--resamples", "50", "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    assert document["reference"] == "infrared" and list(document["against"]["mean"]) == ["SSIM", "box_mIoU"]


def test_select_and_per_class(evaluations: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "comparison.json"
    assert main(["compare", str(evaluations["mean"]), str(evaluations["infrared"]), "--reference", "mean",
                 "--select", "image[0-2]", "--per-class", "--resamples", "50", "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    assert document["select"] == "image[0-2]"
    against = document["against"]["infrared"]
    assert against["VIF"]["images"] == 3 and against["box_mIoU"]["images"] == 3
    assert {"box_IoU/background", "box_IoU/person", "box_IoU/bicycle", "box_IoU/car"} <= set(against)
    assert "box_IoU/car - box_IoU_ir/car" in document["sources"]["mean"]
    assert main(["compare", str(evaluations["mean"]), str(evaluations["infrared"]), "--select", "nothing*"]) == 2


def test_bad_inputs_are_named(evaluations: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.json"
    assert main(["compare", str(evaluations["mean"]), str(missing)]) == 2
    assert f"{missing}: evaluation result not found" in capsys.readouterr().err
    assert main(["compare", str(evaluations["mean"]), f"mean={evaluations['infrared']}"]) == 2
    assert "method 'mean' is given twice" in capsys.readouterr().err
    assert main(["compare", str(evaluations["mean"]), str(evaluations["infrared"]), "--reference", "nope"]) == 2
    assert "--reference 'nope' is none of the methods read: mean, infrared" in capsys.readouterr().err
    assert main(["compare", str(evaluations["mean"]), str(evaluations["infrared"]), "--metrics", "nope"]) == 2
    assert "metric 'nope' cannot be compared" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert main(["compare", str(evaluations["mean"]), str(broken)]) == 2
    assert f"{broken}: cannot be read as JSON" in capsys.readouterr().err
