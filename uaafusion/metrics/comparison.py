"""Paired comparisons of evaluation results, with bootstrap confidence intervals over the images.

Two fusion methods scored on the same test images (:func:`uaafusion.metrics.evaluate.evaluate_folders`)
differ by some amount on each metric; with 60 images, how much of that is the images drawn? A
*paired bootstrap* answers it: draw the test images with replacement (the same draws for both
methods, so the pairing stays), recompute the difference of the metric on each draw, and take the
central ``confidence`` share of those differences as the interval.

- A per-image metric (VIF, Qabf, SSIM, ...) is compared through its mean over the images both
  methods scored (:func:`mean_difference`).
- A set-level segmentation metric (``mIoU``, ``box_mIoU`` and their ``_ir`` / ``_vi`` variants)
  is recomputed from the images' confusion matrices summed over each draw
  (:func:`miou_difference`), as the evaluation computes it; evaluation results carry those
  matrices under ``"confusion"`` (one ``C x C`` matrix per image and key).

:func:`compare_results` compares two methods metric by metric, :func:`compare_sources` one
method's fused images with each source alone (``box_mIoU`` against ``box_mIoU_ir``...), and
:func:`compare_methods` does both for a reference method and every other one (what
``uaafusion compare``, the report and the pipeline's MLflow run show). The differences are
``first - second``: positive means the first scores higher.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from uaafusion.errors import ConfigError, DataError

DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95
DEFAULT_SEED = 0

SEGMENTATION_KEYS: tuple[str, ...] = ("mIoU", "box_mIoU")
"""Set-level keys of the fused image; ``KEY_ir`` / ``KEY_vi`` are the same segmenter on each source."""
SOURCE_SUFFIXES: tuple[tuple[str, str], ...] = (("_ir", "infrared"), ("_vi", "visible"))


@dataclass(frozen=True)
class Difference:
    """``first - second`` on one metric: the value on all paired images and its bootstrap interval."""

    metric: str
    estimate: float
    low: float
    high: float
    images: int
    confidence: float

    @property
    def verdict(self) -> str:
        """``"higher"`` / ``"lower"`` when the interval lies above / below zero, else ``"unclear"``."""
        if self.low > 0:
            return "higher"
        if self.high < 0:
            return "lower"
        return "unclear"

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (undefined numbers as ``None``)."""
        def number(value: float) -> float | None:
            return value if math.isfinite(value) else None

        return {"estimate": number(self.estimate), "low": number(self.low), "high": number(self.high),
                "images": self.images, "confidence": self.confidence, "verdict": self.verdict}

    @classmethod
    def from_json(cls, metric: str, document: Mapping[str, Any]) -> "Difference":
        """The inverse of :meth:`to_json` (``None`` back to ``nan``)."""
        def number(value: float | None) -> float:
            return math.nan if value is None else float(value)

        return cls(metric, number(document["estimate"]), number(document["low"]), number(document["high"]),
                   int(document["images"]), float(document["confidence"]))


def bootstrap_draws(count: int, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> np.ndarray:
    """Image indices of ``resamples`` bootstrap draws of ``count`` images: ``int64 (resamples, count)``."""
    if count < 1:
        raise DataError("no image to compare: the two results share no scored image.")
    if resamples < 1:
        raise ConfigError(f"resamples must be at least 1, got {resamples}.")
    return np.random.default_rng(seed).integers(0, count, size=(resamples, count))


def _interval(metric: str, estimate: float, resampled: np.ndarray, images: int, confidence: float) -> Difference:
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must lie strictly between 0 and 1, got {confidence}.")
    finite = resampled[np.isfinite(resampled)]
    tail = (1 - confidence) / 2
    low, high = (np.quantile(finite, [tail, 1 - tail]) if finite.size else (math.nan, math.nan))
    return Difference(metric, float(estimate), float(low), float(high), images, confidence)


def mean_difference(metric: str, first: np.ndarray, second: np.ndarray, draws: np.ndarray,
                    confidence: float = DEFAULT_CONFIDENCE) -> Difference:
    """``mean(first) - mean(second)`` of paired per-image values ``(N,)``, with the interval of ``draws``.

    Images where either value is ``nan`` (undefined, e.g. ROI-SSIM of an image without boxes) are
    left out of every mean, as the evaluation leaves them out of its own.
    """
    differences = np.asarray(first, dtype=np.float64) - np.asarray(second, dtype=np.float64)
    scored = np.isfinite(differences)
    if not scored.any():
        raise DataError(f"{metric}: no image has a value in both results.")
    drawn, drawn_scored = np.where(scored, differences, 0.0)[draws], scored[draws]
    with np.errstate(invalid="ignore", divide="ignore"):
        resampled = drawn.sum(axis=1) / drawn_scored.sum(axis=1)
    return _interval(metric, differences[scored].mean(), resampled, int(scored.sum()), confidence)


def set_miou(confusion: np.ndarray) -> np.ndarray:
    """mIoU of summed confusion matrices ``(..., C, C)`` -> ``(...)``, as
    :meth:`uaafusion.metrics.segmentation.ConfusionMatrix.miou`: classes absent from targets and
    predictions are left out; ``nan`` when no class appears."""
    confusion = np.asarray(confusion, dtype=np.float64)
    true_positive = np.diagonal(confusion, axis1=-2, axis2=-1)
    union = confusion.sum(axis=-2) + confusion.sum(axis=-1) - true_positive
    present = union > 0
    iou = np.where(present, true_positive / np.maximum(union, 1), 0.0)
    counted = present.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counted > 0, iou.sum(axis=-1) / np.maximum(counted, 1), np.nan)


