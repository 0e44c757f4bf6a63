"""MLflow tracking against a real SQLite store: the experiment, parent runs that survive a kill,
metrics logged once per step, run statuses, sample images."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest

from uaafusion.tracking import (
    EXPERIMENT_KIND_TAG,
    EXPERIMENT_NAME,
    FAILED,
    FINISHED,
    KILLED,
    RUN_RECORD_NAME,
    RUNNING,
    PipelineTracker,
    RetryingClient,
    store_root,
    tracking_uri,
)


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
    tracker.end_parent()
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


@pytest.fixture()
def local_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder whose MLflow store is its own SQLite file."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    return tmp_path


def parents(tracker: PipelineTracker) -> list:
    return [run for run in tracker.client.search_runs([tracker.experiment_id])
            if "mlflow.parentRunId" not in run.data.tags]


def test_a_resumed_run_continues_its_recorded_parent_and_another_run_gets_its_own(local_store: Path) -> None:
    record = local_store / "checkpoints" / "abc" / RUN_RECORD_NAME
    first = tracker_at(local_store)
    run_id = first.start_parent("first", {"train.rounds": 2}, run_record=record)
    first.nested("pretrain")  # a process killed here leaves the parent and this nested run RUNNING

    resumed = tracker_at(local_store)  # the rerun, in a new process
    assert resumed.start_parent("ignored", {"train.rounds": 2, "seed": 0}, run_record=record) == run_id
    assert resumed.client.get_run(run_id).info.run_name == "first"
    assert resumed.client.get_run(run_id).data.params == {"train.rounds": "2", "seed": "0"}
    statuses = {run.info.run_name: run.info.status for run in resumed.client.search_runs([resumed.experiment_id])}
    assert statuses == {"first": RUNNING, "pretrain": FINISHED}  # the stale nested run is closed
    with resumed.running():
        assert resumed.nested("pretrain") == first.nested_run_ids["pretrain"]  # reopened, not duplicated
    assert {run.info.status for run in resumed.client.search_runs([resumed.experiment_id])} == {FINISHED}

    other = tracker_at(local_store)
    assert other.start_parent("other", {}, run_record=local_store / "checkpoints" / "def" / RUN_RECORD_NAME) != run_id
    assert json.loads(record.read_text())["parent_run_id"] == run_id
    assert json.loads(other.pointer_path.read_text())["parent_run_id"] == other.parent_run_id
    assert len(parents(other)) == 2


def test_a_recorded_parent_from_another_store_or_deleted_is_not_continued(local_store: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    record = local_store / "run" / RUN_RECORD_NAME
    tracker = tracker_at(local_store)
    run_id = tracker.start_parent("first", {}, run_record=record)
    tracker.end_parent()
    tracker.client.delete_run(run_id)
    assert tracker_at(local_store).start_parent("second", {}, run_record=record) != run_id
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{local_store / 'other.db'}")
    elsewhere = tracker_at(local_store)
    assert elsewhere.start_parent("third", {}, run_record=record) not in (run_id, tracker.parent_run_id)


@pytest.mark.parametrize("raised, status", [(None, FINISHED), (ValueError("boom"), FAILED),
                                            (KeyboardInterrupt(), KILLED), (SystemExit(143), KILLED)])
def test_each_step_ends_the_parent_and_its_open_nested_runs(local_store: Path, raised: BaseException | None,
                                                            status: str) -> None:
    tracker = tracker_at(local_store)
    tracker.start_parent("run", {})
    with pytest.raises(type(raised)) if raised else contextlib.nullcontext():
        with tracker.running():
            tracker.nested("round-1/fusion")
            if raised:
                raise raised
    assert {run.info.status for run in tracker.client.search_runs([tracker.experiment_id])} == {status}


def test_metrics_logged_once_skip_the_steps_a_killed_process_logged(local_store: Path) -> None:
    first = tracker_at(local_store)
    first.start_parent("run", {}, run_record=local_store / "run" / RUN_RECORD_NAME)
    nested = first.nested("pretrain")
    for step in range(1, 6):  # steps 4 and 5 were never saved in a checkpoint
        first.log_metrics(nested, {"loss": 1.0 / step}, step, once=True)

    rerun = tracker_at(local_store)
    rerun.start_parent("run", {}, run_record=local_store / "run" / RUN_RECORD_NAME)
    for step in range(4, 9):  # the resumed epoch recomputes steps 4 and 5
        rerun.log_metrics(rerun.nested("pretrain"), {"loss": 2.0 / step}, step, once=True)
    history = rerun.client.get_metric_history(nested, "loss")
    assert sorted(metric.step for metric in history) == list(range(1, 9))
    assert {metric.step: metric.value for metric in history}[5] == pytest.approx(1.0 / 5)  # the first one kept
    rerun.log_metrics(nested, {"loss": 0.5}, 1)  # without once (test metrics): logged again
    assert len(rerun.client.get_metric_history(nested, "loss")) == 9


def test_nested_runs_with_other_params_are_new_runs(local_store: Path) -> None:
    tracker = tracker_at(local_store)
    tracker.start_parent("run", {})
    first = tracker.nested("evaluate", {"evaluate.peers": {}})
    tracker.close_nested("evaluate")
    assert tracker.nested("evaluate", {"evaluate.peers": {}}) == first
    tracker.close_nested("evaluate")
    second = tracker.nested("evaluate", {"evaluate.peers": {"seafusion": "x"}})
    assert second != first
    assert tracker.client.get_run(second).data.params == {"evaluate.peers": '{"seafusion": "x"}'}


def test_sample_images_are_logged_once_per_step(local_store: Path) -> None:
    tracker = tracker_at(local_store)
    run_id = tracker.start_parent("run", {})
    image = np.zeros((8, 12, 3), np.uint8)
    assert tracker.log_images(run_id, {"samples/a": image, "samples/b": image}, step=1)
    assert not tracker.log_images(run_id, {"samples/a": image, "samples/b": image}, step=1)
    assert tracker.log_images(run_id, {"samples/a": image}, step=2)
    pictures = [item.path for item in tracker.client.list_artifacts(run_id, "images") if item.path.endswith(".png")]
    assert len(pictures) == 3


def test_a_queued_dvc_experiment_tracks_into_the_repository_it_came_from(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    repository = tmp_path / "repo"
    copy = repository / ".dvc" / "tmp" / "exps" / "tmpk2x" / "sub" / "project"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert store_root(copy) == copy.resolve()
    monkeypatch.setenv("DVC_ROOT", str(repository))
    assert store_root(copy) == (repository / "sub" / "project").resolve()
    assert store_root(repository / "sub") == (repository / "sub").resolve()  # an ordinary dvc repro
    assert store_root(tmp_path / "elsewhere") == (tmp_path / "elsewhere").resolve()
    assert tracking_uri(copy) == f"sqlite:///{(repository / 'sub' / 'project').resolve() / 'mlflow.db'}"
    copy.mkdir(parents=True)
    tracker = tracker_at(copy)
    assert tracker.client.get_experiment(tracker.experiment_id).artifact_location == \
        ((repository / "sub" / "project").resolve() / "mlartifacts").as_uri()


def test_the_sqlite_store_uses_a_write_ahead_log(local_store: Path) -> None:
    import sqlite3

    tracker_at(local_store)
    with contextlib.closing(sqlite3.connect(local_store / "mlflow.db")) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


class Flaky:
    """Answers "database is locked" ``failures`` times, then ``"done"``; counts the calls."""

    def __init__(self, failures: int, message: str = "(sqlite3.OperationalError) database is locked") -> None:
        self.failures, self.message, self.calls = failures, message, 0

    def write(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError(self.message)
        return "done"


def test_writes_to_a_locked_store_are_retried_with_backoff_and_other_errors_are_not() -> None:
    flaky = Flaky(failures=3)
    assert RetryingClient(flaky, attempts=4, first_delay=0.01).write() == "done" and flaky.calls == 4
    hopeless = Flaky(failures=10)
    with pytest.raises(RuntimeError, match="database is locked"):
        RetryingClient(hopeless, attempts=3, first_delay=0.01).write()
    assert hopeless.calls == 3
    other = Flaky(failures=1, message="no such run")
    with pytest.raises(RuntimeError, match="no such run"):
        RetryingClient(other, first_delay=0.01).write()
    assert other.calls == 1
