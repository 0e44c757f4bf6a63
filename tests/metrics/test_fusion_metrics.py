"""Fusion metrics against values worked out by hand on tiny arrays, naive re-implementations, and invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest

from uaafusion.data.io import to_gray_uint8
from uaafusion.metrics import fusion
from uaafusion.metrics.fusion import (
    METRIC_NAMES,
    average_gradient,
    entropy,
    fusion_metrics,
    mutual_information,
    qabf,
    spatial_frequency,
    ssim_map,
    standard_deviation,
    structural_similarity,
    sum_of_correlations_of_differences,
    visual_information_fidelity,
)

# Qabf sigmoid terms, written out again here from the published constants.
Q_G_AT_ONE = 0.9994 / (1 + math.exp(-15 * (1 - 0.5)))
Q_G_AT_HALF = 0.9994 / (1 + math.exp(-15 * (0.5 - 0.5)))
Q_ALPHA_AT_ONE = 0.9879 / (1 + math.exp(-22 * (1 - 0.8)))
Q_ALPHA_AT_ZERO = 0.9879 / (1 + math.exp(-22 * (0 - 0.8)))


def smooth_random_image(height: int, width: int, seed: int) -> np.ndarray:
    """Integer gray image on 0-255 with some structure (box-blurred noise plus a ramp)."""
    generator = np.random.default_rng(seed)
    noise = generator.uniform(0, 255, (height + 2, width + 2))
    blurred = sum(noise[dy:dy + height, dx:dx + width] for dy in range(3) for dx in range(3)) / 9
    ramp = np.linspace(0, 60, width)[None, :]
    return np.clip(np.rint(blurred * 0.8 + ramp), 0, 255)


# ---------------------------------------------------------------------------------------------
# EN, SD, SF, AG
# ---------------------------------------------------------------------------------------------


def test_entropy_by_hand() -> None:
    assert entropy(np.array([[0, 0], [255, 255]])) == pytest.approx(1.0)
    four_levels = np.array([[0, 1, 2, 3]] * 4)
    assert entropy(four_levels) == pytest.approx(2.0)
    # 0.4 rounds to 0 and 0.6 to 1: histogram {0: 3, 1: 1} -> H = -(3/4 log2 3/4 + 1/4 log2 1/4)
    expected = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert entropy(np.array([[0.0, 0.4], [0.2, 0.6]])) == pytest.approx(expected)


def test_standard_deviation_is_population() -> None:
    # mean 3, squared deviations 9, 1, 1, 9 -> variance 20 / 4 = 5
    assert standard_deviation(np.array([[0, 2], [4, 6]])) == pytest.approx(math.sqrt(5))


def test_spatial_frequency_by_hand() -> None:
    # horizontal differences 1 and 4 -> RF^2 = 17 / 2; vertical 3 and 6 -> CF^2 = 45 / 2
    assert spatial_frequency(np.array([[1, 2], [4, 8]])) == pytest.approx(math.sqrt(8.5 + 22.5))
    # one row: only horizontal differences (2, 2) -> SF = 2
    assert spatial_frequency(np.array([[0, 2, 4]])) == pytest.approx(2.0)


def test_average_gradient_by_hand() -> None:
    # 2x2: one-sided differences gx = (1, 1; 4, 4), gy = (3, 6; 3, 6)
    expected = np.mean([math.sqrt((1 + 9) / 2), math.sqrt((1 + 36) / 2), math.sqrt((16 + 9) / 2), math.sqrt((16 + 36) / 2)])
    assert average_gradient(np.array([[1, 2], [4, 8]])) == pytest.approx(expected)
    # 3x3 column ramp 0, 1, 4: gx = 1 (one-sided), 2 (central), 3 (one-sided), gy = 0
    ramp = np.array([[0, 1, 4]] * 3)
    assert average_gradient(ramp) == pytest.approx(np.mean([1, 2, 3]) / math.sqrt(2))


def test_constant_image_has_no_information() -> None:
    flat = np.full((7, 9), 117.0)
    assert entropy(flat) == 0.0
    assert standard_deviation(flat) == 0.0
    assert spatial_frequency(flat) == 0.0
    assert average_gradient(flat) == 0.0


# ---------------------------------------------------------------------------------------------
# MI, SCD
# ---------------------------------------------------------------------------------------------


def test_mutual_information_by_hand() -> None:
    halves = np.array([[0, 255], [0, 255]])
    assert mutual_information(halves, halves) == pytest.approx(math.log(2))
    assert mutual_information(halves, np.full((2, 2), 9)) == pytest.approx(0.0)
    # independent: F = (0, 0, 1, 1), A = (0, 1, 0, 1)
    assert mutual_information(np.array([[0, 0], [1, 1]]), np.array([[0, 1], [0, 1]])) == pytest.approx(0.0)
    # F = (0, 0, 1, 1), A = (0, 0, 0, 1): p(0,0) = 1/2, p(1,0) = 1/4, p(1,1) = 1/4
    expected = 0.5 * math.log(0.5 / (0.5 * 0.75)) + 0.25 * math.log(0.25 / (0.5 * 0.75)) + 0.25 * math.log(0.25 / (0.5 * 0.25))
    assert mutual_information(np.array([[0, 0], [1, 1]]), np.array([[0, 0], [0, 1]])) == pytest.approx(expected)


def test_fusion_mi_sums_both_sources_and_bits_are_nats_over_ln2() -> None:
    fused = np.array([[0, 255], [0, 255]])
    ir = fused.copy()
    vi = np.full((2, 2), 30)
    values = fusion_metrics(fused, ir, vi)
    assert values["MI"] == pytest.approx(math.log(2))
    assert values["MI_bits"] == pytest.approx(1.0)
    fused, ir, vi = (smooth_random_image(20, 24, seed) for seed in range(3))
    values = fusion_metrics(fused, ir, vi)
    assert values["MI"] == pytest.approx(mutual_information(fused, ir) + mutual_information(fused, vi))
    assert values["MI_bits"] == pytest.approx(values["MI"] / math.log(2))


def test_scd_by_hand() -> None:
    ir = np.array([[1.0, 2.0], [3.0, 4.0]])
    vi = np.array([[4.0, 1.0], [3.0, 2.0]])
    # F = A + B: F - B = A and F - A = B, both correlations are 1
    assert sum_of_correlations_of_differences(ir + vi, ir, vi) == pytest.approx(2.0)
    # F = (A + B) / 2 with A = (1, 2, 3, 4), B = (1, 0, 0, 0):
    # corr(A - B, A) = 6.5 / sqrt(8.75 * 5), corr(B - A, B) = 2.25 / sqrt(8.75 * 0.75)
    ir = np.array([[1.0, 2.0], [3.0, 4.0]])
    vi = np.array([[1.0, 0.0], [0.0, 0.0]])
    expected = 6.5 / math.sqrt(8.75 * 5) + 2.25 / math.sqrt(8.75 * 0.75)
    assert sum_of_correlations_of_differences((ir + vi) / 2, ir, vi) == pytest.approx(expected)


def test_scd_correlation_with_constant_counts_zero() -> None:
    ir = np.array([[1.0, 2.0], [3.0, 4.0]])
    vi = np.array([[4.0, 1.0], [3.0, 2.0]])
    # F = A: F - A = 0 (constant) -> 0; A - B = (-3, 1, 0, 2) (mean 0), A - mean = (-1.5, -0.5, 0.5, 1.5):
    # corr(A - B, A) = 7 / sqrt(14 * 5)
    assert sum_of_correlations_of_differences(ir, ir, vi) == pytest.approx(7 / math.sqrt(70))


# ---------------------------------------------------------------------------------------------
# VIF
# ---------------------------------------------------------------------------------------------


def test_vif_scale_terms_by_hand() -> None:
    def terms(variance_reference: float, variance_distorted: float, covariance: float) -> tuple[float, float]:
        return fusion._vif_scale_terms(
            np.array([variance_reference]), np.array([variance_distorted]), np.array([covariance])
        )

    # gain 2, no residual (clamped to eps): num = log10(1 + 4 * 4 / 2), den = log10(1 + 4 / 2)
    numerator, denominator = terms(4.0, 16.0, 8.0)
    assert numerator == pytest.approx(math.log10(9))
    assert denominator == pytest.approx(math.log10(3))
    # negative gain -> 0: nothing of the reference is kept
    assert terms(4.0, 9.0, -3.0) == pytest.approx((0.0, math.log10(3)))
    # flat reference: no information to keep, none counted
    assert terms(0.0, 9.0, 0.0) == pytest.approx((0.0, 0.0))
    # flat distorted image: gain 0
    assert terms(4.0, 0.0, 0.0) == pytest.approx((0.0, math.log10(3)))
    # gain 1 plus noise of variance 3: num = log10(1 + 4 / (3 + 2))
    assert terms(4.0, 7.0, 4.0)[0] == pytest.approx(math.log10(1 + 4 / 5))


def test_vif_window_sizes() -> None:
    assert [len(fusion.vif_window_taps(scale)) for scale in (1, 2, 3, 4)] == [17, 9, 5, 3]
    taps = fusion.vif_window_taps(1)
    assert taps.sum() == pytest.approx(1.0)
    offsets = np.arange(17) - 8
    expected = np.exp(-(offsets**2) / (2 * (17 / 5) ** 2))
    np.testing.assert_allclose(taps, expected / expected.sum())


def _naive_filter_valid(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    """MATLAB ``filter2(window, image, 'valid')`` with explicit loops over window positions."""
    size = window.shape[0]
    rows, columns = image.shape[0] - size + 1, image.shape[1] - size + 1
    output = np.zeros((rows, columns))
    for row in range(rows):
        for column in range(columns):
            output[row, column] = np.sum(window * image[row:row + size, column:column + size])
    return output


def _fspecial_gaussian(size: int, sigma: float) -> np.ndarray:
    offsets = np.arange(size) - (size - 1) / 2
    window = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma**2))
    return window / window.sum()


def _naive_vifp(reference: np.ndarray, distorted: np.ndarray) -> float:
    """Straight transcription of Sheikh & Bovik's vifp_mscale.m with loop filtering."""
    numerator = denominator = 0.0
    for scale in range(1, 5):
        size = 2 ** (4 - scale + 1) + 1
        window = _fspecial_gaussian(size, size / 5)
        if scale > 1:
            reference = _naive_filter_valid(reference, window)[::2, ::2]
            distorted = _naive_filter_valid(distorted, window)[::2, ::2]
        mu1 = _naive_filter_valid(reference, window)
        mu2 = _naive_filter_valid(distorted, window)
        sigma1_sq = _naive_filter_valid(reference * reference, window) - mu1 * mu1
        sigma2_sq = _naive_filter_valid(distorted * distorted, window) - mu2 * mu2
        sigma12 = _naive_filter_valid(reference * distorted, window) - mu1 * mu2
        sigma1_sq[sigma1_sq < 0] = 0
        sigma2_sq[sigma2_sq < 0] = 0
        g = sigma12 / (sigma1_sq + 1e-10)
        sv_sq = sigma2_sq - g * sigma12
        g[sigma1_sq < 1e-10] = 0
        sv_sq[sigma1_sq < 1e-10] = sigma2_sq[sigma1_sq < 1e-10]
        sigma1_sq[sigma1_sq < 1e-10] = 0
        g[sigma2_sq < 1e-10] = 0
        sv_sq[sigma2_sq < 1e-10] = 0
        sv_sq[g < 0] = sigma2_sq[g < 0]
        g[g < 0] = 0
        sv_sq[sv_sq <= 1e-10] = 1e-10
        numerator += np.sum(np.log10(1 + g**2 * sigma1_sq / (sv_sq + 2)))
        denominator += np.sum(np.log10(1 + sigma1_sq / 2))
    return numerator / denominator


