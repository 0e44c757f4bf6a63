"""The comparison tables, from the evaluate step's ``comparison.json``
(:class:`uaafusion.metrics.comparison.Comparison`):

- ours minus each other method, one row per metric (the fusion metrics, ROI-SSIM, and the set-level
  segmentation metric of the fused images);
- each method's fused images minus each source alone, for the same segmenter (set-level mIoU).

Each cell is the difference on all test images with its paired bootstrap interval, marked
:data:`HIGHER_MARK` / :data:`LOWER_MARK` when the interval lies above / below zero.
"""

from __future__ import annotations

from collections.abc import Iterable

from uaafusion.metrics.comparison import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    SOURCE_SUFFIXES,
    Comparison,
    Difference,
    format_difference,
)
from uaafusion.report.tables import FUSION_METRICS, TASK_METRICS, Cell, Row, Table, method_order

HIGHER_MARK = "▲"
LOWER_MARK = "▼"
_MARKS = {"higher": HIGHER_MARK, "lower": LOWER_MARK, "unclear": ""}
METRIC_ORDER: tuple[str, ...] = (*FUSION_METRICS, "ROI_SSIM", "ROI_SSIM_ir", "ROI_SSIM_vi", *TASK_METRICS, "box_mIoU")
"""Rows of the first table in this order (the headline table's), then any other metric, sorted."""
LEGEND = (f"Each cell: the difference on all test images and its {DEFAULT_CONFIDENCE:.0%} interval over "
          f"{DEFAULT_RESAMPLES} paired bootstrap draws of the test images (seed {DEFAULT_SEED}; `uaafusion "
          f"compare`); {HIGHER_MARK} the interval lies above zero, {LOWER_MARK} below it, no mark: this test set "
          "does not tell the two apart.")


def difference_cell(difference: Difference | None) -> Cell:
    """``+0.0123 [-0.0050, +0.0301] ▲`` (classed by its verdict), or ``–`` for a missing difference."""
    if difference is None:
        return Cell("–")
    verdict = difference.verdict
    return Cell(format_difference(difference), _MARKS[verdict], "" if verdict == "unclear" else verdict)


def difference_tables(comparison: Comparison, peers: Iterable[str] = ()) -> list[Table]:
    """The table of the reference minus every other method (when any pair was compared) and the table of
    the fused images minus each source (when some result carried confusion matrices), methods in
    report order."""
    peers, reference = list(peers), comparison.reference
    tables = []
    others = method_order(comparison.against, peers)
    present = {metric for method in others for metric in comparison.against[method]}
    metrics = [metric for metric in METRIC_ORDER if metric in present] + sorted(present - set(METRIC_ORDER))
    if metrics:
        table = Table(f"Differences: {reference} minus each other method",
                      ["metric", *(f"{reference} − {method}" for method in others)], legend=LEGEND)
        table.rows = [Row([Cell(metric, css="method"),
                           *(difference_cell(comparison.against[method].get(metric)) for method in others)])
                      for metric in metrics]
        tables.append(table)
    methods = method_order(comparison.sources, peers)
    labels = list(dict.fromkeys(label for method in methods for label in comparison.sources[method]))
    if labels:
        table = Table("Differences: the segmenter on each method's fused images minus on each source alone",
                      ["method", *map(source_column, labels)], legend=LEGEND)
        table.rows = [Row([Cell(method, css="method"),
                           *(difference_cell(comparison.sources[method].get(label)) for label in labels)])
                      for method in methods]
        tables.append(table)
    return tables


def source_column(label: str) -> str:
    """``"box_mIoU - box_mIoU_ir"`` -> ``"box_mIoU: fused − infrared"``."""
    key, _, source_key = label.partition(" - ")
    source = dict(SOURCE_SUFFIXES).get(source_key[len(key):], source_key)
    return f"{key}: fused − {source}"
