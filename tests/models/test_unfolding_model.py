"""The UAAFusion unfolding network: shapes, gradients (every alpha_k trains), frozen segmenter, registry."""

from __future__ import annotations

import pytest
import torch

import uaafusion.models.guided as guided
import uaafusion.models.unfolding as unfolding
from tests.models.segmenters_for_tests import TinySegmenter, random_images, stripe_mask
from uaafusion.attribution import modality_weights
from uaafusion.config import LossConfig
from uaafusion.errors import ConfigError, DataError
from uaafusion.losses import FusionLoss
from uaafusion.models import (
    FusionOutput,
    UnfoldingFusionNet,
    available_fusion_models,
    count_parameters,
    create_fusion_model,
    create_segmenter,
    register_fusion_model,
)


def _frozen(segmenter: torch.nn.Module) -> torch.nn.Module:
    for parameter in segmenter.parameters():
        parameter.requires_grad_(False)
    return segmenter.eval()


@pytest.mark.parametrize(("batch", "num_classes"), [(1, 2), (3, 20)])
def test_output_shapes_for_odd_sizes(batch, num_classes):
    model = create_fusion_model("uaafusion", stages=2, features=8, attribution_steps=2)
    segmenter = TinySegmenter(num_classes=num_classes)
    ir, vi = random_images(batch, 37, 53, seed=1), random_images(batch, 37, 53, seed=2)
    output = model(ir, vi, segmenter)
    assert isinstance(output, FusionOutput)
    for tensor in (output.fused, output.weight_ir, output.weight_vi, *output.attention, *output.estimates):
        assert tensor.shape == (batch, 1, 37, 53)
    assert len(output.attention) == len(output.estimates) == 2
    assert output.estimates[-1] is output.fused
    assert output.mask is not None and output.mask.shape == (batch, num_classes, 37, 53)
    assert torch.equal(output.mask.sum(1), torch.ones(batch, 37, 53))  # one-hot of the arg-max
    assert bool((output.fused >= 0).all() and (output.fused <= 1).all())
    torch.testing.assert_close(output.weight_ir + output.weight_vi, torch.ones_like(output.fused))


def test_default_segmenter_and_model_run_at_odd_size_without_gradients():
    model = create_fusion_model("uaafusion", stages=1, features=8, attribution_steps=2).eval()
    segmenter = create_segmenter(num_classes=20).eval()
    with torch.no_grad():
        output = model(random_images(1, 37, 53, 1), random_images(1, 37, 53, 2), segmenter)
    assert output.fused.shape == (1, 1, 37, 53)
    assert torch.isfinite(output.fused).all()


def test_given_mask_and_weights_skip_the_attribution(monkeypatch):
    model = create_fusion_model("uaafusion", stages=2, features=8)
    segmenter = TinySegmenter(num_classes=3)
    ir, vi = random_images(2, 16, 16, 1), random_images(2, 16, 16, 2)
    mask = stripe_mask(2, 3, 16, 16)
    weights = modality_weights(segmenter, ir, vi, mask, steps=2)
    reference = model(ir, vi, segmenter, mask=mask, weights=weights)

    def fail(*args, **kwargs):
        raise AssertionError("attribution must not run when weights are given")

    monkeypatch.setattr(guided, "modality_weights", fail)
    cached = model(ir, vi, segmenter, mask=mask, weights=weights)
    torch.testing.assert_close(cached.fused, reference.fused)
    assert cached.weight_ir is weights[0] or torch.equal(cached.weight_ir, weights[0])
    with pytest.raises(DataError, match="weights"):
        model(ir, vi, segmenter, mask=mask, weights=(weights[0][:, :, :8], weights[1]))


