"""The pipeline's report: one self-contained HTML page and a Markdown twin.

:func:`build_report` reads what the earlier steps wrote and produces

- ``reports/index.html``: opens offline in a browser (figures embedded as base64 PNG);
- ``reports/README.md``: the same content in Markdown, figures referenced from ``reports/figures/``;
- ``reports/figures/*.png``: training curves and one image grid per test sample.

Content: the mean metrics of every method (ours, the pixel baselines ``average`` and ``maximum``,
any configured peers) with the best value per metric marked (higher is better for the ten fusion
metrics, mIoU and per-class IoU); ours minus every other method per metric, and each method's
fused images minus each source for the segmenter, with paired bootstrap intervals over the test
images (:mod:`uaafusion.report_comparison`); the training loss per step coloured by stage and the validation
metrics per round; for the first ``report.samples`` test images: infrared, visible, our fused
image, the infrared weight map, the last stage's attention map, and the segmentation of the fused
image next to the ground truth; and how to reproduce the numbers.

Inputs: ``reports/evaluation.json`` (required), ``reports/training/{steps,rounds}.csv``,
``data/fused/<method>/NAME.png``, the test split of the dataset and ``models/uaafusion.pt``.
Missing optional inputs leave a note in the report instead of failing it.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import logging
import math
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from uaafusion.config import Params
from uaafusion.errors import DataError, UAAFusionError
from uaafusion.paths import ProjectPaths
from uaafusion.report_comparison import DifferenceTable, difference_tables, html_parts, markdown_lines

LOGGER = logging.getLogger(__name__)

FUSION_METRICS: tuple[str, ...] = ("EN", "SD", "SF", "AG", "MI", "MI_bits", "SCD", "VIF", "Qabf", "SSIM")
TASK_METRICS: tuple[str, ...] = ("mIoU",)
# Shown in the headline table when some method has them (box layouts, pixel accuracy).
OPTIONAL_HEADLINE_METRICS: tuple[str, ...] = ("pixel_accuracy", "ROI_SSIM", "box_mIoU")
OUR_METHOD = "ours"
BASELINES: tuple[str, ...] = ("average", "maximum")
BEST_MARK = "★"
FIGURE_DPI = 100
REPRODUCE_COMMAND = "dvc repro"


# -- content model -------------------------------------------------------------------------------

@dataclass
class MetricsTable:
    """Mean metrics per method; ``best[metric]`` holds the methods with the highest value."""

    title: str
    metrics: list[str]
    headers: list[str]
    methods: list[str]
    values: dict[str, dict[str, float | None]]
    counts: dict[str, int | None]
    best: dict[str, set[str]] = field(default_factory=dict)


@dataclass
class Figure:
    """A PNG under ``reports/figures`` with a title and a caption."""

    title: str
    path: Path
    caption: str = ""


@dataclass
class ReportTables:
    """The report's table sections, all computed from ``evaluation.json`` and ``generalisation.json``."""

    metrics: list[MetricsTable]
    differences: list[DifferenceTable] = field(default_factory=list)
    generalisation: list[MetricsTable] = field(default_factory=list)


@dataclass
class ReportContent:
    """Everything the HTML and Markdown renderers draw."""

    title: str
    summary: list[str]
    tables: ReportTables
    training_figures: list[Figure]
    sample_figures: list[Figure]
    reproduce_commands: list[str]
    params_file: str
    params_yaml: str
    provenance: list[tuple[str, str]]
    notes: list[str] = field(default_factory=list)
    discussion: str = ""


REPORT_TITLE = "UAAFusion report"
DISCUSSION_TITLE = "Discussion"
TRAINING_TITLE = "Training"
"""Titles of the report's Discussion section and of the section that follows it (both renderers)."""


# -- entry point ---------------------------------------------------------------------------------

def build_report(params: Params, paths: ProjectPaths, params_file: Path | None = None,
                 overrides: dict[str, Any] | None = None) -> Path:
    """Write ``index.html``, ``README.md`` and ``figures/`` under ``paths.reports``; return the HTML path.

    ``params_file`` and ``overrides`` are what the run used; they go into the report's command that
    reproduces it (default: ``params.yaml`` and ``dvc repro``).
    Raises :class:`DataError` when ``evaluation.json`` is missing or malformed (run the evaluate step
    first). Other missing inputs are noted in the report.
    """
    import matplotlib

    matplotlib.use("Agg")

    evaluation = read_evaluation(paths.evaluation)
    figures_dir = paths.reports / "figures"
    _clear_old_figures(figures_dir)
    notes: list[str] = []

    training_figures = _training_figures(paths, figures_dir, notes)
    sample_figures = _sample_figures(params, paths, figures_dir, notes)
    tables = report_tables(params, paths, evaluation, notes)

    content = ReportContent(
        title=REPORT_TITLE,
        summary=_summary_lines(params, evaluation),
        tables=tables,
        training_figures=training_figures,
        sample_figures=sample_figures,
        reproduce_commands=reproduce_commands(paths, params_file, overrides),
        params_file=_params_file_name(paths, params_file),
        params_yaml=_params_yaml(params),
        provenance=_provenance(paths),
        notes=notes,
        discussion=read_discussion(params, paths),
    )
    paths.reports.mkdir(parents=True, exist_ok=True)
    index = paths.reports / "index.html"
    index.write_text(render_html(content), encoding="utf-8")
    (paths.reports / "README.md").write_text(render_markdown(content, relative_to=paths.reports), encoding="utf-8")
    LOGGER.info("report written to %s", index)
    return index


# -- evaluation results --------------------------------------------------------------------------

REFRESHABLE_SECTIONS: tuple[str, ...] = ("tables", "discussion")
"""What :func:`refresh_report` can rewrite in place, in the order they appear in a report."""


