"""``experiments/dedicated_segmenters.py`` on the tiny synthetic data: one segmenter per input kind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.dedicated_segmenters import (
    SOURCE_KINDS,
    SubsetCropper,
    crop_batch,
    load_split,
    main,
    nested_subset,
    parse_fused,
    read_fused_luma,
    select_kinds,
    train_segmenter,
)
from uaafusion.config import Params
from uaafusion.data.datasets import create_dataset
from uaafusion.data.io import tensor_to_array, write_png
from uaafusion.errors import DataError
from uaafusion.models import save_models
from uaafusion.training.builders import build_models, model_spec


def _write_inverted_infrared(params: Params, split: str, folder: Path) -> Path:
    """A 'fused' folder holding ``1 - infrared`` of every pair of ``split`` (as PNG)."""
    dataset = create_dataset(params.data, split, crop=False)
    for index in range(len(dataset)):
        sample = dataset[index]
        write_png(folder / f"{sample['name']}.png", tensor_to_array(1.0 - sample["ir"]))
    return folder


def test_every_kind_gets_its_own_segmenter_scored_and_kept(tiny_project: tuple[Path, Params], tmp_path: Path) -> None:
    params_file, params = tiny_project
    fused = {split: _write_inverted_infrared(params, split, tmp_path / "inverted" / split)
             for split in (params.data.train_split, params.data.test_split)}
    fusion, segmenter = build_models(params, torch.device("cpu"))
    checkpoint = save_models(tmp_path / "models" / "uaafusion.pt", fusion, segmenter, model_spec(params))
    out = tmp_path / "dedicated.json"
    arguments = ["--params", str(params_file), "--out", str(out), "--work", str(tmp_path / "work"),
                 "--fused", f"inverted={fused[params.data.train_split]},{fused[params.data.test_split]}",
                 "--checkpoint", str(checkpoint), "--epochs", "2", "--seeds", "0,1"]
    assert main(arguments) == 0
    document = json.loads(out.read_text())
    kinds = [*SOURCE_KINDS, "inverted"]
    assert document["epochs"] == 2 and document["seeds"] == [0, 1]
    assert document["train_images"] == params.synthetic.train and document["test_images"] == params.synthetic.test
    for seed in ("0", "1"):
        assert list(document["dedicated"][seed]) == kinds
        for result in document["dedicated"][seed].values():
            assert 0.0 <= result["mIoU"] <= 1.0 and list(result["iou"]) == list(params.data.class_names)
            assert result["train_seconds"] > 0
    # One segmenter is kept per kind and seed, and different seeds train different ones.
    kept = sorted((tmp_path / "work").glob("*.pt"))
    assert len(kept) == 2 * len(kinds)
    by_seed = [torch.load(next(path for path in kept if path.name.startswith(f"infrared-seed{seed}-")),
                          weights_only=True) for seed in (0, 1)]
    assert not all(torch.equal(by_seed[0][name], by_seed[1][name]) for name in by_seed[0])
    for kind in kinds:
        assert document["dedicated_mean_mIoU"][kind] == pytest.approx(
            (document["dedicated"]["0"][kind]["mIoU"] + document["dedicated"]["1"][kind]["mIoU"]) / 2)
    assert list(document["shared"]) == kinds
    # A second call trains nothing (the segmenters are kept) and gives the same numbers.
    assert main(arguments) == 0
    again = json.loads(out.read_text())
    for seed in ("0", "1"):
        for kind in kinds:
            assert again["dedicated"][seed][kind]["train_seconds"] is None
            assert again["dedicated"][seed][kind]["mIoU"] == document["dedicated"][seed][kind]["mIoU"]
    assert again["shared"] == document["shared"]
    # --kinds trains and scores only the named kinds (here both kept: nothing is trained).
    assert main([*arguments, "--kinds", "inverted,infrared"]) == 0
    chosen = json.loads(out.read_text())
    assert list(chosen["dedicated"]["0"]) == ["inverted", "infrared"] and list(chosen["shared"]) == ["inverted", "infrared"]
    assert chosen["dedicated"]["1"]["inverted"]["mIoU"] == document["dedicated"]["1"]["inverted"]["mIoU"]


def test_training_is_deterministic_and_depends_on_the_pixels(tiny_project: tuple[Path, Params]) -> None:
    _, params = tiny_project
    dataset = create_dataset(params.data, params.data.train_split, crop=False)
    images = load_split(dataset, {})
    cropper = create_dataset(params.data, params.data.train_split, crop=True, seed=0)
    device = torch.device("cpu")

    def trained(kind: str) -> dict[str, torch.Tensor]:
        return train_segmenter(params, images.images[kind], images.labels, cropper, 1, 0, device, None).state_dict()

    first, second, visible = trained("infrared"), trained("infrared"), trained("visible")
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert not all(torch.equal(first[name], visible[name]) for name in first)


def test_crops_of_small_images_are_padded_and_their_labels_ignored() -> None:
    image = torch.arange(12, dtype=torch.float32).reshape(1, 3, 4) / 12
    label = torch.ones(3, 4, dtype=torch.int64)
    crops, labels = crop_batch([image], [label], [0], [(0, 0, 3, 4)], crop_size=5, ignore_index=255)
    assert crops.shape == (1, 1, 5, 5) and labels.shape == (1, 5, 5)
    assert torch.equal(crops[0, :, :3, :4], image)
    assert torch.equal(crops[0, 0, 3, :4], image[0, 1]) and torch.equal(crops[0, 0, :3, 4], image[0, :, 2])  # reflected
    assert (labels[0, 3:] == 255).all() and (labels[0, :, 4] == 255).all() and (labels[0, :3, :4] == 1).all()


def test_fused_folders_must_hold_every_pair_at_its_size(tmp_path: Path) -> None:
    folder = tmp_path / "fused"
    write_png(folder / "a.png", np.zeros((4, 6), dtype=np.uint8))
    write_png(folder / "b.png", np.zeros((5, 6), dtype=np.uint8))
    assert read_fused_luma(folder, ["a"], [(4, 6)])[0].shape == (1, 4, 6)
    with pytest.raises(DataError, match=r"fused.*no fused image for 1 of the 2 pairs \(e\.g\. c\)"):
        read_fused_luma(folder, ["a", "c"], [(4, 6), (4, 6)])
    with pytest.raises(DataError, match=r"b\.png: fused image is 6x5 but its pair is 6x4"):
        read_fused_luma(folder, ["a", "b"], [(4, 6), (4, 6)])


def test_kinds_are_chosen_by_name() -> None:
    available = [*SOURCE_KINDS, "ours"]
    assert select_kinds(None, available) == available
    assert select_kinds("ours, infrared", available) == ["ours", "infrared"]
    for bad in ("thermal", " , "):
        with pytest.raises(SystemExit, match="choose from infrared, visible, average, maximum, ours"):
            select_kinds(bad, available)


def test_fused_arguments_are_checked() -> None:
    assert parse_fused(["ours=tr,te"]) == {"ours": (Path("tr"), Path("te"))}
    with pytest.raises(SystemExit, match="NAME=TRAIN_FOLDER,TEST_FOLDER"):
        parse_fused(["ours=only-one"])
    with pytest.raises(SystemExit, match="is taken"):
        parse_fused(["infrared=a,b"])
    with pytest.raises(SystemExit, match="is taken"):
        parse_fused(["x=a,b", "x=c,d"])


def test_train_pairs_trains_on_a_nested_subset_with_the_pairs_own_crops(tiny_project: tuple[Path, Params],
                                                                          tmp_path: Path) -> None:
    params_file, params = tiny_project
    count = params.synthetic.train
    small, large = nested_subset(count, 3), nested_subset(count, 6)
    assert len(small) == 3 and len(set(large)) == 6 and set(small) <= set(large)
    assert small == sorted(small) and nested_subset(count, count) == list(range(count))
    assert nested_subset(count, 3, seed=1) != small or nested_subset(count, 6, seed=1) != large
    for bad in (0, count + 1):
        with pytest.raises(SystemExit, match=f"--train-pairs {bad}: expected 1 to {count}"):
            nested_subset(count, bad)

    # A pair keeps its crops in a subset: sample i of the subset is crop-boxed as pair small[i].
    cropper = create_dataset(params.data, params.data.train_split, crop=True, seed=0)
    subset_cropper = SubsetCropper(create_dataset(params.data, params.data.train_split, crop=True, seed=0), small)
    for epoch in (0, 3):
        cropper.set_epoch(epoch)
        subset_cropper.set_epoch(epoch)
        assert [subset_cropper.crop_box(i) for i in range(3)] == [cropper.crop_box(index) for index in small]

    # The run trains on those pairs only, names them, and scores on the whole test split.
    out = tmp_path / "curve.json"
    arguments = ["--params", str(params_file), "--out", str(out), "--work", str(tmp_path / "work"),
                 "--epochs", "1", "--kinds", "infrared"]
    assert main([*arguments, "--train-pairs", "3"]) == 0
    document = json.loads(out.read_text())
    names = create_dataset(params.data, params.data.train_split, crop=False).names
    assert document["train_images"] == 3 and document["train_pairs"] == [names[index] for index in small]
    assert document["test_images"] == params.synthetic.test
    subset_model = document["dedicated"]["0"]["infrared"]
    assert main(arguments) == 0
    whole = json.loads(out.read_text())
    assert whole["train_images"] == count and whole["train_pairs"] is None
    assert whole["dedicated"]["0"]["infrared"]["train_seconds"] is not None  # not the subset's kept segmenter
    kept = [torch.load(path, weights_only=True) for path in (tmp_path / "work").glob("infrared-seed0-*.pt")]
    assert len(kept) == 2 and not all(torch.equal(kept[0][name], kept[1][name]) for name in kept[0])
    assert subset_model["train_seconds"] > 0
