"""Bad input: every case raises a DataError naming the file(s), or is listed in skip mode."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
from PIL import Image

from uaafusion.data.datasets import create_dataset
from uaafusion.errors import DataError


def truncate(path, keep_fraction: float = 0.5) -> None:
    """Cut a valid image file to a fraction of its bytes."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])


def test_missing_visible_partner_names_the_file(make_dataset, config_for):
    written = make_dataset("msrs", count=3)
    (written.folder("vi") / "pair_01.png").unlink()
    with pytest.raises(DataError) as error:
        create_dataset(config_for(written.root), "train", crop=False)
    message = str(error.value)
    assert str(written.folder("ir") / "pair_01.png") in message
    assert "no visible partner" in message and "on_bad_input: skip" in message


def test_missing_infrared_partner_names_the_file(make_dataset, config_for):
    written = make_dataset("pairs", count=2)
    (written.folder("ir") / "pair_00.png").unlink()
    with pytest.raises(DataError, match=re.escape(str(written.folder("vi") / "pair_00.png"))):
        create_dataset(config_for(written.root, "pairs"), "train", crop=False)


def test_size_mismatch_names_both_files(make_dataset, config_for):
    written = make_dataset("pairs", count=2, size=(20, 30))
    Image.fromarray(np.zeros((21, 30), dtype=np.uint8)).save(written.folder("vi") / "pair_01.png")
    with pytest.raises(DataError) as error:
        create_dataset(config_for(written.root, "pairs"), "train", crop=False)
    message = str(error.value)
    assert str(written.folder("ir") / "pair_01.png") in message
    assert str(written.folder("vi") / "pair_01.png") in message
    assert "same size" in message


def test_label_size_mismatch_names_the_label(make_dataset, config_for):
    written = make_dataset("msrs", count=2, size=(20, 30))
    label_path = written.folder("label") / "pair_00.png"
    Image.fromarray(np.zeros((20, 31), dtype=np.uint8)).save(label_path)
    with pytest.raises(DataError, match=re.escape(str(label_path)) + ".*size of their image pair"):
        create_dataset(config_for(written.root), "train", crop=False)


@pytest.mark.parametrize("role", ["ir", "vi", "label"])
def test_truncated_png_is_caught_at_creation(make_dataset, config_for, role):
    written = make_dataset("msrs", count=2)
    path = written.folder(role) / "pair_01.png"
    truncate(path)
    with pytest.raises(DataError, match=re.escape(str(path)) + ".*(truncated|cannot be read)"):
        create_dataset(config_for(written.root), "train", crop=False)


def test_truncated_jpeg_is_caught_at_creation(make_dataset, config_for):
    written = make_dataset("pairs", count=2, size=(64, 64), vi_ext=".jpg")
    path = written.folder("vi") / "pair_00.jpg"
    truncate(path, 0.6)
    with pytest.raises(DataError, match=re.escape(str(path))):
        create_dataset(config_for(written.root, "pairs"), "train", crop=False)


def test_not_an_image_names_the_file(make_dataset, config_for):
    written = make_dataset("pairs", count=2)
    path = written.folder("ir") / "pair_00.png"
    path.write_text("this is not a PNG")
    with pytest.raises(DataError, match=re.escape(str(path)) + ".*cannot be read as an image"):
        create_dataset(config_for(written.root, "pairs"), "train", crop=False)


def test_corrupt_data_with_intact_header_fails_at_load_naming_the_file(make_dataset, config_for):
    """A PNG whose header and end are intact but whose pixel data is garbage decodes only at load time."""
    written = make_dataset("pairs", count=1, size=(40, 50))
    path = written.folder("ir") / "pair_00.png"
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 40] = bytes(value ^ 0xFF for value in data[middle:middle + 40])
    path.write_bytes(bytes(data))
    dataset = create_dataset(config_for(written.root, "pairs"), "train", crop=False)
    with pytest.raises(DataError, match=re.escape(str(path))):
        dataset[0]


def test_image_changed_after_creation_fails_at_load(make_dataset, config_for):
    written = make_dataset("pairs", count=1, size=(20, 30))
    dataset = create_dataset(config_for(written.root, "pairs"), "train", crop=False)
    path = written.folder("vi") / "pair_00.png"
    Image.fromarray(np.zeros((22, 30, 3), dtype=np.uint8)).save(path)
    with pytest.raises(DataError, match=re.escape(str(path)) + ".*recreate the dataset"):
        dataset[0]


def test_label_id_out_of_range_names_the_label_and_ids(make_dataset, config_for):
    written = make_dataset("fmb", count=2, num_classes=3)
    label_path = written.folder("label") / "pair_01.png"
    label = written.labels["pair_01"].copy()
    label[0, 0], label[1, 1] = 7, 3
    Image.fromarray(label).save(label_path)
    with pytest.raises(DataError) as error:
        create_dataset(config_for(written.root, "fmb", num_classes=3), "train", crop=False)
    message = str(error.value)
    assert str(label_path) in message
    assert "label ids 3, 7 are out of range" in message and "0..2" in message


def test_ignore_index_in_labels_is_allowed(make_dataset, config_for):
    written = make_dataset("msrs", count=1, num_classes=3)
    label = written.labels["pair_00"].copy()
    label[:2] = 255
    Image.fromarray(label).save(written.folder("label") / "pair_00.png")
    sample = create_dataset(config_for(written.root, num_classes=3, ignore_index=255), "train", crop=False)[0]
    assert bool((sample["label"][:2] == 255).all())


def test_missing_label_names_the_pair(make_dataset, config_for):
    written = make_dataset("msrs", count=2)
    (written.folder("label") / "pair_00.png").unlink()
    with pytest.raises(DataError, match="no label named 'pair_00'"):
        create_dataset(config_for(written.root), "train", crop=False)


