"""`dvc repro` in a temporary git clone of the project, with tiny params: the user's main job."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, write_tiny_params


def _run(command: list[str], cwd: Path, env: dict[str, str], timeout: int = 900) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A git repository holding the project's files (as committed or staged) and tiny params."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path_factory.mktemp("clone")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO_ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        source = REPO_ROOT / name
        if source.is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    write_tiny_params(root / "params.yaml")
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_", "PREFECT_", "DVC_"))}
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    environment["PREFECT_HOME"] = str(root.parent / f"{root.name}-prefect-home")
    environment["GIT_AUTHOR_NAME"] = environment["GIT_COMMITTER_NAME"] = "test"
    environment["GIT_AUTHOR_EMAIL"] = environment["GIT_COMMITTER_EMAIL"] = "test@example.invalid"
    _run(["git", "init", "-q", "-b", "main"], root, environment)
    _run(["git", "add", "-A"], root, environment)
    _run(["git", "commit", "-q", "-m", "tiny project"], root, environment)
    return root, environment


@pytest.mark.slow
def test_dvc_repro_runs_the_whole_pipeline_and_tracks_it(clone: tuple[Path, dict[str, str]]) -> None:
    from mlflow import MlflowClient

    root, environment = clone
    _run(["dvc", "repro"], root, environment)
    for output in ("data/synthetic/montage.png", "models/uaafusion.pt", "reports/metrics.json",
                   "reports/evaluation.json", "reports/training/steps.csv", "reports/training/rounds.csv",
                   "reports/index.html", "reports/README.md", "dvc.lock"):
        assert (root / output).exists(), output
    metrics = json.loads((root / "reports/metrics.json").read_text())
    for key in ("EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM", "mIoU"):
        assert isinstance(metrics["ours"][key], float), key

    shown = json.loads(_run(["dvc", "metrics", "show", "--json"], root, environment))
    assert "ours" in json.dumps(shown)
    # Nothing changed: a second repro runs nothing.
    assert "didn't change" in _run(["dvc", "status"], root, environment) or \
        "up to date" in _run(["dvc", "status"], root, environment)
    _run(["dvc", "plots", "show", "-o", str(root / "plots-out")], root, environment)
    assert (root / "plots-out" / "index.html").is_file()

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("uaafusion")
    runs = client.search_runs([experiment.experiment_id])
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    assert len(parents) == 1
    children = {run.data.tags["mlflow.runName"] for run in runs
                if run.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id}
    assert {"pretrain", "round-1/fusion", "round-1/segmentation", "round-1/validation", "evaluate", "report"} <= children
    assert parents[0].data.tags.get("mlflow.source.git.commit")


@pytest.mark.slow
def test_dvc_experiment_with_changed_param(clone: tuple[Path, dict[str, str]]) -> None:
    root, environment = clone
    _run(["dvc", "exp", "run", "-S", "train.rounds=2"], root, environment)
    table = json.loads(_run(["dvc", "exp", "show", "--json"], root, environment))
    assert "train.rounds" in json.dumps(table) or '"rounds": 2' in json.dumps(table)


@pytest.mark.slow
@pytest.mark.parametrize("head", ["alpha_blend", "mask_guided", "prompt"])
def test_dvc_experiment_trains_each_fusion_head(head: str, clone: tuple[Path, dict[str, str]]) -> None:
    root, environment = clone
    _run(["dvc", "exp", "run", "-n", f"head-{head}", "-S", f"model.fusion.name={head}"], root, environment)
    shown = json.dumps(json.loads(_run(["dvc", "exp", "show", "--json"], root, environment)))
    assert f"head-{head}" in shown and f'"name": "{head}"' in shown
    metrics = json.loads((root / "reports" / "metrics.json").read_text())  # the workspace holds the last one
    assert metrics["ours"]["VIF"] > 0


def _queue_status(root: Path, environment: dict[str, str]) -> str:
    return _run(["dvc", "queue", "status"], root, environment)


@pytest.mark.slow
def test_queued_experiments_run_two_at_once_and_track_into_the_repository(clone: tuple[Path, dict[str, str]]) -> None:
    """`dvc queue start -j 2`: both experiments run in temporary copies of the repository at once, share
    its SQLite store (each its own FINISHED parent run and run folder) and leave their runs in it."""
    import time

    from mlflow import MlflowClient

    root, environment = clone
    names = ("queued-a", "queued-b")
    for seed, name in zip((11, 12), names):
        _run(["dvc", "exp", "run", "--queue", "-S", f"seed={seed}", "-n", name], root, environment)
    try:
        _run(["dvc", "queue", "start", "-j", "2"], root, environment)
        deadline = time.monotonic() + 1200
        while any(state in (status := _queue_status(root, environment)) for state in ("Queued", "Running")):
            assert time.monotonic() < deadline, status
            time.sleep(5)
        logs = "\n".join(_run(["dvc", "queue", "logs", name], root, environment)[-3000:] for name in names)
        assert status.count("Success") >= 2 and "Failed" not in status, f"{status}\n{logs}"
    finally:
        subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=root, env=environment, capture_output=True, timeout=120)
    assert not list((root / ".dvc" / "tmp" / "exps").glob("*/mlflow.db"))
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("uaafusion")
    parents = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])
               if "mlflow.parentRunId" not in run.data.tags and run.info.run_name in names}
    assert sorted(parents) == sorted(names)
    assert {run.info.status for run in parents.values()} == {"FINISHED"}
    assert {run.data.params["seed"] for run in parents.values()} == {"11", "12"}
    assert len({run.data.tags["uaafusion.run_dir"] for run in parents.values()}) == 2
    for run in parents.values():  # the artifacts are in the repository's store too
        assert client.list_artifacts(run.info.run_id, "model")