def set_class_iou(confusion: np.ndarray, class_index: int) -> np.ndarray:
    """IoU of one class from summed confusion matrices ``(..., C, C)`` -> ``(...)``; ``nan`` where the
    class is absent from targets and predictions (as :meth:`ConfusionMatrix.per_class_iou`)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    true_positive = confusion[..., class_index, class_index]
    union = confusion[..., class_index, :].sum(axis=-1) + confusion[..., :, class_index].sum(axis=-1) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, true_positive / np.maximum(union, 1), np.nan)


def miou_difference(metric: str, first: np.ndarray, second: np.ndarray, draws: np.ndarray,
                    confidence: float = DEFAULT_CONFIDENCE, class_index: int | None = None) -> Difference:
    """Set-level mIoU (or, with ``class_index``, that class's IoU) of ``first`` minus that of ``second``:
    per-image confusion matrices ``(N, C, C)``."""
    first, second = np.asarray(first), np.asarray(second)
    if first.shape != second.shape or first.ndim != 3 or first.shape[1] != first.shape[2]:
        raise DataError(f"{metric}: confusion matrices of shapes {first.shape} and {second.shape} cannot be "
                        "compared; both results must come from segmenters with the same classes.")

    def score(confusion: np.ndarray) -> np.ndarray:
        return set_miou(confusion) if class_index is None else set_class_iou(confusion, class_index)

    estimate = score(first.sum(axis=0)) - score(second.sum(axis=0))
    multiplicity = draw_counts(draws, first.shape[0])
    resampled = score(_summed_per_draw(first, multiplicity)) - score(_summed_per_draw(second, multiplicity))
    return _interval(metric, estimate, resampled, first.shape[0], confidence)


def draw_counts(draws: np.ndarray, count: int) -> np.ndarray:
    """How often each image is drawn in each draw: ``(resamples, count)`` from draws ``(resamples, count)``."""
    resamples = draws.shape[0]
    offsets = (draws + count * np.arange(resamples)[:, None]).ravel()
    return np.bincount(offsets, minlength=resamples * count).reshape(resamples, count)


def _summed_per_draw(confusions: np.ndarray, multiplicity: np.ndarray) -> np.ndarray:
    """Confusion matrices ``(N, C, C)`` summed over each draw's images: ``(resamples, C, C)`` (without
    materialising the ``(resamples, N, C, C)`` gather)."""
    images, classes, _ = confusions.shape
    flat = confusions.reshape(images, classes * classes).astype(np.float64)
    return (multiplicity.astype(np.float64) @ flat).reshape(-1, classes, classes)


def _per_image_values(result: Mapping[str, Any], metric: str, names: Sequence[str]) -> np.ndarray | None:
    """``(N,)`` values of ``metric`` for ``names``, ``nan`` where undefined; ``None`` when no image has one."""
    per_image = result.get("per_image") or {}
    values = [per_image.get(name, {}).get(metric) for name in names]
    numbers = [float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
               for value in values]
    array = np.asarray(numbers, dtype=np.float64)
    return array if np.isfinite(array).any() else None


def _confusions(result: Mapping[str, Any], key: str, names: Sequence[str]) -> np.ndarray | None:
    matrices = (result.get("confusion") or {}).get(key)
    if not isinstance(matrices, Mapping) or any(name not in matrices for name in names):
        return None
    return np.asarray([matrices[name] for name in names], dtype=np.int64)


_SET_LEVEL_KEY = re.compile(r"^(?P<prefix>box_)?(?P<mean>m?)IoU(?P<suffix>_ir|_vi)?(?:/(?P<name>.+))?$")


def _set_level(result: Mapping[str, Any], metric: str) -> tuple[str, int | None] | None:
    """``(confusion key, class index or None)`` of a set-level key: ``box_mIoU_ir`` -> ``("box_mIoU_ir",
    None)``, ``box_IoU/car`` -> ``("box_mIoU", index of car)``; ``None`` for any other key or an
    unknown class."""
    match = _SET_LEVEL_KEY.match(metric)
    if match is None or bool(match["mean"]) == bool(match["name"]):
        return None
    prefix, suffix = match["prefix"] or "", match["suffix"] or ""
    key = f"{prefix}mIoU{suffix}"
    if match["mean"]:
        return key, None
    names = class_names(result, prefix)
    return (key, names.index(match["name"])) if match["name"] in names else None


def class_names(result: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The segmenter's classes in index order, read off the result's ``{prefix}IoU/<class>`` keys."""
    marker = f"{prefix}IoU/"
    return [key[len(marker):] for key in (result.get("mean") or {}) if key.startswith(marker)]


