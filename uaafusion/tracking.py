"""MLflow tracking: one parent run per training run, nested runs per stage and round.

The tracking URI defaults to ``sqlite:///<project root>/mlflow.db`` with artifacts under
``<project root>/mlartifacts`` (independent of the current directory; a queued or ``--temp`` DVC
experiment, which runs in a temporary copy of the repository, tracks into the repository it was
started from: :func:`store_root`); ``MLFLOW_TRACKING_URI`` overrides it (a shared server). An
unreachable server fails fast with a message naming the URI. The SQLite store is switched to WAL mode
and writes that meet a locked database are retried with backoff, so parallel experiments share it.

A training run's folder records its parent run (``mlflow-run.json``), so a run that is killed and
started again continues the same parent and nested runs; metrics logged with ``once=True`` (the
training steps) are skipped for steps already logged, so each step is logged exactly once. Every
pipeline step ends the parent ``FINISHED``, ``FAILED`` (an error) or ``KILLED`` (interrupted), so no
run stays ``RUNNING`` after the process exits; the next step (or the rerun) reopens it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uaafusion.errors import UAAFusionError

EXPERIMENT_NAME = "uaafusion"  # default; MLFLOW_EXPERIMENT_NAME chooses another
# Marks the experiment as model training, so that `mlflow ui` (3.x) opens it on its runs table
# instead of the GenAI overview (traces, token usage).
EXPERIMENT_KIND_TAG = ("mlflow.experimentKind", "custom_model_development")
RUN_RECORD_NAME = "mlflow-run.json"  # in a training run's folder: its parent run
RUNNING, FINISHED, FAILED, KILLED = "RUNNING", "FINISHED", "FAILED", "KILLED"
# A server that goes away costs one failed call (then uaafusion.tracking_journal keeps what it would
# log and tries again every 30 s), not minutes of MLflow's own retries; a user's settings win.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


class TrackingError(UAAFusionError):
    """The MLflow tracking backend cannot be used."""


DVC_TEMPORARY_WORKSPACES = (".dvc", "tmp", "exps")  # where DVC copies the repository for queued experiments


def store_root(project_root: Path) -> Path:
    """The folder of the default store (``mlflow.db``, ``mlartifacts/``): the project root, except in
    a DVC queued or ``--temp`` experiment, whose project lies in a temporary copy of the repository
    (``REPO/.dvc/tmp/exps/<copy>/...``) that DVC deletes afterwards: there, the same folder of the
    repository the experiment came from (DVC sets ``DVC_ROOT`` to it)."""
    root = Path(project_root).resolve()
    repository = os.environ.get("DVC_ROOT")
    if repository:
        repository_root = Path(repository).resolve()
        if root.is_relative_to(repository_root):
            parts = root.relative_to(repository_root).parts
            depth = len(DVC_TEMPORARY_WORKSPACES)
            if parts[:depth] == DVC_TEMPORARY_WORKSPACES and len(parts) > depth:
                return repository_root.joinpath(*parts[depth + 1:])
    return root


def tracking_uri(project_root: Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the SQLite file in :func:`store_root`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{store_root(project_root) / 'mlflow.db'}"


def experiment_name() -> str:
    """``MLFLOW_EXPERIMENT_NAME`` if set, else :data:`EXPERIMENT_NAME`."""
    return os.environ.get("MLFLOW_EXPERIMENT_NAME", "").strip() or EXPERIMENT_NAME


def check_reachable(uri: str, timeout_seconds: float = 5.0) -> None:
    """Fail fast (within ``timeout_seconds``) when an HTTP tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_seconds) as response:
            if response.status >= 500:
                raise TrackingError(f"MLflow tracking server {uri} answered HTTP {response.status}.")
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
        raise TrackingError(
            f"MLflow tracking server {uri} cannot be reached ({error}). Start it, fix "
            "MLFLOW_TRACKING_URI, or unset it to track into the local mlflow.db."
        ) from error


def git_commit(project_root: Path) -> str | None:
    """The project's current git commit, or ``None`` outside a git checkout."""
    return _git(project_root, "rev-parse", "HEAD") or None