@dataclass(frozen=True)
class _ReportFormat:
    """How one renderer marks its lines: ``title`` (the report's first heading, whole lines),
    ``heading % title`` (a level-2 heading, a whole line), ``note`` (how a note line starts)."""

    file_name: str
    title: str
    heading: str
    note: str

    def marker(self, title: str) -> str:
        # With the newline that ends the line before: a heading is a whole line.
        return "\n" + self.heading % title + "\n"

    @property
    def any_heading(self) -> str:
        return "\n" + self.heading.split("%s")[0]


_MARKDOWN = _ReportFormat("README.md", f"# {REPORT_TITLE}\n\n", "## %s", "> Note: ")
_HTML = _ReportFormat("index.html", f"<h1>{html.escape(REPORT_TITLE)}</h1>\n", "<h2>%s</h2>", '<p class="note">')


def refresh_report(params: Params, paths: ProjectPaths, sections: Collection[str]) -> list[Path]:
    """Rewrite only some sections of an existing report (``index.html`` and ``README.md``).

    ``sections`` (of :data:`REFRESHABLE_SECTIONS`): ``"tables"``, the summary lines and every table
    section (headline, differences with their bootstrap intervals, generalisation) from
    ``evaluation.json`` and ``generalisation.json``, for an evaluation re-scored or a renderer that
    gained tables since the report was built; ``"discussion"``, the Discussion section from
    ``report.discussion``, for a write-up that changed after its run (added before ``Training``, or
    removed, as the text is set or empty). Everything else (notes, figures, samples, provenance)
    stays byte for byte, so neither the model nor the data is needed, and each section is what
    :func:`build_report` would write. Returns the two files. Raises :class:`DataError` when a report file or
    ``evaluation.json`` is missing or the report has no Training section (build the report first
    with ``uaafusion report``), :class:`ValueError` for an unknown section.
    """
    unknown = sorted(set(sections) - set(REFRESHABLE_SECTIONS))
    if unknown:
        raise ValueError(f"cannot refresh {', '.join(unknown)}: expected some of {', '.join(REFRESHABLE_SECTIONS)}")
    texts = {}
    for report_format in (_MARKDOWN, _HTML):
        path = paths.reports / report_format.file_name
        try:
            texts[report_format] = path.read_text(encoding="utf-8")
        except OSError as error:
            raise DataError(f"cannot refresh {path} ({error}): build the report first "
                            "(uaafusion report --params ...)") from None
    parts: dict[str, Any] = {}  # what each part to rewrite is rendered from
    if "tables" in sections:
        notes: list[str] = []
        evaluation = read_evaluation(paths.evaluation)
        parts["summary"] = _summary_lines(params, evaluation)
        parts["tables"] = report_tables(params, paths, evaluation, notes)
        for note in notes:
            LOGGER.warning("report: %s", note)
    if "discussion" in sections:
        parts["discussion"] = read_discussion(params, paths)
    renderers: dict[_ReportFormat, dict[str, Callable[[Any], list[str]]]] = {
        _MARKDOWN: {"summary": _markdown_summary_lines, "tables": _markdown_table_lines,
                    "discussion": _discussion_markdown},
        _HTML: {"summary": _html_summary_parts, "tables": _html_table_parts, "discussion": _discussion_html_parts},
    }
    for report_format, render in renderers.items():
        for part, content in parts.items():
            texts[report_format] = _replace_section(texts[report_format], report_format, part,
                                                    render[part](content), paths.reports)
    written = []
    for report_format, text in texts.items():
        path = paths.reports / report_format.file_name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    LOGGER.info("%s refreshed in %s", " and ".join(name for name in REFRESHABLE_SECTIONS if name in sections),
                ", ".join(str(path) for path in written))
    return written


def _replace_section(text: str, report_format: _ReportFormat, section: str, lines: list[str], folder: Path) -> str:
    """``text`` with its ``section`` replaced by ``lines`` (each ended by a newline): ``"summary"``, from
    the title to the first note or level-2 heading; ``"tables"``, from the first level-2 heading;
    ``"discussion"``, from the Discussion heading; each up to the next part of the report."""
    path = folder / report_format.file_name
    # The last Training heading: the discussion before it may itself hold such a line (in a code block).
    training = text.rfind(report_format.marker(TRAINING_TITLE))
    title = text.find(report_format.title)
    if training < 0 or title < 0:
        raise DataError(f"{path} has no title or no '{TRAINING_TITLE}' section to place the {section} by; "
                        "rebuild it with uaafusion report")
    discussion = text.find(report_format.marker(DISCUSSION_TITLE))
    discussion = training if discussion < 0 or discussion > training else discussion
    # Positions of the newline that ends the line before each part (parts are whole lines).
    first_heading = text.find(report_format.any_heading)
    if section == "summary":
        first_note = text.find("\n" + report_format.note, title)
        start = title + len(report_format.title) - 1
        end = first_heading if first_note < 0 or first_note > first_heading else first_note
    elif section == "tables":
        start, end = first_heading, discussion
    else:
        start, end = discussion, training
    return text[:start + 1] + "".join(f"{line}\n" for line in lines) + text[end + 1:]


def read_discussion(params: Params, paths: ProjectPaths) -> str:
    """The text of ``report.discussion`` (a Markdown file relative to the project root), or ``""``.

    Raises :class:`DataError` naming the file and the parameter when it is set but unreadable.
    """
    if params.report.discussion is None:
        return ""
    path = paths.place(params.report.discussion)
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(
            f"report.discussion = {params.report.discussion!r}: cannot read {path} ({error}). "
            "Write that Markdown file or set report.discussion to null."
        ) from error