def _select(names: Iterable[str], select: str | None, source: str) -> list[str]:
    """``names`` matching the shell-style pattern ``select`` (all for ``None``), sorted; DataError for none."""
    chosen = sorted(name for name in names if select is None or fnmatch.fnmatchcase(name, select))
    if not chosen:
        what = f" matching --select {select!r}" if select is not None else ""
        raise DataError(f"{source} share no scored image{what}: compare results of the same test images (the "
                        "names are the image file names without extension).")
    return chosen


def shared_images(first: Mapping[str, Any], second: Mapping[str, Any], first_name: str = "first",
                  second_name: str = "second", select: str | None = None) -> list[str]:
    """Names of the images both results scored (matching ``select``, a shell-style pattern), sorted;
    :class:`DataError` when there are none."""
    names = set(first.get("per_image") or {}) & set(second.get("per_image") or {})
    return _select(names, select, f"{first_name} and {second_name}")


def per_image_metrics(result: Mapping[str, Any]) -> list[str]:
    """The per-image metric keys of a result, in its order (the per-image ``mIoU``/``box_mIoU`` are left
    out: their set-level values come from the confusion matrices)."""
    keys: list[str] = []
    for values in (result.get("per_image") or {}).values():
        keys += [key for key in values if key not in keys and key not in SEGMENTATION_KEYS]
    return keys


def set_level_metrics(result: Mapping[str, Any], per_class: bool = False) -> list[str]:
    """The fused images' set-level keys a result can be compared on (those with confusion matrices):
    ``mIoU`` / ``box_mIoU`` and, with ``per_class``, ``IoU/<class>`` / ``box_IoU/<class>``."""
    confusion = result.get("confusion") or {}
    keys: list[str] = []
    for key in SEGMENTATION_KEYS:
        if key in confusion:
            prefix = key[:-len("mIoU")]
            keys += [key] + ([f"{prefix}IoU/{name}" for name in class_names(result, prefix)] if per_class else [])
    return keys


def _difference(metric: str, first: Mapping[str, Any], second: Mapping[str, Any], images: Sequence[str],
                draws: np.ndarray, confidence: float, second_metric: str | None = None) -> Difference | None:
    """``first``'s ``metric`` minus ``second``'s ``second_metric`` (default: the same) on ``images``; set-level
    keys from the confusion matrices, others from the per-image values; ``None`` when either lacks it."""
    other = second_metric or metric
    label = metric if other == metric else f"{metric} - {other}"
    if _SET_LEVEL_KEY.match(metric) or _SET_LEVEL_KEY.match(other):  # never a mean of per-image IoUs
        first_level, second_level = _set_level(first, metric), _set_level(second, other)
        if first_level is None or second_level is None or first_level[1] != second_level[1]:
            return None
        first_matrices = _confusions(first, first_level[0], images)
        second_matrices = _confusions(second, second_level[0], images)
        if first_matrices is None or second_matrices is None:
            return None
        return miou_difference(label, first_matrices, second_matrices, draws, confidence, first_level[1])
    first_values, second_values = _per_image_values(first, metric, images), _per_image_values(second, other, images)
    if first_values is not None and second_values is not None and np.isfinite(first_values - second_values).any():
        return mean_difference(label, first_values, second_values, draws, confidence)
    return None


