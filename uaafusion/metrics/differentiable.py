"""VIF, Qabf and SSIM as differentiable torch functions, equal to :mod:`uaafusion.metrics.fusion`'s.

The evaluation's definitions (:func:`uaafusion.metrics.fusion.visual_information_fidelity`,
:func:`~uaafusion.metrics.fusion.qabf`, :func:`~uaafusion.metrics.fusion.structural_similarity`:
same windows, constants, clamps and 'valid' regions) written with torch operations, batched, so
that a fused image can be optimised against them (``experiments/metric_oracle.py``). In float64
they agree with the numpy metrics to round-off (``tests/metrics/test_differentiable.py``); the
numpy module stays the reference that every report uses.

All functions take ``fused, ir, vi``: ``(N, 1, H, W)`` float tensors on the 0-255 scale (gray),
and return ``(N,)``: the metric of each image of the batch. Where the reference definition has a
kink (``sqrt`` at 0, ``atan(gy / gx)`` at ``gx = 0``, the clamps of VIF), the gradient is that of
the branch taken, and zero through the constant branches.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as functional

from uaafusion.imageops import sobel
from uaafusion.metrics.fusion import (
    QABF_GAMMA_ALPHA,
    QABF_GAMMA_G,
    QABF_KAPPA_ALPHA,
    QABF_KAPPA_G,
    QABF_SIGMA_ALPHA,
    QABF_SIGMA_G,
    SSIM_DYNAMIC_RANGE,
    SSIM_K1,
    SSIM_K2,
    SSIM_WINDOW_SIGMA,
    SSIM_WINDOW_SIZE,
    VIF_EPSILON,
    VIF_NOISE_VARIANCE,
    VIF_SCALES,
    gaussian_kernel_1d,
    vif_window_taps,
)


def _check_triple(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> None:
    if fused.dim() != 4 or fused.shape[1] != 1:
        raise ValueError(f"expected (N, 1, H, W) gray images, got fused of shape {tuple(fused.shape)}")
    if not fused.shape == ir.shape == vi.shape:
        raise ValueError(
            f"fused, infrared and visible batches must have the same shape, got "
            f"{tuple(fused.shape)}, {tuple(ir.shape)}, {tuple(vi.shape)}"
        )


def filter_valid(images: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable correlation with ``outer(taps, taps)``, 'valid' region: ``(N, C, H, W) -> (N, C, H-k+1, W-k+1)``."""
    channels = images.shape[1]
    size = taps.numel()
    rows = taps.view(1, 1, 1, size).expand(channels, 1, 1, size)
    columns = taps.view(1, 1, size, 1).expand(channels, 1, size, 1)
    return functional.conv2d(functional.conv2d(images, rows, groups=channels), columns, groups=channels)