def read_evaluation(path: Path) -> dict[str, dict[str, Any]]:
    """``{method: {"per_image": ..., "mean": {metric: value}, "count": n}}`` from ``evaluation.json``."""
    if not path.is_file():
        raise DataError(f"{path}: evaluation results not found; run the evaluate step first (`dvc repro evaluate`).")
    try:
        evaluation = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: cannot be read as JSON ({error}); re-run the evaluate step.") from error
    if not isinstance(evaluation, dict) or not evaluation or not all(
        isinstance(result, dict) and isinstance(result.get("mean"), dict) for result in evaluation.values()
    ):
        raise DataError(f"{path}: expected {{method: {{'mean': {{metric: value}}, ...}}}}; re-run the evaluate step.")
    return evaluation


def method_order(methods: Iterable[str], peers: Iterable[str] = ()) -> list[str]:
    """Ours first, then the pixel baselines, then configured peers, then anything else (sorted)."""
    available = list(methods)
    ordered = [name for name in (OUR_METHOD, *BASELINES, *peers) if name in available]
    return ordered + sorted(name for name in available if name not in ordered)


def best_methods(values: dict[str, dict[str, float | None]], metric: str) -> set[str]:
    """The methods whose ``metric`` is highest (ties included); empty when no method has a number."""
    numbers = {method: value for method, row in values.items()
               if _is_number(value := row.get(metric))}
    if not numbers:
        return set()
    top = max(numbers.values())
    return {method for method, value in numbers.items() if math.isclose(value, top, rel_tol=1e-9, abs_tol=1e-12)}


def metric_tables(evaluation: dict[str, dict[str, Any]], peers: Iterable[str] = (),
                  class_names: Sequence[str] = ()) -> list[MetricsTable]:
    """The headline table (fusion metrics + mIoU) and, when present, the per-class IoU table."""
    methods = method_order(evaluation, peers)
    means = {method: dict(evaluation[method].get("mean") or {}) for method in methods}
    counts = {method: _count(evaluation[method]) for method in methods}
    present = {key for row in means.values() for key, value in row.items() if _is_number(value)}

    headline = [*FUSION_METRICS, *TASK_METRICS]
    headline += [metric for metric in OPTIONAL_HEADLINE_METRICS if metric in present]
    tables = [_table("Mean metrics on the test split", headline, headline, methods, means, counts)]

    for prefix, target in (("IoU/", "labels"), ("box_IoU/", "box-derived masks")):
        per_class = [key for key in _ordered_keys(means) if key.startswith(prefix)]
        if class_names:
            rank = {f"{prefix}{name}": index for index, name in enumerate(class_names)}
            per_class.sort(key=lambda key: rank.get(key, len(rank)))
        if any(key in present for key in per_class):
            headers = [key.split("/", 1)[1] for key in per_class]
            tables.append(_table(f"Per-class IoU of the segmenter on each method's fused images (against {target})",
                                 per_class, headers, methods, means, counts))
    sources = [(f"{prefix}mIoU{suffix}", label) for prefix in ("", "box_")
               for suffix, label in (("", "fused"), ("_ir", "infrared only"), ("_vi", "visible only"))]
    sources = [(key, label) for key, label in sources if key in present]
    if len(sources) > 1:
        tables.append(_table("Segmenter mIoU on each method's fused image and on each source alone",
                             [key for key, _ in sources], [f"{key} ({label})" for key, label in sources],
                             methods, means, counts))
    return tables


def report_tables(params: Params, paths: ProjectPaths, evaluation: dict[str, dict[str, Any]],
                  notes: list[str]) -> ReportTables:
    """Every table of the report: the headline tables and the differences from ``evaluation``, the
    generalisation tables from ``paths.generalisation`` (an unreadable file is noted in ``notes``)."""
    peers = params.evaluate.peers
    return ReportTables(
        metrics=metric_tables(evaluation, peers, list(params.data.class_names)),
        differences=comparison_tables(evaluation, peers),
        generalisation=generalisation_tables(read_generalisation(paths.generalisation, notes)),
    )


def comparison_tables(evaluation: dict[str, dict[str, Any]], peers: Iterable[str] = ()) -> list[DifferenceTable]:
    """Ours minus every other method, and each method's fused images minus each source, with bootstrap
    intervals (:mod:`uaafusion.report_comparison`), rows in the headline table's metric order."""
    order = [*FUSION_METRICS, "ROI_SSIM", "ROI_SSIM_ir", "ROI_SSIM_vi", *TASK_METRICS, "box_mIoU"]
    return difference_tables(evaluation, method_order(evaluation, peers), OUR_METHOD, order)


