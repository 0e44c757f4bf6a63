"""Smoke tests on the real datasets beside the project (``../shared/datasets``); skipped when absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from uaafusion.config import DataConfig
from uaafusion.data.datasets import create_dataset

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATASETS = (REPO_ROOT / ".." / "shared" / "datasets").resolve()

pytestmark = pytest.mark.realdata


def dataset_folder(name: str) -> Path:
    folder = SHARED_DATASETS / name
    if not folder.is_dir():
        pytest.skip(f"real dataset {folder} not present")
    return folder


def test_msrs_boxes_train_reads_120_samples_with_masks_0_to_3():
    root = dataset_folder("msrs-boxes")
    config = DataConfig(layout="boxes", root=str(root), num_classes=4,
                        class_names=("background", "person", "bicycle", "car"), crop_size=96)
    dataset = create_dataset(config, "train", crop=False)
    assert len(dataset) == 120 and dataset.skipped == []
    assert sum(len(dataset.boxes(name)) for name in dataset.names) > 120
    for index in (0, len(dataset) // 2, len(dataset) - 1):
        sample = dataset[index]
        assert sample["ir"].shape == (1, 480, 640)
        assert 0 <= int(sample["label"].min()) and int(sample["label"].max()) <= 3
        assert float(sample["roi"].sum()) == float((sample["label"] > 0).sum())
    crops = create_dataset(config, "train", crop=True)
    assert crops[0]["ir"].shape == (1, 96, 96)


@pytest.mark.parametrize("name, count", [("roadscene", 221), ("tno", 25)])
def test_unlabeled_sets_read_as_pairs(name, count):
    root = dataset_folder(name)
    dataset = create_dataset(DataConfig(layout="pairs", root=str(root)), None, crop=False)
    assert len(dataset) == count
    sample = dataset[0]
    assert sample["ir"].shape[0] == 1 and sample["vi"].shape == sample["ir"].shape
    assert bool((sample["label"] == 255).all())
    assert sample["vi_crcb"].shape[0] == 2
