"""The MLflow server goes away during training: training goes on, one warning, nothing lost. Against a real
``mlflow server`` on loopback that the test stops and starts again on the same port and store."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.flows.mlflow_server import Server
from tests.flows.test_tracking_lifecycle import LONGER, _environment, _pipeline, _saved_steps
from tests.helpers import write_tiny_params

pytestmark = pytest.mark.slow


@pytest.fixture()
def server(tmp_path: Path):
    server = Server(tmp_path, _environment())
    server.start()
    yield server
    server.stop()


def _assert_each_step_once(client, runs) -> None:
    for run in runs:
        for key in run.data.metrics:
            counts = Counter(metric.step for metric in client.get_metric_history(run.info.run_id, key))
            assert max(counts.values()) == 1, f"{run.info.run_name} {key}: {counts}"


def test_the_journal_is_sent_when_the_server_answers_again(tmp_path: Path, server: Server,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    from mlflow import MlflowClient

    from uaafusion.tracking import RUN_RECORD_NAME
    from uaafusion.tracking_journal import JOURNAL_NAME, JournaledTracker

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    run_dir = tmp_path / "run"
    tracker = JournaledTracker(project_root=tmp_path, pointer_path=tmp_path / "models" / "mlflow-run.json",
                               journal_path=run_dir / JOURNAL_NAME, retry_seconds=0.0)
    parent = tracker.start_parent("away", {"seed": 0}, run_record=run_dir / RUN_RECORD_NAME)
    fusion = tracker.nested("round-1/fusion")
    tracker.log_metrics(fusion, {"loss": 1.0}, 1, once=True)
    server.stop()
    with caplog.at_level(logging.WARNING):
        for step in (2, 3):
            tracker.log_metrics(tracker.nested("round-1/fusion"), {"loss": 1.0 / step}, step, once=True)
        tracker.close_nested("round-1/fusion")
        segmentation = tracker.nested("round-1/segmentation", {"round": 1})  # not creatable now
        tracker.log_metrics(segmentation, {"loss": 0.5}, 4, once=True)
        tracker.log_metrics(parent, {"validation_VIF": 0.7}, 1, once=True)
    assert segmentation == "pending:round-1/segmentation"
    assert caplog.text.count("does not answer") == 1 and JOURNAL_NAME in caplog.text
    assert len(tracker.pending_events()) == 6
    server.start()
    tracker.close_nested("round-1/segmentation")  # the next call finds the server: the journal goes first
    tracker.end_parent()
    assert tracker.pending_events() == [] and not (run_dir / JOURNAL_NAME).exists()

    client = MlflowClient(tracking_uri=server.uri)
    runs = client.search_runs([tracker.experiment_id])
    assert {run.info.run_name: run.info.status for run in runs} == {
        "away": "FINISHED", "round-1/fusion": "FINISHED", "round-1/segmentation": "FINISHED"}
    assert [metric.step for metric in client.get_metric_history(fusion, "loss")] == [1, 2, 3]
    segmentation_run = next(run for run in runs if run.info.run_name == "round-1/segmentation")
    assert segmentation_run.data.params == {"round": "1"} and segmentation_run.data.metrics == {"loss": 0.5}
    assert client.get_run(parent).data.metrics["validation_VIF"] == 0.7
    _assert_each_step_once(client, runs)


def test_training_goes_on_while_the_server_is_away_and_the_journal_is_sent_afterwards(
        tmp_path: Path, server: Server) -> None:
    from mlflow import MlflowClient

    project = tmp_path / "project"
    project.mkdir()
    write_tiny_params(project / "params.yaml", **LONGER)
    environment = _environment(MLFLOW_TRACKING_URI=server.uri)
    subprocess.run(_pipeline(project, "prepare"), cwd=project, env=environment, check=True, timeout=600,
                   capture_output=True)
    log_path = tmp_path / "train.log"
    with log_path.open("wb") as log:
        training = subprocess.Popen(_pipeline(project, "train", "--run-name", "server-away"), cwd=project,
                                    env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while _saved_steps(project) == 0:
            assert training.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.1)
        server.stop()  # after the first unit; training goes on without it
        assert training.wait(timeout=900) == 0, log_path.read_text()[-4000:]
    finally:
        if training.poll() is None:
            os.killpg(training.pid, signal.SIGKILL)
    output = log_path.read_text()
    assert output.count("does not answer") == 1, output[-4000:]
    history = json.loads(next((project / "checkpoints").glob("*/history.json")).read_text())
    assert len(history["units"]) == 10  # 2 pretrain epochs, 2 rounds of (2 fusion, 1 segmentation, validation)
    run_dir = next((project / "checkpoints").glob("*/history.json")).parent
    assert (run_dir / "mlflow-journal.jsonl").is_file()

    server.start()
    result = subprocess.run([sys.executable, "-m", "uaafusion.cli", "sync-tracking", str(run_dir)], cwd=project,
                            env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "sent" in result.stdout, result.stdout + result.stderr
    assert not (run_dir / "mlflow-journal.jsonl").exists()
    client = MlflowClient(tracking_uri=server.uri)
    experiment = client.get_experiment_by_name("uaafusion")
    runs = client.search_runs([experiment.experiment_id])
    assert {run.info.status for run in runs} == {"FINISHED"}
    parent = next(run for run in runs if run.info.run_name == "server-away")
    assert sorted(metric.step for metric in client.get_metric_history(parent.info.run_id, "validation_VIF")) == [1, 2]
    logged = sorted(metric.step for run in runs if "loss" in run.data.metrics
                    for metric in client.get_metric_history(run.info.run_id, "loss"))
    assert logged == [row["step"] for row in history["steps"]]  # the gap included, each step once
    _assert_each_step_once(client, runs)
    assert client.get_model_version_by_alias("uaafusion", "champion").run_id == parent.info.run_id


def test_a_server_down_at_start_stops_training_unless_offline_is_ok_and_the_run_is_sent_later(
        tmp_path: Path) -> None:
    """Down at start: the run fails fast naming the server and ``tracking.offline_ok``; with it, training runs
    with the parent run itself journaled, and the next step that finds the server sends all of it."""
    from mlflow import MlflowClient

    from uaafusion.tracking_journal import PENDING_PARENT

    project = tmp_path / "project"
    project.mkdir()
    write_tiny_params(project / "params.yaml", **{"synthetic.train": 4})
    server = Server(tmp_path, _environment())  # not started yet
    environment = _environment(MLFLOW_TRACKING_URI=server.uri)
    subprocess.run(_pipeline(project, "prepare"), cwd=project, env=environment, check=True, timeout=600,
                   capture_output=True)

    refused = subprocess.run(_pipeline(project, "train"), cwd=project, env=environment, capture_output=True,
                             text=True, timeout=600)
    assert refused.returncode != 0
    assert server.uri in refused.stderr and "tracking.offline_ok" in refused.stderr, refused.stderr[-3000:]
    assert not list((project / "checkpoints").glob("*/history.json"))  # no training without tracking

    offline = subprocess.run(_pipeline(project, "train", "--run-name", "offline", "-S", "tracking.offline_ok=true"),
                             cwd=project, env=environment, capture_output=True, text=True, timeout=900)
    assert offline.returncode == 0, offline.stdout[-3000:] + offline.stderr[-3000:]
    assert (offline.stdout + offline.stderr).count("does not answer") == 1
    (run_dir,) = [path.parent for path in (project / "checkpoints").glob("*/history.json")]
    assert json.loads((project / "models" / "mlflow-run.json").read_text())["parent_run_id"] == PENDING_PARENT
    assert (project / "models" / "uaafusion.pt").is_file() and (run_dir / "mlflow-journal.jsonl").is_file()

    server.start()
    try:
        evaluate = subprocess.run(_pipeline(project, "evaluate"), cwd=project, env=environment, capture_output=True,
                                  text=True, timeout=900)
        assert evaluate.returncode == 0, evaluate.stdout[-3000:] + evaluate.stderr[-3000:]
        assert not (run_dir / "mlflow-journal.jsonl").exists()
        pointer = json.loads((project / "models" / "mlflow-run.json").read_text())
        assert pointer["parent_run_id"] != PENDING_PARENT
        assert json.loads((run_dir / "mlflow-run.json").read_text())["parent_run_id"] == pointer["parent_run_id"]
        client = MlflowClient(tracking_uri=server.uri)
        parent = client.get_run(pointer["parent_run_id"])
        assert parent.info.run_name == "offline" and parent.info.status == "FINISHED"
        assert parent.data.params["train.rounds"] and "validation_VIF" in parent.data.metrics
        assert "test_VIF" in parent.data.metrics  # the evaluate step logged into the same parent
        children = client.search_runs([parent.info.experiment_id],
                                      filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
        assert "evaluate" in {run.info.run_name for run in children} and len(children) > 2
        assert {run.info.status for run in children} == {"FINISHED"}
        history = json.loads((run_dir / "history.json").read_text())
        logged = sorted(metric.step for run in children if "loss" in run.data.metrics
                        for metric in client.get_metric_history(run.info.run_id, "loss"))
        assert logged == [row["step"] for row in history["steps"]]  # every step of the offline training, once
        _assert_each_step_once(client, [parent, *children])
        assert client.get_model_version_by_alias("uaafusion", "champion").run_id == parent.info.run_id
    finally:
        server.stop()
