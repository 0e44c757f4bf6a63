"""MLflow tracking: one parent run per pipeline run, nested runs per stage and round.

The tracking URI defaults to ``sqlite:///<project root>/mlflow.db`` with artifacts under
``<project root>/mlartifacts`` (independent of the current directory); ``MLFLOW_TRACKING_URI``
overrides it (a shared server). An unreachable server fails fast with a message naming the URI.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uaafusion.errors import UAAFusionError

EXPERIMENT_NAME = "uaafusion"  # default; MLFLOW_EXPERIMENT_NAME chooses another
# Marks the experiment as model training, so that `mlflow ui` (3.x) opens it on its runs table
# instead of the GenAI overview (traces, token usage).
EXPERIMENT_KIND_TAG = ("mlflow.experimentKind", "custom_model_development")
FUSION_MODEL_NAME = "uaafusion-fusion"
SEGMENTER_MODEL_NAME = "uaafusion-segmenter"
MODEL_ALIAS = "champion"


class TrackingError(UAAFusionError):
    """The MLflow tracking backend cannot be used."""


def tracking_uri(project_root: Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the project's SQLite file."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(project_root).resolve() / 'mlflow.db'}"


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
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_root, capture_output=True, text=True,
                                timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


@dataclass
class PipelineTracker:
    """MLflow parent run of one pipeline run, with nested runs created on demand.

    The parent run id is kept in ``pointer_path`` so that pipeline steps run in separate
    processes (DVC stages, Prefect task retries) attach to the same parent.
    """

    project_root: Path
    pointer_path: Path
    uri: str = ""
    parent_run_id: str = ""
    nested_run_ids: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from mlflow import MlflowClient

        self.uri = self.uri or tracking_uri(self.project_root)
        check_reachable(self.uri)
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        self.experiment_id = self._experiment_id()

    # -- parent run ------------------------------------------------------------------------
    def start_parent(self, run_name: str, params: dict[str, Any], tags: dict[str, str] | None = None) -> str:
        """Create a new parent run, log every param and tag, and remember it in the pointer file."""
        all_tags = {"uaafusion.kind": "pipeline", **(tags or {})}
        commit = git_commit(self.project_root)
        if commit:
            all_tags["mlflow.source.git.commit"] = commit
        experiment_name = os.environ.get("DVC_EXP_NAME")
        if experiment_name:
            all_tags["dvc.experiment"] = experiment_name
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags)
        self.parent_run_id = run.info.run_id
        self.log_params(self.parent_run_id, params)
        self.pointer_path.parent.mkdir(parents=True, exist_ok=True)
        self.pointer_path.write_text(json.dumps({"parent_run_id": self.parent_run_id, "tracking_uri": self.uri,
                                                 "experiment_id": self.experiment_id}, indent=2))
        return self.parent_run_id

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

    def finish_parent(self, status: str = "FINISHED") -> None:
        for run_id in self.nested_run_ids.values():
            self.client.set_terminated(run_id, status)
        self.nested_run_ids.clear()
        self.client.set_terminated(self.parent_run_id, status)

    # -- nested runs -----------------------------------------------------------------------
    def nested(self, name: str) -> str:
        """Id of the nested run ``name`` under the parent, created the first time it is asked for."""
        if name not in self.nested_run_ids:
            existing = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.mlflow.parentRunId = '{self.parent_run_id}' and tags.mlflow.runName = '{name}'",
                max_results=1,
            )
            if existing:
                self.nested_run_ids[name] = existing[0].info.run_id
            else:
                run = self.client.create_run(self.experiment_id, run_name=name,
                                             tags={"mlflow.parentRunId": self.parent_run_id, "uaafusion.kind": "stage"})
                self.nested_run_ids[name] = run.info.run_id
        return self.nested_run_ids[name]

    def close_nested(self, name: str, status: str = "FINISHED") -> None:
        run_id = self.nested_run_ids.pop(name, None)
        if run_id is not None:
            self.client.set_terminated(run_id, status)

    # -- logging ---------------------------------------------------------------------------
    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(key, _short(value)) for key, value in sorted(params.items())]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start:start + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        items = [Metric(_metric_key(key), float(value), timestamp, step) for key, value in metrics.items()]
        if items:
            self.client.log_batch(run_id, metrics=items)

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(run_id, str(path), artifact_path)
        elif path.is_file():
            self.client.log_artifact(run_id, str(path), artifact_path)

    def register_models(self, checkpoint_path: Path) -> dict[str, str]:
        """Log the models' checkpoint on the parent run and register it as both model names.

        The checkpoint holds state dicts and the constructor spec, so the registered models
        load for any input size (``uaafusion fuse --model models:/uaafusion-fusion@champion``).
        """
        self.client.log_artifact(self.parent_run_id, str(checkpoint_path), "model")
        source = f"runs:/{self.parent_run_id}/model"
        versions = {}
        for name in (FUSION_MODEL_NAME, SEGMENTER_MODEL_NAME):
            try:
                self.client.get_registered_model(name)
            except Exception:  # noqa: BLE001 - not registered yet
                self.client.create_registered_model(name, description="UAAFusion checkpoint (state dicts + spec).")
            version = self.client.create_model_version(name, source, run_id=self.parent_run_id, await_creation_for=0)
            self.client.set_registered_model_alias(name, MODEL_ALIAS, version.version)
            versions[name] = version.version
        return versions

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
            artifact_location = (Path(self.project_root).resolve() / "mlartifacts").as_uri()
        return self.client.create_experiment(name, artifact_location=artifact_location, tags={key: kind})


def _short(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text[:6000]


def _metric_key(key: str) -> str:
    return "".join(character if character.isalnum() or character in "_-./ " else "_" for character in key)