def _taps(taps: object, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(taps, dtype=like.dtype, device=like.device)


def _local_statistics(
    shared: torch.Tensor, others: torch.Tensor, taps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Local means, variances and covariances of ``shared`` ``(N, 1, H, W)`` against ``others`` ``(N, K, H, W)``.

    Returns ``(mean_shared (N,1,h,w), variance_shared (N,1,h,w), means_others (N,K,h,w),
    variances_others (N,K,h,w), covariances (N,K,h,w))``, variances ``E[x^2] - E[x]^2`` unclamped.
    """
    count = others.shape[1]
    stacked = torch.cat([shared, others, shared * shared, others * others, shared * others], dim=1)
    moments = filter_valid(stacked, taps)
    means, squares, products = moments[:, : count + 1], moments[:, count + 1 : 2 * count + 2], moments[:, 2 * count + 2 :]
    variances = squares - means * means
    covariances = products - means[:, :1] * means[:, 1:]
    return means[:, :1], variances[:, :1], means[:, 1:], variances[:, 1:], covariances


def ssim_sum(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """``SSIM(F, I) + SSIM(F, V)`` per image, ``(N,)`` (the evaluation's SSIM)."""
    _check_triple(fused, ir, vi)
    taps = _taps(gaussian_kernel_1d(SSIM_WINDOW_SIZE, SSIM_WINDOW_SIGMA), fused)
    mean_fused, variance_fused, means, variances, covariances = _local_statistics(
        fused, torch.cat([ir, vi], dim=1), taps
    )
    constant_1 = (SSIM_K1 * SSIM_DYNAMIC_RANGE) ** 2
    constant_2 = (SSIM_K2 * SSIM_DYNAMIC_RANGE) ** 2
    numerator = (2.0 * mean_fused * means + constant_1) * (2.0 * covariances + constant_2)
    denominator = (mean_fused**2 + means**2 + constant_1) * (variance_fused + variances + constant_2)
    return (numerator / denominator).mean(dim=(2, 3)).sum(dim=1)


def _vif_scale_terms(
    variance_reference: torch.Tensor, variance_distorted: torch.Tensor, covariance: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image numerator and denominator sums of one VIF scale, ``(N, K)`` each (clamps as the reference)."""
    zero = torch.zeros((), dtype=covariance.dtype, device=covariance.device)
    variance_reference = variance_reference.clamp(min=0.0)
    variance_distorted = variance_distorted.clamp(min=0.0)
    gain = covariance / (variance_reference + VIF_EPSILON)
    residual = variance_distorted - gain * covariance

    flat_reference = variance_reference < VIF_EPSILON
    gain = torch.where(flat_reference, zero, gain)
    residual = torch.where(flat_reference, variance_distorted, residual)
    variance_reference = torch.where(flat_reference, zero, variance_reference)

    flat_distorted = variance_distorted < VIF_EPSILON
    gain = torch.where(flat_distorted, zero, gain)
    residual = torch.where(flat_distorted, zero, residual)

    negative_gain = gain < 0
    residual = torch.where(negative_gain, variance_distorted, residual)
    gain = torch.where(negative_gain, zero, gain)
    residual = residual.clamp(min=VIF_EPSILON)

    numerator = torch.log10(1.0 + gain * gain * variance_reference / (residual + VIF_NOISE_VARIANCE)).sum(dim=(2, 3))
    denominator = torch.log10(1.0 + variance_reference / VIF_NOISE_VARIANCE).sum(dim=(2, 3))
    return numerator, denominator


def vif_sum(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """``VIF(I, F) + VIF(V, F)`` per image, ``(N,)`` (the evaluation's multi-scale pixel-domain VIF)."""
    _check_triple(fused, ir, vi)
    images = torch.cat([fused, ir, vi], dim=1)
    numerators = torch.zeros(fused.shape[0], 2, dtype=fused.dtype, device=fused.device)
    denominators = torch.zeros_like(numerators)
    for scale in range(1, VIF_SCALES + 1):
        taps = _taps(vif_window_taps(scale), fused)
        if scale > 1:
            images = filter_valid(images, taps)[:, :, ::2, ::2]
        if images.shape[-2] < taps.numel() or images.shape[-1] < taps.numel():
            break
        _, variance_fused, _, variances, covariances = _local_statistics(images[:, :1], images[:, 1:], taps)
        numerator, denominator = _vif_scale_terms(variances, variance_fused.expand_as(variances), covariances)
        numerators = numerators + numerator
        denominators = denominators + denominator
    safe = denominators > 0
    ratios = torch.where(safe, numerators / torch.where(safe, denominators, torch.ones_like(denominators)), 0.0)
    return ratios.sum(dim=1)


def _strength_and_orientation(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sobel strength ``sqrt(gx^2 + gy^2)`` and orientation ``atan(gy / gx)`` (pi/2 where ``gx = 0``)."""
    gradient_x, gradient_y = sobel(image)
    squared = gradient_x * gradient_x + gradient_y * gradient_y
    edge = squared > 0
    strength = torch.where(edge, torch.sqrt(torch.where(edge, squared, torch.ones_like(squared))), 0.0)
    vertical = gradient_x == 0
    orientation = torch.atan(gradient_y / torch.where(vertical, torch.ones_like(gradient_x), gradient_x))
    return strength, torch.where(vertical, math.pi / 2, orientation)


def _edge_preservation(
    strength_source: torch.Tensor, orientation_source: torch.Tensor,
    strength_fused: torch.Tensor, orientation_fused: torch.Tensor,
) -> torch.Tensor:
    larger = torch.maximum(strength_source, strength_fused)
    smaller = torch.minimum(strength_source, strength_fused)
    relative_strength = smaller / torch.where(larger > 0, larger, torch.ones_like(larger))
    relative_orientation = 1.0 - (orientation_source - orientation_fused).abs() / (math.pi / 2)
    strength_term = QABF_GAMMA_G * torch.sigmoid(-QABF_KAPPA_G * (relative_strength - QABF_SIGMA_G))
    orientation_term = QABF_GAMMA_ALPHA * torch.sigmoid(-QABF_KAPPA_ALPHA * (relative_orientation - QABF_SIGMA_ALPHA))
    return strength_term * orientation_term


def qabf(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """Xydeas-Petrovic Qabf per image, ``(N,)`` (0 where both sources are flat)."""
    _check_triple(fused, ir, vi)
    strength, orientation = _strength_and_orientation(torch.cat([fused, ir, vi], dim=0))
    strength_fused, strength_ir, strength_vi = strength.chunk(3, dim=0)
    orientation_fused, orientation_ir, orientation_vi = orientation.chunk(3, dim=0)
    kept_ir = _edge_preservation(strength_ir, orientation_ir, strength_fused, orientation_fused)
    kept_vi = _edge_preservation(strength_vi, orientation_vi, strength_fused, orientation_fused)
    numerator = (kept_ir * strength_ir + kept_vi * strength_vi).sum(dim=(1, 2, 3))
    denominator = (strength_ir + strength_vi).sum(dim=(1, 2, 3))
    safe = denominator > 0
    return torch.where(safe, numerator / torch.where(safe, denominator, torch.ones_like(denominator)), 0.0)


# The metrics issue #8 asks a fused image to beat both pixel baselines on, in the column order of
# :func:`target_metrics`.
TARGET_METRICS: tuple[str, ...] = ("VIF", "Qabf", "SSIM")


def target_metrics(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """VIF, Qabf and SSIM of each image, ``(N, 3)`` in :data:`TARGET_METRICS` order (0-255 inputs as above)."""
    return torch.stack([vif_sum(fused, ir, vi), qabf(fused, ir, vi), ssim_sum(fused, ir, vi)], dim=1)