def compare_results(first: Mapping[str, Any], second: Mapping[str, Any], metrics: Iterable[str] | None = None,
                    resamples: int = DEFAULT_RESAMPLES, confidence: float = DEFAULT_CONFIDENCE,
                    seed: int = DEFAULT_SEED, names: tuple[str, str] = ("first", "second"),
                    select: str | None = None, per_class: bool = False) -> dict[str, Difference]:
    """``first - second`` per metric over the images both scored, with paired bootstrap intervals.

    ``metrics``: per-image metric keys and set-level keys (``mIoU``, ``box_mIoU``, ``box_mIoU_ir``,
    ``box_IoU/car``...); default: every per-image metric both have and the set-level keys of the
    fused images (:func:`set_level_metrics`, per class with ``per_class``) that both can give (the
    ``_ir`` / ``_vi`` keys score the same sources in both results; :func:`compare_sources` sets
    them against the fused images). A metric asked for by name that either result lacks raises
    :class:`ConfigError`; by default such metrics are skipped. ``select``: only the images whose
    name matches this shell-style pattern (``"*N"``). Every metric uses the same draws.
    """
    images = shared_images(first, second, *names, select=select)
    draws = bootstrap_draws(len(images), resamples, seed)
    wanted = list(metrics) if metrics is not None else None
    candidates = wanted if wanted is not None else (
        per_image_metrics(first) + [key for key in set_level_metrics(first, per_class)
                                    if key in set_level_metrics(second, per_class)])
    differences: dict[str, Difference] = {}
    for metric in candidates:
        difference = _difference(metric, first, second, images, draws, confidence)
        if difference is not None:
            differences[metric] = difference
        elif wanted is not None:
            raise ConfigError(
                f"metric {metric!r} cannot be compared between {names[0]} and {names[1]}: one of them has no value "
                "for every shared image (set-level keys need the per-image confusion matrices of an evaluation "
                "made by this version). Choose from: "
                f"{', '.join(per_image_metrics(first) + set_level_metrics(first, per_class=True))}.")
    return differences


def compare_sources(result: Mapping[str, Any], resamples: int = DEFAULT_RESAMPLES,
                    confidence: float = DEFAULT_CONFIDENCE, seed: int = DEFAULT_SEED,
                    select: str | None = None, per_class: bool = False) -> dict[str, Difference]:
    """The segmenter on a method's fused images minus the same segmenter on each source alone.

    Keys like ``"box_mIoU - box_mIoU_ir"`` (and, with ``per_class``, ``"box_IoU/car - box_IoU_ir/car"``);
    empty when the result carries no confusion matrices. ``select`` as in :func:`compare_results`.
    """
    differences: dict[str, Difference] = {}
    for metric in set_level_metrics(result, per_class):
        key, class_index = _set_level(result, metric) or (metric, None)
        images = _select((result.get("confusion") or {})[key], select, "the fused images and their sources")
        draws = bootstrap_draws(len(images), resamples, seed)
        for suffix, _ in SOURCE_SUFFIXES:
            source_metric = (f"{key}{suffix}" if class_index is None
                             else metric.replace("IoU/", f"IoU{suffix}/", 1))
            difference = _difference(metric, result, result, images, draws, confidence, source_metric)
            if difference is not None:
                differences[difference.metric] = difference
    return differences


