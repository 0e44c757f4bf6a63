"""The report's comparison tables: differences between methods with paired bootstrap intervals.

Built from ``reports/evaluation.json`` by :mod:`uaafusion.metrics.comparison` (pure, seeded, so
a report rebuilt from the same evaluation shows the same intervals), rendered by both renderers
of :mod:`uaafusion.report`:

- ours minus each other method, one row per metric (the fusion metrics, ROI-SSIM, and the
  set-level segmentation metric of the fused images);
- each method's fused images minus each source alone, for the same segmenter (set-level mIoU).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from uaafusion.metrics.comparison import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    SOURCE_SUFFIXES,
    Difference,
    compare_methods,
    format_difference,
)

HIGHER_MARK = "▲"
LOWER_MARK = "▼"
_MARKS = {"higher": HIGHER_MARK, "lower": LOWER_MARK, "unclear": ""}


@dataclass
class DifferenceTable:
    """Cells ``(row, column) -> Difference``; a missing cell is drawn as ``–``."""

    title: str
    row_header: str
    rows: list[str]
    columns: list[str]
    cells: dict[tuple[str, str], Difference] = field(default_factory=dict)

    def cell_text(self, row: str, column: str) -> str:
        difference = self.cells.get((row, column))
        if difference is None:
            return "–"
        mark = _MARKS[difference.verdict]
        return f"{format_difference(difference)} {mark}".rstrip()


LEGEND = (f"Each cell: the difference on all test images and its {DEFAULT_CONFIDENCE:.0%} interval over "
          f"{DEFAULT_RESAMPLES} paired bootstrap draws of the test images (seed {DEFAULT_SEED}; `uaafusion "
          f"compare`); {HIGHER_MARK} the interval lies above zero, {LOWER_MARK} below it, no mark: this test set "
          "does not tell the two apart.")


def difference_tables(evaluation: Mapping[str, Mapping[str, Any]], methods: Sequence[str],
                      reference: str, metric_order: Sequence[str]) -> list[DifferenceTable]:
    """The two comparison tables for ``methods`` (ordered, ``reference`` among them): the first when another
    method shares scored images with the reference, the second when results carry confusion matrices;
    none without the reference."""
    tables: list[DifferenceTable] = []
    if reference not in evaluation:
        return tables
    ordered = {method: evaluation[method] for method in methods if method in evaluation}
    comparison = compare_methods(ordered, reference, skip_unpaired=True)
    present = {metric for differences in comparison.against.values() for metric in differences}
    rows = [metric for metric in metric_order if metric in present]
    rows += sorted(present - set(rows))
    if rows:
        table = DifferenceTable(f"Differences: {reference} minus each other method", "metric", rows,
                                [f"{reference} − {method}" for method in comparison.against])
        for method, differences in comparison.against.items():
            for metric, difference in differences.items():
                table.cells[(metric, f"{reference} − {method}")] = difference
        tables.append(table)
    if comparison.sources:
        labels = list(dict.fromkeys(label for differences in comparison.sources.values() for label in differences))
        table = DifferenceTable("Differences: the segmenter on each method's fused images minus on each source alone",
                                "method", list(comparison.sources), [_source_column(label) for label in labels])
        for method, differences in comparison.sources.items():
            for label, difference in differences.items():
                table.cells[(method, _source_column(label))] = difference
        tables.append(table)
    return tables


def _source_column(label: str) -> str:
    """``"box_mIoU - box_mIoU_ir"`` -> ``"box_mIoU: fused − infrared"``."""
    key, _, source_key = label.partition(" - ")
    names = dict(SOURCE_SUFFIXES)
    source = names.get(source_key[len(key):], source_key)
    return f"{key}: fused − {source}"


def markdown_lines(table: DifferenceTable) -> list[str]:
    """The table as Markdown lines (heading, table, legend)."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [f"## {table.title}", "",
             "| " + " | ".join(cell(text) for text in [table.row_header, *table.columns]) + " |",
             "|" + "|".join([":---"] + ["---:"] * len(table.columns)) + "|"]
    for row in table.rows:
        lines.append("| " + " | ".join([cell(row)] + [cell(table.cell_text(row, column))
                                                      for column in table.columns]) + " |")
    return lines + ["", LEGEND, ""]


def html_parts(table: DifferenceTable) -> list[str]:
    """The table as HTML parts (heading, table, legend)."""
    escape = html.escape
    header = "".join(f"<th>{escape(text)}</th>" for text in [table.row_header, *table.columns])
    rows = []
    for row in table.rows:
        cells = [f'<td class="method">{escape(row)}</td>']
        for column in table.columns:
            difference = table.cells.get((row, column))
            css = f' class="{difference.verdict}"' if difference is not None and difference.verdict != "unclear" else ""
            cells.append(f"<td{css}>{escape(table.cell_text(row, column))}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return [f"<h2>{escape(table.title)}</h2>",
            f'<div class="table"><table class="metrics"><thead><tr>{header}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>',
            f'<p class="legend">{escape(LEGEND.replace("`", ""))}</p>']
