"""The report's metric tables, from ``evaluation.json`` and ``generalisation.json``.

A :class:`Table` is what both templates draw: a title, the column headers, rows of :class:`Cell`
and a legend (Markdown). Metric tables hold the mean of every method (ours, the pixel baselines,
the configured peers), the best value per metric marked :data:`BEST_MARK` (higher is better for
the ten fusion metrics, mIoU and per-class IoU).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from uaafusion.method_names import BASELINE_METHODS, OUR_METHOD

FUSION_METRICS: tuple[str, ...] = ("EN", "SD", "SF", "AG", "MI", "MI_bits", "SCD", "VIF", "Qabf", "SSIM")
TASK_METRICS: tuple[str, ...] = ("mIoU",)
OPTIONAL_HEADLINE_METRICS: tuple[str, ...] = ("pixel_accuracy", "ROI_SSIM", "box_mIoU")
"""Shown in the headline table when some method has them (box layouts, pixel accuracy)."""
BEST_MARK = "★"
METRICS_LEGEND = (f"{BEST_MARK} **bold**: best value per column (higher is better). Means over the test images; "
                  "mIoU and IoU are set-level.")


@dataclass(frozen=True)
class Cell:
    """One table cell: ``text`` and a ``mark`` after it (★, ▲, ▼); ``css`` its class in the HTML page,
    ``title`` its tooltip, ``strong`` bold in Markdown."""

    text: str
    mark: str = ""
    css: str = ""
    title: str = ""
    strong: bool = False


@dataclass
class Row:
    cells: list[Cell]
    css: str = ""


@dataclass
class Table:
    """A table section of the report: ``columns`` headers, ``rows`` of as many cells, a Markdown legend."""

    title: str
    columns: list[str]
    rows: list[Row] = field(default_factory=list)
    legend: str = METRICS_LEGEND


def method_order(methods: Iterable[str], peers: Iterable[str] = ()) -> list[str]:
    """Ours first, then the pixel baselines, then configured peers, then anything else (sorted)."""
    available = list(methods)
    ordered = [name for name in (OUR_METHOD, *BASELINE_METHODS, *peers) if name in available]
    return ordered + sorted(name for name in available if name not in ordered)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def format_number(value: float | None) -> str:
    """Four decimals below 10, two below 1000, else one; ``–`` for a missing value."""
    if value is None:
        return "–"
    magnitude = abs(value)
    return f"{value:.4f}" if magnitude < 10 else f"{value:.2f}" if magnitude < 1000 else f"{value:.1f}"


def best_methods(values: dict[str, dict[str, float | None]], metric: str) -> set[str]:
    """The methods whose ``metric`` is highest (ties included); empty when no method has a number."""
    numbers = {method: value for method, row in values.items() if is_number(value := row.get(metric))}
    if not numbers:
        return set()
    top = max(numbers.values())
    return {method for method, value in numbers.items() if math.isclose(value, top, rel_tol=1e-9, abs_tol=1e-12)}


def result_count(result: dict[str, Any]) -> int | None:
    """The number of images a method's result scored (``count``, else the size of ``per_image``)."""
    count = result.get("count")
    if isinstance(count, int):
        return count
    per_image = result.get("per_image")
    return len(per_image) if isinstance(per_image, dict) else None


def metrics_table(title: str, results: dict[str, dict[str, Any]], metrics: Sequence[str],
                  headers: Sequence[str], peers: Iterable[str] = ()) -> Table:
    """One row per method of ``results`` (``{method: {"mean": ..., "count": n}}``): its image count and
    mean ``metrics`` (headed ``headers``); the best per column marked unless every method ties."""
    methods = method_order(results, peers)
    values = {method: {metric: float(value) if is_number(value := (results[method].get("mean") or {}).get(metric))
                       else None for metric in metrics} for method in methods}
    best = {}
    for metric in metrics:
        scored = {method for method in methods if values[method][metric] is not None}
        winners = best_methods(values, metric)
        best[metric] = set() if len(scored) > 1 and winners == scored else winners
    table = Table(title, ["method", "images", *headers])
    for method in methods:
        count = result_count(results[method])
        cells = [Cell(method, css="method", strong=method == OUR_METHOD), Cell("" if count is None else str(count))]
        for metric in metrics:
            text = format_number(values[method][metric])
            cells.append(Cell(text, BEST_MARK, "best", f"best {metric}", True) if method in best[metric]
                         else Cell(text))
        table.rows.append(Row(cells, "ours" if method == OUR_METHOD else ""))
    return table


def metric_tables(evaluation: dict[str, dict[str, Any]], peers: Iterable[str] = (),
                  class_names: Sequence[str] = ()) -> list[Table]:
    """The headline table (fusion metrics, mIoU, the optional ones present), the per-class IoU tables
    (against labels, against box-derived masks) and the segmenter on fused images and each source alone."""
    peers = list(peers)
    means = [result.get("mean") or {} for result in evaluation.values()]
    present = {key for row in means for key, value in row.items() if is_number(value)}
    headline = [*FUSION_METRICS, *TASK_METRICS, *(key for key in OPTIONAL_HEADLINE_METRICS if key in present)]
    tables = [metrics_table("Mean metrics on the test split", evaluation, headline, headline, peers)]
    keys = list(dict.fromkeys(key for row in means for key in row))
    for prefix, target in (("IoU/", "labels"), ("box_IoU/", "box-derived masks")):
        rank = {f"{prefix}{name}": index for index, name in enumerate(class_names)}
        per_class = sorted((key for key in keys if key.startswith(prefix)), key=lambda key: rank.get(key, len(rank)))
        if any(key in present for key in per_class):
            tables.append(metrics_table(f"Per-class IoU of the segmenter on each method's fused images (against "
                                        f"{target})", evaluation, per_class,
                                        [key.split("/", 1)[1] for key in per_class], peers))
    sources = [(f"{prefix}mIoU{suffix}", label) for prefix in ("", "box_")
               for suffix, label in (("", "fused"), ("_ir", "infrared only"), ("_vi", "visible only"))
               if f"{prefix}mIoU{suffix}" in present]
    if len(sources) > 1:
        tables.append(metrics_table("Segmenter mIoU on each method's fused image and on each source alone",
                                    evaluation, [key for key, _ in sources],
                                    [f"{key} ({label})" for key, label in sources], peers))
    return tables


def generalisation_tables(generalisation: dict[str, dict[str, Any]]) -> list[Table]:
    """One fusion-metrics table per unlabeled set fused with the trained model."""
    return [metrics_table(f"Generalisation: {name} (unlabeled pairs, model trained here, fusion metrics)",
                          entry["methods"], FUSION_METRICS, FUSION_METRICS) for name, entry in generalisation.items()]