def test_label_without_images_is_reported(make_dataset, config_for):
    written = make_dataset("msrs", count=2)
    orphan = written.folder("label") / "extra.png"
    Image.fromarray(np.zeros((24, 32), dtype=np.uint8)).save(orphan)
    with pytest.raises(DataError, match=re.escape(str(orphan)) + ".*label without image pair"):
        create_dataset(config_for(written.root), "train", crop=False)


def test_missing_box_file_names_it(make_dataset, config_for):
    written = make_dataset("boxes", count=2, num_classes=4)
    (written.folder("label") / "pair_01.txt").unlink()
    with pytest.raises(DataError, match=r"pair_01\.txt"):
        create_dataset(config_for(written.root, "boxes", num_classes=4), "train", crop=False)


def test_box_class_out_of_range_names_the_file_and_line(make_dataset, config_for):
    written = make_dataset("boxes", count=2, num_classes=4)
    box_path = written.folder("label") / "pair_00.txt"
    box_path.write_text("0 0.5 0.5 0.1 0.1\n3 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DataError, match=re.escape(f"{box_path}:2") + ".*box class 3 is out of range 0..2"):
        create_dataset(config_for(written.root, "boxes", num_classes=4), "train", crop=False)


def test_empty_box_file_means_no_boxes(make_dataset, config_for):
    written = make_dataset("boxes", count=1, num_classes=4)
    (written.folder("label") / "pair_00.txt").write_text("")
    sample = create_dataset(config_for(written.root, "boxes", num_classes=4), "train", crop=False)[0]
    assert int(sample["label"].max()) == 0 and float(sample["roi"].sum()) == 0.0


@pytest.mark.parametrize("role", ["ir", "vi", "label"])
def test_empty_folder_names_it(make_dataset, config_for, role):
    written = make_dataset("msrs", count=2)
    folder = written.folder(role)
    for path in folder.iterdir():
        path.unlink()
    with pytest.raises(DataError, match=re.escape(str(folder)) + ".*holds no images"):
        create_dataset(config_for(written.root), "train", crop=False)


def test_missing_folder_names_it_and_lists_what_is_there(make_dataset, config_for):
    written = make_dataset("msrs", count=1)
    with pytest.raises(DataError, match=re.escape(str(written.split_dir / "Infrared")) + ".*folders in"):
        create_dataset(config_for(written.root, "fmb"), "train", crop=False)


def test_msrs_without_label_folder_suggests_pairs_layout(make_dataset, config_for):
    written = make_dataset("pairs", count=1)
    with pytest.raises(DataError, match="Segmentation_labels.*data.layout: pairs"):
        create_dataset(config_for(written.root, "msrs"), "train", crop=False)


def test_missing_split_and_missing_root(make_dataset, config_for, tmp_path):
    written = make_dataset("msrs", count=1)
    with pytest.raises(DataError, match=re.escape(str(written.root / "validation")) + ".*split folder not found"):
        create_dataset(config_for(written.root), "validation", crop=False)
    with pytest.raises(DataError, match="dataset folder not found"):
        create_dataset(config_for(tmp_path / "nowhere"), "train", crop=False)


def test_empty_box_folder(make_dataset, config_for):
    written = make_dataset("boxes", count=1, num_classes=4)
    for path in written.folder("label").iterdir():
        path.unlink()
    with pytest.raises(DataError, match="holds no .txt files"):
        create_dataset(config_for(written.root, "boxes", num_classes=4), "train", crop=False)


def test_skip_mode_leaves_bad_samples_out_and_lists_them(make_dataset, config_for, caplog):
    written = make_dataset("msrs", count=6, size=(20, 30), num_classes=3)
    (written.folder("vi") / "pair_00.png").unlink()  # missing partner
    Image.fromarray(np.zeros((21, 30), dtype=np.uint8)).save(written.folder("ir") / "pair_01.png")  # size
    truncate(written.folder("vi") / "pair_02.png")  # truncated
    bad_label = written.labels["pair_03"].copy()
    bad_label[5, 5] = 9
    Image.fromarray(bad_label).save(written.folder("label") / "pair_03.png")  # label id out of range
    config = config_for(written.root, num_classes=3, on_bad_input="skip")
    with caplog.at_level(logging.WARNING):
        dataset = create_dataset(config, "train", crop=False)
    assert dataset.names == ["pair_04", "pair_05"]
    skipped = dict(dataset.skipped)
    assert sorted(skipped) == ["pair_00", "pair_01", "pair_02", "pair_03"]
    assert "no visible partner" in skipped["pair_00"]
    assert "same size" in skipped["pair_01"]
    assert str(written.folder("vi") / "pair_02.png") in skipped["pair_02"]
    assert "out of range" in skipped["pair_03"]
    assert "skipping 4 bad sample(s)" in caplog.text
    assert dataset[0]["name"] == "pair_04"


def test_skip_mode_with_nothing_left_is_an_error(make_dataset, config_for):
    written = make_dataset("pairs", count=2)
    for name in ("pair_00", "pair_01"):
        truncate(written.folder("ir") / f"{name}.png")
    with pytest.raises(DataError, match="no usable samples left"):
        create_dataset(config_for(written.root, "pairs", on_bad_input="skip"), "train", crop=False)


def test_strict_mode_lists_every_bad_file(make_dataset, config_for):
    written = make_dataset("pairs", count=4)
    for name in ("pair_01", "pair_03"):
        truncate(written.folder("ir") / f"{name}.png")
    with pytest.raises(DataError, match="2 bad sample") as error:
        create_dataset(config_for(written.root, "pairs"), "train", crop=False)
    assert "pair_01.png" in str(error.value) and "pair_03.png" in str(error.value)
