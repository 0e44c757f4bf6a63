"""Eval-mode copies of a network with each BatchNorm folded into the convolution before it.

In eval mode ``BN(conv(x)) = s * (W * x + b - mean) + beta`` with ``s = gamma / sqrt(var + eps)``
per output channel: the same as one convolution with weights ``s * W`` and bias
``s * (b - mean) + beta``. Folding removes a full elementwise pass per BatchNorm, forward and
(for the attention gradients and the forward-mode attribution) in the derivative passes too.

The folded copy serves the frozen segmenter (:func:`uaafusion.attribution.frozen_segmenter`):
:func:`folded_for_inference` keeps one per segmenter and builds a new one when any of the
segmenter's parameters or buffers changed (an optimiser step, a loaded checkpoint, a move to
another device). A BatchNorm is folded when, inside an ``nn.Sequential``, it directly follows a
``Conv2d`` or a ``Sequential`` whose last layer is a ``Conv2d`` (smp's separable convolution);
every other BatchNorm stays as it is, in eval mode, so the copy always computes the same
function as the segmenter in eval mode (up to float round-off). The copy that
:func:`folded_for_inference` hands out also has its depthwise convolutions replaced by the frozen
form of :mod:`uaafusion.depthwise` (faster input gradients, same values).
"""

from __future__ import annotations

import copy
import weakref
from typing import Any

import torch
from torch import nn

from uaafusion.depthwise import use_frozen_depthwise

_FOLDED: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple[Any, ...], nn.Module]]" = weakref.WeakKeyDictionary()


def _last_convolution(module: nn.Module) -> nn.Conv2d | None:
    """``module`` itself when it is a ``Conv2d``; the last layer of a ``Sequential`` when that is one."""
    while isinstance(module, nn.Sequential) and len(module) > 0:
        module = module[len(module) - 1]
    return module if isinstance(module, nn.Conv2d) else None


def _foldable(norm: nn.Module, convolution: nn.Conv2d | None) -> bool:
    return (
        convolution is not None
        and type(norm) is nn.BatchNorm2d
        and norm.running_mean is not None
        and norm.running_var is not None
        and norm.num_features == convolution.out_channels
    )


@torch.no_grad()
def _fold_into(convolution: nn.Conv2d, norm: nn.BatchNorm2d) -> None:
    """Rewrite ``convolution`` in place so that it computes ``norm(convolution(x))`` (eval mode)."""
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    if convolution.bias is not None:
        shift = shift + convolution.bias * scale
    convolution.weight.mul_(scale.view(-1, *([1] * (convolution.weight.dim() - 1))).to(convolution.weight.dtype))
    convolution.bias = nn.Parameter(shift.to(convolution.weight.dtype), requires_grad=False)


def fold_batchnorms(network: nn.Module) -> tuple[nn.Module, int]:
    """A frozen eval-mode copy of ``network`` with foldable BatchNorms folded; ``(copy, folded count)``.

    The copy's parameters have ``requires_grad=False``; ``network`` itself is not touched.
    """
    folded_network = copy.deepcopy(network).eval()
    folded = 0
    for module in list(folded_network.modules()):
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for before, name in zip(names, names[1:]):
            norm = module._modules[name]
            convolution = _last_convolution(module._modules[before])
            if _foldable(norm, convolution):
                _fold_into(convolution, norm)
                module._modules[name] = nn.Identity()
                folded += 1
    for parameter in folded_network.parameters():
        parameter.requires_grad_(False)
    return folded_network, folded


def weights_signature(network: nn.Module) -> tuple[Any, ...]:
    """Cheap identity of the current weights: storage, in-place version counter and shape of each tensor."""
    return tuple(
        (tensor.data_ptr(), tensor._version, tuple(tensor.shape), tensor.dtype)
        for tensor in (*network.parameters(), *network.buffers())
    )


def folded_for_inference(network: nn.Module) -> nn.Module:
    """The folded eval copy of ``network`` (:func:`fold_batchnorms`) with its frozen depthwise
    convolutions in the faster form of :mod:`uaafusion.depthwise`; rebuilt only when the weights
    of ``network`` changed."""
    signature = weights_signature(network)
    cached = _FOLDED.get(network)
    if cached is not None and cached[0] == signature:
        return cached[1]
    folded_network, _ = fold_batchnorms(network)
    use_frozen_depthwise(folded_network)
    _FOLDED[network] = (signature, folded_network)
    return folded_network
