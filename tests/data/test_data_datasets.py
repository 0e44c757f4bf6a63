"""Dataset readers: every layout, colour/gray inputs, odd sizes, crops, padding, batching."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from uaafusion.data.boxes import Box
from uaafusion.data.datasets import GRAY_CHROMA, collate_samples, create_dataset, sample_chroma
from uaafusion.data.io import rgb_to_ycrcb, to_gray_uint8
from uaafusion.errors import DataError

SAMPLE_KEYS = {"name", "ir", "vi", "vi_crcb", "label", "roi", "crop"}


def expected_luma(rgb: np.ndarray) -> torch.Tensor:
    """Float luma ``(1, H, W)`` of an RGB array, the way the reader computes it."""
    tensor = torch.from_numpy(rgb).float().div(255).permute(2, 0, 1)
    return rgb_to_ycrcb(tensor)[:1]


def check_sample_types(sample: dict, height: int, width: int) -> None:
    assert set(sample) == SAMPLE_KEYS
    assert isinstance(sample["name"], str)
    for key, channels in (("ir", 1), ("vi", 1), ("vi_crcb", 2), ("roi", 1)):
        assert sample[key].shape == (channels, height, width), key
        assert sample[key].dtype == torch.float32, key
    assert sample["label"].shape == (height, width)
    assert sample["label"].dtype == torch.int64
    assert sample["crop"].dtype == torch.int64 and sample["crop"].shape == (4,)
    assert 0.0 <= float(sample["ir"].min()) and float(sample["ir"].max()) <= 1.0


@pytest.mark.parametrize("label_dir", ["Label", "Segmentation_labels"])
def test_msrs_reads_pairs_and_labels(make_dataset, config_for, label_dir):
    written = make_dataset("msrs", count=3, size=(24, 32), label_dir=label_dir)
    dataset = create_dataset(config_for(written.root, "msrs"), "train", crop=False)
    assert len(dataset) == 3
    assert dataset.names == sorted(written.ir)
    assert dataset.skipped == []
    sample = dataset[1]
    check_sample_types(sample, 24, 32)
    name = sample["name"]
    torch.testing.assert_close(sample["ir"][0], torch.from_numpy(written.ir[name]).float() / 255)
    torch.testing.assert_close(sample["vi"], expected_luma(written.vi[name]))
    assert torch.equal(sample["label"], torch.from_numpy(written.labels[name].astype(np.int64)))
    assert torch.equal(sample["roi"], torch.zeros(1, 24, 32))
    assert sample["crop"].tolist() == [0, 0, 24, 32]
    assert dataset.boxes(name) == [] and not dataset.has_boxes


def test_fmb_layout(make_dataset, config_for):
    written = make_dataset("fmb", count=2, size=(20, 22))
    dataset = create_dataset(config_for(written.root, "fmb"), "train", crop=False)
    assert len(dataset) == 2
    sample = dataset[0]
    check_sample_types(sample, 20, 22)
    assert torch.equal(sample["label"], torch.from_numpy(written.labels[sample["name"]].astype(np.int64)))


def test_boxes_layout_gives_class_mask_roi_and_boxes(make_dataset, config_for):
    written = make_dataset("boxes", count=3, size=(40, 60), num_classes=4)
    dataset = create_dataset(config_for(written.root, "boxes", num_classes=4), "train", crop=False)
    assert dataset.has_boxes
    sample = dataset[2]  # lines: "2 0.5 0.5 0.5 0.5" (big box) and "0 0.25 0.25 0.2 0.2"
    check_sample_types(sample, 40, 60)
    boxes = dataset.boxes(sample["name"])
    assert boxes == [Box(2, 15, 10, 45, 30), Box(0, 9, 6, 21, 14)]
    label = sample["label"]
    assert int(label[20, 30]) == 3  # box class 2 -> label 3
    assert int(label[8, 12]) == 1  # box class 0 -> label 1
    assert int(label[0, 0]) == 0 and int(label[39, 59]) == 0
    assert int(label[12, 18]) == 1  # overlap of both boxes: the smaller one wins
    roi = sample["roi"][0]
    assert float(roi[20, 30]) == 1.0 and float(roi[8, 12]) == 1.0 and float(roi[0, 0]) == 0.0
    assert float(roi.sum()) == float((label > 0).sum())


@pytest.mark.parametrize("split", ["train", None])
def test_pairs_layout_is_unlabeled(make_dataset, config_for, split):
    written = make_dataset("pairs", count=2, size=(15, 17), split=split)
    dataset = create_dataset(config_for(written.root, "pairs", ignore_index=255), split, crop=False)
    assert len(dataset) == 2
    sample = dataset[0]
    check_sample_types(sample, 15, 17)
    assert bool((sample["label"] == 255).all())


def test_pairs_layout_falls_back_to_root_when_split_folder_is_absent(make_dataset, config_for):
    written = make_dataset("pairs", count=2, split=None)
    dataset = create_dataset(config_for(written.root, "pairs"), "test", crop=False)
    assert len(dataset) == 2


def test_color_infrared_becomes_luma_and_gray_visible_has_neutral_chroma(make_dataset, config_for):
    written = make_dataset("pairs", count=1, size=(12, 14), ir_color=True, vi_color=False)
    sample = create_dataset(config_for(written.root, "pairs"), "train", crop=False)[0]
    name = sample["name"]
    expected_ir = torch.from_numpy(to_gray_uint8(written.ir[name])).float() / 255
    torch.testing.assert_close(sample["ir"][0], expected_ir)
    torch.testing.assert_close(sample["vi"][0], torch.from_numpy(written.vi[name]).float() / 255)
    assert bool((sample["vi_crcb"] == 0.5).all())


def test_gray_stored_as_rgb_counts_as_gray(tmp_path, config_for):
    """TNO stores gray images as RGB with equal channels: chroma is neutral, luma the gray value."""
    gray = np.random.default_rng(1).integers(0, 256, size=(10, 11), dtype=np.uint8)
    for folder in ("ir", "vi"):
        (tmp_path / "tno" / folder).mkdir(parents=True)
        Image.fromarray(np.stack([gray] * 3, axis=-1)).save(tmp_path / "tno" / folder / "a.png")
    sample = create_dataset(config_for(tmp_path / "tno", "pairs"), None, crop=False)[0]
    torch.testing.assert_close(sample["ir"][0], torch.from_numpy(gray).float() / 255)
    torch.testing.assert_close(sample["vi"][0], torch.from_numpy(gray).float() / 255)
    assert bool((sample["vi_crcb"] == 0.5).all())


def test_visible_color_chroma_matches_ycrcb(make_dataset, config_for):
    written = make_dataset("pairs", count=1, size=(9, 13))
    sample = create_dataset(config_for(written.root, "pairs"), "train", crop=False)[0]
    rgb = torch.from_numpy(written.vi[sample["name"]]).float().div(255).permute(2, 0, 1)
    torch.testing.assert_close(sample["vi_crcb"], rgb_to_ycrcb(rgb)[1:])


def test_pairs_match_by_stem_with_different_extensions(make_dataset, config_for):
    written = make_dataset("pairs", count=2, vi_ext=".jpg")
    dataset = create_dataset(config_for(written.root, "pairs"), "train", crop=False)
    assert dataset.names == ["pair_00", "pair_01"]
    assert dataset.records[0].vi_path.suffix == ".jpg"


def test_odd_size_whole_images(make_dataset, config_for):
    written = make_dataset("msrs", count=2, size=(37, 53))
    dataset = create_dataset(config_for(written.root, "msrs", crop_size=16), "train", crop=False)
    sample = dataset[0]
    check_sample_types(sample, 37, 53)
    assert sample["crop"].tolist() == [0, 0, 37, 53]


def test_crop_true_with_crop_size_zero_gives_whole_images(make_dataset, config_for):
    written = make_dataset("msrs", count=1, size=(37, 53))
    sample = create_dataset(config_for(written.root, "msrs", crop_size=0), "train", crop=True)[0]
    check_sample_types(sample, 37, 53)


def test_crops_smaller_than_the_image_match_their_box(make_dataset, config_for):
    written = make_dataset("msrs", count=3, size=(37, 53))
    dataset = create_dataset(config_for(written.root, "msrs", crop_size=16), "train", crop=True, seed=3)
    full = create_dataset(config_for(written.root, "msrs", crop_size=16), "train", crop=False)
    for index in range(len(dataset)):
        sample, whole = dataset[index], full[index]
        check_sample_types(sample, 16, 16)
        top, left, height, width = sample["crop"].tolist()
        assert (height, width) == (16, 16)
        assert 0 <= top <= 37 - 16 and 0 <= left <= 53 - 16
        for key in ("ir", "vi", "vi_crcb", "roi"):
            assert torch.equal(sample[key], whole[key][:, top:top + 16, left:left + 16]), key
        assert torch.equal(sample["label"], whole["label"][top:top + 16, left:left + 16])


def test_crops_larger_than_the_image_are_padded(make_dataset, config_for):
    written = make_dataset("boxes", count=1, size=(37, 53), num_classes=4)
    config = config_for(written.root, "boxes", crop_size=64, num_classes=4, ignore_index=255)
    sample = create_dataset(config, "train", crop=True)[0]
    whole = create_dataset(config, "train", crop=False)[0]
    check_sample_types(sample, 64, 64)
    assert sample["crop"].tolist() == [0, 0, 37, 53]
    assert torch.equal(sample["ir"][:, :37, :53], whole["ir"])
    assert torch.equal(sample["label"][:37, :53], whole["label"])
    # Reflect padding at the bottom/right: row 37 mirrors row 35, column 53 mirrors column 51.
    assert torch.equal(sample["ir"][:, 37, :53], whole["ir"][:, 35])
    assert torch.equal(sample["vi_crcb"][:, :37, 53], whole["vi_crcb"][:, :, 51])
    assert bool((sample["label"][37:] == 255).all()) and bool((sample["label"][:, 53:] == 255).all())
    assert float(sample["roi"][:, 37:].abs().sum()) == 0.0 and float(sample["roi"][:, :, 53:].abs().sum()) == 0.0


def test_crop_larger_in_one_dimension_only(make_dataset, config_for):
    written = make_dataset("msrs", count=1, size=(20, 70))
    sample = create_dataset(config_for(written.root, "msrs", crop_size=32), "train", crop=True)[0]
    check_sample_types(sample, 32, 32)
    top, left, height, width = sample["crop"].tolist()
    assert (top, height, width) == (0, 20, 32) and 0 <= left <= 70 - 32


def test_tiny_image_reflect_pads_past_its_own_size(make_dataset, config_for):
    written = make_dataset("pairs", count=1, size=(3, 2))
    sample = create_dataset(config_for(written.root, "pairs", crop_size=9), "train", crop=True)[0]
    check_sample_types(sample, 9, 9)


def test_crops_are_deterministic_per_seed_and_epoch(make_dataset, config_for):
    written = make_dataset("msrs", count=6, size=(40, 50))
    config = config_for(written.root, "msrs", crop_size=16)

    def boxes(seed: int, epoch: int) -> list[list[int]]:
        dataset = create_dataset(config, "train", crop=True, seed=seed)
        dataset.set_epoch(epoch)
        return [dataset[index]["crop"].tolist() for index in range(len(dataset))]

    assert boxes(0, 0) == boxes(0, 0)
    assert boxes(0, 1) == boxes(0, 1)
    assert boxes(0, 0) != boxes(0, 1)
    assert boxes(0, 0) != boxes(1, 0)
    dataset = create_dataset(config, "train", crop=True)
    first = dataset[2]
    assert torch.equal(first["ir"], dataset[2]["ir"])  # same epoch, same index -> same crop
    dataset.set_epoch(10**9 + 7)  # large epoch ids (training derives them from hashes) work too
    assert dataset[2]["ir"].shape == (1, 16, 16)


def test_dataloader_batches_crops(make_dataset, config_for):
    written = make_dataset("boxes", count=5, size=(37, 53), num_classes=4)
    dataset = create_dataset(config_for(written.root, "boxes", crop_size=24, num_classes=4), "train", crop=True)
    loader = DataLoader(dataset, batch_size=2, shuffle=False, collate_fn=dataset.collate)
    batches = list(loader)
    assert len(batches) == 3
    batch = batches[0]
    assert batch["ir"].shape == (2, 1, 24, 24) and batch["vi_crcb"].shape == (2, 2, 24, 24)
    assert batch["label"].shape == (2, 24, 24) and batch["roi"].shape == (2, 1, 24, 24)
    assert batch["crop"].shape == (2, 4)
    assert batch["name"] == ["pair_00", "pair_01"]


def test_whole_images_of_different_sizes_do_not_batch(tmp_path, make_dataset, config_for):
    first = make_dataset("pairs", count=1, size=(10, 12), root_name="a")
    second = make_dataset("pairs", count=1, size=(11, 12), root_name="b")
    sample_a = create_dataset(config_for(first.root, "pairs"), "train", crop=False)[0]
    sample_b = create_dataset(config_for(second.root, "pairs"), "train", crop=False)[0]
    with pytest.raises(DataError, match="batch size 1"):
        collate_samples([sample_a, sample_b])
    batch = collate_samples([sample_a, sample_a])
    assert batch["ir"].shape == (2, 1, 10, 12)


def test_root_override_and_split_none(make_dataset, config_for):
    written = make_dataset("msrs", count=2, split=None)
    dataset = create_dataset(config_for("does/not/exist", "msrs"), None, crop=False, root_override=written.root)
    assert len(dataset) == 2


def test_index_of_and_unknown_name(make_dataset, config_for):
    written = make_dataset("boxes", count=2, num_classes=4)
    dataset = create_dataset(config_for(written.root, "boxes", num_classes=4), "train", crop=False)
    assert dataset.index_of("pair_01") == 1
    with pytest.raises(DataError, match="no sample named 'nope'"):
        dataset.boxes("nope")


def test_object_crops_contain_a_box_and_uniform_crops_are_unchanged(make_dataset, config_for):
    written = make_dataset("boxes", count=4, size=(120, 160), num_classes=4)
    uniform = create_dataset(config_for(written.root, "boxes", num_classes=4, crop_size=32), "train", crop=True)
    focused = create_dataset(config_for(written.root, "boxes", num_classes=4, crop_size=32, object_crops=1.0),
                             "train", crop=True)
    off = create_dataset(config_for(written.root, "boxes", num_classes=4, crop_size=32, object_crops=0.0),
                         "train", crop=True)
    for epoch in range(5):
        for dataset in (uniform, focused, off):
            dataset.set_epoch(epoch)
        for index in range(len(focused)):
            top, left, height, width = focused.crop_box(index)
            assert 0 <= top <= 120 - height and 0 <= left <= 160 - width and (height, width) == (32, 32)
            sample = focused[index]
            assert int((sample["label"] > 0).sum()) > 0  # every crop holds part of a box
            assert off.crop_box(index) == uniform.crop_box(index)  # 0 draws exactly the old crops
    # Whole images (evaluation) never move: object_crops only applies to training crops.
    whole = create_dataset(config_for(written.root, "boxes", num_classes=4, crop_size=32, object_crops=1.0),
                           "train", crop=False)
    assert whole.crop_box(0) == (0, 0, 120, 160)


def test_object_crops_raise_the_share_of_labelled_pixels(make_dataset, config_for):
    written = make_dataset("boxes", count=6, size=(240, 320), num_classes=4)
    config = config_for(written.root, "boxes", num_classes=4, crop_size=32)

    def object_share(share: float) -> float:
        dataset = create_dataset(dataclasses.replace(config, object_crops=share), "train", crop=True)
        labelled = total = 0
        for epoch in range(8):
            dataset.set_epoch(epoch)
            for index in range(len(dataset)):
                label = dataset[index]["label"]
                labelled, total = labelled + int((label > 0).sum()), total + label.numel()
        return labelled / total

    assert object_share(1.0) > 2 * object_share(0.0)


def test_class_pixel_counts_cover_every_labelled_pixel(make_dataset, config_for):
    written = make_dataset("msrs", count=3, size=(20, 30), num_classes=5)
    dataset = create_dataset(config_for(written.root, "msrs", num_classes=5), "train", crop=False)
    expected = np.zeros(5, dtype=np.int64)
    for label in written.labels.values():
        expected += np.bincount(label.ravel(), minlength=5)
    assert dataset.class_pixel_counts().tolist() == expected.tolist()


def test_crop_padded_crops_the_box_and_pads_images_by_reflection_and_maps_with_the_fill():
    from uaafusion.data.datasets import crop_padded

    image = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)  # (C, H, W)
    inside = crop_padded(image, (1, 1, 2, 2), (2, 2))
    assert np.array_equal(inside, image[:, 1:3, 1:3])
    padded = crop_padded(image, (1, 2, 2, 2), (4, 5))  # 2x2 box, padded to 4x5
    assert padded.shape == (2, 4, 5)
    assert np.array_equal(padded[:, :2, :2], image[:, 1:3, 2:4])
    assert np.array_equal(padded[:, 2, :2], image[:, 1, 2:4])  # row 2 mirrors row 0 of the box
    assert np.array_equal(padded[:, :2, 2], image[:, 1:3, 2])  # column 2 mirrors column 0 of the box
    label = np.arange(12, dtype=np.int64).reshape(3, 4)  # (H, W), no leading dims
    padded_label = crop_padded(label, (0, 0, 3, 4), (5, 6), fill=255)
    assert padded_label.dtype == np.int64 and padded_label.shape == (5, 6)
    assert np.array_equal(padded_label[:3, :4], label)
    assert (padded_label[3:] == 255).all() and (padded_label[:, 4:] == 255).all()
    roi = np.ones((1, 3, 4), dtype=np.float32)
    assert crop_padded(roi, (0, 0, 3, 4), (3, 6), fill=0.0)[0, :, 4:].sum() == 0


def test_sample_chroma_is_none_for_a_gray_visible_image_and_the_crcb_otherwise():
    gray = {"vi_crcb": torch.full((2, 4, 5), GRAY_CHROMA)}
    assert sample_chroma(gray) is None
    colour = {"vi_crcb": torch.full((2, 4, 5), GRAY_CHROMA)}
    colour["vi_crcb"][0, 1, 2] = 0.6  # one tinted pixel is colour
    assert sample_chroma(colour) is colour["vi_crcb"]