def test_training_step_reaches_every_fusion_parameter_but_not_the_frozen_segmenter():
    model = create_fusion_model("uaafusion", stages=3, features=8, attribution_steps=2).train()
    segmenter = _frozen(TinySegmenter(num_classes=3, seed=3, batch_norm=True))
    ir, vi = random_images(2, 20, 22, 4), random_images(2, 20, 22, 5)
    labels = stripe_mask(2, 3, 20, 22).argmax(1)
    labels[:, :2] = 255
    output = model(ir, vi, segmenter, mask=stripe_mask(2, 3, 20, 22))
    assert output.weight_ir.std() > 0  # otherwise w_I I + w_V V = F_0 and alpha_1 has no effect
    logits = segmenter(output.fused)
    terms = FusionLoss(LossConfig(intensity=1.0, gradient=1.0, segmentation=0.1), ignore_index=255)(
        output, ir, vi, logits, labels, None)
    terms["total"].backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"no gradient reaches {name}"
        assert parameter.grad.abs().sum() > 0, f"zero gradient at {name}"
    assert bool((model.step_size_logits.grad != 0).all()), "every alpha_k must receive a gradient"
    assert bool((model.attention_scales.grad != 0).all())
    assert all(p.grad is None for p in segmenter.parameters())
    assert all(not p.requires_grad for p in segmenter.parameters())
    assert not segmenter.training


def test_trainable_segmenter_gets_gradient_only_from_the_loss():
    """Joint schedule: the fusion forward itself must not put gradients into S."""
    model = create_fusion_model("uaafusion", stages=2, features=8, attribution_steps=2)
    segmenter = TinySegmenter(num_classes=3).train()
    output = model(random_images(1, 12, 12, 1), random_images(1, 12, 12, 2), segmenter)
    assert all(p.grad is None for p in segmenter.parameters())
    assert all(p.requires_grad for p in segmenter.parameters()) and segmenter.training
    output.fused.mean().backward()
    assert all(p.grad is None for p in segmenter.parameters())


def test_zero_attention_map_gives_finite_gradients():
    """Weights 0.5 everywhere make the first step (and P_1) exactly zero: no NaN may appear."""
    model = create_fusion_model("uaafusion", stages=2, features=8)
    segmenter = _frozen(TinySegmenter(num_classes=3))
    ir, vi, mask = random_images(1, 12, 12, 1), random_images(1, 12, 12, 2), stripe_mask(1, 3, 12, 12)
    half = torch.full_like(ir, 0.5)
    output = model(ir, vi, segmenter, mask=mask, weights=(half, half))
    assert torch.equal(output.attention[0], torch.full_like(ir, 0.5))
    output.fused.mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_step_sizes_are_applied():
    model = create_fusion_model("uaafusion", stages=1, features=8)
    segmenter = TinySegmenter(num_classes=3)
    ir, vi, mask = random_images(1, 12, 12, 1), random_images(1, 12, 12, 2), stripe_mask(1, 3, 12, 12)
    weights = (torch.full_like(ir, 0.9), torch.full_like(ir, 0.1))
    with torch.no_grad():
        first = model(ir, vi, segmenter, mask=mask, weights=weights).fused
        model.step_size_logits.fill_(3.0)
        second = model(ir, vi, segmenter, mask=mask, weights=weights).fused
    assert not torch.allclose(first, second)
    assert bool(((model.step_sizes > 0) & (model.step_sizes < 1)).all())


def test_forward_under_no_grad_and_inference_mode_matches():
    model = create_fusion_model("uaafusion", stages=2, features=8, attribution_steps=2).eval()
    segmenter = TinySegmenter(num_classes=3)
    ir, vi = random_images(1, 14, 15, 1), random_images(1, 14, 15, 2)
    expected = model(ir, vi, segmenter).fused.detach()
    with torch.no_grad():
        no_grad = model(ir, vi, segmenter)
    with torch.inference_mode():
        inference = model(ir.clone(), vi.clone(), segmenter)
    torch.testing.assert_close(no_grad.fused, expected)
    torch.testing.assert_close(inference.fused.clone(), expected)
    assert not no_grad.attention[0].requires_grad


def test_few_steps_overfit_lower_the_loss():
    model = create_fusion_model("uaafusion", stages=2, features=8, attribution_steps=2)
    segmenter = _frozen(TinySegmenter(num_classes=3))
    ir, vi = random_images(1, 24, 24, 1), random_images(1, 24, 24, 2)
    mask = stripe_mask(1, 3, 24, 24)
    weights = modality_weights(segmenter, ir, vi, mask, steps=2)
    loss_function = FusionLoss(LossConfig(segmentation=0.0), ignore_index=255)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        optimiser.zero_grad()
        total = loss_function(model(ir, vi, segmenter, mask=mask, weights=weights), ir, vi)["total"]
        total.backward()
        optimiser.step()
        losses.append(float(total.detach()))
    assert losses[-1] < 0.75 * losses[0], losses


