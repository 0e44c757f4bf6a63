"""The train step in two processes (torchrun, gloo on the CPU) end to end, as users start it:
``uaafusion train --nproc-per-node 2`` makes one model, one run folder and one MLflow parent run with
each step logged once; a rank killed half-way stops the whole run with a message naming it, and the
same command then resumes from the last checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import write_tiny_params

pytestmark = pytest.mark.slow

UAAFUSION = Path(sys.executable).parent / "uaafusion"
WORLD_SIZE = 2
# Several units, so that a rank can be killed after the first checkpoint and before the end.
LONGER = {"synthetic.train": 8, "train.pretrain_epochs": 3}
STOP_WITHIN_SECONDS = 90


def _environment() -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith(("MLFLOW_", "DVC_", "UAAFUSION_", "OMP_"))}
    return {**environment, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def _train(steps: str = "train") -> list[str]:
    return [str(UAAFUSION), "train", "--steps", steps, "--nproc-per-node", str(WORLD_SIZE)]


def _project(tmp_path: Path, **extra: object) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    write_tiny_params(project / "params.yaml", **extra)
    return project


def _check_one_parent_run(project: Path) -> None:
    """One FINISHED parent run with world_size 2, its nested runs each logging every step once, as many
    steps as the run folder's history, and one run folder with one model."""
    from mlflow import MlflowClient

    (run_folder,) = list((project / "checkpoints").iterdir())
    assert (run_folder / "training-state.pt").is_file() and (project / "models" / "uaafusion.pt").is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("uaafusion").experiment_id])
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    assert len(parents) == 1 and {run.info.status for run in runs} == {"FINISHED"}
    (parent,) = parents
    assert parent.data.params["world_size"] == str(WORLD_SIZE)
    assert parent.data.tags["uaafusion.devices"].startswith(f"{WORLD_SIZE} x cpu")
    history = json.loads((run_folder / "history.json").read_text())
    logged = []
    for run in runs:
        if run is parent or "loss" not in run.data.metrics:
            continue
        steps = [metric.step for metric in client.get_metric_history(run.info.run_id, "loss")]
        assert max(Counter(steps).values()) == 1, f"{run.info.run_name}: a step logged twice"
        logged += steps
    assert sorted(logged) == [row["step"] for row in history["steps"]] == list(range(1, len(history["steps"]) + 1))
    assert "validation_VIF" in parent.data.metrics


def test_two_processes_train_one_model_in_one_parent_run(tmp_path: Path) -> None:
    project = _project(tmp_path)
    result = subprocess.run(_train("prepare,train"), cwd=project, env=_environment(), capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    _check_one_parent_run(project)


def _rank_process(project: Path, rank: int) -> int | None:
    """The pid of training process ``rank`` of the run in ``project`` (from /proc), if it runs."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            environment = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if (b"uaafusion.training.distributed" in command and str(project).encode() in command
                and f"RANK={rank}".encode() in environment):
            return int(entry.name)
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process in /proc")
def test_a_killed_rank_stops_the_run_with_its_name_and_the_rerun_resumes(tmp_path: Path) -> None:
    project = _project(tmp_path, **LONGER)
    subprocess.run(_train("prepare"), cwd=project, env=_environment(), check=True, capture_output=True, timeout=600)
    log_path = tmp_path / "first.log"
    with log_path.open("w") as log:
        first = subprocess.Popen(_train(), cwd=project, env=_environment(), stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not list((project / "checkpoints").glob("*/training-state.pt")):
            assert first.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.1)
        victim = _rank_process(project, 1)
        assert victim is not None, "rank 1 not found"
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        code = first.wait(timeout=STOP_WITHIN_SECONDS)
        stopped_after = time.monotonic() - killed_at
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    output = log_path.read_text()
    assert code == 2, output[-3000:]
    assert "rank 1 was killed by SIGKILL" in output and "run the same command again to resume" in output, output[-3000:]
    assert stopped_after < STOP_WITHIN_SECONDS
    assert _rank_process(project, 0) is None, "rank 0 was left running"
    done = len(json.loads(next((project / "checkpoints").glob("*/history.json")).read_text())["units"])
    assert done >= 1

    rerun = subprocess.run(_train(), cwd=project, env=_environment(), capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert f"({done} units done)" in rerun.stdout + rerun.stderr
    _check_one_parent_run(project)