def test_vif_matches_a_naive_transcription() -> None:
    reference = smooth_random_image(44, 48, seed=1)
    distorted = np.clip(0.6 * reference + 0.4 * smooth_random_image(44, 48, seed=2), 0, 255)
    assert visual_information_fidelity(reference, distorted) == pytest.approx(_naive_vifp(reference, distorted), rel=1e-9)


def test_vif_invariants() -> None:
    image = smooth_random_image(48, 48, seed=3)
    assert visual_information_fidelity(image, image) == pytest.approx(1.0, abs=1e-6)
    # a constant offset keeps all information (gain 1, no residual)
    assert visual_information_fidelity(image, image + 10) == pytest.approx(1.0, abs=1e-6)
    # more contrast than the reference counts above 1, a blank image 0
    assert visual_information_fidelity(image, 2 * image) > 1.0
    assert visual_information_fidelity(image, np.zeros_like(image)) == 0.0
    assert visual_information_fidelity(np.full((48, 48), 5.0), image) == 0.0


# ---------------------------------------------------------------------------------------------
# Qabf
# ---------------------------------------------------------------------------------------------


def test_qabf_closed_forms() -> None:
    image = smooth_random_image(16, 16, seed=4)
    flat = np.zeros_like(image)  # zero padding: a constant non-zero image would have edges at its border
    # F = A = B: G = 1 and A_AF = 1 everywhere there is an edge, so Qabf = Qg(1) Qa(1)
    assert qabf(image, image, image) == pytest.approx(Q_G_AT_ONE * Q_ALPHA_AT_ONE)
    # F = 2A, B flat: strength ratio 1/2, same orientation; only A's edges weigh
    assert qabf(2 * image, image, flat) == pytest.approx(Q_G_AT_HALF * Q_ALPHA_AT_ONE)
    # both sources flat: no edge to preserve
    assert qabf(image, flat, flat) == 0.0


