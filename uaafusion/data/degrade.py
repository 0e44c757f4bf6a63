"""Synthetic degradations of infrared/visible pairs, in a registry keyed by kind name.

Conventions:

- Images are numpy float arrays in [0, 1]: infrared ``(H, W)``; visible ``(H, W)`` (luma) or
  ``(H, W, 3)`` RGB. Every degradation returns a new ``float32`` array of the input's shape,
  clipped to [0, 1]; the input is never modified.
- Signature: ``fn(image, severity, rng, *, depth=None)``. ``severity`` in [0, 1] scales the
  strength monotonically; severity 0 returns the image unchanged (same values, as float32).
  ``depth`` (``(H, W)``, larger = farther) is read only by kinds registered with
  ``uses_depth=True`` (haze); :func:`apply_degradations` passes it to those only.
- All randomness comes from ``rng``. :func:`degradation_generator` derives it from
  (seed, kind, severity, file name) with sha256, so a dataset degrades identically everywhere.
- Each kind has a ``source`` ("vi" or "ir"): the image of a pair it changes.
- Vectorised numpy only (no scipy). Formulas, parameter ranges and their origin (published
  benchmark generators or our own choice) are documented in ``docs/degradations.md``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Real

import numpy as np

from uaafusion.errors import ConfigError

__all__ = ["DEGRADATIONS", "Degradation", "DegradationKind", "apply_degradations", "check_kinds",
           "check_severity", "degradation_generator", "degradation_names", "degrade_pair",
           "register_degradation", "to_float", "to_uint8"]

Degradation = Callable[..., np.ndarray]
SOURCES: tuple[str, ...] = ("vi", "ir")
_SOURCE_WORDS = {"vi": "visible", "ir": "infrared"}

# Parameters at severity s (see docs/degradations.md for where each range comes from).
HAZE_BETA_MAX = 2.0          # beta = 2 s
RAIN_DENSITY = 0.004         # streak seeds per pixel at s = 1
LOW_LIGHT_PHOTONS = 200.0    # photons at white P = 200 / s (capped at 1e6)
IR_CONTRAST_OFFSET = 90.0 / 255.0
SALT_PEPPER_FRACTION = 0.002
POISSON_EXACT_BELOW = 4.0    # photon counts below which shot noise is sampled exactly


@dataclass(frozen=True)
class DegradationKind:
    """A registered degradation: ``source`` is the image of a pair it changes ("vi" or "ir")."""

    name: str
    source: str
    function: Degradation
    summary: str
    uses_depth: bool = False


DEGRADATIONS: dict[str, DegradationKind] = {}


def register_degradation(name: str, source: str, summary: str,
                         uses_depth: bool = False) -> Callable[[Degradation], Degradation]:
    """Decorator adding ``fn`` to :data:`DEGRADATIONS` under ``name`` (registration order is kept)."""
    if source not in SOURCES:
        raise ValueError(f"degradation {name!r}: source must be 'vi' or 'ir', got {source!r}")
    if name in DEGRADATIONS:
        raise ValueError(f"degradation {name!r} is already registered")

    def decorator(function: Degradation) -> Degradation:
        DEGRADATIONS[name] = DegradationKind(name, source, function, summary, uses_depth)
        return function

    return decorator


def degradation_names(source: str | None = None) -> tuple[str, ...]:
    """Registered kind names in registry order; only those of ``source`` ("ir"/"vi") if given."""
    if source is not None and source not in SOURCES:
        raise ConfigError(f"degradation source must be 'vi' or 'ir', got {source!r}")
    return tuple(name for name, kind in DEGRADATIONS.items() if source in (None, kind.source))


def _allowed_text() -> str:
    return "; ".join(f"{', '.join(degradation_names(src))} ({_SOURCE_WORDS[src]})" for src in SOURCES)


def check_kinds(kinds: Sequence[str], what: str = "kind") -> tuple[str, ...]:
    """``kinds`` as a tuple; ConfigError for an unknown, duplicated, non-string or empty list."""
    allowed = _allowed_text()
    if isinstance(kinds, str):
        raise ConfigError(f"{what} must be a list of degradation names, got the string {kinds!r} "
                          f"(write [{kinds!r}]); allowed: {allowed}")
    try:
        items = tuple(kinds)
    except TypeError:
        raise ConfigError(f"{what} must be a list of degradation names, got {kinds!r}; "
                          f"allowed: {allowed}") from None
    if not items:
        raise ConfigError(f"{what}: the list of degradations is empty; choose one or more of: {allowed}")
    not_names = [kind for kind in items if not isinstance(kind, str)]
    if not_names:
        raise ConfigError(f"{what}: degradation kinds must be names, got {not_names!r}; allowed: {allowed}")
    unknown = [kind for kind in items if kind not in DEGRADATIONS]
    if unknown:
        raise ConfigError(f"unknown {what} {', '.join(map(repr, unknown))}; allowed: {allowed}")
    repeated = sorted({kind for kind in items if items.count(kind) > 1}, key=items.index)
    if repeated:
        raise ConfigError(f"{what}: {', '.join(map(repr, repeated))} given more than once in "
                          f"{list(items)!r}; list each degradation once")
    return items


def check_severity(severity: float, what: str = "severity") -> float:
    """``severity`` as a float; ConfigError unless it is a finite number in [0, 1]."""
    if isinstance(severity, (bool, np.bool_)) or not isinstance(severity, Real):
        raise ConfigError(f"{what} must be a number in [0, 1], got {severity!r}")
    value = float(severity)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ConfigError(f"{what} must be a number in [0, 1], got {severity!r}")
    return value


def degradation_generator(seed: int, kind: str, severity: float, name: str) -> np.random.Generator:
    """Generator seeded by sha256 of ``f"{seed}|{kind}|{severity:.6f}|{name}"`` (stable across runs)."""
    digest = hashlib.sha256(f"{seed}|{kind}|{severity:.6f}|{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest, "big"))


def apply_degradations(ir: np.ndarray, vi: np.ndarray, kinds: Sequence[str], severity: float,
                       rng_for: Callable[[str], np.random.Generator],
                       depth: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``kinds`` in the given order, each to the image of its source; returns ``(ir, vi)``.

    ``rng_for(kind)`` gives each kind's generator; ``depth (H, W)`` goes to kinds that use it.
    An image that no kind touches is returned as the very same object.
    """
    kinds = check_kinds(kinds)
    severity = check_severity(severity)
    images = {"ir": ir, "vi": vi}
    for name in kinds:
        kind = DEGRADATIONS[name]
        extra = {"depth": depth} if kind.uses_depth else {}
        images[kind.source] = kind.function(images[kind.source], severity, rng_for(name), **extra)
    return images["ir"], images["vi"]