@dataclass
class Comparison:
    """A reference method against every other one, and every method's fused images against each source."""

    reference: str
    against: dict[str, dict[str, Difference]]
    """``{other method: {metric: reference - other}}``, in the order of the methods given."""
    sources: dict[str, dict[str, Difference]]
    """``{method: {"box_mIoU - box_mIoU_ir": ...}}`` for the methods whose result has confusion matrices."""

    def to_json(self) -> dict[str, Any]:
        def plain(table: dict[str, dict[str, Difference]]) -> dict[str, dict[str, Any]]:
            return {method: {metric: value.to_json() for metric, value in differences.items()}
                    for method, differences in table.items()}

        return {"reference": self.reference, "against": plain(self.against), "sources": plain(self.sources)}

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> "Comparison":
        """The inverse of :meth:`to_json` (what the evaluate step writes to ``comparison.json``)."""
        def table(part: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Difference]]:
            return {method: {metric: Difference.from_json(metric, value) for metric, value in differences.items()}
                    for method, differences in part.items()}

        try:
            return cls(str(document["reference"]), table(document["against"]), table(document["sources"]))
        except (KeyError, TypeError, ValueError) as error:
            raise DataError(f"not a comparison document (expected reference, against, sources): {error!r}") from None

    def flat_metrics(self, against: bool = True) -> dict[str, float]:
        """Every finite difference and interval bound as one number, for an experiment tracker:
        ``ours-average/VIF``, ``ours-average/VIF/low``, ``ours-average/VIF/high`` (left out when
        ``against`` is false), and the reference's ``ours/box_mIoU-box_mIoU_ir`` (with ``/low``,
        ``/high``)."""
        rows = [(f"{self.reference}-{method}/{metric}", difference)
                for method, differences in (self.against.items() if against else ())
                for metric, difference in differences.items()]
        rows += [(f"{self.reference}/{label.replace(' ', '')}", difference)
                 for label, difference in self.sources.get(self.reference, {}).items()]
        flat: dict[str, float] = {}
        for name, difference in rows:
            for suffix, value in (("", difference.estimate), ("/low", difference.low), ("/high", difference.high)):
                if math.isfinite(value):
                    flat[name + suffix] = value
        return flat


def compare_methods(results: Mapping[str, Mapping[str, Any]], reference: str, metrics: Iterable[str] | None = None,
                    resamples: int = DEFAULT_RESAMPLES, confidence: float = DEFAULT_CONFIDENCE,
                    seed: int = DEFAULT_SEED, skip_unpaired: bool = False, select: str | None = None,
                    per_class: bool = False) -> Comparison:
    """``reference`` against every other method of ``results`` (:func:`compare_results`) and each
    method's fused images against each source (:func:`compare_sources`). With ``skip_unpaired``,
    a method that shares no image with the reference is left out instead of raising."""
    if reference not in results:
        raise ConfigError(f"reference method {reference!r} is none of the methods: {', '.join(results)}.")
    chosen = list(metrics) if metrics is not None else None
    settings = {"resamples": resamples, "confidence": confidence, "seed": seed, "select": select,
                "per_class": per_class}
    against: dict[str, dict[str, Difference]] = {}
    for method, result in results.items():
        if method == reference:
            continue
        try:
            against[method] = compare_results(results[reference], result, chosen, names=(reference, method),
                                              **settings)
        except DataError:
            if not skip_unpaired:
                raise
    sources = {method: compare_sources(result, **settings) for method, result in results.items()}
    return Comparison(reference, against, {method: value for method, value in sources.items() if value})


def format_difference(difference: Difference) -> str:
    """``+0.0123 [-0.0050, +0.0301]``: the estimate and its interval, signs always shown, all three with
    the decimals of the largest (four below 10, two above)."""
    finite = [abs(value) for value in (difference.estimate, difference.low, difference.high) if math.isfinite(value)]
    decimals = 4 if max(finite, default=0.0) < 10 else 2

    def number(value: float) -> str:
        return f"{value:+.{decimals}f}" if math.isfinite(value) else "n/a"

    return f"{number(difference.estimate)} [{number(difference.low)}, {number(difference.high)}]"


def named_results(document: Mapping[str, Any], name: str, source: str = "the results") -> dict[str, Mapping[str, Any]]:
    """The methods of one JSON document: ``{name: document}`` for a single ``uaafusion evaluate`` result
    (it has ``per_image``), else the document itself (the pipeline's ``evaluation.json``,
    ``{method: result}``). :class:`DataError` naming ``source`` for anything else."""
    if isinstance(document.get("per_image"), Mapping):
        return {name: document}
    methods = {key: value for key, value in document.items()
               if isinstance(value, Mapping) and isinstance(value.get("per_image"), Mapping)}
    if not methods or len(methods) != len(document):
        raise DataError(f"{source}: not an evaluation result (expected the JSON of `uaafusion evaluate`, with "
                        "per_image, or the pipeline's evaluation.json, {method: {per_image, ...}}).")
    return methods