def test_qabf_edge_preservation_by_hand() -> None:
    # strengths 2 vs 4 (ratio 1/2), orientations 0 vs pi/2 (A_AF = 0)
    values = fusion._edge_preservation(np.array([2.0]), np.array([0.0]), np.array([4.0]), np.array([math.pi / 2]))
    assert values[0] == pytest.approx(Q_G_AT_HALF * Q_ALPHA_AT_ZERO)
    # one strength zero: G = 0
    values = fusion._edge_preservation(np.array([3.0]), np.array([0.3]), np.array([0.0]), np.array([0.3]))
    assert values[0] == pytest.approx(0.9994 / (1 + math.exp(-15 * (0 - 0.5))) * Q_ALPHA_AT_ONE)


def test_qabf_orientation_convention() -> None:
    strength, orientation = fusion._edge_strength_and_orientation(
        np.array([0.0, 0.0, 3.0, -3.0, 0.0]), np.array([2.0, -2.0, 3.0, 3.0, 0.0])
    )
    np.testing.assert_allclose(strength, [2, 2, math.sqrt(18), math.sqrt(18), 0])
    np.testing.assert_allclose(orientation, [math.pi / 2, math.pi / 2, math.pi / 4, -math.pi / 4, math.pi / 2])


def _naive_qabf(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """Per-pixel transcription of the usual Qabf code (zero-padded 3x3 Sobel, loops)."""
    sobel_x = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=float)
    sobel_y = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype=float)

    def gradients(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        padded = np.pad(image, 1)
        gx = np.zeros_like(image)
        gy = np.zeros_like(image)
        for row in range(image.shape[0]):
            for column in range(image.shape[1]):
                patch = padded[row:row + 3, column:column + 3]
                gx[row, column] = np.sum(sobel_x * patch)
                gy[row, column] = np.sum(sobel_y * patch)
        strength = np.sqrt(gx**2 + gy**2)
        angle = np.where(gx == 0, math.pi / 2, np.arctan(gy / np.where(gx == 0, 1, gx)))
        return strength, angle

    g_f, a_f = gradients(fused)
    total_numerator = total_denominator = 0.0
    for source in (ir, vi):
        g_s, a_s = gradients(source)
        for row in range(fused.shape[0]):
            for column in range(fused.shape[1]):
                s, f = g_s[row, column], g_f[row, column]
                ratio = 0.0 if s == 0 or f == 0 else min(s, f) / max(s, f)
                alignment = 1 - abs(a_s[row, column] - a_f[row, column]) / (math.pi / 2)
                q = 0.9994 / (1 + math.exp(-15 * (ratio - 0.5))) * 0.9879 / (1 + math.exp(-22 * (alignment - 0.8)))
                total_numerator += q * s
                total_denominator += s
    return total_numerator / total_denominator


def test_qabf_matches_a_naive_transcription() -> None:
    ir = smooth_random_image(12, 14, seed=5)
    vi = smooth_random_image(12, 14, seed=6)
    fused = np.maximum(ir, vi)
    assert qabf(fused, ir, vi) == pytest.approx(_naive_qabf(fused, ir, vi), rel=1e-9)
    fused_soft = (ir + vi) / 2 + 0.25  # non-integer: the float64 path
    assert qabf(fused_soft, ir, vi) == pytest.approx(_naive_qabf(fused_soft, ir, vi), rel=1e-9)


# ---------------------------------------------------------------------------------------------
# SSIM
# ---------------------------------------------------------------------------------------------


def test_ssim_of_constant_images_by_hand() -> None:
    # sigma = 0, constant means: SSIM = (2 m1 m2 + C1) / (m1^2 + m2^2 + C1), C1 = (0.01 * 255)^2
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 50 + c1) / (100**2 + 50**2 + c1)
    assert structural_similarity(np.full((12, 13), 100.0), np.full((12, 13), 50.0)) == pytest.approx(expected)


