"""Frozen depthwise convolutions: same values, input gradients and forward-mode derivatives as
the convolution they replace, on maps where the dilated taps reach the image and where they do not."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import jvp, vmap

from uaafusion.depthwise import FrozenDepthwiseConv2d, is_replaceable, use_frozen_depthwise
from uaafusion.folding import folded_for_inference
from uaafusion.models import create_segmenter


def _frozen_depthwise(channels: int, kernel: int, dilation: int, bias: bool = True, seed: int = 0) -> nn.Conv2d:
    torch.manual_seed(seed)
    convolution = nn.Conv2d(channels, channels, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation,
                            groups=channels, bias=bias)
    convolution.requires_grad_(False)
    return convolution


@pytest.mark.parametrize(
    ("kernel", "dilation", "height", "width"),
    [
        (3, 1, 9, 11),   # plain depthwise
        (3, 2, 6, 6),    # the encoder's dilated last stage at output stride 16
        (3, 12, 6, 6),   # ASPP on a small map: only the centre tap reads the image
        (3, 12, 30, 8),  # rows reach the image, columns do not
        (5, 3, 7, 4),
    ],
)
def test_same_values_input_gradient_and_forward_derivative(kernel, dilation, height, width):
    reference = _frozen_depthwise(6, kernel, dilation, bias=kernel == 3)
    frozen = FrozenDepthwiseConv2d(reference)
    image = torch.rand(2, 6, height, width)
    assert torch.allclose(frozen(image), reference(image), atol=1e-6)

    upstream = torch.randn(2, 6, height, width)
    gradients = []
    for network in (reference, frozen):
        point = image.clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad((network(point) * upstream).sum(), point)
        gradients.append(gradient)
    assert torch.allclose(gradients[1], gradients[0], atol=1e-5)

    tangents = torch.randn(3, 2, 6, height, width)  # vmapped tangents, as the forward attribution engine does
    derivatives = [vmap(lambda tangent, net=network: jvp(net, (image,), (tangent,))[1])(tangents)
                   for network in (reference, frozen)]
    assert torch.allclose(derivatives[1], derivatives[0], atol=1e-5)


def test_only_frozen_stride_one_same_depthwise_convolutions_are_replaced():
    assert is_replaceable(_frozen_depthwise(4, 3, 2))
    trainable = nn.Conv2d(4, 4, 3, padding=1, groups=4)
    strided = nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4).requires_grad_(False)
    dense = nn.Conv2d(4, 4, 3, padding=1).requires_grad_(False)
    unpadded = nn.Conv2d(4, 4, 3, padding=0, groups=4).requires_grad_(False)
    reflect = nn.Conv2d(4, 4, 3, padding=1, groups=4, padding_mode="reflect").requires_grad_(False)
    assert not any(is_replaceable(module) for module in (trainable, strided, dense, unpadded, reflect))
    with pytest.raises(ValueError, match="depthwise"):
        FrozenDepthwiseConv2d(strided)

    network = nn.Sequential(_frozen_depthwise(4, 3, 1), strided, nn.Sequential(_frozen_depthwise(4, 3, 12)), trainable)
    assert use_frozen_depthwise(network) == 2
    assert [type(module).__name__ for module in (network[0], network[1], network[2][0], network[3])] == [
        "FrozenDepthwiseConv2d", "Conv2d", "FrozenDepthwiseConv2d", "Conv2d"]


def test_frozen_segmenter_copy_keeps_the_eval_function_and_its_input_gradient():
    torch.manual_seed(0)
    segmenter = create_segmenter("DeepLabV3Plus", "mobilenet_v2", num_classes=4).eval()
    frozen = folded_for_inference(segmenter)
    replaced = [module for module in frozen.modules() if isinstance(module, FrozenDepthwiseConv2d)]
    dilations = sorted({module.dilation[0] for module in replaced})
    assert len(replaced) >= 10 and dilations == [1, 2, 12, 24, 36]  # encoder (1, 2) and ASPP (12, 24, 36)
    for height, width in ((96, 96), (64, 160)):  # 6x6 and 4x10 maps at output stride 16: ASPP taps trimmed
        image = torch.rand(2, 1, height, width)
        with torch.no_grad():
            expected = segmenter(image)
            assert torch.allclose(frozen(image), expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))
        gradients = []
        for network in (segmenter, frozen):
            point = image.clone().requires_grad_(True)
            (gradient,) = torch.autograd.grad((network(point) ** 2).sum(), point)
            gradients.append(gradient)
        scale = float(gradients[0].abs().max())
        assert torch.allclose(gradients[1], gradients[0], rtol=1e-4, atol=1e-4 * scale)


def test_mixed_precision_backward_and_forward_derivative_match_the_replaced_convolution():
    """Under ``train.amp`` (bfloat16 autocast) the forward convolution runs in bfloat16 while the
    weights stay float32: the derivative passes must follow the lower precision, as the replaced
    convolution's do (they failed with a dtype mismatch before)."""
    reference = _frozen_depthwise(6, 3, 2)
    frozen = FrozenDepthwiseConv2d(reference)
    image = torch.rand(2, 6, 9, 9)
    upstream = torch.randn(2, 6, 9, 9)
    results = []
    for network in (reference, frozen):
        point = image.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output = network(point)
        (gradient,) = torch.autograd.grad((output.float() * upstream).sum(), point)
        assert output.dtype == torch.bfloat16 and gradient.dtype == torch.float32
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, derivative = jvp(network, (image,), (upstream,))
        results.append((output.float(), gradient, derivative.float()))
    for frozen_value, reference_value in zip(results[1], results[0]):
        assert torch.allclose(frozen_value, reference_value, atol=2e-2, rtol=2e-2)
