"""The degraded benchmark's tables, from the evaluate step's ``degraded.json``
(:mod:`uaafusion.degraded_benchmark`): per headline metric, every method's mean on each degraded
test set (scored against the clean sources), then ours minus each other trained model on each set
with its paired bootstrap interval."""

from __future__ import annotations

from typing import Any

from uaafusion.method_names import BASELINE_METHODS, OUR_METHOD
from uaafusion.metrics.comparison import Difference
from uaafusion.report.differences import LEGEND, difference_cell
from uaafusion.report.tables import BEST_MARK, Cell, Row, Table, best_methods, format_number, is_number, method_order

DEGRADED_METRICS: tuple[str, ...] = ("VIF", "Qabf", "SSIM", "box_mIoU", "mIoU")
"""The metrics shown per degraded set (those present): fusion quality against the clean sources, and
the segmenter's set-level mIoU on the fused images."""


def degraded_tables(document: dict[str, Any], reference: str = OUR_METHOD) -> list[Table]:
    """A means table per metric (rows: kinds, columns: methods) and, when other trained models were
    compared, one differences table per such model (rows: kinds, columns: metrics): ``reference`` (the
    method the document's comparisons start from) minus it."""
    sets: dict[str, dict[str, Any]] = document.get("sets") or {}
    if not sets:
        return []
    present = {method for entry in sets.values() for method in entry["mean"]}
    methods = [reference, *(method for method in method_order(present) if method != reference)] \
        if reference in present else method_order(present)
    severity = document.get("severity")
    where = f"severity {severity}, seed {document.get('seed')}"
    tables = []
    for metric in DEGRADED_METRICS:
        if not any(is_number(entry["mean"].get(method, {}).get(metric)) for entry in sets.values()
                   for method in methods):
            continue
        table = Table(f"Degraded test sets ({where}): {metric} of each method, against the clean sources",
                      ["degradation", *methods],
                      legend=f"{BEST_MARK} **bold**: best per degradation (higher is better). Fused from the degraded "
                             "pair, scored against the clean sources; mIoU is set-level, each trained model with "
                             "its own segmenter (the pixel baselines with ours).")
        for kind, entry in sets.items():
            values = {method: {metric: entry["mean"].get(method, {}).get(metric)} for method in methods}
            best = best_methods(values, metric)
            if len(best) > 1 and best == {method for method in methods if is_number(values[method][metric])}:
                best = set()  # every method ties: nothing to mark
            cells = [Cell(kind, css="method")]
            for method in methods:
                text = format_number(values[method][metric])
                cells.append(Cell(text, BEST_MARK, "best", f"best {metric}", True) if method in best else Cell(text))
            table.rows.append(Row(cells))
        tables.append(table)
    trained = [method for method in methods if method != reference and method not in BASELINE_METHODS]
    for other in trained:
        metrics = [metric for metric in DEGRADED_METRICS
                   if any(metric in entry["comparison"]["against"].get(other, {}) for entry in sets.values())]
        table = Table(f"Degraded test sets ({where}): {reference} minus {other}",
                      ["degradation", *(f"{metric}: {reference} − {other}" for metric in metrics)], legend=LEGEND)
        for kind, entry in sets.items():
            differences = entry["comparison"]["against"].get(other, {})
            table.rows.append(Row([Cell(kind, css="method"), *(
                difference_cell(Difference.from_json(metric, differences[metric]) if metric in differences else None)
                for metric in metrics)]))
        tables.append(table)
    return tables
