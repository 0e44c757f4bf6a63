"""The two ways to make the report: :func:`build_report` (draw the figures, then render) and
:func:`render_report` (render both pages from the report folder alone, without the model or the data)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from uaafusion.config import Params
from uaafusion.errors import UAAFusionError
from uaafusion.paths import ProjectPaths
from uaafusion.report.context import report_context
from uaafusion.report.figures import (
    TRAINING_LOSS,
    VALIDATION_ROUNDS,
    plot_sample_grid,
    plot_training_loss,
    plot_validation_rounds,
    read_csv_rows,
    sample_file,
)
from uaafusion.report.inputs import BuildRecord, read_evaluation, read_parent_run, relative
from uaafusion.report.render import write_pages
from uaafusion.report.samples import sample_panels

LOGGER = logging.getLogger(__name__)


def build_report(params: Params, paths: ProjectPaths, params_file: Path | None = None,
                 overrides: dict[str, Any] | None = None) -> Path:
    """Draw ``figures/`` (training curves from ``training/*.csv``, sample panels from the test split, the
    fused images and the model), record the build (``build.json``), then :func:`render_report`.

    Raises :class:`DataError` when ``evaluation.json`` is missing or malformed (run the evaluate step
    first); other missing inputs are noted in the report.
    """
    read_evaluation(paths.evaluation)  # fail before drawing anything
    notes = draw_figures(params, paths)
    record = BuildRecord(notes, *_provenance(paths))
    record.write(paths.reports)
    return render_report(params, paths, params_file, overrides)


def render_report(params: Params, paths: ProjectPaths, params_file: Path | None = None,
                  overrides: dict[str, Any] | None = None) -> Path:
    """Write ``index.html`` and ``README.md`` under ``paths.reports`` from the files there
    (:func:`uaafusion.report.context.report_context`); return the HTML page's path.

    ``params_file`` and ``overrides`` are what the run used; they go into the report's command that
    reproduces it (default: ``params.yaml`` and ``dvc repro``). Raises :class:`DataError` when
    ``evaluation.json`` is missing or malformed, or ``report.discussion`` names an unreadable file.
    """
    index = write_pages(report_context(params, paths, params_file, overrides), paths.reports)
    LOGGER.info("report written to %s", index)
    return index


def draw_figures(params: Params, paths: ProjectPaths) -> list[str]:
    """Replace ``figures/*.png`` by the training curves and the sample panels; return notes on what is
    missing (no losses, no model, no fused images...)."""
    import matplotlib

    matplotlib.use("Agg")
    figures = paths.reports / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    for old in figures.glob("*.png"):  # sample names may have changed
        old.unlink()
    notes = []
    curves = ((TRAINING_LOSS, plot_training_loss, "steps.csv", "training losses"),
              (VALIDATION_ROUNDS, plot_validation_rounds, "rounds.csv", "validation rounds"))
    for figure, plot, csv_name, what in curves:
        source = paths.training_plots / csv_name
        if plot(read_csv_rows(source), paths.reports / figure.file) is None:
            notes.append(f"No {what} found in {relative(source, paths.root)}.")
    if params.report.samples > 0:
        try:
            samples = list(sample_panels(params, paths, notes))
        except UAAFusionError as error:
            LOGGER.warning("report: no sample images: %s", error)
            samples = []
            notes.append(f"No sample images: {error}")
        for panels in samples:
            plot_sample_grid(panels.name, panels.titled(), list(params.data.class_names),
                             paths.reports / sample_file(panels.name))
    return notes


def _provenance(paths: ProjectPaths) -> tuple[str | None, str | None]:
    """The git commit of the project and the pipeline's MLflow parent run, where known."""
    from uaafusion.tracking import git_commit

    return git_commit(paths.root) or None, read_parent_run(paths.mlflow_pointer)
