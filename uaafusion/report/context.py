"""What both pages show (:class:`ReportContext`), gathered from the files in the report folder and the params.

Nothing here needs the model or the data: figures are the PNGs already in ``figures/``, and what
only the full build could see (its notes on the figures, the git commit, the MLflow run) comes from
its :class:`~uaafusion.report.inputs.BuildRecord`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from uaafusion.config import Params
from uaafusion.method_names import OUR_METHOD
from uaafusion.paths import ProjectPaths
from uaafusion.report.degraded import degraded_tables
from uaafusion.report.differences import difference_tables
from uaafusion.report.figures import SAMPLE_PREFIX, TRAINING_LOSS, VALIDATION_ROUNDS, Figure
from uaafusion.report.inputs import (
    BuildRecord,
    read_comparison,
    read_degraded,
    read_discussion,
    read_evaluation,
    read_generalisation,
    relative,
)
from uaafusion.report.tables import Table, format_number, generalisation_tables, is_number, metric_tables, result_count

REPORT_TITLE = "UAAFusion report"
REPRODUCE_COMMAND = "dvc repro"


@dataclass
class ReportContext:
    """Everything the two templates draw, in page order: summary lines, notes, the tables (metrics,
    differences, generalisation, degraded benchmark), the discussion (Markdown), the figures, and how to reproduce."""

    title: str
    summary: list[str]
    notes: list[str]
    tables: list[Table]
    discussion: str
    training_figures: list[Figure]
    sample_figures: list[Figure]
    params_file: str
    reproduce_commands: list[str]
    provenance: list[tuple[str, str]]
    params_yaml: str


def report_context(params: Params, paths: ProjectPaths, params_file: Path | None = None,
                   overrides: dict[str, Any] | None = None) -> ReportContext:
    """The report's content from the report folder; raises :class:`DataError` without ``evaluation.json``
    or with an unreadable discussion file."""
    evaluation = read_evaluation(paths.evaluation)
    notes: list[str] = []
    record = BuildRecord.read(paths.reports, notes)
    notes = record.notes + notes
    peers = list(params.evaluate.peers)
    tables = metric_tables(evaluation, peers, list(params.data.class_names))
    comparison = read_comparison(paths.comparison, notes)
    tables += difference_tables(comparison, peers) if comparison is not None else []
    tables += generalisation_tables(read_generalisation(paths.generalisation, notes))
    tables += degraded_tables(read_degraded(paths.degraded, notes))
    return ReportContext(
        title=REPORT_TITLE, summary=summary_lines(params, evaluation), notes=notes, tables=tables,
        discussion=read_discussion(params, paths),
        training_figures=[figure for figure in (TRAINING_LOSS, VALIDATION_ROUNDS)
                          if (paths.reports / figure.file).is_file()],
        sample_figures=[Figure(path.stem.removeprefix(SAMPLE_PREFIX), f"figures/{path.name}")
                        for path in sorted((paths.reports / "figures").glob(f"{SAMPLE_PREFIX}*.png"))],
        params_file=params_file_name(paths, params_file),
        reproduce_commands=reproduce_commands(paths, params_file, overrides),
        provenance=provenance(record),
        params_yaml=yaml.safe_dump(params.to_dict(), sort_keys=False, default_flow_style=None).strip(),
    )


def summary_lines(params: Params, evaluation: dict[str, dict[str, Any]]) -> list[str]:
    """The dataset, the model, and our segmenter's mIoU on fused images against each source alone."""
    fusion, segmenter = params.model.fusion, params.model.segmenter
    lines = [
        f"Dataset: {params.data.layout} layout at {params.data.root}, split '{params.data.test_split}'"
        f" ({result_count(evaluation.get(OUR_METHOD, {})) or '?'} test images).",
        f"Model: {fusion.name} fusion network ({fusion.stages} stage(s), {fusion.features} features) with a "
        f"{segmenter.arch}/{segmenter.encoder} segmenter; {params.train.schedule} schedule, "
        f"{params.train.rounds} round(s).",
    ]
    ours = evaluation.get(OUR_METHOD, {}).get("mean", {})
    for prefix, what in (("", "mIoU"), ("box_", "box-mask mIoU")):
        references = [f"{format_number(ours[key])} on {label}" for key, label in (
            (f"{prefix}mIoU_ir", "the infrared image"), (f"{prefix}mIoU_vi", "the visible image"))
            if is_number(ours.get(key))]
        if is_number(ours.get(f"{prefix}mIoU")) and references:
            lines.append(f"Segmenter {what}: {format_number(ours[prefix + 'mIoU'])} on our fused images; "
                         f"for reference {', '.join(references)} alone.")
    return lines


def params_file_name(paths: ProjectPaths, params_file: Path | None = None) -> str:
    """The params file relative to the project root (default ``params.yaml``)."""
    return relative(paths.params if params_file is None else paths.place(params_file), paths.root)


def _yaml_inline(value: Any) -> str:
    """``value`` as one line of YAML (what ``-S key=value`` parses back)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text[:-3].strip() if text.endswith("...") else text


def reproduce_commands(paths: ProjectPaths, params_file: Path | None = None,
                       overrides: dict[str, Any] | None = None) -> list[str]:
    """The commands, run at the project root, that reproduce this report's numbers."""
    name = params_file_name(paths, params_file)
    sets = "".join(f" -S {shlex.quote(f'{key}={_yaml_inline(value)}')}"
                   for key, value in sorted((overrides or {}).items()))
    if name == params_file_name(paths):
        return [f"dvc exp run{sets}" if sets else REPRODUCE_COMMAND, "# or, the same steps without DVC:",
                f"python -m flows.pipeline --params {name}{sets}"]
    return [f"uaafusion train --params {name} --steps prepare,train,evaluate,report{sets}",
            "# the same steps as a Prefect flow run:", f"python -m flows.pipeline --params {name}{sets}"]


def provenance(record: BuildRecord) -> list[tuple[str, str]]:
    """``(what, value)`` lines: the git commit and the MLflow parent run of the build, where known."""
    items = [("git commit when this report was built (the training commit is on the MLflow run)", record.git_commit),
             ("MLflow parent run", record.mlflow_parent_run)]
    return [(label, value) for label, value in items if value]