def test_ssim_map_is_valid_region() -> None:
    assert ssim_map(np.zeros((20, 30)), np.zeros((20, 30))).shape == (10, 20)
    assert math.isnan(structural_similarity(np.zeros((10, 30)), np.zeros((10, 30))))


def _naive_ssim(first: np.ndarray, second: np.ndarray) -> float:
    window = _fspecial_gaussian(11, 1.5)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu1, mu2 = _naive_filter_valid(first, window), _naive_filter_valid(second, window)
    s1 = _naive_filter_valid(first * first, window) - mu1**2
    s2 = _naive_filter_valid(second * second, window) - mu2**2
    s12 = _naive_filter_valid(first * second, window) - mu1 * mu2
    values = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s1 + s2 + c2))
    return float(values.mean())


def test_ssim_matches_a_naive_transcription() -> None:
    first = smooth_random_image(19, 23, seed=7)
    second = np.clip(first * 0.7 + smooth_random_image(19, 23, seed=8) * 0.3, 0, 255)
    assert structural_similarity(first, second) == pytest.approx(_naive_ssim(first, second), rel=1e-9)


def test_ssim_identity() -> None:
    image = smooth_random_image(30, 30, seed=9)
    assert structural_similarity(image, image) == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# fusion_metrics as a whole