def git_dirty(project_root: Path) -> bool:
    """Whether tracked files differ from the commit (ask only inside a checkout: :func:`git_commit`)."""
    return bool(_git(project_root, "status", "--porcelain", "--untracked-files=no"))


def _git(project_root: Path, *arguments: str) -> str:
    try:
        result = subprocess.run(["git", *arguments], cwd=project_root, capture_output=True, text=True,
                                timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


@dataclass
class PipelineTracker:
    """MLflow parent run of one training run, with nested runs created on demand.

    The parent run id is kept in ``pointer_path`` so that pipeline steps run in separate
    processes (DVC stages, Prefect task retries) attach to the same parent.
    """

    project_root: Path
    pointer_path: Path
    uri: str = ""
    parent_run_id: str = ""
    nested_run_ids: dict[str, str] = field(default_factory=dict)
    _last_steps: dict[tuple[str, str], int | None] = field(default_factory=dict)  # (run, key) -> step
    _new_runs: set[str] = field(default_factory=set)  # created by this tracker: nothing logged before

    def __post_init__(self) -> None:
        from mlflow import MlflowClient

        self.uri = self.uri or tracking_uri(self.project_root)
        if self.uri.startswith(("http://", "https://")):
            for variable, value in HTTP_DEFAULTS.items():
                os.environ.setdefault(variable, value)
        check_reachable(self.uri)
        self.client = RetryingClient(MlflowClient(tracking_uri=self.uri, registry_uri=self.uri))
        self.experiment_id = self._experiment_id()
        use_write_ahead_log(self.uri)

    # -- parent run ------------------------------------------------------------------------
    def start_parent(self, run_name: str, params: dict[str, Any], tags: dict[str, str] | None = None,
                     run_record: Path | None = None) -> str:
        """Continue the parent run recorded in ``run_record`` (a training run's folder) when this
        backend holds it, else create one named ``run_name``; log the params it lacks and the tags,
        and record it in ``run_record`` and the pointer file. Returns the parent run id."""
        all_tags = {"uaafusion.kind": "pipeline", **(tags or {})}
        recorded = self._recorded_run(run_record)
        if recorded is not None:
            self.parent_run_id = recorded
            self.client.update_run(recorded, status=RUNNING)
            for child in self._children(status=RUNNING):  # left by a killed process; reopened when used
                self.client.set_terminated(child.info.run_id, FINISHED)
        else:
            run = self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags)
            self.parent_run_id = run.info.run_id
            self._new_runs.add(self.parent_run_id)
        for key, value in all_tags.items():
            self.client.set_tag(self.parent_run_id, key, value)
        self.log_params(self.parent_run_id, params)
        self._write_records(run_record)
        return self.parent_run_id

    def _write_records(self, run_record: Path | None) -> None:
        """Record the parent run in ``run_record`` (the training run's folder) and the pointer file."""
        record = {"parent_run_id": self.parent_run_id, "tracking_uri": self.uri, "experiment_id": self.experiment_id,
                  "run_dir": str(run_record.parent) if run_record is not None else None}
        for path in (run_record, self.pointer_path):
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(record, indent=2))

    def attach_parent(self) -> str:
        """Attach to the parent run recorded in the pointer file (by an earlier step)."""
        if not self.pointer_path.is_file():
            raise TrackingError(f"{self.pointer_path}: no pipeline run recorded; run the train step first.")
        recorded = json.loads(self.pointer_path.read_text())
        self.parent_run_id = recorded["parent_run_id"]
        try:
            self.client.get_run(self.parent_run_id)
        except Exception as error:  # noqa: BLE001 - any lookup failure: the run is not in this backend
            raise TrackingError(
                f"parent run {self.parent_run_id} (from {self.pointer_path}) is not in {self.uri}: was "
                "MLFLOW_TRACKING_URI changed? Re-run the train step to start a new pipeline run."
            ) from error
        return self.parent_run_id

    @contextmanager
    def running(self) -> Iterator[str]:
        """Mark the parent ``RUNNING`` for one pipeline step; end it (and its open nested runs)
        ``FINISHED``, ``FAILED`` on an error, or ``KILLED`` when interrupted (Ctrl-C, SIGTERM)."""
        self.reopen_parent()
        try:
            yield self.parent_run_id
        except (KeyboardInterrupt, SystemExit):
            self.end_parent(KILLED)
            raise
        except BaseException:
            self.end_parent(FAILED)
            raise
        self.end_parent(FINISHED)

    def reopen_parent(self) -> None:
        self.client.update_run(self.parent_run_id, status=RUNNING)

    def end_parent(self, status: str = FINISHED) -> None:
        """End the open nested runs and the parent with ``status``."""
        for name in list(self.nested_run_ids):
            self.close_nested(name, status)
        self.client.set_terminated(self.parent_run_id, status)

    def _recorded_run(self, run_record: Path | None) -> str | None:
        """The parent run id in ``run_record`` when it is an active run of this backend's experiment."""
        if run_record is None or not run_record.is_file():
            return None
        try:
            recorded = json.loads(run_record.read_text())
            run = self.client.get_run(recorded["parent_run_id"])
        except Exception:  # noqa: BLE001 - unreadable record, other backend, deleted run: start anew
            return None
        usable = run.info.lifecycle_stage == "active" and run.info.experiment_id == self.experiment_id
        return run.info.run_id if usable else None

    def _children(self, name: str | None = None, status: str | None = None) -> list[Any]:
        clauses = [f"tags.mlflow.parentRunId = '{self.parent_run_id}'"]
        if name is not None:
            clauses.append(f"tags.mlflow.runName = '{name}'")
        if status is not None:
            clauses.append(f"attributes.status = '{status}'")
        return self.client.search_runs([self.experiment_id], filter_string=" and ".join(clauses), max_results=1000)

    # -- nested runs -----------------------------------------------------------------------
    def nested(self, name: str, params: dict[str, Any] | None = None) -> str:
        """Id of the open nested run ``name`` under the parent: the existing one (reopened) unless
        its params differ from ``params``, else a new one carrying ``params``."""
        if name in self.nested_run_ids:
            return self.nested_run_ids[name]
        params = {key: _short(value) for key, value in (params or {}).items()}
        for child in self._children(name=name):
            if all(child.data.params.get(key, value) == value for key, value in params.items()):
                run_id = child.info.run_id
                if child.info.status != RUNNING:
                    self.client.update_run(run_id, status=RUNNING)
                break
        else:
            run = self.client.create_run(self.experiment_id, run_name=name,
                                         tags={"mlflow.parentRunId": self.parent_run_id, "uaafusion.kind": "stage"})
            run_id = run.info.run_id
            self._new_runs.add(run_id)
        self.log_params(run_id, params)
        self.nested_run_ids[name] = run_id
        return run_id

    def close_nested(self, name: str, status: str = FINISHED) -> None:
        run_id = self.nested_run_ids.pop(name, None)
        if run_id is not None:
            self.client.set_terminated(run_id, status)

    # -- logging ---------------------------------------------------------------------------
    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        """Log the params ``run_id`` does not have yet (MLflow params cannot change)."""
        from mlflow.entities import Param

        logged = {} if run_id in self._new_runs else self.client.get_run(run_id).data.params
        items = [Param(key, _short(value)) for key, value in sorted(params.items()) if key not in logged]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start:start + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int, once: bool = False) -> None:
        """Log ``metrics`` at ``step``; with ``once``, skip each key already logged at this step or a
        later one (a resumed run recomputes the steps after its last checkpoint)."""
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        items = []
        for key, value in metrics.items():
            name = _metric_key(key)
            if once:
                last = self._last_step(run_id, name)
                if last is not None and step <= last:
                    continue
            items.append(Metric(name, float(value), timestamp, step))
        if items:
            self.client.log_batch(run_id, metrics=items)
        if once:  # only once they are logged (a failed call is tried again)
            for item in items:
                self._last_steps[(run_id, item.key)] = step

    def _last_step(self, run_id: str, key: str) -> int | None:
        if (run_id, key) not in self._last_steps:
            history = [] if run_id in self._new_runs else self.client.get_metric_history(run_id, key)
            self._last_steps[(run_id, key)] = max((metric.step for metric in history), default=None)
        return self._last_steps[(run_id, key)]

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(run_id, str(path), artifact_path)
        elif path.is_file():
            self.client.log_artifact(run_id, str(path), artifact_path)

    def log_images(self, run_id: str, images: dict[str, Any], step: int) -> bool:
        """Log ``{key: uint8 (H, W, 3) array}`` as MLflow images at ``step`` (the run page shows them with
        a step slider) unless this step's images were logged before; returns whether it logged them."""
        tag = "uaafusion.image_steps"
        done = self.client.get_run(run_id).data.tags.get(tag, "")
        if str(step) in done.split(","):
            return False
        for key, image in images.items():
            self.client.log_image(run_id, image, key=key, step=step)
        self.client.set_tag(run_id, tag, ",".join(item for item in (done, str(step)) if item))
        return True

    def log_image_folder(self, run_id: str, folder: Path, step: int) -> bool:
        """:meth:`log_images` of every ``NAME.png`` in ``folder`` under the key ``samples/NAME``."""
        from uaafusion.data.io import read_image

        return self.log_images(run_id, {f"samples/{path.stem}": read_image(path)
                                        for path in sorted(Path(folder).glob("*.png"))}, step)

    def log_dataset(self, run_id: str, name: str, digest: str, source: str, profile: dict[str, Any],
                    context: str) -> None:
        """Log a dataset input (the runs table's Dataset column): ``context`` is ``training`` or ``test``."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(name=name, digest=digest, source_type="local", source=json.dumps({"uri": source}),
                          profile=json.dumps(profile))
        self.client.log_inputs(run_id, datasets=[DatasetInput(dataset, [InputTag("mlflow.data.context", context)])])

    def log_dict(self, run_id: str, dictionary: dict[str, Any], artifact_file: str) -> None:
        """``dictionary`` as the JSON (or YAML) artifact ``artifact_file`` of ``run_id``."""
        self.client.log_dict(run_id, dictionary, artifact_file)

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.client.set_tag(run_id, key, value)

    def _experiment_id(self) -> str:
        name = experiment_name()
        key, kind = EXPERIMENT_KIND_TAG
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.tags.get(key) != kind:
                self.client.set_experiment_tag(experiment.experiment_id, key, kind)
            return experiment.experiment_id
        artifact_location = None
        if self.uri.startswith("sqlite:///"):
            artifact_location = (Path(self.uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
        return self.client.create_experiment(name, artifact_location=artifact_location, tags={key: kind})


LOCKED_MESSAGE = "database is locked"


class RetryingClient:
    """An ``MlflowClient`` whose calls are retried with exponential backoff (``attempts`` times from
    ``first_delay`` seconds) when SQLite answers "database is locked" (another experiment writing):
    the failed transaction was rolled back, so a retry is safe."""

    def __init__(self, client: Any, attempts: int = 8, first_delay: float = 0.25) -> None:
        self.client, self.attempts, self.first_delay = client, attempts, first_delay

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            delay = self.first_delay
            for _ in range(self.attempts - 1):
                try:
                    return attribute(*args, **kwargs)
                except Exception as error:
                    if LOCKED_MESSAGE not in str(error):
                        raise
                time.sleep(delay)
                delay *= 2
            return attribute(*args, **kwargs)  # the last attempt's error reaches the caller

        return call


def use_write_ahead_log(uri: str) -> None:
    """Switch a SQLite store to WAL mode (kept in the file): readers no longer block the writers of a
    parallel experiment. Best effort: a store busy right now is switched by a later run."""
    if not uri.startswith("sqlite:///"):
        return
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(uri[len("sqlite:///"):], timeout=5)) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error:
        pass


def _short(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text[:6000]


def _metric_key(key: str) -> str:
    return "".join(character if character.isalnum() or character in "_-./ " else "_" for character in key)

