"""Image-fusion quality metrics of a fused image ``F`` against its infrared ``A`` and visible ``B`` sources.

All inputs are gray images on the 0-255 scale: ``(H, W)`` arrays (any real dtype). Colour
``(H, W, 3)`` images are first turned into BT.601 luma rounded to integers
(:func:`uaafusion.data.io.to_gray_uint8`, OpenCV's ``BGR2GRAY``). Computations run in float64.

========  ==========================================================================  ===========
metric    definition                                                                  unit
========  ==========================================================================  ===========
EN        Shannon entropy ``-sum p log2 p`` of the 256-bin histogram of ``round(F)``   bits
SD        population standard deviation of ``F``                                      gray levels
SF        ``sqrt(RF^2 + CF^2)``; ``RF^2`` / ``CF^2`` = mean squared difference of       gray levels
          horizontal / vertical neighbours (``H x (W-1)`` / ``(H-1) x W`` differences)
AG        mean over pixels of ``sqrt((Gx^2 + Gy^2) / 2)``, ``Gx, Gy`` from              gray levels
          ``numpy.gradient`` (central differences inside, one-sided at the borders)    per pixel
MI        ``MI(F, A) + MI(F, B)`` from 256x256 joint histograms of the rounded          nats
          integer images, natural logarithm
MI_bits   ``MI / ln 2``                                                               bits
SCD       ``corr(F - B, A) + corr(F - A, B)``, Pearson correlations                   none, [-2, 2]
VIF       ``VIF(A, F) + VIF(B, F)``, each the pixel-domain multi-scale VIF            none, ~[0, 2]
          (Sheikh & Bovik "vifp"), see :func:`visual_information_fidelity`
Qabf      Xydeas-Petrovic edge-preservation index, see :func:`qabf`                   none, [0, 1]
SSIM      ``SSIM(F, A) + SSIM(F, B)``, Wang et al. 2004, see                          none, [-2, 2]
          :func:`structural_similarity`
========  ==========================================================================  ===========

Conventions for degenerate inputs (they never occur on real photographs, but must not crash):
a Pearson correlation with a constant signal counts as 0 (SCD); VIF against a constant
reference (no information to preserve) is 0, and so is VIF of an image smaller than its first
17x17 window; Qabf with two edge-free sources is 0 (with zero padding, only an all-zero image is
edge-free: a constant non-zero image has edges along its border); SSIM of an image smaller than
the 11x11 window is ``nan``. VIF above 1 per source means contrast enhancement.

Gaussian filtering is separable float64 correlation (``scipy.ndimage.correlate1d``) keeping the
'valid' region only (windows wholly inside the image, as MATLAB's ``filter2(w, x, 'valid')``);
the Sobel derivatives of Qabf come from :func:`uaafusion.imageops.sobel` (torch; float32 for
integer-valued images, where it is exact, float64 otherwise). Everything is vectorised: about
0.3 s per 640x480 triple on one idle CPU core (``python -m benchmarks --only metrics``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import torch
from scipy import ndimage

from uaafusion.data.io import to_gray_uint8
from uaafusion.imageops import sobel

METRIC_NAMES: Final[tuple[str, ...]] = ("EN", "SD", "SF", "AG", "MI", "MI_bits", "SCD", "VIF", "Qabf", "SSIM")
"""Keys of :func:`fusion_metrics`, in table order."""

GRAY_LEVELS: Final[int] = 256

# VIF (Sheikh & Bovik, pixel domain, multi-scale).
VIF_SCALES: Final[int] = 4
VIF_NOISE_VARIANCE: Final[float] = 2.0
VIF_EPSILON: Final[float] = 1e-10

# Qabf (Xydeas & Petrovic 2000): sigmoid parameters of the strength (g) and orientation (alpha) terms.
QABF_GAMMA_G: Final[float] = 0.9994
QABF_KAPPA_G: Final[float] = -15.0
QABF_SIGMA_G: Final[float] = 0.5
QABF_GAMMA_ALPHA: Final[float] = 0.9879
QABF_KAPPA_ALPHA: Final[float] = -22.0
QABF_SIGMA_ALPHA: Final[float] = 0.8

# SSIM (Wang et al. 2004).
SSIM_WINDOW_SIZE: Final[int] = 11
SSIM_WINDOW_SIGMA: Final[float] = 1.5
SSIM_K1: Final[float] = 0.01
SSIM_K2: Final[float] = 0.03
SSIM_DYNAMIC_RANGE: Final[float] = 255.0


# --------------------------------------------------------------------------------------------
# Input handling and filtering helpers
# --------------------------------------------------------------------------------------------


def as_gray_float(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """An image on the 0-255 scale -> gray float64 ``(H, W)``.

    ``(H, W)`` is taken as gray; ``(H, W, 3)`` (or 4, alpha ignored) as RGB and converted with
    :func:`uaafusion.data.io.to_gray_uint8` (BT.601 luma rounded to integers).
    """
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        array = to_gray_uint8(array)
    if array.ndim != 2:
        raise ValueError(f"expected a gray (H, W) or colour (H, W, 3) image, got shape {array.shape}")
    return array.astype(np.float64, copy=False)


def _as_integer_levels(image: np.ndarray) -> np.ndarray:
    """Round to the nearest integer gray level and clip to ``0..255`` -> int64."""
    return np.clip(np.rint(image), 0, GRAY_LEVELS - 1).astype(np.int64)


def gaussian_kernel_1d(size: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian taps at offsets ``-(size-1)/2 .. (size-1)/2``.

    The outer product with itself equals MATLAB's ``fspecial('gaussian', size, sigma)``.
    """
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    taps = np.exp(-(offsets**2) / (2.0 * sigma**2))
    return taps / taps.sum()