@pytest.mark.parametrize("inference_mask", ["average", "infrared"])
def test_without_labels_the_mask_comes_from_the_chosen_image(inference_mask):
    model = create_fusion_model("uaafusion", stages=1, features=8, inference_mask=inference_mask).eval()
    segmenter = TinySegmenter(num_classes=3, seed=4)
    ir, vi = random_images(1, 16, 20, 1), random_images(1, 16, 20, 2)
    source = (ir + vi) / 2 if inference_mask == "average" else ir
    other = ir if inference_mask == "average" else (ir + vi) / 2
    expected = torch.nn.functional.one_hot(segmenter(source).argmax(1), 3).permute(0, 3, 1, 2).float()
    different = torch.nn.functional.one_hot(segmenter(other).argmax(1), 3).permute(0, 3, 1, 2).float()
    assert not torch.equal(expected, different), "test images should give two different masks"
    with torch.no_grad():
        output = model(ir, vi, segmenter)
    assert torch.equal(output.mask, expected)
    assert model.spec["inference_mask"] == inference_mask


def _pair_with_weights(height: int, width: int, num_classes: int = 3):
    """``(segmenter, ir, vi, mask, weights)`` for a forward pass with the attribution done beforehand."""
    segmenter = TinySegmenter(num_classes=num_classes)
    ir, vi = random_images(1, height, width, 1), random_images(1, height, width, 2)
    mask = stripe_mask(1, num_classes, height, width)
    return segmenter, ir, vi, mask, modality_weights(segmenter, ir, vi, mask, steps=2)


