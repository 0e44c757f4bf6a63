"""MLflow tracking against a real SQLite store: the experiment's name and kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from uaafusion.tracking import EXPERIMENT_KIND_TAG, EXPERIMENT_NAME, PipelineTracker


def tracker_at(root: Path) -> PipelineTracker:
    return PipelineTracker(project_root=root, pointer_path=root / "models" / "mlflow-run.json")


@pytest.mark.parametrize("chosen", [None, "ablations-2026"])
def test_the_experiment_is_named_by_the_environment_and_marked_as_model_training(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chosen: str | None) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    if chosen is None:
        monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", chosen)
    tracker = tracker_at(tmp_path)
    run_id = tracker.start_parent("run", {"seed": 0})
    tracker.finish_parent()
    experiment = tracker.client.get_experiment_by_name(chosen or EXPERIMENT_NAME)
    assert experiment is not None and tracker.client.get_run(run_id).info.experiment_id == experiment.experiment_id
    key, kind = EXPERIMENT_KIND_TAG
    assert experiment.tags[key] == kind == "custom_model_development"


def test_an_existing_experiment_without_the_kind_gets_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    uri = f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).create_experiment(EXPERIMENT_NAME)  # as an older version made it
    tracker = tracker_at(tmp_path)
    key, kind = EXPERIMENT_KIND_TAG
    assert tracker.client.get_experiment(tracker.experiment_id).tags[key] == kind
