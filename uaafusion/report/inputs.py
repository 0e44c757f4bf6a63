"""The files the report is rendered from, read with errors that name the file and what to do.

``evaluation.json`` is required (:class:`DataError` without it); the other inputs are optional:
when one is missing or unreadable, its reader appends a note for the report and returns nothing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from uaafusion.config import Params
from uaafusion.errors import DataError
from uaafusion.metrics.comparison import Comparison
from uaafusion.paths import ProjectPaths
from uaafusion.integrity import write_text_atomically

BUILD_RECORD = "build.json"
"""What a full build recorded for later renders, in the report folder (:class:`BuildRecord`)."""


def relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when under it (for messages), else as it is."""
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


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


def _optional_json(path: Path, notes: list[str], missing_note: str | None = None,
                   remedy: str = "re-run the evaluate step") -> Any:
    """The JSON document at ``path``; ``None`` when absent (noting ``missing_note``) or unreadable (noting
    the error and ``remedy``)."""
    if not path.is_file():
        if missing_note:
            notes.append(missing_note)
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        notes.append(f"{path.name} could not be read ({error}); {remedy}.")
        return None


def read_generalisation(path: Path, notes: list[str]) -> dict[str, dict[str, Any]]:
    """``{set name: {"root": folder, "methods": {method: result}}}`` from ``generalisation.json``; ``{}``
    when the file is absent (nothing configured) or unreadable (noted)."""
    data = _optional_json(path, notes)
    if not isinstance(data, dict):
        return {}
    return {name: entry for name, entry in data.items()
            if isinstance(entry, dict) and isinstance(entry.get("methods"), dict)}


def read_degraded(path: Path, notes: list[str]) -> dict[str, Any]:
    """The degraded benchmark's ``degraded.json`` (``{"severity", "seed", "sets": {kind: {"mean",
    "comparison"}}}``); ``{}`` when absent (nothing configured) or unreadable (noted)."""
    data = _optional_json(path, notes)
    if not isinstance(data, dict) or not isinstance(data.get("sets"), dict):
        return {}
    return data


def read_comparison(path: Path, notes: list[str]) -> Comparison | None:
    """The evaluate step's ``comparison.json`` (:meth:`Comparison.to_json`); ``None`` with a note when it
    is missing or malformed."""
    document = _optional_json(path, notes, f"No {path.name} in the report folder: the difference tables with "
                                           "bootstrap intervals are left out; run the evaluate step to write it.")
    if document is None:
        return None
    try:
        return Comparison.from_json(document)
    except DataError as error:
        notes.append(f"{path.name}: {error}; re-run the evaluate step.")
        return None


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
        raise DataError(f"report.discussion = {params.report.discussion!r}: cannot read {path} ({error}). "
                        "Write that Markdown file or set report.discussion to null.") from error


@dataclass
class BuildRecord:
    """What the full build saw that a later render cannot: its notes on the figures, the git commit and
    the MLflow parent run at build time (``None`` when unknown)."""

    notes: list[str] = field(default_factory=list)
    git_commit: str | None = None
    mlflow_parent_run: str | None = None

    def write(self, folder: Path) -> None:
        write_text_atomically(folder / BUILD_RECORD, json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def read(cls, folder: Path, notes: list[str]) -> "BuildRecord":
        """The record in ``folder``; an empty one (noted when unreadable) without it."""
        document = _optional_json(folder / BUILD_RECORD, notes, remedy="rebuild the report with `uaafusion report`")
        if not isinstance(document, dict):
            return cls()
        return cls([str(note) for note in document.get("notes") or []],
                   document.get("git_commit"), document.get("mlflow_parent_run"))


def read_parent_run(pointer: Path) -> str | None:
    """The MLflow parent run id in a models folder's run pointer (``mlflow-run.json``), ``None`` when unknown."""
    try:
        run = json.loads(pointer.read_text()).get("parent_run_id")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return None if run is None else str(run)
