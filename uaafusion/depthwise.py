"""Frozen depthwise convolutions with cheap derivative passes, for the frozen segmenter.

The segmenter's MobileNetV2 encoder and its DeepLabV3+ ASPP are mostly depthwise 3x3
convolutions, many of them dilated (the encoder's last stage runs at dilation 2 for output
stride 16, the ASPP at 12, 24 and 36). On the CPU two things about them are slow, and both have an
exact cheaper form when the weights are frozen (the folded eval copy of the segmenter that the
attention gradients, the fusion-stage segmentation loss and the attribution run through):

- PyTorch's input-gradient kernel for a dilated depthwise convolution is up to 10x slower than the
  forward convolution. For stride 1 and "same" padding the input gradient *is* a depthwise
  convolution of the output gradient with the spatially flipped kernel, so the backward pass here
  runs that forward convolution instead (:class:`_SameDepthwise`).
- A tap whose offset (a multiple of the dilation) is at least the map's height (width) only ever
  reads the zero padding. On small maps (a 96x96 training crop is 6x6 at output stride 16, where
  the ASPP's dilations 12-36 leave only the centre tap) those rows (columns) of the kernel are
  dropped before the convolution, forward and backward.

Both are the same function up to float round-off. Forward-mode derivatives (the forward
attribution engine's ``torch.func.jvp`` under ``vmap``) use the same convolution on the tangent.
Only stride-1, odd-kernel, "same"-padded, zero-padded depthwise convolutions whose weights need no
gradient are replaced (:func:`use_frozen_depthwise`); everything else is left as it is.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class _SameDepthwise(torch.autograd.Function):
    """``conv2d(x, weight, bias, stride 1, padding, dilation, groups=channels)`` with the input
    gradient computed as a convolution with the flipped kernel. ``weight`` and ``bias`` are
    constants (no gradient)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                padding: tuple[int, int], dilation: tuple[int, int]) -> torch.Tensor:
        return F.conv2d(x, weight, bias, 1, padding, dilation, weight.shape[0])

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        _, weight, _, padding, dilation = inputs
        ctx.weight, ctx.padding, ctx.dilation = weight, padding, dilation

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None, None, None]:
        weight = ctx.weight.to(grad_output.dtype)  # under autocast the forward ran in a lower precision
        grad_input = F.conv2d(grad_output, weight.flip(-2, -1), None, 1, ctx.padding, ctx.dilation, weight.shape[0])
        return grad_input, None, None, None, None

    @staticmethod
    def jvp(ctx: Any, x_tangent: torch.Tensor, *constant_tangents: Any) -> torch.Tensor:
        weight = ctx.weight.to(x_tangent.dtype)
        return F.conv2d(x_tangent, weight, None, 1, ctx.padding, ctx.dilation, weight.shape[0])


class FrozenDepthwiseConv2d(nn.Module):
    """A frozen stride-1 "same" depthwise convolution: ``(B, C, H, W) -> (B, C, H, W)``, the same
    values as the ``nn.Conv2d`` it was made from, with the faster derivative passes described in
    the module docstring. Weight ``(C, 1, kh, kw)`` and bias ``(C,)`` are buffers (no gradient)."""

    def __init__(self, convolution: nn.Conv2d) -> None:
        super().__init__()
        if not is_replaceable(convolution):
            raise ValueError(f"not a frozen stride-1 'same' depthwise convolution: {convolution}")
        self.register_buffer("weight", convolution.weight.detach().clone())
        bias = convolution.bias.detach().clone() if convolution.bias is not None else None
        self.register_buffer("bias", bias)
        self.dilation: tuple[int, int] = tuple(convolution.dilation)  # type: ignore[assignment]
        self.padding: tuple[int, int] = tuple(convolution.padding)  # type: ignore[assignment]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, padding = self.weight, list(self.padding)
        for axis, size in ((0, x.shape[-2]), (1, x.shape[-1])):
            taps = weight.shape[2 + axis]
            if taps > 1 and self.dilation[axis] >= size:  # every tap but the centre reads padding only
                weight = weight.narrow(2 + axis, taps // 2, 1)
                padding[axis] = 0
        return _SameDepthwise.apply(x, weight, self.bias, tuple(padding), self.dilation)

    def extra_repr(self) -> str:
        channels, _, height, width = self.weight.shape
        return f"{channels}, kernel_size=({height}, {width}), dilation={self.dilation}, padding={self.padding}"


def is_replaceable(module: nn.Module) -> bool:
    """True for an ``nn.Conv2d`` that is depthwise, stride 1, odd-kernel, zero-padded to the same
    size (``padding = dilation * (kernel - 1) / 2``) and has weights that need no gradient."""
    if type(module) is not nn.Conv2d:
        return False
    kernel, dilation, padding = module.kernel_size, module.dilation, module.padding
    return (
        module.groups == module.in_channels == module.out_channels
        and tuple(module.stride) == (1, 1)
        and module.padding_mode == "zeros"
        and not isinstance(padding, str)
        and all(size % 2 == 1 for size in kernel)
        and all(pad == rate * (size - 1) // 2 for pad, rate, size in zip(padding, dilation, kernel))
        and not module.weight.requires_grad
        and (module.bias is None or not module.bias.requires_grad)
    )


def use_frozen_depthwise(network: nn.Module) -> int:
    """Replace, in place, every replaceable depthwise convolution of ``network``
    (:func:`is_replaceable`) with a :class:`FrozenDepthwiseConv2d`; returns how many."""
    replaced = 0
    for parent in list(network.modules()):
        for name, child in list(parent.named_children()):
            if is_replaceable(child):
                setattr(parent, name, FrozenDepthwiseConv2d(child))
                replaced += 1
    return replaced
