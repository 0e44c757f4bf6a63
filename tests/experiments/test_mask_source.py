"""``experiments/mask_source.py`` on the tiny synthetic data: both fused variants scored per class."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from experiments.mask_source import INPUTS, main, two_source_masks
from uaafusion.config import Params
from uaafusion.models import save_models
from uaafusion.training.builders import build_models, model_spec


def test_fuses_with_both_masks_and_scores_every_input(tiny_project: tuple[Path, Params], tmp_path: Path) -> None:
    params_file, params = tiny_project
    fusion, segmenter = build_models(params, torch.device("cpu"))
    checkpoint = save_models(tmp_path / "models" / "uaafusion.pt", fusion, segmenter, model_spec(params))
    out = tmp_path / "mask-source.json"
    assert main(["--params", str(params_file), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--split", "test", "--split", "train", "--limit", "2"]) == 0
    document = json.loads(out.read_text())
    assert set(document["splits"]) == {"test", "train"}
    for result in document["splits"].values():
        assert result["images"] == 2 and result["inference_mask"] == params.model.fusion.inference_mask
        assert set(result["scores"]) == set(INPUTS)
        for scores in result["scores"].values():
            assert 0.0 <= scores["mIoU"] <= 1.0 and list(scores["iou"]) == list(params.data.class_names)
        if params.model.fusion.inference_mask == "average":  # the same mask, the same fused images
            assert result["scores"]["fused_average_mask"] == result["scores"]["fused_predicted_mask"]
        gap = result["mean_abs_difference_of_the_fused_images"]
        # An untrained segmenter's predicted mask is not the label mask: the two fused images differ.
        assert gap["objects"] > 0 and gap["background"] >= 0


def test_two_source_masks_take_the_more_confident_class_and_the_union_of_objects() -> None:
    # Three pixels, classes (background, person, car). Pixel 0: infrared sure of person, visible
    # unsure of car; pixel 1: infrared unsure of background, visible sure of car; pixel 2: infrared
    # unsure of car, visible sure of background.
    infrared = torch.tensor([[0.0, 4.0, 0.0], [0.3, 0.0, 0.2], [0.0, 0.0, 0.4]]).T.reshape(1, 3, 1, 3)
    visible = torch.tensor([[0.0, 0.0, 0.5], [0.0, 0.0, 5.0], [6.0, 0.0, 0.0]]).T.reshape(1, 3, 1, 3)
    masks = two_source_masks(infrared, visible)
    assert masks["confident"].argmax(dim=1).flatten().tolist() == [1, 2, 0]
    assert masks["union"].argmax(dim=1).flatten().tolist() == [1, 2, 2]
    for mask in masks.values():  # one-hot
        assert mask.shape == (1, 3, 1, 3) and torch.equal(mask.sum(dim=1), torch.ones(1, 1, 3))
