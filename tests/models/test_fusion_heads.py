"""The fusion heads beside the unfolding network (``alpha_blend``, ``mask_guided``, ``prompt``): shapes at
any size, their own map in [0, 1], the attribution-weighted blend an untrained head starts from, gradients
to every parameter, the registry and checkpoints; what each head's map means; the prompt head's kinds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import tiny_params_dict
from tests.models.segmenters_for_tests import TinySegmenter, random_images, stripe_mask
from uaafusion.attribution import modality_weights
from uaafusion.config import LossConfig, params_from_dict
from uaafusion.errors import ConfigError
from uaafusion.losses import FusionLoss
from uaafusion.models import available_fusion_models, create_fusion_model, load_models, save_models
from uaafusion.models.mask_guided import MASK_SHARPNESS, mask_target, modality_mask
from uaafusion.models.prompt import DEGRADATION_KINDS

HEAD_MAPS = {"alpha_blend": "alpha", "mask_guided": "mask", "prompt": None}  # each head's own map


def _model(name: str, **extra) -> torch.nn.Module:
    return create_fusion_model(name, **{"stages": 2, "features": 8, "attribution_steps": 2, **extra})


@pytest.mark.parametrize("name", HEAD_MAPS)
@pytest.mark.parametrize(("batch", "height", "width"), [(1, 37, 53), (3, 16, 24)])
def test_shapes_and_the_heads_map_in_the_unit_interval(name: str, batch: int, height: int, width: int) -> None:
    output = _model(name)(random_images(batch, height, width, 1), random_images(batch, height, width, 2),
                          TinySegmenter(num_classes=3))
    own = [output.maps[HEAD_MAPS[name]]] if HEAD_MAPS[name] else []
    assert list(output.maps) == [HEAD_MAPS[name]] if HEAD_MAPS[name] else output.maps == {}
    for tensor in (output.fused, output.weight_ir, output.weight_vi, *own):
        assert tensor.shape == (batch, 1, height, width)
    assert output.estimates == [output.fused] and output.attention == []
    assert all(bool((tensor >= 0).all() and (tensor <= 1).all()) for tensor in own)
    if name == "prompt":
        assert output.degradation_logits.shape == (batch, len(DEGRADATION_KINDS))
    assert bool((output.fused >= 0).all() and (output.fused <= 1).all())


@pytest.mark.parametrize("name", HEAD_MAPS)
def test_an_untrained_head_gives_the_attribution_weighted_blend(name: str) -> None:
    segmenter = TinySegmenter(num_classes=3)
    ir, vi = random_images(2, 20, 20, 3), random_images(2, 20, 20, 4)
    mask = stripe_mask(2, 3, 20, 20)
    weights = modality_weights(segmenter, ir, vi, mask, steps=2)
    output = _model(name)(ir, vi, segmenter, mask=mask, weights=weights)
    assert (output.fused - (weights[0] * ir + weights[1] * vi)).abs().max() < 0.03
    if name == "alpha_blend":
        assert (output.maps["alpha"] - weights[1]).abs().max() < 0.02  # alpha starts at w_V


@pytest.mark.parametrize("name", HEAD_MAPS)
def test_a_training_step_reaches_every_parameter_and_moves_the_map(name: str) -> None:
    model = _model(name).train()
    segmenter = TinySegmenter(num_classes=3, seed=3)
    for parameter in segmenter.parameters():
        parameter.requires_grad_(False)
    ir, vi = random_images(2, 20, 22, 4), random_images(2, 20, 22, 5)
    mask = stripe_mask(2, 3, 20, 22)
    kinds = ["noise", "clean"] if name == "prompt" else None  # what training gives a degradation-aware head
    conditioning = {"degradation": kinds} if kinds else {}
    output = model(ir, vi, segmenter, mask=mask, **conditioning)
    terms = FusionLoss(LossConfig(intensity=1.0, gradient=1.0, segmentation=0.1))(
        output, ir, vi, segmenter(output.fused), mask.argmax(1), None, kinds)
    assert ("mask" in terms) == (name == "mask_guided")  # the mask term exists for a head with a mask
    assert ("degradation" in terms) == (name == "prompt")
    terms["total"].backward()
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, f"no gradient reaches {parameter_name}"
    own = HEAD_MAPS[name]
    before = (output.maps[own] if own else output.fused).detach()
    torch.optim.SGD(model.parameters(), lr=1.0).step()
    after = model(ir, vi, segmenter, mask=mask, weights=(output.weight_ir, output.weight_vi), **conditioning)
    assert ((after.maps[own] if own else after.fused) - before).abs().max() > 1e-3


@pytest.mark.parametrize("name", HEAD_MAPS)
def test_registered_with_sizes_checked_and_saved_in_checkpoints(name: str, tmp_path: Path) -> None:
    from uaafusion.training.builders import build_models, model_spec

    assert name in available_fusion_models()
    with pytest.raises(ConfigError, match="model.fusion.features"):
        _model(name, features=0)
    params = params_from_dict(tiny_params_dict(**{"model.fusion.name": name}))
    fusion, segmenter = build_models(params, torch.device("cpu"))
    for parameter in fusion.parameters():  # something a fresh model does not have
        torch.nn.init.normal_(parameter, std=0.1)
    loaded = load_models(save_models(tmp_path / "models.pt", fusion, segmenter, model_spec(params))).fusion
    assert type(loaded) is type(fusion) and loaded.spec["name"] == name
    for (key, value), (_, restored) in zip(fusion.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(value, restored), key


def test_the_modality_mask_is_the_visible_share_sharpened() -> None:
    ir, vi = torch.full((1, 1, 2, 2), 0.2), torch.full((1, 1, 2, 2), 0.8)
    vi[..., 1, 1] = 0.2  # both sources agree here: the share is undefined
    fused = 0.3 * vi + 0.7 * ir
    mask = modality_mask(fused, ir, vi)
    expected = torch.sigmoid(torch.tensor(MASK_SHARPNESS * (0.3 - 0.5)))
    torch.testing.assert_close(mask[..., 0, 0], expected.expand(1, 1))
    assert mask[..., 1, 1].item() == pytest.approx(0.5)
    assert bool((modality_mask(vi, ir, vi)[..., 0, 0] > 0.9).all())  # the fused image is the visible one


def test_the_masks_pseudo_ground_truth_follows_the_param() -> None:
    ir, vi = random_images(1, 8, 8, 1), random_images(1, 8, 8, 2)
    weight_vi = torch.full_like(ir, 0.25)
    brighter = mask_target(ir, vi, 1 - weight_vi, weight_vi, "max")
    torch.testing.assert_close(brighter, modality_mask(torch.maximum(ir, vi), ir, vi))
    assert bool(((brighter > 0.5) == (vi > ir)).all())  # the brighter source's side
    weighted = mask_target(ir, vi, 1 - weight_vi, weight_vi, "weighted")
    assert weighted.max() < 0.5  # the visible share 0.25 everywhere


def test_the_prompt_head_names_a_bad_kind_and_a_wrong_count() -> None:
    from uaafusion.errors import DataError

    model, segmenter = _model("prompt"), TinySegmenter(num_classes=3)
    ir, vi = random_images(2, 16, 16, 1), random_images(2, 16, 16, 2)
    with pytest.raises(DataError, match="'fog'.*known: clean, haze"):
        model(ir, vi, segmenter, degradation=["fog", "clean"])
    with pytest.raises(DataError, match="1 degradation kinds for a batch of 2"):
        model(ir, vi, segmenter, degradation=["clean"])


def _degraded_pairs(count: int, first: int, kinds: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``count`` smooth random pairs ``(N, 1, 32, 32)``, pair ``i`` degraded by ``kinds[i % len(kinds)]``
    (severity 0.6), and the kinds' positions in :data:`DEGRADATION_KINDS`."""
    import numpy as np
    from scipy.ndimage import gaussian_filter

    from uaafusion.data.degrade import degrade_pair

    generator = np.random.default_rng(first)
    irs, vis, labels = [], [], []
    for index in range(count):
        ir, vi = (0.2 + 0.6 * gaussian_filter(generator.random((32, 32)), 2, mode="wrap").astype(np.float32)
                  for _ in range(2))
        kind = kinds[index % len(kinds)]
        if kind != "clean":
            ir, vi = degrade_pair(ir, vi, [kind], 0.6, seed=0, name=str(first + index))
        irs.append(torch.from_numpy(np.ascontiguousarray(ir, dtype=np.float32))[None])
        vis.append(torch.from_numpy(np.ascontiguousarray(vi, dtype=np.float32))[None])
        labels.append(DEGRADATION_KINDS.index(kind))
    return torch.stack(irs), torch.stack(vis), torch.tensor(labels)


def test_the_prompt_heads_classifier_predicts_the_kind_above_chance() -> None:
    from uaafusion.losses import degradation_loss

    kinds = ["clean", "noise", "low_light", "ir_stripes"]
    torch.manual_seed(0)
    model = _model("prompt")
    ir, vi, labels = _degraded_pairs(160, 0, kinds)
    optimizer = torch.optim.Adam(model.classifier.parameters(), lr=1e-2)
    for step in range(400):
        batch = torch.arange(16) + (16 * step) % 160
        optimizer.zero_grad()
        logits = model.classifier(torch.cat([ir[batch], vi[batch]], dim=1))
        degradation_loss(logits, [DEGRADATION_KINDS[int(label)] for label in labels[batch]]).backward()
        optimizer.step()
    test_ir, test_vi, test_labels = _degraded_pairs(80, 1000, kinds)
    with torch.no_grad():
        output = model(test_ir, test_vi, TinySegmenter(num_classes=3))  # no kind given: predicted
    accuracy = (output.degradation_logits.argmax(1) == test_labels).float().mean().item()
    assert accuracy > 0.5, f"accuracy {accuracy:.2f}: chance is 0.25"  # 0.69 to 0.74 over torch seeds 0-2