def _filter_valid(images: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable correlation of every ``(H, W)`` slice with ``outer(taps, taps)``, 'valid' region only.

    images: ``(N, H, W)`` float64 -> ``(N, H - k + 1, W - k + 1)`` (``k = len(taps)``, odd); empty
    when an image is smaller than the kernel.
    """
    size = len(taps)
    half = size // 2
    height, width = images.shape[-2:]
    if height < size or width < size:
        return np.zeros(images.shape[:-2] + (max(0, height - size + 1), max(0, width - size + 1)))
    # correlate1d centres the kernel on each pixel; keep the centres whose window fits inside.
    filtered = ndimage.correlate1d(images, taps, axis=-1, mode="constant")[..., half:width - half]
    return ndimage.correlate1d(filtered, taps, axis=-2, mode="constant")[..., half:height - half, :]


@dataclass(frozen=True)
class _LocalStatistics:
    """Gaussian-weighted local statistics ('valid' region) of one shared image against others.

    ``variance_*`` are ``E[x^2] - E[x]^2`` (not clamped); ``others_*[i]`` and ``covariances[i]``
    belong to the i-th other image.
    """

    shared_mean: np.ndarray
    shared_variance: np.ndarray
    others_means: list[np.ndarray]
    others_variances: list[np.ndarray]
    covariances: list[np.ndarray]


def _local_statistics(shared: np.ndarray, others: Sequence[np.ndarray], taps: np.ndarray) -> _LocalStatistics:
    """Local means, variances and covariances with the Gaussian window ``outer(taps, taps)``.

    One filtering pass over ``[S, O1.., S^2, O1^2.., S*O1..]`` (``3 n + 2`` channels for ``n``
    other images), so the statistics of ``S`` are computed once for all pairs ``(S, Oi)``.
    """
    count = len(others)
    stacked = np.stack(
        [shared, *others, shared * shared, *(other * other for other in others), *(shared * other for other in others)]
    )
    moments = _filter_valid(stacked, taps)
    means = moments[: count + 1]
    squares = moments[count + 1 : 2 * count + 2]
    products = moments[2 * count + 2 :]
    variances = squares - means * means
    return _LocalStatistics(
        shared_mean=means[0],
        shared_variance=variances[0],
        others_means=list(means[1:]),
        others_variances=list(variances[1:]),
        covariances=[products[index] - means[0] * means[index + 1] for index in range(count)],
    )


# --------------------------------------------------------------------------------------------
# Metrics on the fused image alone
# --------------------------------------------------------------------------------------------


def entropy(fused: np.ndarray) -> float:
    """EN: Shannon entropy in bits of the 256-bin histogram of ``round(F)`` (clipped to 0..255)."""
    counts = np.bincount(_as_integer_levels(as_gray_float(fused)).ravel(), minlength=GRAY_LEVELS)
    probabilities = counts[counts > 0] / counts.sum()
    return float(-(probabilities * np.log2(probabilities)).sum()) + 0.0


def standard_deviation(fused: np.ndarray) -> float:
    """SD: population standard deviation (divide by ``N``) of ``F``, in gray levels."""
    return float(np.std(as_gray_float(fused)))


def spatial_frequency(fused: np.ndarray) -> float:
    """SF: ``sqrt(RF^2 + CF^2)`` in gray levels.

    ``RF^2`` is the mean of ``(F[i, j] - F[i, j-1])^2`` over the ``H x (W-1)`` horizontal
    neighbour pairs, ``CF^2`` the mean of ``(F[i, j] - F[i-1, j])^2`` over the ``(H-1) x W``
    vertical pairs (a missing direction, for a one-pixel-wide image, contributes 0).
    """
    image = as_gray_float(fused)
    horizontal = np.diff(image, axis=1)
    vertical = np.diff(image, axis=0)
    row_frequency_squared = float(np.mean(horizontal**2)) if horizontal.size else 0.0
    column_frequency_squared = float(np.mean(vertical**2)) if vertical.size else 0.0
    return math.sqrt(row_frequency_squared + column_frequency_squared)


def average_gradient(fused: np.ndarray) -> float:
    """AG: mean over all pixels of ``sqrt((Gx^2 + Gy^2) / 2)``, in gray levels per pixel.

    ``Gx, Gy`` are :func:`numpy.gradient` derivatives (central differences ``(x[i+1]-x[i-1])/2``
    inside, one-sided ``x[1]-x[0]`` at the borders). Images need at least 2 rows and 2 columns.
    """
    image = as_gray_float(fused)
    gradient_y, gradient_x = np.gradient(image)
    return float(np.mean(np.sqrt((gradient_x**2 + gradient_y**2) / 2.0)))


# --------------------------------------------------------------------------------------------
# Metrics against the sources
# --------------------------------------------------------------------------------------------


def mutual_information(first: np.ndarray, second: np.ndarray) -> float:
    """Mutual information in nats of two images from their 256x256 joint histogram.

    Both images are rounded to integer gray levels (clipped to 0..255);
    ``MI = sum p(x, y) ln(p(x, y) / (p(x) p(y)))`` over the non-empty bins.
    """
    first_levels = _as_integer_levels(as_gray_float(first)).ravel()
    second_levels = _as_integer_levels(as_gray_float(second)).ravel()
    if first_levels.shape != second_levels.shape:
        raise ValueError(f"images differ in size: {np.shape(first)} vs {np.shape(second)}")
    joint_counts = np.bincount(first_levels * GRAY_LEVELS + second_levels, minlength=GRAY_LEVELS**2)
    joint = joint_counts.reshape(GRAY_LEVELS, GRAY_LEVELS).astype(np.float64) / first_levels.size
    marginal_first = joint.sum(axis=1)
    marginal_second = joint.sum(axis=0)
    rows, columns = np.nonzero(joint)
    probabilities = joint[rows, columns]
    information = np.sum(probabilities * np.log(probabilities / (marginal_first[rows] * marginal_second[columns])))
    return max(float(information), 0.0)


def _pearson_correlation(first: np.ndarray, second: np.ndarray) -> float:
    """Pearson correlation of two arrays; 0 when either is constant (correlation undefined)."""
    first_centred = first - first.mean()
    second_centred = second - second.mean()
    denominator = math.sqrt(float(np.sum(first_centred**2)) * float(np.sum(second_centred**2)))
    if denominator == 0.0:
        return 0.0
    return float(np.sum(first_centred * second_centred)) / denominator


def sum_of_correlations_of_differences(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """SCD (Aslantas & Bendes 2015): ``corr(F - B, A) + corr(F - A, B)``; unitless, in [-2, 2].

    A correlation with a constant signal (e.g. ``F - A`` when ``F == A``) counts as 0.
    """
    fused_image, ir_image, vi_image = as_gray_float(fused), as_gray_float(ir), as_gray_float(vi)
    return _pearson_correlation(fused_image - vi_image, ir_image) + _pearson_correlation(
        fused_image - ir_image, vi_image
    )


def _vif_scale_terms(
    variance_reference: np.ndarray, variance_distorted: np.ndarray, covariance: np.ndarray
) -> tuple[float, float]:
    """Numerator and denominator sums of VIF at one scale from the local (co)variances.

    Follows Sheikh & Bovik's ``vifp_mscale``: the distortion channel is ``D = g R + V`` with
    local gain ``g = cov / (var_R + eps)`` and residual variance ``var_V = var_D - g cov``.
    Clamps, in this order: negative local variances -> 0; where ``var_R < eps``: ``g = 0``,
    ``var_V = var_D``, ``var_R = 0``; where ``var_D < eps``: ``g = 0``, ``var_V = 0``; where
    ``g < 0``: ``var_V = var_D``, ``g = 0``; ``var_V`` at least eps (``eps = 1e-10``). Returns
    ``(sum log10(1 + g^2 var_R / (var_V + sn^2)), sum log10(1 + var_R / sn^2))``.
    """
    if variance_reference.size == 0:
        return 0.0, 0.0
    variance_reference = np.maximum(variance_reference, 0.0)
    variance_distorted = np.maximum(variance_distorted, 0.0)
    gain = covariance / (variance_reference + VIF_EPSILON)
    residual_variance = variance_distorted - gain * covariance

    flat_reference = variance_reference < VIF_EPSILON
    gain[flat_reference] = 0.0
    residual_variance[flat_reference] = variance_distorted[flat_reference]
    variance_reference[flat_reference] = 0.0

    flat_distorted = variance_distorted < VIF_EPSILON
    gain[flat_distorted] = 0.0
    residual_variance[flat_distorted] = 0.0

    negative_gain = gain < 0
    residual_variance[negative_gain] = variance_distorted[negative_gain]
    gain[negative_gain] = 0.0
    residual_variance = np.maximum(residual_variance, VIF_EPSILON)

    numerator = np.log10(1.0 + gain * gain * variance_reference / (residual_variance + VIF_NOISE_VARIANCE)).sum()
    denominator = np.log10(1.0 + variance_reference / VIF_NOISE_VARIANCE).sum()
    return float(numerator), float(denominator)


def vif_window_taps(scale: int) -> np.ndarray:
    """1-D Gaussian taps of VIF scale ``scale`` (1..4): size ``2^(5-scale) + 1``, sigma = size / 5."""
    size = 2 ** (VIF_SCALES + 1 - scale) + 1
    return gaussian_kernel_1d(size, size / 5.0)


def _vif_of_references(references: Sequence[np.ndarray], distorted: np.ndarray) -> list[float]:
    """VIF of ``distorted`` against each reference, sharing the work on ``distorted`` (see below)."""
    images = np.stack([distorted, *references])
    numerators = np.zeros(len(references))
    denominators = np.zeros(len(references))
    for scale in range(1, VIF_SCALES + 1):
        taps = vif_window_taps(scale)
        if scale > 1:
            images = _filter_valid(images, taps)[:, ::2, ::2]
        if images.shape[-2] < len(taps) or images.shape[-1] < len(taps):
            break
        statistics = _local_statistics(images[0], images[1:], taps)
        for index in range(len(references)):
            numerator, denominator = _vif_scale_terms(
                statistics.others_variances[index], statistics.shared_variance, statistics.covariances[index]
            )
            numerators[index] += numerator
            denominators[index] += denominator
    return [
        float(numerator / denominator) if denominator > 0 else 0.0
        for numerator, denominator in zip(numerators, denominators, strict=True)
    ]


def visual_information_fidelity(reference: np.ndarray, distorted: np.ndarray) -> float:
    """Pixel-domain multi-scale VIF (Sheikh & Bovik 2006, ``vifp_mscale``) of ``distorted`` w.r.t. ``reference``.

    Scales ``s = 1..4`` use a Gaussian window of size ``N = 2^(5-s) + 1`` (17, 9, 5, 3) with
    sigma ``N / 5``. Before scales 2..4 both images are filtered ('valid') with that scale's
    window and subsampled by 2 (every other row and column, starting at the first). The noise
    variance is ``sn^2 = 2``. VIF = (sum of numerators over all scales) / (sum of denominators);
    unitless, 1 for ``distorted == reference``, 0 for a constant reference. Scales whose window
    does not fit in the (subsampled) image contribute nothing.
    """
    reference_image = as_gray_float(reference)
    distorted_image = as_gray_float(distorted)
    if reference_image.shape != distorted_image.shape:
        raise ValueError(f"images differ in size: {reference_image.shape} vs {distorted_image.shape}")
    return _vif_of_references([reference_image], distorted_image)[0]


def _sobel_derivatives(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel ``(gx, gy)`` of ``(N, H, W)`` images via :func:`uaafusion.imageops.sobel`, as float64 numpy.

    Integer-valued images run in float32, which is exact for them (``|g| <= 4 * 255``) and
    much faster than float64 convolution; other images run in float64.
    """
    integer_valued = bool(np.all(images == np.rint(images))) and float(np.abs(images).max(initial=0.0)) < 2**20
    dtype = torch.float32 if integer_valued else torch.float64
    with torch.no_grad():
        gradient_x, gradient_y = sobel(torch.from_numpy(images).to(dtype).unsqueeze(1))
    return gradient_x[:, 0].numpy().astype(np.float64), gradient_y[:, 0].numpy().astype(np.float64)


def _edge_strength_and_orientation(gradient_x: np.ndarray, gradient_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel edge strength ``sqrt(gx^2 + gy^2)`` and orientation ``atan(gy / gx)`` (pi/2 where gx = 0)."""
    strength = np.sqrt(gradient_x * gradient_x + gradient_y * gradient_y)
    vertical = gradient_x == 0
    orientation = np.arctan(gradient_y / np.where(vertical, 1.0, gradient_x))
    orientation[vertical] = math.pi / 2
    return strength, orientation


def _edge_preservation(
    strength_source: np.ndarray,
    orientation_source: np.ndarray,
    strength_fused: np.ndarray,
    orientation_fused: np.ndarray,
) -> np.ndarray:
    """Per-pixel edge preservation ``Q^{SF} = Q_g Q_alpha`` of a source ``S`` in the fused image."""
    larger = np.maximum(strength_source, strength_fused)
    smaller = np.minimum(strength_source, strength_fused)
    relative_strength = smaller / np.where(larger > 0, larger, 1.0)  # 0 where both are 0
    relative_orientation = 1.0 - np.abs(orientation_source - orientation_fused) / (math.pi / 2)
    strength_term = QABF_GAMMA_G / (1.0 + np.exp(QABF_KAPPA_G * (relative_strength - QABF_SIGMA_G)))
    orientation_term = QABF_GAMMA_ALPHA / (1.0 + np.exp(QABF_KAPPA_ALPHA * (relative_orientation - QABF_SIGMA_ALPHA)))
    return strength_term * orientation_term


def qabf(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """Qabf (Xydeas & Petrovic 2000): share of the sources' edge information kept in ``F``; unitless, [0, 1].

    With 3x3 Sobel derivatives (zero-padded 'same', :func:`uaafusion.imageops.sobel`) of each
    image: strength ``g = sqrt(gx^2 + gy^2)``, orientation ``alpha = atan(gy / gx)`` (pi/2 where
    ``gx = 0``). For a source ``S`` in ``{A, B}``:
    ``G^{SF} = min(g_S, g_F) / max(g_S, g_F)`` (0 where both are 0),
    ``A^{SF} = 1 - |alpha_S - alpha_F| / (pi/2)``,
    ``Q^{SF} = Gg / (1 + exp(kg (G^{SF} - sg))) * Ga / (1 + exp(ka (A^{SF} - sa)))`` with
    ``Gg=0.9994, kg=-15, sg=0.5, Ga=0.9879, ka=-22, sa=0.8``.
    ``Qabf = sum(Q^{AF} g_A + Q^{BF} g_B) / sum(g_A + g_B)`` (0 when both sources are flat).
    """
    fused_image, ir_image, vi_image = as_gray_float(fused), as_gray_float(ir), as_gray_float(vi)
    if not fused_image.shape == ir_image.shape == vi_image.shape:
        raise ValueError(f"images differ in size: {fused_image.shape}, {ir_image.shape}, {vi_image.shape}")
    gradient_x, gradient_y = _sobel_derivatives(np.stack((fused_image, ir_image, vi_image)))
    strength, orientation = _edge_strength_and_orientation(gradient_x, gradient_y)
    preservation_ir = _edge_preservation(strength[1], orientation[1], strength[0], orientation[0])
    preservation_vi = _edge_preservation(strength[2], orientation[2], strength[0], orientation[0])
    denominator = float((strength[1] + strength[2]).sum())
    if denominator <= 0.0:
        return 0.0
    numerator = float((preservation_ir * strength[1] + preservation_vi * strength[2]).sum())
    return numerator / denominator


def _ssim_maps(shared: np.ndarray, others: Sequence[np.ndarray]) -> list[np.ndarray]:
    """SSIM maps of ``shared`` against each of ``others`` (see :func:`ssim_map`), sharing the work on ``shared``."""
    taps = gaussian_kernel_1d(SSIM_WINDOW_SIZE, SSIM_WINDOW_SIGMA)
    statistics = _local_statistics(shared, others, taps)
    constant_1 = (SSIM_K1 * SSIM_DYNAMIC_RANGE) ** 2
    constant_2 = (SSIM_K2 * SSIM_DYNAMIC_RANGE) ** 2
    maps = []
    for mean_other, variance_other, covariance in zip(
        statistics.others_means, statistics.others_variances, statistics.covariances, strict=True
    ):
        mean_shared = statistics.shared_mean
        numerator = (2.0 * mean_shared * mean_other + constant_1) * (2.0 * covariance + constant_2)
        denominator = (mean_shared**2 + mean_other**2 + constant_1) * (
            statistics.shared_variance + variance_other + constant_2
        )
        maps.append(numerator / denominator)
    return maps


def ssim_map(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """SSIM map (Wang et al. 2004) over the 'valid' region: ``(H - 10, W - 10)`` float64.

    11x11 Gaussian window (sigma 1.5), ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``, ``L = 255``;
    element ``[i, j]`` belongs to the window centred on pixel ``[i + 5, j + 5]`` (so pixels within
    5 of the border are never window centres). Empty when the image is smaller than 11x11.
    """
    first_image, second_image = as_gray_float(first), as_gray_float(second)
    if first_image.shape != second_image.shape:
        raise ValueError(f"images differ in size: {first_image.shape} vs {second_image.shape}")
    return _ssim_maps(first_image, [second_image])[0]


def _mean_or_nan(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def structural_similarity(first: np.ndarray, second: np.ndarray) -> float:
    """SSIM (Wang et al. 2004): mean of :func:`ssim_map` (the 'valid' map, 5-pixel border left out).

    Unitless, 1 for identical images; ``nan`` for images smaller than 11x11.
    """
    return _mean_or_nan(ssim_map(first, second))


# --------------------------------------------------------------------------------------------
# All at once
# --------------------------------------------------------------------------------------------


def fusion_metrics(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> dict[str, float]:
    """All fusion metrics of ``fused`` against ``ir`` (A) and ``vi`` (B), keys :data:`METRIC_NAMES`.

    Inputs: gray ``(H, W)`` on the 0-255 scale (colour ``(H, W, 3)`` is converted to rounded
    BT.601 luma), all the same size. See the module docstring for definitions and units.
    """
    return fusion_metrics_and_ssim_maps(fused, ir, vi)[0]


def fusion_metrics_and_ssim_maps(
    fused: np.ndarray, ir: np.ndarray, vi: np.ndarray
) -> tuple[dict[str, float], tuple[np.ndarray, np.ndarray]]:
    """:func:`fusion_metrics` plus the SSIM maps of F against A and B (:func:`ssim_map`), e.g. for ROI-SSIM."""
    fused_image, ir_image, vi_image = as_gray_float(fused), as_gray_float(ir), as_gray_float(vi)
    if not fused_image.shape == ir_image.shape == vi_image.shape:
        raise ValueError(
            f"fused, infrared and visible images must have the same size, got "
            f"{fused_image.shape}, {ir_image.shape}, {vi_image.shape}"
        )
    information = mutual_information(fused_image, ir_image) + mutual_information(fused_image, vi_image)
    vif_ir, vif_vi = _vif_of_references([ir_image, vi_image], fused_image)
    ssim_map_ir, ssim_map_vi = _ssim_maps(fused_image, [ir_image, vi_image])
    metrics = {
        "EN": entropy(fused_image),
        "SD": standard_deviation(fused_image),
        "SF": spatial_frequency(fused_image),
        "AG": average_gradient(fused_image),
        "MI": information,
        "MI_bits": information / math.log(2.0),
        "SCD": sum_of_correlations_of_differences(fused_image, ir_image, vi_image),
        "VIF": vif_ir + vif_vi,
        "Qabf": qabf(fused_image, ir_image, vi_image),
        "SSIM": _mean_or_nan(ssim_map_ir) + _mean_or_nan(ssim_map_vi),
    }
    return metrics, (ssim_map_ir, ssim_map_vi)
