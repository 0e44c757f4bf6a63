"""Synthetic degradations: the registry, the documented numbers per kind, determinism, checks."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from uaafusion.data import degrade
from uaafusion.data.degrade import (
    DEGRADATIONS,
    apply_degradations,
    check_kinds,
    check_severity,
    degradation_generator,
    degradation_names,
    degrade_pair,
    to_float,
    to_uint8,
)
from uaafusion.errors import ConfigError

ALL_KINDS = tuple(DEGRADATIONS)
VI_KINDS = ("haze", "rain", "low_light", "overexposure", "noise", "blur")
IR_KINDS = ("ir_noise", "ir_stripes", "ir_low_contrast")


def textured(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """White-noise texture in [0.25, 0.75] (mean 0.5, std 0.144), float32, away from clipping."""
    return (0.25 + 0.5 * np.random.default_rng(seed).random(shape)).astype(np.float32)


def constant(value: float, shape: tuple[int, ...] = (256, 256)) -> np.ndarray:
    return np.full(shape, value, dtype=np.float32)


def run(kind: str, image: np.ndarray, severity: float, seed: int = 0, **kwargs) -> np.ndarray:
    return DEGRADATIONS[kind].function(image, severity, np.random.default_rng(seed), **kwargs)


def high_frequency(image: np.ndarray) -> float:
    """Std of a gray image minus its 3x3 box mean (interior); white noise of std σ gives √(8/9)·σ."""
    height, width = image.shape
    box = sum(image[1 + dy:height - 1 + dy, 1 + dx:width - 1 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9
    return float(np.std(image[1:-1, 1:-1] - box))


def image_for(kind: str, color: bool, shape: tuple[int, int] = (48, 64)) -> np.ndarray:
    if DEGRADATIONS[kind].source == "vi" and color:
        return textured(shape + (3,))
    return textured(shape)


# ----------------------------------------------------------------------------- registry


def test_registry_holds_the_documented_kinds_in_order():
    assert degradation_names() == VI_KINDS + IR_KINDS
    assert degradation_names("vi") == VI_KINDS
    assert degradation_names("ir") == IR_KINDS
    assert [name for name, kind in DEGRADATIONS.items() if kind.uses_depth] == ["haze"]
    for name, kind in DEGRADATIONS.items():
        assert kind.name == name and kind.source in ("vi", "ir")
        assert kind.summary and "\n" not in kind.summary
    with pytest.raises(ConfigError, match="'vi' or 'ir'"):
        degradation_names("rgb")


def test_register_refuses_a_bad_source_and_a_taken_name():
    with pytest.raises(ValueError, match="source"):
        degrade.register_degradation("snow", "thermal", "x")
    with pytest.raises(ValueError, match="already registered"):
        degrade.register_degradation("haze", "vi", "x")


# ----------------------------------------------------------------------------- generic properties


@pytest.mark.parametrize("kind", ALL_KINDS)
@pytest.mark.parametrize("color", [False, True], ids=["gray", "rgb"])
def test_severity_zero_returns_the_image_unchanged(kind, color):
    image = image_for(kind, color).astype(np.float64)
    out = run(kind, image, 0.0)
    assert out.dtype == np.float32 and out is not image
    np.testing.assert_array_equal(out, image.astype(np.float32))


@pytest.mark.parametrize("kind", ALL_KINDS)
@pytest.mark.parametrize("color", [False, True], ids=["gray", "rgb"])
@pytest.mark.parametrize("severity", [0.3, 1.0])
def test_output_keeps_shape_dtype_and_range(kind, color, severity):
    image = image_for(kind, color)
    image[:4] = 0.0  # extremes must stay in range too
    image[-4:] = 1.0
    before = image.copy()
    out = run(kind, image, severity)
    assert out.shape == image.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_array_equal(image, before)  # input untouched
    assert not np.array_equal(out, image)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_same_generator_state_gives_the_same_result(kind):
    image = image_for(kind, color=True)
    np.testing.assert_array_equal(run(kind, image, 0.7, seed=3), run(kind, image, 0.7, seed=3))


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_strength_grows_with_severity(kind):
    image = image_for(kind, color=False, shape=(64, 64))
    change = [float(np.abs(run(kind, image, s, seed=1) - image).mean()) for s in (0.25, 0.5, 1.0)]
    assert change[0] > 0 and change[0] < change[1] < change[2]


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_functions_check_severity(kind):
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        run(kind, image_for(kind, color=False), 1.5)


# ----------------------------------------------------------------------------- visible kinds


@pytest.mark.parametrize("severity", [0.5, 1.0])
def test_haze_raises_the_mean_and_lowers_the_contrast(severity):
    image = textured((64, 96, 3))
    out = run("haze", image, severity)
    assert out.mean() > image.mean() + 0.05
    assert out.std() < 0.9 * image.std()


def test_haze_pseudo_depth_is_smooth_spans_the_range_and_is_far_at_the_top():
    image, severity = textured((64, 96)), 1.0
    airlight = 0.6 + 0.3 * severity
    out = run("haze", image, severity)
    transmission = (airlight - out) / (airlight - image)  # from I = J·t + A·(1 − t)
    assert transmission.min() == pytest.approx(math.exp(-2.0 * severity), abs=1e-3)  # d reaches 1
    assert transmission.max() == pytest.approx(1.0, abs=1e-3)                        # d reaches 0
    assert transmission[:16].mean() < transmission[-16:].mean() - 0.2
    assert np.abs(np.diff(transmission, axis=0)).max() < 0.05
    assert np.abs(np.diff(transmission, axis=1)).max() < 0.05


@pytest.mark.parametrize("severity", [0.4, 1.0])
def test_haze_with_depth_follows_the_scattering_model(severity):
    image = textured((32, 40, 3))
    depth = np.zeros((32, 40))
    depth[:, 20:] = 7.0  # any units: normalised to [0, 1], far on the right
    out = run("haze", image, severity, depth=depth)
    np.testing.assert_array_equal(out[:, :20], image[:, :20])  # d = 0: t = 1
    t, airlight = math.exp(-2.0 * severity), 0.6 + 0.3 * severity
    np.testing.assert_allclose(out[:, 20:], image[:, 20:] * t + airlight * (1 - t), atol=1e-6)
    assert out[:, 20:].std() < out[:, :20].std()


def test_haze_rejects_a_depth_map_of_another_shape():
    with pytest.raises(ValueError, match=r"\(30, 40\).*\(32, 40\)"):
        run("haze", textured((32, 40, 3)), 0.5, depth=np.zeros((30, 40)))
    with pytest.raises(ValueError, match="NaN"):
        run("haze", textured((32, 40)), 0.5, depth=np.full((32, 40), np.nan))


def test_rain_only_brightens_and_raises_the_mean():
    image = textured((96, 128, 3))
    out = run("rain", image, 1.0)
    assert (out >= image).all()
    assert out.mean() > image.mean() + 0.005


def test_rain_draws_elongated_streaks():
    severity, shape = 0.5, (128, 128)
    image = constant(0.3, shape)
    changed = run("rain", image, severity, seed=4) > image
    expected_seeds = degrade.RAIN_DENSITY * severity * changed.size  # 32.8
    length, width = 30, 2                                            # round(10 + 40 s), 1 + round(2 s)
    assert 15 * expected_seeds < changed.sum() < 1.5 * length * width * expected_seeds
    # A streak pixel's neighbour 10 rows down (at the streak's slope, within ±45°) is a streak pixel too.
    coverage, step = changed.mean(), 10
    follow = []
    for dx in range(-step, step + 1):
        top = changed[:-step, max(0, -dx):shape[1] - max(0, dx)]
        below = changed[step:, max(0, dx):shape[1] - max(0, -dx)]
        follow.append((top & below).sum() / top.sum())
    assert coverage < 0.25
    assert max(follow) > 0.5 and max(follow) > 2.5 * coverage


@pytest.mark.parametrize("value", [0.5, 0.8])
@pytest.mark.parametrize("severity", [0.5, 1.0])
def test_low_light_darkens_a_constant_image_by_the_documented_factor(value, severity):
    out = run("low_light", constant(value), severity)
    darkened = (1 - 0.5 * severity) * value ** (1 + 2 * severity)  # gain · c^γ
    assert out.mean() == pytest.approx(darkened, rel=0.02)
    photons, read = 200.0 / severity, 3 * severity / 255
    assert out.std() == pytest.approx(math.sqrt(darkened / photons + read**2), rel=0.05)


def test_overexposure_raises_the_mean_and_saturates_more_pixels():
    image = textured((64, 64, 3))
    out = run("overexposure", image, 0.5)
    assert (out >= image).all() and out.mean() > image.mean() + 0.1
    assert (out == 1.0).mean() > (image == 1.0).mean() + 0.2
    ramp = np.linspace(0, 1, 101, dtype=np.float32)[None, :]
    out = run("overexposure", ramp, 1.0)[0]  # k = 3, knee 0.8: linear to 0.8, flat 1 from x = 1.2
    np.testing.assert_allclose(out[:26], 3 * ramp[0, :26], atol=1e-6)
    assert out[30] == pytest.approx(0.9 - 0.01 / 0.8, abs=1e-6)  # x = 0.9 on the shoulder
    assert (out[40:] == 1.0).all() and (out[:40] < 1.0).all()


@pytest.mark.parametrize("kind", ["noise", "ir_noise"])
@pytest.mark.parametrize("severity", [0.2, 0.6, 1.0])
def test_noise_on_a_constant_image_has_the_documented_std(kind, severity):
    value = 0.5
    out = run(kind, constant(value), severity)
    sigma, peak = (10 + 15 * severity) / 255, 90 - 20 * severity
    variance = sigma**2 + value / peak  # Gaussian then Poisson (law of total variance)
    if kind == "ir_noise":
        fraction = 0.002 * severity     # salt-and-pepper pixels at 0 or 1 (mean 0.5, variance 0.25)
        variance = (1 - fraction) * variance + fraction * 0.25
    assert out.mean() == pytest.approx(value, abs=0.005)
    assert out.std() == pytest.approx(math.sqrt(variance), rel=0.05)
    assert high_frequency(out) == pytest.approx(math.sqrt(8 / 9 * variance), rel=0.05)


def test_noise_adds_its_high_frequency_energy_to_a_textured_image():
    image, severity = textured((128, 128)), 0.5
    out = run("noise", image, severity)
    sigma, peak = (10 + 15 * severity) / 255, 90 - 20 * severity
    added = 8 / 9 * (sigma**2 + image.mean() / peak)
    assert high_frequency(out) ** 2 - high_frequency(image) ** 2 == pytest.approx(added, rel=0.1)


def test_ir_noise_sets_the_documented_fraction_to_salt_and_pepper():
    out = run("ir_noise", constant(0.5), 1.0)
    extremes = np.isin(out, (0.0, 1.0)).sum()
    assert 0.6 * 0.002 * out.size < extremes < 1.5 * 0.002 * out.size  # 131 expected
    assert (out == 0.0).sum() > 0 and (out == 1.0).sum() > 0


@pytest.mark.parametrize("severity", [0.5, 1.0])
def test_blur_lowers_high_frequency_energy_at_least_as_much_as_its_gaussian(severity):
    image = textured((96, 128))
    out = run("blur", image, severity)
    sigma = 2 * severity
    taps = np.arange(-math.ceil(3 * sigma), math.ceil(3 * sigma) + 1)
    weights = np.exp(-0.5 * (taps / sigma) ** 2)
    weights /= weights.sum()
    # white noise through the separable Gaussian keeps (Σ w²)² of its variance; the line average keeps less
    inner = (slice(12, -12), slice(12, -12))
    assert out[inner].var() < 1.1 * (weights**2).sum() ** 2 * image.var()
    assert high_frequency(out) < 0.5 * high_frequency(image)
    assert out.mean() == pytest.approx(image.mean(), abs=0.01)
    np.testing.assert_allclose(run("blur", constant(0.3, (32, 32, 3)), severity), 0.3, atol=1e-6)


# ----------------------------------------------------------------------------- infrared kinds


@pytest.mark.parametrize("severity", [0.2, 0.5, 1.0])
def test_ir_stripes_add_column_offsets_of_the_documented_std(severity):
    image = textured((128, 160))
    diff = run("ir_stripes", image, severity).astype(np.float64) - image
    beta, sigma = (3 + 5 * severity) / 255, (3 + 2 * severity) / 255
    assert diff.mean(axis=0).std() == pytest.approx(beta, rel=0.2)       # per-column structure
    assert diff.mean(axis=1).std() < 0.15 * beta                          # rows nearly unchanged
    assert (diff - diff.mean(axis=0)).std() == pytest.approx(sigma, rel=0.05)


@pytest.mark.parametrize("severity", [0.3, 0.7, 1.0])
def test_ir_low_contrast_shrinks_the_std(severity):
    image = textured((64, 64))
    out = run("ir_low_contrast", image, severity)
    assert out.std() == pytest.approx((1 - 0.5 * severity) * image.std(), rel=1e-4)
    full = np.linspace(0, 1, 256, dtype=np.float32)[None, :]
    np.testing.assert_allclose(run("ir_low_contrast", full, 1.0), 0.5 * full + 90 / 255, atol=1e-6)


def test_shot_noise_sampler_matches_poisson_moments():
    rng = np.random.default_rng(0)
    for lam in (3.0, 4.0, 10.0, 40.0, 150.0):  # exact below 4 photons, Cornish-Fisher above
        counts = degrade._poisson(np.full(200_000, lam / 200, np.float32), 200.0, rng) * 200
        assert counts.mean() == pytest.approx(lam, rel=0.01)
        assert counts.var() == pytest.approx(lam, rel=0.03)
        np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)  # whole photon counts
        histogram = np.bincount(np.round(counts).astype(int), minlength=400)[:400] / counts.size
        pmf = np.exp([k * math.log(lam) - lam - math.lgamma(k + 1) for k in range(400)])
        assert 0.5 * np.abs(histogram - pmf).sum() < 0.015  # total variation (sampling noise included)


# ----------------------------------------------------------------------------- pairs and determinism


def test_degradation_generator_hashes_seed_kind_severity_and_name():
    digest = hashlib.sha256(b"3|haze|0.500000|00012.png").digest()
    expected = np.random.default_rng(int.from_bytes(digest, "big")).random(4)
    np.testing.assert_array_equal(degradation_generator(3, "haze", 0.5, "00012.png").random(4), expected)


def test_degrade_pair_is_deterministic_per_seed_and_name():
    ir, vi = textured((40, 48), seed=1), textured((40, 48, 3), seed=2)
    kinds = ["haze", "rain", "noise", "blur", "ir_noise", "ir_stripes"]

    def pair(seed: int, name: str) -> tuple[bytes, bytes]:
        out_ir, out_vi = degrade_pair(ir, vi, kinds, 0.6, seed, name)
        return to_uint8(out_ir).tobytes(), to_uint8(out_vi).tobytes()

    first = pair(7, "a.png")
    assert pair(7, "a.png") == first
    for other in (pair(7, "b.png"), pair(8, "a.png")):
        assert other[0] != first[0] and other[1] != first[1]


def test_apply_degradations_applies_kinds_in_order_to_their_source():
    ir, vi = textured((32, 40), seed=1), textured((32, 40, 3), seed=2)
    calls = []

    def rng_for(kind: str) -> np.random.Generator:
        calls.append(kind)
        return np.random.default_rng(len(calls))

    out_ir, out_vi = apply_degradations(ir, vi, ["ir_low_contrast", "noise", "ir_noise"], 0.5, rng_for)
    assert calls == ["ir_low_contrast", "noise", "ir_noise"]
    expected_ir = run("ir_noise", run("ir_low_contrast", ir, 0.5, seed=1), 0.5, seed=3)
    np.testing.assert_array_equal(out_ir, expected_ir)
    np.testing.assert_array_equal(out_vi, run("noise", vi, 0.5, seed=2))


def test_apply_degradations_returns_the_untouched_image_itself():
    ir, vi = textured((32, 40)).astype(np.float64), to_uint8(textured((32, 40, 3)))
    out_ir, out_vi = degrade_pair(ir, vi, ["ir_stripes"], 0.5, 0, "x")
    assert out_vi is vi and out_ir is not ir
    out_ir, out_vi = degrade_pair(ir, textured((32, 40, 3)), ["blur", "haze"], 0.5, 0, "x")
    assert out_ir is ir


def test_apply_degradations_passes_depth_to_haze_only():
    ir, vi, wrong = textured((32, 40)), textured((32, 40, 3)), np.zeros((8, 8))
    degrade_pair(ir, vi, ["noise", "ir_noise"], 0.5, 0, "x", depth=wrong)
    with pytest.raises(ValueError, match="depth"):
        degrade_pair(ir, vi, ["noise", "haze"], 0.5, 0, "x", depth=wrong)


def test_apply_degradations_checks_kinds_and_severity_first():
    calls = []
    ir, vi = textured((8, 8)), textured((8, 8, 3))
    with pytest.raises(ConfigError, match="'fog'"):
        apply_degradations(ir, vi, ["noise", "fog"], 0.5, calls.append)
    with pytest.raises(ConfigError, match="severity"):
        apply_degradations(ir, vi, ["noise"], -0.1, calls.append)
    assert calls == []


# ----------------------------------------------------------------------------- checks and conversions


def test_check_kinds_returns_a_tuple():
    assert check_kinds(["ir_noise", "haze"]) == ("ir_noise", "haze")


def test_check_kinds_names_unknown_kinds_and_lists_all_allowed():
    with pytest.raises(ConfigError) as error:
        check_kinds(["haze", "fog", "snow"], what="data.degrade.kinds")
    message = str(error.value)
    assert "data.degrade.kinds" in message and "'fog'" in message and "'snow'" in message
    assert "'haze'" not in message.split("allowed")[0]
    assert all(name in message for name in ALL_KINDS)


@pytest.mark.parametrize("kinds, words", [
    ([], ["empty", "haze", "ir_low_contrast"]),
    (["noise", "haze", "noise"], ["'noise'", "more than once"]),
    ("haze", ["string", "['haze']"]),
    ([3], ["names", "[3]"]),
    (None, ["list", "None"]),
])
def test_check_kinds_explains_bad_lists(kinds, words):
    with pytest.raises(ConfigError) as error:
        check_kinds(kinds)
    assert all(word in str(error.value) for word in words), str(error.value)


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan"), float("inf"), "0.5", None, True])
def test_check_severity_rejects_values_outside_the_unit_interval(value):
    with pytest.raises(ConfigError) as error:
        check_severity(value, what="data.degrade.severity")
    message = str(error.value)
    assert "data.degrade.severity" in message and repr(value) in message and "[0, 1]" in message


@pytest.mark.parametrize("value", [0, 1, 0.25, np.float32(0.5)])
def test_check_severity_accepts_numbers_in_the_unit_interval(value):
    result = check_severity(value)
    assert type(result) is float and result == float(value)


def test_uint8_conversions_round_trip_and_clip():
    every = np.arange(256, dtype=np.uint8).reshape(16, 16)
    as_float = to_float(every)
    assert as_float.dtype == np.float32 and as_float.max() == 1.0
    np.testing.assert_array_equal(to_uint8(as_float), every)
    np.testing.assert_array_equal(to_uint8(np.array([-0.5, 0.3 / 255, 0.6 / 255, 2.0])), [0, 0, 1, 255])
    with pytest.raises(ValueError, match="uint8"):
        to_float(as_float)
    with pytest.raises(ValueError, match="NaN"):
        to_uint8(np.array([np.nan]))
