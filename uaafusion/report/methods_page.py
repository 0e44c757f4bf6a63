"""The methods comparison's pages (``index.html`` and ``README.md`` of ``reports/methods``): one table of
every method (the trained models, the pixel baselines, the peers) with the nine fusion metrics, box mIoU,
parameters, training and inference time; the reference minus every other method with paired bootstrap
intervals; the degraded sets; the panel; the discussion; how to reproduce.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uaafusion.method_names import BASELINE_METHODS
from uaafusion.metrics.comparison import Comparison, compare_methods, format_difference
from uaafusion.report.degraded import degraded_tables
from uaafusion.report.differences import difference_tables
from uaafusion.report.figures import Figure
from uaafusion.report.methods import (
    COMPARED_METRICS,
    TARGET_BASELINE,
    TARGET_METRICS,
    MethodRun,
    run_label,
)
from uaafusion.report.tables import BEST_MARK, Cell, Row, Table, best_methods, format_number, is_number

METHODS_TITLE = "Fusion methods compared"
FACT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("parameters", "parameters"), ("training_min", "training (min)"),
    ("training_step_s", "fusion step (s)"), ("inference_s", "inference (s, 640×480)"))
FACTS_LEGEND = ("parameters: the fusion network's (the segmenter is the same architecture for all); training: wall "
                "minutes of the training runs as MLflow timed them (pretraining to the last round); fusion step: one "
                "fusion-stage training step at the presets' batch, inference: one 640×480 pair fused by `Fuser` "
                "(both from `python -m benchmarks --only methods`, median of the repeats). The pixel baselines and "
                "the peers were scored with the reference run's segmenter (box mIoU).")


@dataclass
class MethodsContext:
    """What both templates draw (the same fields as the pipeline report's, where they overlap)."""

    title: str
    summary: list[str]
    notes: list[str]
    tables: list[Table]
    discussion: str
    figures: list[Figure]
    reproduce_commands: list[str]
    provenance: list[tuple[str, str]]


def _fact_text(fact: str, value: float | None) -> str:
    if value is None:
        return "–"
    if fact == "parameters":
        return f"{int(value):,}"
    return f"{value:.1f}" if fact == "training_min" else f"{value:.3f}"


def methods_table(results: dict[str, dict[str, Any]], facts: dict[str, dict[str, float | None]],
                  order: Sequence[str]) -> Table:
    """One row per method of ``order``: its facts (trained methods only), its image count and mean
    :data:`COMPARED_METRICS`, the best per metric marked."""
    metrics = [metric for metric in COMPARED_METRICS
               if any(is_number((results[method].get("mean") or {}).get(metric)) for method in order)]
    values = {method: {metric: (results[method].get("mean") or {}).get(metric) for metric in metrics} for method in order}
    best = {metric: best_methods(values, metric) for metric in metrics}
    table = Table("Methods on the test split", ["method", *(header for _, header in FACT_COLUMNS), "images", *metrics],
                  legend=f"{BEST_MARK} **bold**: best per column (higher is better). Means over the test images; "
                         f"box mIoU is set-level, each trained model with its own segmenter. {FACTS_LEGEND}")
    for method in order:
        result = results[method]
        cells = [Cell(method, css="method", strong=method == order[0])]
        cells += [Cell(_fact_text(fact, facts.get(method, {}).get(fact))) for fact, _ in FACT_COLUMNS]
        cells.append(Cell(str(result.get("count") or len(result.get("per_image") or {}))))
        for metric in metrics:
            text = format_number(values[method][metric] if is_number(values[method][metric]) else None)
            cells.append(Cell(text, BEST_MARK, "best", f"best {metric}", True) if method in best[metric] else Cell(text))
        table.rows.append(Row(cells, "ours" if method == order[0] else ""))
    return table


def best_lines(results: dict[str, dict[str, Any]], trained: Sequence[str]) -> list[str]:
    """Per metric: the best method overall and the best trained one (when they differ)."""
    lines = []
    for metric in COMPARED_METRICS:
        values = {method: {metric: (result.get("mean") or {}).get(metric)} for method, result in results.items()}
        overall = sorted(best_methods(values, metric))
        if not overall:
            continue
        among = sorted(best_methods({method: values[method] for method in trained}, metric))
        line = f"{metric}: {', '.join(overall)} ({format_number(values[overall[0]][metric])})"
        if among and not set(among) & set(overall):
            line += f"; best trained here: {', '.join(among)} ({format_number(values[among[0]][metric])})"
        lines.append(line)
    return lines


def target_lines(results: dict[str, dict[str, Any]], trained: Sequence[str]) -> list[str]:
    """Per trained method: its difference to the pixel average on :data:`TARGET_METRICS` with the paired
    bootstrap interval, and whether it beats it (the interval above zero)."""
    if TARGET_BASELINE not in results:
        return []
    lines = []
    for method in trained:
        comparison = compare_methods({method: results[method], TARGET_BASELINE: results[TARGET_BASELINE]}, method,
                                     metrics=TARGET_METRICS, skip_unpaired=True)
        differences = comparison.against.get(TARGET_BASELINE, {})
        parts = [f"{metric} {format_difference(differences[metric])}" for metric in TARGET_METRICS if metric in differences]
        beats = all(metric in differences and differences[metric].verdict == "higher" for metric in TARGET_METRICS)
        lines.append(f"{method} − {TARGET_BASELINE}: {'; '.join(parts)}: "
                     f"{'beats' if beats else 'does not beat'} the pixel {TARGET_BASELINE} on {' and '.join(TARGET_METRICS)}.")
    return lines


def methods_context(runs: Sequence[MethodRun], results: dict[str, dict[str, Any]], comparison: Comparison,
                    facts: dict[str, dict[str, float | None]], degraded: dict[str, Any] | None, discussion: str,
                    figures: list[Figure], reproduce_commands: list[str],
                    provenance: list[tuple[str, str]]) -> MethodsContext:
    """The pages' content: summary (presets, best per metric, the target), tables, figures."""
    trained = [run.name for run in runs]
    others = [method for method in results if method not in trained]
    first = runs[0].params
    summary = [f"Dataset: {first.data.layout} layout at {first.data.root}, split '{first.data.test_split}'; every "
               f"method trained by its own preset with the same data, crops, schedule and steps "
               f"({first.train.pretrain_epochs} pretraining epoch(s), {first.train.rounds} round(s)): "
               f"{', '.join(run_label(run) for run in runs)}. Reference of the differences: {trained[0]}."]
    summary.append("Best per metric (all methods; then the best trained here where another method leads): "
                   + "; ".join(best_lines(results, trained)) + ".")
    summary += target_lines(results, trained)
    order = [*trained, *others]
    tables = [methods_table(results, facts, order),  # below: the baselines first, then the others in this order
              *difference_tables(comparison, peers=[method for method in order if method not in BASELINE_METHODS])]
    if degraded:
        tables += degraded_tables(degraded, reference=trained[0])
    return MethodsContext(METHODS_TITLE, summary, [], tables, discussion, figures, reproduce_commands, provenance)


def write_methods_pages(context: MethodsContext, folder: Path) -> Path:
    """Write ``index.html`` and ``README.md`` into ``folder``; return the HTML page's path."""
    from uaafusion.integrity import write_text_atomically
    from uaafusion.report.render import environment

    folder.mkdir(parents=True, exist_ok=True)
    for template, name in (("methods.html.j2", "index.html"), ("methods.md.j2", "README.md")):
        write_text_atomically(folder / name, environment().get_template(template).render(report=context))
    return folder / "index.html"