def degrade_pair(ir: np.ndarray, vi: np.ndarray, kinds: Sequence[str], severity: float, seed: int,
                 name: str, depth: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`apply_degradations` with generators from :func:`degradation_generator` per kind."""
    return apply_degradations(ir, vi, kinds, severity,
                              lambda kind: degradation_generator(seed, kind, severity, name), depth)


def to_float(image_uint8: np.ndarray) -> np.ndarray:
    """``uint8`` image -> ``float32`` in [0, 1] (divided by 255), same shape."""
    if image_uint8.dtype != np.uint8:
        raise ValueError(f"to_float expects a uint8 image, got dtype {image_uint8.dtype}")
    return image_uint8.astype(np.float32) / np.float32(255.0)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] -> ``uint8`` (times 255, rounded, clipped), same shape."""
    array = np.asarray(image, dtype=np.float32)
    if not np.isfinite(array).all():
        raise ValueError("to_uint8: the image holds NaN or infinite values")
    return np.clip(np.rint(array * np.float32(255.0)), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- helpers


def _start(image: np.ndarray, severity: float) -> tuple[np.ndarray, float]:
    """A float32 copy of ``image`` (checked: ``(H, W)`` or ``(H, W, C)``) and the checked severity."""
    array = np.array(image, dtype=np.float32)
    if array.ndim not in (2, 3):
        raise ValueError(f"an image must be (H, W) or (H, W, C), got shape {array.shape}")
    return array, check_severity(severity)


def _per_pixel(values: np.ndarray, image: np.ndarray) -> np.ndarray:
    """``(H, W)`` map broadcastable against ``image`` (``(H, W)`` or ``(H, W, C)``)."""
    return values[..., None] if image.ndim == 3 else values


def _finish(image: np.ndarray) -> np.ndarray:
    return np.clip(image, 0.0, 1.0, out=image)


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


def _shift_sum(image: np.ndarray, offsets: Sequence[tuple[int, int]], weights: Sequence[float],
               mode: str) -> np.ndarray:
    """``out[y, x] = sum_k w_k * image[y + dy_k, x + dx_k]``; outside pixels from ``np.pad(mode)``."""
    pad_y = max(abs(dy) for dy, _ in offsets)
    pad_x = max(abs(dx) for _, dx in offsets)
    padded = np.pad(image, [(pad_y, pad_y), (pad_x, pad_x)] + [(0, 0)] * (image.ndim - 2), mode=mode)
    height, width = image.shape[:2]
    out = np.zeros_like(image)
    scratch = np.empty_like(image)
    for (dy, dx), weight in zip(offsets, weights):
        window = padded[pad_y + dy:pad_y + dy + height, pad_x + dx:pad_x + dx + width]
        if weight == 1.0:
            out += window
        else:
            out += np.multiply(window, np.float32(weight), out=scratch)
    return out


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (sampled kernel, radius ceil(3 sigma), edge padding)."""
    if sigma < 1e-3:
        return image
    radius = max(1, math.ceil(3.0 * sigma))
    taps = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (taps / sigma) ** 2)
    weights /= weights.sum()
    rows = _shift_sum(image, [(int(k), 0) for k in taps], weights, "edge")
    return _shift_sum(rows, [(0, int(k)) for k in taps], weights, "edge")


def _line_offsets(length: int, angle: float) -> list[tuple[int, int]]:
    """``length`` distinct pixel offsets along direction (cos angle, sin angle) in (row, column).

    One pixel per step along the dominant axis (so no offset repeats), centred on (0, 0).
    """
    dy, dx = math.cos(angle), math.sin(angle)
    step = max(abs(dy), abs(dx))
    return [(_round_half_up(k * dy / step), _round_half_up(k * dx / step))
            for k in range(-(length // 2), length - length // 2)]


def _line_smear(image: np.ndarray, length: int, angle: float, mode: str, average: bool) -> np.ndarray:
    """Correlate with a 1-px line kernel of ``length`` at ``angle`` (radians from the row axis)."""
    offsets = _line_offsets(length, angle)
    return _shift_sum(image, offsets, [1.0 / length if average else 1.0] * length, mode)


def _smooth_field(shape: tuple[int, int], rng: np.random.Generator, cells: int = 4) -> np.ndarray:
    """``(H, W)`` field in [0, 1]: a ``(cells + 1)^2`` uniform grid upsampled bilinearly."""
    grid = rng.random((cells + 1, cells + 1))
    gy, gx = np.linspace(0, cells, shape[0]), np.linspace(0, cells, shape[1])
    y0, x0 = np.minimum(gy.astype(int), cells - 1), np.minimum(gx.astype(int), cells - 1)
    fy, fx = (gy - y0)[:, None], gx - x0
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _normalise(values: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1]; a constant map becomes all ones (uniform fog)."""
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.ones(values.shape, dtype=np.float32)
    return ((values - low) / (high - low)).astype(np.float32)


def _pseudo_depth(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """``(H, W)`` depth in [0, 1]: far at the top and around the horizon centre, plus a smooth field."""
    height, width = shape
    rows = np.arange(height, dtype=np.float64)[:, None]
    cols = np.arange(width, dtype=np.float64)[None, :]
    vertical = 1.0 - rows / max(height - 1, 1)
    distance = np.hypot((rows - 0.4 * (height - 1)) / max(height, 1), (cols - 0.5 * (width - 1)) / max(width, 1))
    radial = 1.0 - distance / max(float(distance.max()), 1e-12)
    return _normalise(0.5 * vertical + 0.3 * radial + 0.2 * _smooth_field(shape, rng))


def _poisson(image: np.ndarray, peak: float, rng: np.random.Generator) -> np.ndarray:
    """Shot noise ``Poisson(λ) / peak`` with ``λ = peak * image`` (``peak``: photons at white).

    Exact (numpy) for ``λ < 4``; above, the Cornish-Fisher quantile of a standard normal ``z``,
    ``round(λ + √λ·z + (z² − 1)/6 + (z − z³)/(72·√λ))`` (total variation from the Poisson law
    < 0.5%), about three times faster than numpy's sampler.
    """
    lam = np.clip(image, 0.0, 1.0) * np.float32(peak)
    z = rng.standard_normal(lam.shape, dtype=np.float32)
    root = np.sqrt(np.maximum(lam, POISSON_EXACT_BELOW))
    counts = np.floor(lam + root * z + (z * z - 1) / 6 + z * (1 - z * z) / (72 * root) + 0.5)
    small = lam < POISSON_EXACT_BELOW
    counts[small] = rng.poisson(lam[small])
    return np.maximum(counts, 0, out=counts) / np.float32(peak)


def _gaussian_poisson(image: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian sigma = (10 + 15 s) / 255, clip, then Poisson with peak 90 - 20 s."""
    image += np.float32((10.0 + 15.0 * s) / 255.0) * rng.standard_normal(image.shape, dtype=np.float32)
    return _poisson(_finish(image), 90.0 - 20.0 * s, rng)


# ----------------------------------------------------------------------------- visible kinds


@register_degradation("haze", "vi", "scattering I = J·t + A·(1 − t), t = exp(−β·d); s = 1: β = 2, A = 0.9",
                      uses_depth=True)
def haze(image: np.ndarray, severity: float, rng: np.random.Generator, *,
         depth: np.ndarray | None = None) -> np.ndarray:
    """``β = 2 s``, ``A = 0.6 + 0.3 s``; ``d`` = ``depth (H, W)`` min-max normalised, or a pseudo-depth."""
    img, s = _start(image, severity)
    if depth is not None:
        depth = np.asarray(depth, dtype=np.float64)
        if depth.shape != img.shape[:2]:
            raise ValueError(f"haze: depth map shape {depth.shape} does not match the image's "
                             f"(H, W) = {img.shape[:2]}")
        if not np.isfinite(depth).all():
            raise ValueError("haze: the depth map holds NaN or infinite values")
    if s == 0:
        return img
    d = _normalise(depth) if depth is not None else _pseudo_depth(img.shape[:2], rng)
    t = _per_pixel(np.exp(np.float32(-HAZE_BETA_MAX * s) * d), img)
    img *= t
    img += np.float32(0.6 + 0.3 * s) * (1 - t)
    return _finish(img)


@register_degradation("rain", "vi", "screen-blended line streaks; s = 1: 0.004 seeds/px, 50 px long, "
                      "3 px wide, angle U(−45°, 45°), opacity 0.3")
def rain(image: np.ndarray, severity: float, rng: np.random.Generator, *,
         depth: np.ndarray | None = None) -> np.ndarray:
    """Seeds (density 0.004 s, brightness U(0.5, 1)) smeared into streaks, ``J + α·R·(1 − J)``."""
    img, s = _start(image, severity)
    if s == 0:
        return img
    density = RAIN_DENSITY * s
    draw = rng.random(img.shape[:2], dtype=np.float32)
    seeds = np.where(draw < density, 0.5 + 0.5 * draw / np.float32(density), 0).astype(np.float32)
    length, width = _round_half_up(10 + 40 * s), 1 + _round_half_up(2 * s)
    angle = rng.uniform(-math.pi / 4, math.pi / 4)  # from the vertical
    if width > 1:
        seeds = _shift_sum(seeds, [(0, dx - width // 2) for dx in range(width)], [1.0] * width, "constant")
    streaks = np.minimum(_line_smear(seeds, length, angle, "constant", average=False), 1.0)
    img += _per_pixel(np.float32(0.1 + 0.2 * s) * streaks, img) * (1 - img)
    return _finish(img)


@register_degradation("low_light", "vi", "gain·J^γ then shot + read noise; s = 1: gain 0.5, γ = 3, "
                      "200 photons at white, read σ = 3/255")
def low_light(image: np.ndarray, severity: float, rng: np.random.Generator, *,
              depth: np.ndarray | None = None) -> np.ndarray:
    """``(1 − 0.5 s)·J^(1 + 2 s)``, Poisson with ``P = min(200 / s, 1e6)``, Gaussian ``σ = 3 s / 255``."""
    img, s = _start(image, severity)
    if s == 0:
        return img
    np.power(img, np.float32(1 + 2 * s), out=img)
    img *= np.float32(1 - 0.5 * s)
    img = _poisson(img, min(LOW_LIGHT_PHOTONS / s, 1e6), rng)
    img += np.float32(3 * s / 255) * rng.standard_normal(img.shape, dtype=np.float32)
    return _finish(img)


@register_degradation("overexposure", "vi", "exposure gain k·J with a quadratic shoulder to 1; "
                      "s = 1: k = 3, knee 0.8 (saturated for J ≥ 0.4)")
def overexposure(image: np.ndarray, severity: float, rng: np.random.Generator, *,
                 depth: np.ndarray | None = None) -> np.ndarray:
    """``x = (1 + 2 s)·J``, knee ``κ = 1 − 0.2 s``: x up to κ, ``x − (x − κ)²/(4(1 − κ))`` to 2 − κ, then 1."""
    img, s = _start(image, severity)
    if s == 0:
        return img
    img *= np.float32(1 + 2 * s)
    knee = np.float32(1 - 0.2 * s)
    above = np.maximum(img - knee, 0)
    shoulder = np.minimum(img, knee) + above - above**2 / (4 * (1 - knee))
    return _finish(np.where(above >= 2 * (1 - knee), np.float32(1), shoulder))


@register_degradation("noise", "vi", "Gaussian then Poisson sensor noise; s = 1: σ = 25/255, peak 70")
def noise(image: np.ndarray, severity: float, rng: np.random.Generator, *,
          depth: np.ndarray | None = None) -> np.ndarray:
    """Gaussian ``σ = (10 + 15 s)/255``, clip, Poisson with peak ``90 − 20 s`` (for s > 0)."""
    img, s = _start(image, severity)
    if s == 0:
        return img
    return _finish(_gaussian_poisson(img, s, rng))


@register_degradation("blur", "vi", "Gaussian then motion (line) blur; s = 1: σ = 2 px, line 9 px at U(0°, 180°)")
def blur(image: np.ndarray, severity: float, rng: np.random.Generator, *,
         depth: np.ndarray | None = None) -> np.ndarray:
    """Gaussian ``σ = 2 s`` px, then a line average of ``round(1 + 8 s)`` px at a random angle."""
    img, s = _start(image, severity)
    if s == 0:
        return img
    img = _gaussian_blur(img, 2.0 * s)
    length, angle = _round_half_up(1 + 8 * s), rng.uniform(0.0, math.pi)
    if length > 1:
        img = _line_smear(img, length, angle, "edge", average=True)
    return _finish(img)


# ----------------------------------------------------------------------------- infrared kinds


@register_degradation("ir_noise", "ir", "Gaussian + Poisson + salt-and-pepper; s = 1: σ = 25/255, "
                      "peak 70, 0.2% of pixels salt/pepper")
def ir_noise(image: np.ndarray, severity: float, rng: np.random.Generator, *,
             depth: np.ndarray | None = None) -> np.ndarray:
    """As ``noise``, then a fraction ``0.002 s`` of pixels set to 0 or 1 (half each)."""
    img, s = _start(image, severity)
    if s == 0:
        return img
    img = _gaussian_poisson(img, s, rng)
    draw = rng.random(img.shape[:2])
    fraction = SALT_PEPPER_FRACTION * s
    img[draw < fraction / 2] = 1.0
    img[(draw >= fraction / 2) & (draw < fraction)] = 0.0
    return _finish(img)


@register_degradation("ir_stripes", "ir", "per-column offsets N(0, β) + Gaussian; s = 1: β = 8/255, σ = 5/255")
def ir_stripes(image: np.ndarray, severity: float, rng: np.random.Generator, *,
               depth: np.ndarray | None = None) -> np.ndarray:
    """Column offsets ``~ N(0, (3 + 5 s)/255)`` plus Gaussian ``σ = (3 + 2 s)/255``."""
    img, s = _start(image, severity)
    if s == 0:
        return img
    width = img.shape[1]
    offsets = rng.normal(0.0, (3 + 5 * s) / 255, size=width).astype(np.float32)
    img += offsets.reshape((1, width) + (1,) * (img.ndim - 2))
    img += np.float32((3 + 2 * s) / 255) * rng.standard_normal(img.shape, dtype=np.float32)
    return _finish(img)


@register_degradation("ir_low_contrast", "ir", "(1 − 0.5 s)·I + s·90/255; s = 1: 0.5·I + 90/255")
def ir_low_contrast(image: np.ndarray, severity: float, rng: np.random.Generator, *,
                    depth: np.ndarray | None = None) -> np.ndarray:
    """Linear blend of the identity and the published ``0.5·I + 90/255``; contrast × (1 − 0.5 s)."""
    img, s = _start(image, severity)
    if s == 0:
        return img
    img *= np.float32(1 - 0.5 * s)
    img += np.float32(s * IR_CONTRAST_OFFSET)
    return _finish(img)