def read_generalisation(path: Path, notes: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """``{set name: {"root": folder, "methods": {method: result}}}`` from ``generalisation.json``; ``{}``
    when the file is absent (nothing configured) or unreadable (noted)."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        if notes is not None:
            notes.append(f"{path.name} could not be read ({error}); re-run the evaluate step.")
        return {}
    return {name: entry for name, entry in data.items()
            if isinstance(entry, dict) and isinstance(entry.get("methods"), dict)}


def generalisation_tables(generalisation: dict[str, dict[str, Any]]) -> list[MetricsTable]:
    """One fusion-metrics table per unlabeled set fused with the trained model."""
    tables = []
    for name, entry in generalisation.items():
        results = entry["methods"]
        methods = method_order(results)
        means = {method: dict(results[method].get("mean") or {}) for method in methods}
        counts = {method: _count(results[method]) for method in methods}
        tables.append(_table(f"Generalisation: {name} (unlabeled pairs, model trained here, fusion metrics)",
                             list(FUSION_METRICS), list(FUSION_METRICS), methods, means, counts))
    return tables


def _table(title: str, metrics: list[str], headers: list[str], methods: list[str],
           means: dict[str, dict[str, Any]], counts: dict[str, int | None]) -> MetricsTable:
    values = {method: {metric: _number_or_none(means[method].get(metric)) for metric in metrics} for method in methods}
    table = MetricsTable(title, metrics, headers, methods, values, counts)
    for metric in metrics:
        best = best_methods(values, metric)
        scored = {method for method in methods if values[method][metric] is not None}
        # A column where every method ties has no winner to mark.
        table.best[metric] = set() if len(scored) > 1 and best == scored else best
    return table


def _ordered_keys(means: dict[str, dict[str, Any]]) -> list[str]:
    keys: list[str] = []
    for row in means.values():
        keys += [key for key in row if key not in keys]
    return keys


def _count(result: dict[str, Any]) -> int | None:
    count = result.get("count")
    if isinstance(count, int):
        return count
    per_image = result.get("per_image")
    return len(per_image) if isinstance(per_image, dict) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number_or_none(value: Any) -> float | None:
    return float(value) if _is_number(value) else None


def format_number(value: float | None) -> str:
    """Four decimals below 10, two below 1000, else one; ``–`` for a missing value."""
    if value is None:
        return "–"
    magnitude = abs(value)
    if magnitude < 10:
        return f"{value:.4f}"
    if magnitude < 1000:
        return f"{value:.2f}"
    return f"{value:.1f}"


def _summary_lines(params: Params, evaluation: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        f"Dataset: {params.data.layout} layout at {params.data.root}, split '{params.data.test_split}'"
        f" ({_count(evaluation.get(OUR_METHOD, {})) or '?'} test images).",
        f"Model: {params.model.fusion.name} fusion network ({params.model.fusion.stages} stage(s), "
        f"{params.model.fusion.features} features) with a {params.model.segmenter.arch}/"
        f"{params.model.segmenter.encoder} segmenter; {params.train.schedule} schedule, "
        f"{params.train.rounds} round(s).",
    ]
    ours = evaluation.get(OUR_METHOD, {}).get("mean", {})
    for prefix, what in (("", "mIoU"), ("box_", "box-mask mIoU")):
        reference = [(key, label) for key, label in ((f"{prefix}mIoU_ir", "the infrared image"),
                                                    (f"{prefix}mIoU_vi", "the visible image"))
                     if _is_number(ours.get(key))]
        if _is_number(ours.get(f"{prefix}mIoU")) and reference:
            parts = ", ".join(f"{format_number(ours[key])} on {label}" for key, label in reference)
            lines.append(f"Segmenter {what}: {format_number(ours[prefix + 'mIoU'])} on our fused images; "
                         f"for reference {parts} alone.")
    return lines


# -- training curves -----------------------------------------------------------------------------

def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts (empty list when the file is missing or has no rows)."""
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def plot_training_loss(rows: list[dict[str, str]], out_path: Path) -> Path | None:
    """Loss per step coloured by stage (left) and the loss terms (right); ``None`` without data."""
    import matplotlib.pyplot as plt

    steps = np.array([_float(row.get("step")) for row in rows])
    losses = np.array([_float(row.get("loss")) for row in rows])
    # "round-2/fusion" -> "fusion": one colour per kind of stage, whatever the round.
    stages = [(row.get("stage") or "?").rsplit("/", 1)[-1] for row in rows]
    if not rows or not np.isfinite(losses).any():
        return None
    if not np.isfinite(steps).all():
        steps = np.arange(len(rows), dtype=float)
    term_columns = [column for column in rows[0] if column.startswith("loss_")]
    figure, axes = plt.subplots(1, 2 if term_columns else 1, figsize=(11 if term_columns else 6.5, 3.6),
                                squeeze=False)
    loss_axis = axes[0, 0]
    colours = _stage_colours(stages)
    labelled: set[str] = set()
    for start, stop, stage in _contiguous_runs(stages):
        label = None if stage in labelled else stage
        labelled.add(stage)
        loss_axis.plot(steps[start:stop], losses[start:stop], color=colours[stage], linewidth=1.2, label=label,
                       marker="o" if stop - start == 1 else None, markersize=3)
    loss_axis.set_xlabel("step")
    loss_axis.set_ylabel("loss")
    loss_axis.set_title("Training loss per step, by stage")
    loss_axis.grid(alpha=0.3)
    loss_axis.legend(fontsize=8)
    if term_columns:
        term_axis = axes[0, 1]
        positive = True
        for column in term_columns:
            values = np.array([_float(row.get(column)) for row in rows])
            finite = np.isfinite(values)
            if not finite.any():
                continue
            positive &= bool((values[finite] > 0).all())
            # Missing values stay NaN so the line breaks where a stage does not have this term.
            term_axis.plot(steps, values, linewidth=1.0, label=column.removeprefix("loss_"),
                           marker="." if finite.sum() == 1 else None)
        if positive:
            term_axis.set_yscale("log")
        term_axis.set_xlabel("step")
        term_axis.set_title("Loss terms")
        term_axis.grid(alpha=0.3)
        term_axis.legend(fontsize=7, ncol=2)
    return _save(figure, out_path)


def plot_validation_rounds(rows: list[dict[str, str]], out_path: Path) -> Path | None:
    """One small panel per validation metric against the round; mIoU with its source references."""
    import matplotlib.pyplot as plt

    if not rows:
        return None
    rounds = np.array([_float(row.get("round")) for row in rows])
    if not np.isfinite(rounds).all():
        rounds = np.arange(1, len(rows) + 1, dtype=float)
    columns = [column for column in rows[0] if column not in ("step", "round", "stage")]
    panels: list[tuple[str, list[str]]] = []
    miou_group = [column for column in ("mIoU", "mIoU_ir", "mIoU_vi") if column in columns]
    for column in columns:
        if column in miou_group[1:]:
            continue
        panels.append((column, miou_group if column == "mIoU" else [column]))
    panels = [(title, group) for title, group in panels
              if any(np.isfinite([_float(row.get(column)) for row in rows]).any() for column in group)]
    if not panels:
        return None
    columns_per_row = min(4, len(panels))
    row_count = math.ceil(len(panels) / columns_per_row)
    figure, axes = plt.subplots(row_count, columns_per_row, figsize=(2.9 * columns_per_row, 2.3 * row_count),
                                squeeze=False)
    for axis in axes.flat[len(panels):]:
        axis.axis("off")
    for axis, (title, group) in zip(axes.flat, panels):
        for column in group:
            values = np.array([_float(row.get(column)) for row in rows])
            label = {"mIoU": "fused", "mIoU_ir": "ir", "mIoU_vi": "vi"}.get(column, None) if len(group) > 1 else None
            axis.plot(rounds, values, marker="o", markersize=3, linewidth=1.2, label=label)
        axis.set_title(title, fontsize=9)
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
        if len(group) > 1:
            axis.legend(fontsize=6)
    from matplotlib.ticker import MaxNLocator

    distinct_rounds = sorted(set(rounds.tolist()))
    for axis in axes.flat[:len(panels)]:
        if len(distinct_rounds) <= 12:
            axis.set_xticks(distinct_rounds)
            axis.set_xlim(distinct_rounds[0] - 0.5, distinct_rounds[-1] + 0.5)
        else:
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    for axis in axes[-1]:
        axis.set_xlabel("round", fontsize=8)
    figure.suptitle("Validation metrics per round", fontsize=10)
    return _save(figure, out_path)


def _contiguous_runs(labels: Sequence[str]) -> list[tuple[int, int, str]]:
    runs: list[tuple[int, int, str]] = []
    start = 0
    for index in range(1, len(labels) + 1):
        if index == len(labels) or labels[index] != labels[start]:
            runs.append((start, index, labels[start]))
            start = index
    return runs


def _stage_colours(stages: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    table = colormaps["tab10"]
    unique = list(dict.fromkeys(stages))
    return {stage: table(index % 10) for index, stage in enumerate(unique)}


def _training_figures(paths: ProjectPaths, figures_dir: Path, notes: list[str]) -> list[Figure]:
    figures: list[Figure] = []
    steps_csv = paths.training_plots / "steps.csv"
    rounds_csv = paths.training_plots / "rounds.csv"
    loss = plot_training_loss(read_csv_rows(steps_csv), figures_dir / "training_loss.png")
    if loss is not None:
        figures.append(Figure("Training loss", loss, "Loss per optimisation step, coloured by training stage; "
                                                     "right: the individual loss terms."))
    else:
        notes.append(f"No training losses found in {_relative(steps_csv, paths.root)}.")
    rounds = plot_validation_rounds(read_csv_rows(rounds_csv), figures_dir / "validation_rounds.png")
    if rounds is not None:
        figures.append(Figure("Validation per round", rounds, "Fusion metrics and mIoU of the segmenter on the "
                                                              "fused validation images after each round."))
    else:
        notes.append(f"No validation rounds found in {_relative(rounds_csv, paths.root)}.")
    return figures


# -- sample grids --------------------------------------------------------------------------------

@dataclass
class SamplePanels:
    """The pictures of one sample's grid, all ``uint8 (H, W, 3)`` (``None`` when unavailable)."""

    name: str
    infrared: np.ndarray
    visible: np.ndarray
    fused: np.ndarray | None
    weight_ir: np.ndarray | None
    attention: np.ndarray | None
    segmentation: np.ndarray | None
    ground_truth: np.ndarray | None


def plot_sample_grid(panels: SamplePanels, class_names: Sequence[str], out_path: Path) -> Path:
    """One row: IR, visible, fused, weight IR, attention, segmentation (fused), ground truth; class legend below."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from uaafusion.visualize import segmentation_palette

    pictures = [
        ("infrared", panels.infrared), ("visible", panels.visible), ("fused (ours)", panels.fused),
        ("weight IR (0–1)", panels.weight_ir), ("attention, last stage", panels.attention),
        ("segmentation (fused)", panels.segmentation), ("ground truth", panels.ground_truth),
    ]
    height, width = panels.infrared.shape[:2]
    panel_width = 1.75
    panel_height = panel_width * height / max(width, 1)
    figure, axes = plt.subplots(1, len(pictures), figsize=(panel_width * len(pictures), panel_height + 0.9),
                                squeeze=False)
    for axis, (title, picture) in zip(axes[0], pictures):
        axis.set_xticks([])
        axis.set_yticks([])
        if picture is None:
            axis.text(0.5, 0.5, "not available", ha="center", va="center", fontsize=7, transform=axis.transAxes)
            axis.set_facecolor("#eeeeee")
        else:
            axis.imshow(picture, interpolation="nearest")
        axis.set_title(title, fontsize=8)
    if class_names:
        palette = segmentation_palette(len(class_names)) / 255.0
        handles = [Patch(facecolor=palette[index], edgecolor="#888888", label=name)
                   for index, name in enumerate(class_names)]
        handles.append(Patch(facecolor="white", edgecolor="#888888", label="unlabelled"))
        figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), fontsize=7, frameon=False)
    figure.suptitle(panels.name, fontsize=9)
    figure.subplots_adjust(left=0.01, right=0.99, top=0.80, bottom=0.18, wspace=0.05)
    return _save(figure, out_path, tight=False)


def _sample_figures(params: Params, paths: ProjectPaths, figures_dir: Path, notes: list[str]) -> list[Figure]:
    if params.report.samples <= 0:
        return []
    try:
        panels = list(sample_panels(params, paths, notes))
    except UAAFusionError as error:
        LOGGER.warning("report: no sample images: %s", error)
        notes.append(f"No sample images: {error}")
        return []
    figures = []
    for panel in panels:
        out_path = figures_dir / f"sample_{_file_safe(panel.name)}.png"
        path = plot_sample_grid(panel, list(params.data.class_names), out_path)
        figures.append(Figure(panel.name, path))
    return figures


def sample_panels(params: Params, paths: ProjectPaths, notes: list[str] | None = None) -> Iterable[SamplePanels]:
    """Panels of the first ``report.samples`` test images (our fused PNG, the model's maps and segmentation)."""
    import torch

    from uaafusion.data.datasets import create_dataset, sample_chroma
    from uaafusion.data.io import read_image, split_luma_chroma
    from uaafusion.device import resolve_device
    from uaafusion.inference import compose_colour, fuse_luma, load_models_for_inference, predict_classes
    from uaafusion.steps import with_absolute_data_root
    from uaafusion.visualize import colourise_map, colourise_segmentation, to_display_rgb

    notes = [] if notes is None else notes
    absolute = with_absolute_data_root(params, paths)
    dataset = create_dataset(absolute.data, absolute.data.test_split, crop=False, seed=params.seed)
    device = resolve_device(params.device)
    models = None
    if paths.model_checkpoint.is_file():
        models = load_models_for_inference(paths.model_checkpoint, device)
    else:
        notes.append(f"No model checkpoint at {_relative(paths.model_checkpoint, paths.root)}: "
                     "weight, attention and segmentation panels are left empty.")
    num_classes = params.data.num_classes
    ignore_index = params.data.ignore_index
    fused_dir = paths.fused / OUR_METHOD
    missing_fused: list[str] = []
    for index in range(min(params.report.samples, len(dataset))):
        sample = dataset[index]
        name = str(sample["name"])
        ir, vi, chroma = sample["ir"], sample["vi"], sample_chroma(sample)
        visible_picture = to_display_rgb(compose_colour(vi, chroma))
        fused_picture: np.ndarray | None = None
        fused_luma: torch.Tensor | None = None
        fused_path = _find_image(fused_dir, name)
        if fused_path is not None:
            fused_array = read_image(fused_path)
            fused_picture = to_display_rgb(fused_array)
            fused_luma = split_luma_chroma(fused_array)[0]
        else:
            missing_fused.append(name)
        weight_picture = attention_picture = segmentation_picture = None
        if models is not None:
            output = fuse_luma(models.fusion, models.segmenter, ir[None].to(device), vi[None].to(device))
            model_fused = output.fused[0].detach().cpu()
            if fused_luma is None:
                fused_luma = model_fused
                fused_picture = to_display_rgb(compose_colour(model_fused, chroma))
            weight_picture = colourise_map(output.weight_ir[0])
            if output.attention:
                attention_picture = colourise_map(output.attention[-1][0], colour_map="viridis")
            classes = predict_classes(models.segmenter, fused_luma[None].to(device))[0].cpu()
            segmentation_picture = colourise_segmentation(classes, num_classes, ignore_index=None)
        label = sample["label"]
        has_labels = bool((label != ignore_index).any())
        yield SamplePanels(
            name=name,
            infrared=to_display_rgb(ir),
            visible=visible_picture,
            fused=fused_picture,
            weight_ir=weight_picture,
            attention=attention_picture,
            segmentation=segmentation_picture,
            ground_truth=colourise_segmentation(label, num_classes, ignore_index) if has_labels else None,
        )
    if missing_fused:
        notes.append(f"No fused image in {_relative(fused_dir, paths.root)} for {', '.join(missing_fused)}; "
                     "the model's output is shown instead.")


def _find_image(folder: Path, name: str) -> Path | None:
    from uaafusion.data.io import IMAGE_EXTENSIONS

    for extension in IMAGE_EXTENSIONS:
        candidate = folder / f"{name}{extension}"
        if candidate.is_file():
            return candidate
    return None


# -- figure files --------------------------------------------------------------------------------

def _save(figure: Any, out_path: Path, tight: bool = True) -> Path:
    import matplotlib.pyplot as plt

    out_path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        figure.tight_layout()
    figure.savefig(out_path, dpi=FIGURE_DPI, format="png", metadata={"Software": None})
    plt.close(figure)
    return out_path


def _clear_old_figures(figures_dir: Path) -> None:
    """Remove the PNGs of an earlier report (sample names may have changed)."""
    if figures_dir.is_dir():
        for path in figures_dir.glob("*.png"):
            path.unlink()
    figures_dir.mkdir(parents=True, exist_ok=True)


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "sample"


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


# -- reproduction --------------------------------------------------------------------------------

def _params_file_name(paths: ProjectPaths, params_file: Path | None = None) -> str:
    return _relative(paths.params if params_file is None else paths.place(params_file), paths.root)


def reproduce_commands(paths: ProjectPaths, params_file: Path | None = None,
                       overrides: dict[str, Any] | None = None) -> list[str]:
    """The commands, run at the project root, that reproduce this report's numbers."""
    import shlex

    name = _params_file_name(paths, params_file)
    sets = "".join(f" -S {shlex.quote(f'{key}={_yaml_inline(value)}')}" for key, value in sorted((overrides or {}).items()))
    if name == _relative(paths.params, paths.root):
        return [f"dvc exp run{sets}" if sets else REPRODUCE_COMMAND,
                "# or, the same steps without DVC:",
                f"python -m flows.pipeline --params {name}{sets}"]
    return [f"uaafusion train --params {name} --steps prepare,train,evaluate,report{sets}",
            "# the same steps as a Prefect flow run:",
            f"python -m flows.pipeline --params {name}{sets}"]


def _yaml_inline(value: Any) -> str:
    """``value`` as one line of YAML (what ``-S key=value`` parses back)."""
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text[:-3].strip() if text.endswith("...") else text


def _params_yaml(params: Params) -> str:
    import yaml

    return yaml.safe_dump(params.to_dict(), sort_keys=False, default_flow_style=None).strip()


def _provenance(paths: ProjectPaths) -> list[tuple[str, str]]:
    from uaafusion.tracking import git_commit

    items: list[tuple[str, str]] = []
    commit = git_commit(paths.root)
    if commit:
        items.append(("git commit when this report was built (the training commit is on the MLflow run)", commit))
    if paths.mlflow_pointer.is_file():
        try:
            pointer = json.loads(paths.mlflow_pointer.read_text())
            items.append(("MLflow parent run", str(pointer.get("parent_run_id", "?"))))
        except (OSError, json.JSONDecodeError):
            pass
    return items


# -- renderers -----------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; margin: 24px auto;
       max-width: 1200px; padding: 0 16px; color: #222; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.25em; margin-top: 1.6em;
     border-bottom: 1px solid #ddd; padding-bottom: 4px; }
div.table { overflow-x: auto; }
table.metrics { border-collapse: collapse; font-size: 0.8em; margin: 8px 0 4px; }
table.metrics th, table.metrics td { border: 1px solid #ccc; padding: 3px 6px; text-align: right;
                                     white-space: nowrap; }
table.metrics th { background: #f2f2f2; } table.metrics td.method { text-align: left; font-weight: 600; }
table.metrics tr.ours td { background: #f7fbff; }
table.metrics tbody tr td.best { background: #d9f2d9; font-weight: 700; }
table.metrics td.higher { background: #e3f4e3; } table.metrics td.lower { background: #fbe6e6; }
figure { margin: 12px 0 20px; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
pre { background: #f6f6f6; padding: 8px 12px; overflow-x: auto; font-size: 0.85em; }
.note { color: #8a5a00; font-size: 0.9em; } .legend { font-size: 0.85em; color: #555; }
"""


def render_html(content: ReportContent) -> str:
    """The report as one self-contained HTML document (figures inlined as base64 PNG)."""
    escape = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(content.title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(content.title)}</h1>",
    ]
    parts += _html_summary_parts(content.summary)
    parts += [f'<p class="note">Note: {escape(note)}</p>' for note in content.notes]
    parts += _html_table_parts(content.tables)
    parts += _discussion_html_parts(content.discussion)
    parts.append(f"<h2>{TRAINING_TITLE}</h2>")
    if not content.training_figures:
        parts.append("<p>No training curves available.</p>")
    parts += [_html_figure(figure) for figure in content.training_figures]
    parts.append("<h2>Samples</h2>")
    if content.sample_figures:
        parts.append('<p class="legend">Per test image: infrared, visible, our fused image, the infrared '
                     "attribution weight, the attention map of the last unfolding stage, and the segmenter's "
                     "classes on the fused image next to the ground truth.</p>")
    else:
        parts.append("<p>No sample images available.</p>")
    parts += [_html_figure(figure) for figure in content.sample_figures]
    parts.append("<h2>Reproduce</h2>")
    parts.append(f"<p>These numbers come from the pipeline run with the params file "
                 f"<code>{escape(content.params_file)}</code>:</p>")
    parts.append("<pre>" + escape("\n".join(content.reproduce_commands)) + "</pre>")
    if content.provenance:
        parts.append("<ul>" + "".join(f"<li>{escape(key)}: <code>{escape(value)}</code></li>"
                                      for key, value in content.provenance) + "</ul>")
    parts.append(f"<details><summary>Parameters ({escape(content.params_file)})</summary>"
                 f"<pre>{escape(content.params_yaml)}</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _html_summary_parts(summary: list[str]) -> list[str]:
    """The HTML parts of the summary: one paragraph per line."""
    return [f"<p>{html.escape(line)}</p>" for line in summary]


def _html_table_parts(tables: ReportTables) -> list[str]:
    """The HTML parts of the table sections (headline, differences, generalisation), in report order."""
    parts = [part for table in tables.metrics for part in _html_metrics_section(table)]
    parts += [part for table in tables.differences for part in html_parts(table)]
    parts += [part for table in tables.generalisation for part in _html_metrics_section(table)]
    return parts


def _discussion_html_parts(text: str) -> list[str]:
    """The HTML parts of the Discussion section (heading and body); none for an empty text."""
    return [f"<h2>{DISCUSSION_TITLE}</h2>", discussion_html(text)] if text else []


def _discussion_markdown(text: str) -> list[str]:
    """The Markdown lines of the Discussion section; none for an empty text."""
    return [f"## {DISCUSSION_TITLE}", "", text, ""] if text else []


def discussion_html(text: str) -> str:
    """The small Markdown subset a discussion uses, as HTML: paragraphs, ``###`` headings,
    ``- `` lists, fenced code blocks and inline `code`; everything else is escaped text."""
    blocks: list[str] = []
    paragraph: list[str] = []
    items: list[str] = []
    code: list[str] | None = None

    def inline(line: str) -> str:
        pieces = html.escape(line).split("`")
        return "".join(f"<code>{piece}</code>" if index % 2 else piece for index, piece in enumerate(pieces))

    def flush() -> None:
        if paragraph:
            blocks.append("<p>" + " ".join(inline(line) for line in paragraph) + "</p>")
            paragraph.clear()
        if items:
            blocks.append("<ul>" + "".join(f"<li>{inline(item)}</li>" for item in items) + "</ul>")
            items.clear()

    def code_block(lines: list[str]) -> str:
        return "<pre>" + html.escape("\n".join(lines)) + "</pre>"

    for line in text.splitlines():
        stripped = line.strip()
        if code is not None:
            if stripped.startswith("```"):
                blocks.append(code_block(code))
                code = None
            else:
                code.append(line)
        elif stripped.startswith("```"):
            flush()
            code = []
        elif not stripped:
            flush()
        elif stripped.startswith("#"):
            flush()
            blocks.append(f"<h3>{inline(stripped.lstrip('#').strip())}</h3>")
        elif stripped.startswith("- "):
            if paragraph:
                flush()
            items.append(stripped[2:])
        elif items and line.startswith("  "):
            items[-1] += " " + stripped
        else:
            if items:
                flush()
            paragraph.append(stripped)
    if code is not None:  # an unclosed fence runs to the end
        blocks.append(code_block(code))
    flush()
    return "\n".join(blocks)


def _html_metrics_section(table: MetricsTable) -> list[str]:
    return [f"<h2>{html.escape(table.title)}</h2>", _html_table(table),
            f'<p class="legend">{BEST_MARK} and green: best value per column '
            "(higher is better). Means over the test images; mIoU and IoU are set-level.</p>"]


def _html_table(table: MetricsTable) -> str:
    escape = html.escape
    header = "".join(f"<th>{escape(title)}</th>" for title in ["method", "images", *table.headers])
    rows = []
    for method in table.methods:
        cells = [f'<td class="method">{escape(method)}</td>',
                 f"<td>{'' if table.counts.get(method) is None else table.counts[method]}</td>"]
        for metric in table.metrics:
            value = table.values[method][metric]
            if method in table.best.get(metric, set()):
                cells.append(f'<td class="best" title="best {escape(metric)}">{format_number(value)} {BEST_MARK}</td>')
            else:
                cells.append(f"<td>{format_number(value)}</td>")
        row_class = ' class="ours"' if method == OUR_METHOD else ""
        rows.append(f"<tr{row_class}>{''.join(cells)}</tr>")
    return (f'<div class="table"><table class="metrics"><thead><tr>{header}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _html_figure(figure: Figure) -> str:
    encoded = base64.b64encode(figure.path.read_bytes()).decode("ascii")
    caption = f"<figcaption>{html.escape(figure.caption)}</figcaption>" if figure.caption else ""
    return f'<figure><img alt="{html.escape(figure.title)}" src="data:image/png;base64,{encoded}">{caption}</figure>'


def render_markdown(content: ReportContent, relative_to: Path) -> str:
    """The report as Markdown; figures are linked relative to ``relative_to`` (``reports/``)."""
    lines = [f"# {content.title}", ""]
    lines += _markdown_summary_lines(content.summary)
    lines += [line for note in content.notes for line in (f"> Note: {note}", "")]
    lines += _markdown_table_lines(content.tables)
    lines += _discussion_markdown(content.discussion)
    lines += [f"## {TRAINING_TITLE}", ""]
    if not content.training_figures:
        lines += ["No training curves available.", ""]
    for figure in content.training_figures:
        lines += [f"![{figure.title}]({_relative(figure.path, relative_to)})", ""]
        lines += [f"*{figure.caption}*", ""] if figure.caption else []
    lines += ["## Samples", ""]
    if content.sample_figures:
        lines += ["Per test image: infrared, visible, our fused image, the infrared attribution weight, the attention "
                  "map of the last unfolding stage, and the segmenter's classes on the fused image next to the "
                  "ground truth.", ""]
    else:
        lines += ["No sample images available.", ""]
    for figure in content.sample_figures:
        lines += [f"![{figure.title}]({_relative(figure.path, relative_to)})", ""]
    lines += ["## Reproduce", "", f"These numbers come from the pipeline run with the params file "
              f"`{content.params_file}`:", "", "```sh", *content.reproduce_commands, "```", ""]
    lines += [f"- {key}: `{value}`" for key, value in content.provenance]
    if content.provenance:
        lines.append("")
    lines += ["<details><summary>Parameters</summary>", "", "```yaml", content.params_yaml, "```", "", "</details>", ""]
    return "\n".join(lines)


def _markdown_summary_lines(summary: list[str]) -> list[str]:
    """The Markdown lines of the summary: one paragraph per line."""
    return [line for text in summary for line in (text, "")]


def _markdown_table_lines(tables: ReportTables) -> list[str]:
    """The Markdown lines of the table sections (headline, differences, generalisation), in report order."""
    lines = [line for table in tables.metrics for line in _markdown_metrics_section(table)]
    lines += [line for table in tables.differences for line in markdown_lines(table)]
    lines += [line for table in tables.generalisation for line in _markdown_metrics_section(table)]
    return lines


def _markdown_metrics_section(table: MetricsTable) -> list[str]:
    return [f"## {table.title}", "", *_markdown_table(table), "",
            f"{BEST_MARK} **bold**: best value per column (higher is better). Means over the test images; "
            "mIoU and IoU are set-level.", ""]


def _markdown_table(table: MetricsTable) -> list[str]:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    header = "| " + " | ".join(cell(title) for title in ["method", "images", *table.headers]) + " |"
    divider = "|" + "|".join([":---", "---:"] + ["---:"] * len(table.metrics)) + "|"
    rows = [header, divider]
    for method in table.methods:
        cells = [f"**{cell(method)}**" if method == OUR_METHOD else cell(method),
                 "" if table.counts.get(method) is None else str(table.counts[method])]
        for metric in table.metrics:
            text = format_number(table.values[method][metric])
            cells.append(f"**{text}** {BEST_MARK}" if method in table.best.get(metric, set()) else text)
        rows.append("| " + " | ".join(cells) + " |")
    return rows
