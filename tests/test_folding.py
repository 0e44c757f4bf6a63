"""BatchNorm folding: the folded copy computes the eval-mode function, and follows weight changes."""

from __future__ import annotations

import torch
from torch import nn

from uaafusion.folding import fold_batchnorms, folded_for_inference
from uaafusion.models import create_segmenter


def _with_running_statistics(network: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, nn.BatchNorm2d):
                size = module.num_features
                module.running_mean.copy_(torch.randn(size, generator=generator) * 0.2)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(size, generator=generator) * 0.1)
    return network.eval()


def _input_gradient(network: nn.Module, image: torch.Tensor) -> torch.Tensor:
    point = image.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad((network(point) ** 2).sum(), point)
    return gradient


def test_folded_segmenter_matches_eval_mode_values_and_input_gradients():
    torch.manual_seed(0)
    segmenter = _with_running_statistics(create_segmenter("DeepLabV3Plus", "mobilenet_v2", num_classes=4))
    folded, count = fold_batchnorms(segmenter)
    assert count == sum(isinstance(m, nn.BatchNorm2d) for m in segmenter.modules()) == 61
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    image = torch.rand(2, 1, 64, 96)
    with torch.no_grad():
        expected, actual = segmenter(image), folded(image)
    assert torch.allclose(actual, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))
    expected_gradient, actual_gradient = _input_gradient(segmenter, image), _input_gradient(folded, image)
    scale = float(expected_gradient.abs().max())
    assert torch.allclose(actual_gradient, expected_gradient, rtol=1e-4, atol=1e-4 * scale)


def test_original_is_untouched_and_copy_is_frozen():
    segmenter = create_segmenter("DeepLabV3Plus", "mobilenet_v2", num_classes=3).train()
    before = {name: tensor.clone() for name, tensor in segmenter.state_dict().items()}
    folded, _ = fold_batchnorms(segmenter)
    assert segmenter.training and all(p.requires_grad for p in segmenter.parameters())
    assert all(torch.equal(before[name], tensor) for name, tensor in segmenter.state_dict().items())
    assert not folded.training and not any(p.requires_grad for p in folded.parameters())


def test_only_batchnorms_after_a_convolution_are_folded_and_the_rest_still_compute_the_same():
    torch.manual_seed(0)
    network = _with_running_statistics(nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=True), nn.BatchNorm2d(4), nn.ReLU(),
        nn.BatchNorm2d(4),  # after a ReLU: cannot be folded, stays
        nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False), nn.Conv2d(4, 6, 1)),
        nn.BatchNorm2d(6),  # after a separable convolution: folded into its pointwise part
    ))
    folded, count = fold_batchnorms(network)
    assert count == 2
    assert [type(m).__name__ for m in folded] == ["Conv2d", "Identity", "ReLU", "BatchNorm2d", "Sequential", "Identity"]
    image = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(folded(image), network(image), atol=1e-5)


def test_cached_copy_is_reused_until_the_weights_change():
    torch.manual_seed(0)
    segmenter = _with_running_statistics(create_segmenter("DeepLabV3Plus", "mobilenet_v2", num_classes=3))
    first = folded_for_inference(segmenter)
    assert folded_for_inference(segmenter) is first
    image = torch.rand(1, 1, 64, 64)

    # An optimiser step changes the weights in place: a new copy that computes the new function.
    optimizer = torch.optim.SGD(segmenter.parameters(), lr=0.05)
    segmenter.train()
    segmenter(torch.rand(2, 1, 64, 64)).mean().backward()  # also updates the running statistics
    optimizer.step()
    segmenter.eval()
    second = folded_for_inference(segmenter)
    assert second is not first
    with torch.no_grad():
        expected = segmenter(image)
        assert torch.allclose(second(image), expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))
        assert not torch.allclose(first(image), expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))

    # Loading a checkpoint (in-place copies) is a change too.
    other = _with_running_statistics(create_segmenter("DeepLabV3Plus", "mobilenet_v2", num_classes=3), seed=1)
    segmenter.load_state_dict(other.state_dict())
    third = folded_for_inference(segmenter)
    assert third is not second
    with torch.no_grad():
        expected = other(image)
        assert torch.allclose(third(image), expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))