# ---------------------------------------------------------------------------------------------


def test_fusion_metrics_keys_and_symmetry_in_sources() -> None:
    ir = smooth_random_image(40, 44, seed=10)
    vi = smooth_random_image(40, 44, seed=11)
    fused = np.clip(np.rint(0.5 * ir + 0.5 * vi + 10), 0, 255)
    forward = fusion_metrics(fused, ir, vi)
    backward = fusion_metrics(fused, vi, ir)
    assert tuple(forward) == METRIC_NAMES
    for name in METRIC_NAMES:
        assert forward[name] == pytest.approx(backward[name], rel=1e-12, abs=1e-12), name
    assert all(isinstance(value, float) and math.isfinite(value) for value in forward.values())


def test_fusion_metrics_when_fused_is_one_source() -> None:
    ir = smooth_random_image(40, 40, seed=12)
    vi = smooth_random_image(40, 40, seed=13)
    values = fusion_metrics(ir, ir, vi)
    assert values["SSIM"] == pytest.approx(1.0 + structural_similarity(ir, vi))
    assert values["VIF"] == pytest.approx(1.0 + visual_information_fidelity(vi, ir), abs=1e-6)
    assert values["EN"] == pytest.approx(entropy(ir))


def test_fusion_metrics_constant_fused_image() -> None:
    ir = smooth_random_image(24, 24, seed=14)
    vi = smooth_random_image(24, 24, seed=15)
    values = fusion_metrics(np.full((24, 24), 80.0), ir, vi)
    assert values["EN"] == values["SD"] == values["SF"] == values["AG"] == 0.0
    assert values["MI"] == pytest.approx(0.0, abs=1e-12)
    assert math.isfinite(values["SCD"]) and math.isfinite(values["Qabf"])


def test_colour_inputs_use_rounded_bt601_luma() -> None:
    generator = np.random.default_rng(16)
    colour = generator.integers(0, 256, (20, 22, 3), dtype=np.uint8)
    ir = smooth_random_image(20, 22, seed=17).astype(np.uint8)
    gray = to_gray_uint8(colour)
    assert fusion_metrics(colour, ir, colour) == fusion_metrics(gray, ir, gray)


def test_size_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match="same size"):
        fusion_metrics(np.zeros((20, 20)), np.zeros((20, 20)), np.zeros((20, 21)))