def _count_gradient_calls(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = unfolding.segmentation_score_gradient

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(unfolding, "segmentation_score_gradient", counting)
    return calls


@pytest.mark.parametrize(("mode", "training", "expected_calls"),
                         [("fast", False, 1), ("exact", False, 3), ("fast", True, 3), ("exact", True, 3)])
def test_fast_mode_reuses_the_first_gradient_only_in_eval(monkeypatch, mode, training, expected_calls):
    """Fast inference computes one segmenter gradient for all stages; training is always exact."""
    model = create_fusion_model("uaafusion", stages=3, features=8, inference_mode=mode).train(training)
    segmenter, ir, vi, mask, weights = _pair_with_weights(16, 16)
    calls = _count_gradient_calls(monkeypatch)
    model(ir, vi, segmenter, mask=mask, weights=weights)
    assert len(calls) == expected_calls
    assert model.spec["inference_mode"] == mode


def test_fast_mode_changes_only_the_later_stages_attention():
    exact = create_fusion_model("uaafusion", stages=2, features=8, inference_mode="exact").eval()
    fast = create_fusion_model("uaafusion", stages=2, features=8, inference_mode="fast").eval()
    fast.load_state_dict(exact.state_dict())
    segmenter, ir, vi, mask, weights = _pair_with_weights(24, 24)
    with torch.no_grad():
        exact_output = exact(ir, vi, segmenter, mask=mask, weights=weights)
        fast_output = fast(ir, vi, segmenter, mask=mask, weights=weights)
    torch.testing.assert_close(fast_output.attention[0], exact_output.attention[0])
    torch.testing.assert_close(fast_output.estimates[0], exact_output.estimates[0])
    assert not torch.equal(fast_output.attention[1], exact_output.attention[1])


def test_inference_in_bands_gives_the_whole_image_numbers(monkeypatch):
    """Without autograd the proximal networks run band by band (bounded memory) with the same result."""
    torch.manual_seed(0)
    model = create_fusion_model("uaafusion", stages=3, features=8).eval()
    for output_conv in model.output_convs:  # trained-like corrections, so that every layer matters
        torch.nn.init.normal_(output_conv[-1].weight, std=0.1)
    segmenter, ir, vi, mask, weights = _pair_with_weights(61, 40)
    with torch.no_grad():
        whole = model(ir, vi, segmenter, mask=mask, weights=weights)
    calls: list[int] = []
    original = UnfoldingFusionNet._proximal

    def counting(self, *args):
        calls.append(args[1].shape[-2])
        return original(self, *args)

    monkeypatch.setattr(unfolding, "INFERENCE_BAND_PIXELS", 16 * 40)
    monkeypatch.setattr(UnfoldingFusionNet, "_proximal", counting)
    with torch.no_grad():
        banded = model(ir, vi, segmenter, mask=mask, weights=weights)
    assert len(calls) == 3 * 4 and max(calls) <= 16 + 2 * unfolding._HALO  # 4 bands per stage
    for whole_estimate, banded_estimate in zip(whole.estimates, banded.estimates):
        torch.testing.assert_close(banded_estimate, whole_estimate, rtol=1e-5, atol=1e-6)


def test_attribution_weights_cap_the_attribution_image(monkeypatch):
    model = create_fusion_model("uaafusion", stages=1, features=8, attribution_steps=2)
    segmenter = TinySegmenter(num_classes=3)
    ir, vi = random_images(1, 64, 64, 1), random_images(1, 64, 64, 2)
    mask = stripe_mask(1, 3, 64, 64)
    scales: list[float] = []
    original = guided.modality_weights

    def recording(*args, **kwargs):
        scales.append(kwargs["scale"])
        return original(*args, **kwargs)

    monkeypatch.setattr(guided, "modality_weights", recording)
    weight_ir, _ = model.attribution_weights(segmenter, ir, vi, mask, max_pixels=32 * 32)
    model.attribution_weights(segmenter, ir, vi, mask)
    assert scales == [pytest.approx(0.5), 1.0]
    assert weight_ir.shape == (1, 1, 64, 64)


def test_registry_and_argument_errors():
    assert "uaafusion" in available_fusion_models()
    model = create_fusion_model("uaafusion", stages=3, features=16)
    assert isinstance(model, UnfoldingFusionNet)
    assert model.spec["name"] == "uaafusion" and model.spec["stages"] == 3
    assert count_parameters(model) < 100_000
    with pytest.raises(ConfigError, match="available: .*uaafusion"):
        create_fusion_model("nope")
    with pytest.raises(ConfigError, match="arguments"):
        create_fusion_model("uaafusion", colour=True)
    with pytest.raises(ConfigError, match="stages"):
        create_fusion_model("uaafusion", stages=0)
    with pytest.raises(ConfigError, match="model.fusion.inference_mask.*average, infrared"):
        create_fusion_model("uaafusion", inference_mask="visible")
    with pytest.raises(ConfigError, match="model.fusion.inference_mode.*fast, exact"):
        create_fusion_model("uaafusion", inference_mode="fastest")

    @register_fusion_model("average-for-test")
    class AverageFusion(torch.nn.Module):
        def forward(self, ir, vi, segmenter, mask=None, weights=None):
            fused = (ir + vi) / 2
            return FusionOutput(fused, torch.full_like(ir, 0.5), torch.full_like(ir, 0.5), [], [fused])

    assert "average-for-test" in available_fusion_models()
    assert create_fusion_model("average-for-test").spec == {"name": "average-for-test"}
    with pytest.raises(ConfigError, match="already registered"):
        register_fusion_model("uaafusion")(AverageFusion)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fusion_training_step_on_cuda():
    model = create_fusion_model("uaafusion", stages=2, features=8, attribution_steps=2).cuda()
    segmenter = _frozen(create_segmenter(num_classes=5)).cuda()
    ir, vi = random_images(2, 37, 53, 1).cuda(), random_images(2, 37, 53, 2).cuda()
    output = model(ir, vi, segmenter)
    terms = FusionLoss(LossConfig(), 255)(output, ir, vi, segmenter(output.fused),
                                          output.mask.argmax(1), None)
    terms["total"].backward()
    assert output.fused.is_cuda and torch.isfinite(terms["total"])
    assert all(p.grad is not None for p in model.parameters())
    assert all(p.grad is None for p in segmenter.parameters())
