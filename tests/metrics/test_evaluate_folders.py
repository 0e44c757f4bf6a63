"""evaluate_folders on small folders the tests write: pairing, checks, task metrics, JSON-ready output."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.metrics.evaluation_fixtures import (
    BinningSegmenter,
    binning_prediction,
    read_gray,
    save_image,
    write_boxes,
    write_labels,
)
from uaafusion.data.boxes import boxes_to_class_mask, read_yolo_boxes
from uaafusion.errors import ConfigError, DataError
from uaafusion.metrics.classes import read_box_class_names
from uaafusion.metrics.evaluate import evaluate_folders, format_table
from uaafusion.metrics.fusion import METRIC_NAMES, fusion_metrics
from uaafusion.metrics.segmentation import ConfusionMatrix

NAMES = ("alpha", "beta", "gamma")


def _evaluate(folders: dict[str, Path], **kwargs: object) -> dict:
    return evaluate_folders(folders["ir"], folders["vi"], folders["fused"], progress=False, **kwargs)


def test_pairs_by_stem_and_scores_gray_images(evaluation_folders: dict[str, Path]) -> None:
    results = _evaluate(evaluation_folders)
    assert results["count"] == 3
    assert sorted(results["per_image"]) == list(NAMES)
    assert list(results["mean"]) == list(METRIC_NAMES)
    for name in NAMES:
        expected = fusion_metrics(
            read_gray(evaluation_folders["fused"] / f"{name}.tif"),
            read_gray(evaluation_folders["ir"] / f"{name}.png"),
            read_gray(evaluation_folders["vi"] / f"{name}.bmp"),
        )
        assert results["per_image"][name] == pytest.approx(expected)
    for key in METRIC_NAMES:
        assert results["mean"][key] == pytest.approx(np.mean([results["per_image"][name][key] for name in NAMES]))
    json.dumps(results, allow_nan=False)


def test_extra_fused_images_are_ignored(evaluation_folders: dict[str, Path]) -> None:
    save_image(evaluation_folders["fused"] / "stray.png", np.zeros((24, 32), dtype=np.uint8))
    assert _evaluate(evaluation_folders)["count"] == 3


def test_select_scores_only_the_matching_pairs(evaluation_folders: dict[str, Path]) -> None:
    everything = _evaluate(evaluation_folders)
    (evaluation_folders["fused"] / "alpha.tif").unlink()  # not selected: its missing fused image is no error
    selected = _evaluate(evaluation_folders, select="[bg]*")  # beta, gamma
    assert selected["count"] == 2
    assert sorted(selected["per_image"]) == ["beta", "gamma"]
    for name in ("beta", "gamma"):
        assert selected["per_image"][name] == pytest.approx(everything["per_image"][name])
    for key in METRIC_NAMES:
        assert selected["mean"][key] == pytest.approx(
            np.mean([everything["per_image"][name][key] for name in ("beta", "gamma")]))


def test_select_without_a_match_names_the_pattern(evaluation_folders: dict[str, Path]) -> None:
    with pytest.raises(DataError) as caught:
        _evaluate(evaluation_folders, select="*N")
    message = str(caught.value)
    assert "'*N'" in message and str(evaluation_folders["ir"]) in message and "alpha" in message


def test_missing_fused_images_are_all_listed(evaluation_folders: dict[str, Path]) -> None:
    (evaluation_folders["fused"] / "alpha.tif").unlink()
    (evaluation_folders["fused"] / "gamma.tif").unlink()
    with pytest.raises(DataError) as caught:
        _evaluate(evaluation_folders)
    message = str(caught.value)
    assert "alpha" in message and "gamma" in message and "beta" not in message
    assert "2 pair(s)" in message and "What to do" in message


def test_size_mismatches_are_all_listed_with_sizes(evaluation_folders: dict[str, Path]) -> None:
    save_image(evaluation_folders["fused"] / "alpha.tif", np.zeros((20, 30), dtype=np.uint8))
    save_image(evaluation_folders["vi"] / "beta.bmp", np.zeros((24, 31, 3), dtype=np.uint8))
    with pytest.raises(DataError) as caught:
        _evaluate(evaluation_folders)
    message = str(caught.value)
    assert "alpha: fused 30x20 vs infrared 32x24" in message
    assert "beta: infrared 32x24 vs visible 31x24" in message
    assert "gamma" not in message


def test_labels_out_of_range_name_the_file(evaluation_folders: dict[str, Path], tmp_path: Path) -> None:
    labels = {name: np.zeros((24, 32), dtype=np.uint8) for name in NAMES}
    labels["beta"][3, 3] = 7
    labels["gamma"][0, 0] = 255  # ignore index: fine
    labels_dir = write_labels(tmp_path / "labels", labels)
    with pytest.raises(DataError, match=r"beta\.png: class ids \[7\] outside 0\.\.1"):
        _evaluate(evaluation_folders, labels_dir=labels_dir, segmenter=BinningSegmenter(2))


def test_missing_label_is_reported(evaluation_folders: dict[str, Path], tmp_path: Path) -> None:
    labels_dir = write_labels(tmp_path / "labels", {"alpha": np.zeros((24, 32)), "beta": np.zeros((24, 32))})
    with pytest.raises(DataError, match="no label image .* gamma"):
        _evaluate(evaluation_folders, labels_dir=labels_dir, num_classes=2)


def test_segmentation_metrics_on_fused_and_sources(evaluation_folders: dict[str, Path], tmp_path: Path) -> None:
    labels = {}
    expected = {suffix: ConfusionMatrix(2) for suffix in ("", "_ir", "_vi")}
    for index, name in enumerate(NAMES):
        fused = read_gray(evaluation_folders["fused"] / f"{name}.tif")
        label = binning_prediction(fused, 2).astype(np.uint8)
        label[index, :] = 1 - label[index, :]  # one wrong row per image
        label[-1, :] = 255  # ignored row
        labels[name] = label
        for suffix, path in (("", evaluation_folders["fused"] / f"{name}.tif"),
                             ("_ir", evaluation_folders["ir"] / f"{name}.png"),
                             ("_vi", evaluation_folders["vi"] / f"{name}.bmp")):
            expected[suffix].update(binning_prediction(read_gray(path), 2), label)
    labels_dir = write_labels(tmp_path / "labels", labels)
    segmenter = BinningSegmenter(2).train()
    results = _evaluate(evaluation_folders, labels_dir=labels_dir, segmenter=segmenter, class_names=["cold", "hot"])
    assert segmenter.training  # mode restored
    mean = results["mean"]
    for suffix, matrix in expected.items():
        assert mean[f"mIoU{suffix}"] == pytest.approx(matrix.miou())
        assert mean[f"pixel_accuracy{suffix}"] == pytest.approx(matrix.pixel_accuracy())
        assert mean[f"IoU{suffix}/cold"] == pytest.approx(matrix.per_class_iou()[0])
        assert mean[f"IoU{suffix}/hot"] == pytest.approx(matrix.per_class_iou()[1])
    assert 0 < mean["mIoU"] < 1
    # one wrong row out of 23 counted ones in every image
    assert mean["pixel_accuracy"] == pytest.approx(1 - 32 / (23 * 32))
    assert all(0 < results["per_image"][name]["mIoU"] < 1 for name in NAMES)
    assert "box_mIoU" not in mean and "ROI_SSIM" not in mean
    for suffix, matrix in expected.items():
        matrices = results["confusion"][f"mIoU{suffix}"]
        assert sorted(matrices) == sorted(NAMES)
        assert np.array_equal(sum(np.asarray(matrices[name]) for name in NAMES), matrix.matrix)
    json.dumps(results, allow_nan=False)


def test_boxes_give_roi_ssim_and_box_iou(evaluation_folders: dict[str, Path], tmp_path: Path) -> None:
    boxes_dir = write_boxes(
        tmp_path / "boxes",
        {"alpha": ["0 0.5 0.5 0.5 0.5"], "beta": ["2 0.25 0.5 0.5 1.0", "1 0.75 0.5 0.2 0.2"], "gamma": []},
        classes=["person", "bicycle", "car"],
    )
    results = _evaluate(evaluation_folders, boxes_dir=boxes_dir, segmenter=BinningSegmenter(4))
    per_image, mean = results["per_image"], results["mean"]
    assert results["roi_count"] == 2
    assert per_image["gamma"]["ROI_SSIM"] is None  # no boxes
    for name in ("alpha", "beta"):
        values = per_image[name]
        assert values["ROI_SSIM"] == pytest.approx(values["ROI_SSIM_ir"] + values["ROI_SSIM_vi"])
    assert mean["ROI_SSIM"] == pytest.approx(np.mean([per_image["alpha"]["ROI_SSIM"], per_image["beta"]["ROI_SSIM"]]))
    expected = ConfusionMatrix(4)
    for name in NAMES:
        box_mask = boxes_to_class_mask(read_yolo_boxes(boxes_dir / f"{name}.txt", 24, 32, 3), 24, 32)
        expected.update(binning_prediction(read_gray(evaluation_folders["fused"] / f"{name}.tif"), 4), box_mask)
    assert mean["box_mIoU"] == pytest.approx(expected.miou())
    assert mean["box_pixel_accuracy"] == pytest.approx(expected.pixel_accuracy())
    # The per-image confusion matrices add up to each set-level value (what a comparison resamples).
    confusion = results["confusion"]
    assert set(confusion) == {"box_mIoU", "box_mIoU_ir", "box_mIoU_vi"}
    assert np.array_equal(sum(np.asarray(confusion["box_mIoU"][name]) for name in NAMES), expected.matrix)
    for key in ("box_mIoU_ir", "box_mIoU_vi"):
        summed = ConfusionMatrix(4)
        summed.matrix = sum(np.asarray(confusion[key][name], dtype=np.int64) for name in NAMES)
        assert mean[key] == pytest.approx(summed.miou())
    assert {"box_IoU/background", "box_IoU/person", "box_IoU/bicycle", "box_IoU/car", "box_mIoU_ir", "box_mIoU_vi"} <= set(mean)
    assert "mIoU" not in mean
    json.dumps(results, allow_nan=False)


def test_box_class_out_of_range_is_reported(evaluation_folders: dict[str, Path], tmp_path: Path) -> None:
    boxes_dir = write_boxes(tmp_path / "boxes", {"alpha": ["5 0.5 0.5 0.1 0.1"], "beta": [], "gamma": []})
    with pytest.raises(DataError, match=r"alpha\.txt:1: box class 5 is out of range 0\.\.2"):
        _evaluate(evaluation_folders, boxes_dir=boxes_dir)


def test_classes_file_lookup(tmp_path: Path) -> None:
    boxes_dir = tmp_path / "dataset" / "test" / "boxes"
    boxes_dir.mkdir(parents=True)
    assert read_box_class_names(boxes_dir) is None
    (tmp_path / "dataset" / "classes.txt").write_text("0 person\n1 bicycle\n\n2 car\n")
    assert read_box_class_names(boxes_dir) == ["person", "bicycle", "car"]
    (boxes_dir / "classes.txt").write_text("dog\ncat\n")
    assert read_box_class_names(boxes_dir) == ["dog", "cat"]


def test_inconsistent_classes_are_config_errors(evaluation_folders: dict[str, Path], tmp_path: Path) -> None:
    labels_dir = write_labels(tmp_path / "labels", {name: np.zeros((24, 32)) for name in NAMES})
    with pytest.raises(ConfigError, match="predicts 3 classes but num_classes is 2"):
        _evaluate(evaluation_folders, labels_dir=labels_dir, segmenter=BinningSegmenter(3), num_classes=2)
    with pytest.raises(ConfigError, match="2 class names given"):
        _evaluate(evaluation_folders, labels_dir=labels_dir, segmenter=BinningSegmenter(3), class_names=["a", "b"])


def test_format_table_lists_the_means(evaluation_folders: dict[str, Path]) -> None:
    results = _evaluate(evaluation_folders)
    table = format_table(results)
    for key in METRIC_NAMES:
        assert key in table
    assert "3 image(s)" in table
    assert f"{results['mean']['Qabf']:.4f}" in table
    results["mean"]["Qabf"] = None
    assert "n/a" in format_table(results)
    assert not math.isnan(results["mean"]["EN"])


def test_same_results_without_keeping_decoded_images(
    evaluation_folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = _evaluate(evaluation_folders)
    monkeypatch.setattr("uaafusion.metrics.evaluate.KEEP_DECODED_BYTES", 0)
    assert _evaluate(evaluation_folders) == kept


def test_unreadable_and_missing_box_files_are_listed_together(
    evaluation_folders: dict[str, Path], tmp_path: Path
) -> None:
    (evaluation_folders["fused"] / "beta.tif").write_bytes(b"not an image")
    boxes_dir = write_boxes(tmp_path / "boxes", {"alpha": [], "beta": []})
    with pytest.raises(DataError) as caught:
        _evaluate(evaluation_folders, boxes_dir=boxes_dir)
    message = str(caught.value)
    assert "beta.tif: cannot be read" in message
    assert "gamma" in message and "box file" in message
