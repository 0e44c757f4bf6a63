"""MLflow as users meet it, end to end with the real flow in subprocesses: a training run killed with
SIGKILL and started again is one FINISHED parent with each step logged once; a run against a real
``mlflow server`` on loopback holds its own artifacts (sample images of every round, report, model)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.flows.mlflow_server import Server
from tests.helpers import write_tiny_params

pytestmark = pytest.mark.slow

# Long enough epochs to kill one half-way (8 training pairs in batches of 2: 4 steps an epoch).
LONGER = {"synthetic.train": 8, "train.pretrain_epochs": 2, "train.fusion_epochs": 2, "train.rounds": 2}
NON_MODEL_ARTIFACT_LIMIT = 5 * 2**20


def _environment(**extra: str) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith(("MLFLOW_", "DVC_", "UAAFUSION_"))}
    environment.update({"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "OMP_NUM_THREADS": "2", **extra})
    return environment


def _pipeline(project: Path, steps: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "flows.pipeline", "--root", str(project), "--steps", steps, *extra]


def _query(database: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10) as connection:
        return connection.execute(sql).fetchall()


def _saved_steps(project: Path) -> int:
    """Optimisation steps in the run folder's last saved state (``history.json``), 0 before the first save."""
    histories = list((project / "checkpoints").glob("*/history.json"))
    if not histories:
        return 0
    try:
        return len(json.loads(histories[0].read_text())["steps"])
    except (ValueError, KeyError):
        return 0


def _kill_between_logging_and_saving(project: Path, process: subprocess.Popen, timeout: float = 600) -> int:
    """SIGKILL the training process group once MLflow holds steps that no saved state holds yet;
    returns the highest logged step."""
    database = project / "mlflow.db"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"training ended ({process.returncode}) before it could be killed half-way")
        saved = _saved_steps(project)
        if saved and database.is_file():
            try:
                logged = _query(database, "select max(step) from metrics where key = 'loss'")[0][0] or 0
            except sqlite3.OperationalError:  # locked or not created yet
                logged = 0
            if logged > saved:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=60)
                return logged
        time.sleep(0.02)
    pytest.fail("no half-saved epoch seen in time")


def test_a_run_killed_and_started_again_is_one_finished_parent_with_each_step_once(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    project = tmp_path / "project"
    project.mkdir()
    write_tiny_params(project / "params.yaml", **LONGER)
    environment = _environment()
    subprocess.run(_pipeline(project, "prepare"), cwd=project, env=environment, check=True, timeout=600,
                   capture_output=True)
    with (tmp_path / "first.log").open("wb") as log:
        first = subprocess.Popen(_pipeline(project, "train", "--run-name", "killed-once"), cwd=project,
                                 env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    logged = _kill_between_logging_and_saving(project, first)
    assert logged > _saved_steps(project)
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("uaafusion")
    assert "RUNNING" in {run.info.status for run in client.search_runs([experiment.experiment_id])}

    rerun = subprocess.run(_pipeline(project, "train"), cwd=project, env=environment, timeout=900,
                           capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]

    runs = client.search_runs([experiment.experiment_id])
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    assert [(run.info.run_name, run.info.status) for run in parents] == [("killed-once", "FINISHED")]
    assert {run.info.status for run in runs} == {"FINISHED"}
    children = {run.info.run_name: run.info.run_id for run in runs if run not in parents}
    assert len(children) == len(runs) - 1, "one nested run per stage, none duplicated by the rerun"
    history = json.loads(next((project / "checkpoints").glob("*/history.json")).read_text())
    logged_steps = []
    for name, run_id in children.items():
        for key in client.get_run(run_id).data.metrics:
            counts = Counter(metric.step for metric in client.get_metric_history(run_id, key))
            assert max(counts.values()) == 1, f"{name} {key} logged twice at a step: {counts}"
        if "loss" in client.get_run(run_id).data.metrics:
            logged_steps += [metric.step for metric in client.get_metric_history(run_id, "loss")]
    assert sorted(logged_steps) == [row["step"] for row in history["steps"]] == list(range(1, len(history["steps"]) + 1))
    for key in ("validation_VIF", "validation_mIoU"):
        assert sorted(metric.step for metric in client.get_metric_history(parents[0].info.run_id, key)) == [1, 2]


@pytest.fixture()
def mlflow_server(tmp_path: Path):
    """A real ``mlflow server`` on loopback (SQLite store, proxied artifacts); yields its URI."""
    server = Server(tmp_path, _environment())
    server.start()
    yield server.uri
    server.stop()


def test_a_run_against_an_mlflow_server_holds_its_own_artifacts(tmp_path: Path, mlflow_server: str) -> None:
    from mlflow import MlflowClient

    project = tmp_path / "project"
    project.mkdir()
    write_tiny_params(project / "params.yaml", **{"train.rounds": 2})
    (project / "reports" / "unrelated").mkdir(parents=True)
    (project / "reports" / "unrelated" / "big.bin").write_bytes(b"\0" * 2**20)  # another preset's report
    result = subprocess.run(_pipeline(project, "prepare,train,evaluate,report"), cwd=project, timeout=1200,
                            env=_environment(MLFLOW_TRACKING_URI=mlflow_server, MLFLOW_EXPERIMENT_NAME="served"),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert not (project / "mlflow.db").exists()

    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("served")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([experiment.experiment_id])
    parent = next(run for run in runs if "mlflow.parentRunId" not in run.data.tags)
    assert parent.info.status == "FINISHED" and parent.info.run_name.startswith("params-")
    assert {run.info.status for run in runs} == {"FINISHED"}
    assert {(item.dataset.name, item.tags[0].value) for item in parent.inputs.dataset_inputs} == {
        ("synthetic/train", "training"), ("synthetic/test", "test")}
    assert parent.data.tags["uaafusion.params_file"] == "params.yaml"

    def files(path: str | None = None) -> list:
        found = []
        for item in client.list_artifacts(parent.info.run_id, path):
            found += files(item.path) if item.is_dir else [item]
        return found

    artifacts = {item.path: item.file_size for item in files()}
    images = [path for path in artifacts if path.startswith("images/") and path.endswith(".png")]
    assert len(images) == 2 * 2, "two sample panels for each of the two rounds"
    assert {"+step+1+", "+step+2+"} <= {f"+step+{path.split('+step+')[1].split('+')[0]}+" for path in images}
    for expected in ("report/index.html", "report/README.md", "evaluation/metrics.json",
                     "evaluation/evaluation.json", "params/params.yaml", "model/MLmodel", "training/steps.csv"):
        assert expected in artifacts, expected
    assert not any("unrelated" in path or "benchmarks" in path for path in artifacts)
    assert sum(size for path, size in artifacts.items() if not path.startswith("model/")) < NON_MODEL_ARTIFACT_LIMIT
    version = client.get_model_version_by_alias("uaafusion", "champion")
    assert version.run_id == parent.info.run_id
