"""The synthetic dataset: deterministic bytes, msrs layout, class balance, day/night appearance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from uaafusion.config import DataConfig, SyntheticConfig
from uaafusion.data.datasets import create_dataset
from uaafusion.data.synthetic import (
    BICYCLE,
    CAR,
    CLASS_NAMES,
    PERSON,
    ROAD,
    generate_scene,
    write_synthetic_dataset,
)

SMALL = SyntheticConfig(train=6, test=3, height=48, width=64, seed=5)


def all_files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def default_set(tmp_path_factory) -> tuple[Path, dict]:
    """The default synthetic set (params.yaml's sizes), written once for this module."""
    root = tmp_path_factory.mktemp("synthetic_default")
    return root, write_synthetic_dataset(SyntheticConfig(), root)


def test_same_config_writes_identical_bytes(tmp_path):
    write_synthetic_dataset(SMALL, tmp_path / "a")
    write_synthetic_dataset(SMALL, tmp_path / "b")
    first, second = all_files(tmp_path / "a"), all_files(tmp_path / "b")
    assert len(first) == 3 * (6 + 3) + 2
    assert first == second


def test_other_seed_gives_other_scenes():
    one = generate_scene(SMALL, "train", 0)
    other = generate_scene(SyntheticConfig(train=6, test=3, height=48, width=64, seed=6), "train", 0)
    assert not np.array_equal(one.vi, other.vi)
    assert not np.array_equal(generate_scene(SMALL, "train", 0).vi, generate_scene(SMALL, "test", 0).vi)


def test_layout_names_and_manifest(tmp_path):
    manifest = write_synthetic_dataset(SMALL, tmp_path)
    for split, count in (("train", 6), ("test", 3)):
        names = sorted(path.stem for path in (tmp_path / split / "ir").glob("*.png"))
        assert len(names) == count
        assert {"day_0000", "night_0001"} <= set(names)
        for folder in ("vi", "Label"):
            assert sorted(path.stem for path in (tmp_path / split / folder).glob("*.png")) == names
    with Image.open(tmp_path / "train" / "ir" / "day_0000.png") as image:
        assert image.mode == "L" and image.size == (64, 48)
    with Image.open(tmp_path / "train" / "vi" / "day_0000.png") as image:
        assert image.mode == "RGB" and image.size == (64, 48)
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["class_names"] == list(CLASS_NAMES)
    assert manifest["seed"] == 5 and (manifest["height"], manifest["width"]) == (48, 64)
    assert manifest["splits"]["train"]["count"] == 6 and manifest["splits"]["train"]["night"] == 3
    fractions = manifest["splits"]["train"]["class_pixel_fractions"]
    assert set(fractions) == set(CLASS_NAMES) and abs(sum(fractions.values()) - 1.0) < 1e-4
    with Image.open(tmp_path / "montage.png") as montage:
        assert montage.mode == "RGB" and montage.width > 3 * 64


def test_rewriting_removes_stale_files(tmp_path):
    write_synthetic_dataset(SyntheticConfig(train=4, test=2, height=32, width=32), tmp_path)
    write_synthetic_dataset(SyntheticConfig(train=2, test=1, height=32, width=32), tmp_path)
    assert len(list((tmp_path / "train" / "ir").glob("*.png"))) == 2
    assert len(list((tmp_path / "test" / "Label").glob("*.png"))) == 1


def test_default_set_reads_as_msrs_with_valid_labels(default_set):
    root, manifest = default_set
    config = DataConfig(layout="msrs", root=str(root), crop_size=96)
    train = create_dataset(config, "train", crop=True)
    test = create_dataset(config, "test", crop=False)
    assert len(train) == 48 and len(test) == 12
    sample = train[0]
    assert sample["ir"].shape == (1, 96, 96) and int(sample["label"].max()) < 5
    assert manifest["splits"]["train"]["night"] == 24 and manifest["splits"]["test"]["night"] == 6


def test_every_foreground_class_is_in_a_good_share_of_train_images(default_set):
    root, manifest = default_set
    shares = manifest["splits"]["train"]["class_image_fractions"]
    for name in ("road", "person", "car", "bicycle"):
        assert shares[name] >= 0.25, (name, shares)
    # the manifest agrees with the label files
    labels = [np.asarray(Image.open(path)) for path in sorted((root / "train" / "Label").glob("*.png"))]
    for class_id in (ROAD, PERSON, CAR, BICYCLE):
        present = np.mean([bool((label == class_id).any()) for label in labels])
        assert present == pytest.approx(shares[CLASS_NAMES[class_id]])


def test_infrared_shows_people_day_and_night_while_visible_goes_dark(default_set):
    root, _ = default_set
    stats: dict[str, list[float]] = {"day_vi": [], "night_vi": [], "person_contrast": []}
    for label_path in sorted((root / "train" / "Label").glob("*.png")):
        label = np.asarray(Image.open(label_path))
        ir = np.asarray(Image.open(root / "train" / "ir" / label_path.name), dtype=np.float64)
        vi = np.asarray(Image.open(root / "train" / "vi" / label_path.name), dtype=np.float64)
        stats["night_vi" if label_path.stem.startswith("night") else "day_vi"].append(vi.mean())
        person = label == PERSON
        if person.sum() >= 20:
            stats["person_contrast"].append(ir[person].mean() - ir[label == ROAD].mean())
    assert np.mean(stats["night_vi"]) < 0.5 * np.mean(stats["day_vi"])
    assert len(stats["person_contrast"]) >= 10
    assert min(stats["person_contrast"]) > 30  # people are much warmer than the road, day or night
