"""The Prefect deployment (prefect.yaml) end to end: a real Prefect server, a process work pool,
`prefect deploy`, a `prefect worker` that runs the flow in a subprocess, on tiny params.

Everything runs in a temporary copy of the project (the files `git ls-files -co --exclude-standard`
lists), with its own PREFECT_HOME, so nothing touches the checkout or the user's Prefect setup.
The deployment's GPU job variables are overridden for this CPU machine as a user would
(`prefect deploy --pool ... --job-variable ...`); a run with ``UAAFUSION_DEVICE=cuda`` and no
visible GPU must fail with the device error, never fall back to the CPU.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.helpers import REPO_ROOT, write_tiny_params

BIN = Path(sys.executable).parent
PREFECT = BIN / "prefect"
FLOW_NAME = "uaafusion-pipeline"
DEPLOYMENT_NAME = "uaafusion-gpu"
POOL = "cpu-test"  # not the file's `gpu`: the pool is overridable with --pool
SERVER_START_TIMEOUT = 180
FLOW_RUN_TIMEOUT = 600
CPU_ENV = {"UAAFUSION_DEVICE": "cpu", "CUDA_VISIBLE_DEVICES": ""}


def test_prefect_yaml_deploys_the_pipeline_on_a_gpu_pool() -> None:
    """Fast check of the file itself: what the slow tests below deploy for real."""
    import inspect

    import yaml

    from flows.pipeline import pipeline

    config = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    assert not config.get("build") and not config.get("push")  # nothing needs the network
    assert config["pull"] == [{"prefect.deployments.steps.set_working_directory": {
        "directory": "{{ $UAAFUSION_PROJECT_DIR }}"}}]
    (deployment,) = [deployment for deployment in config["deployments"] if deployment["name"] == DEPLOYMENT_NAME]
    assert deployment["entrypoint"] == "flows/pipeline.py:pipeline"
    assert pipeline.name == FLOW_NAME
    assert set(deployment["parameters"]) <= set(inspect.signature(pipeline.fn).parameters)
    assert deployment["work_pool"]["name"] == "gpu"
    assert deployment["work_pool"]["job_variables"]["env"] == {"CUDA_VISIBLE_DEVICES": "0",
                                                               "UAAFUSION_DEVICE": "cuda",
                                                               "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "60",
                                                               "PREFECT_LOGGING_EXTRA_LOGGERS": "uaafusion"}
    # The crash detection waits for more than two missed heartbeats.
    from flows.automations import DEFAULT_WITHIN_SECONDS

    assert DEFAULT_WITHIN_SECONDS > 2 * int(deployment["work_pool"]["job_variables"]["env"][
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"])


@dataclass
class Stack:
    project: Path
    env: dict[str, str]
    api_url: str
    logs: Path
    processes: list[tuple[subprocess.Popen, Path]] = field(default_factory=list)

    def start(self, name: str, command: list[str], cwd: Path) -> subprocess.Popen:
        """Start a subprocess in its own session, its output in ``logs/<name>.log``."""
        log = self.logs / f"{name}.log"
        with log.open("ab") as handle:
            process = subprocess.Popen([str(part) for part in command], cwd=cwd, env=self.env, stdout=handle,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.processes.append((process, log))
        return process

    def log_tails(self, characters: int = 4000) -> str:
        parts = []
        for process, log in self.processes:
            text = log.read_text(errors="replace") if log.is_file() else ""
            parts.append(f"----- {log.name} (pid {process.pid}, exit {process.poll()}) -----\n{text[-characters:]}")
        return "\n".join(parts)

    def cli(self, *args: str, cwd: Path | None = None, timeout: int = 300, without: tuple[str, ...] = ()) -> str:
        env = {key: value for key, value in self.env.items() if key not in without}
        result = subprocess.run([str(PREFECT), *args], cwd=cwd or self.project, env=env, capture_output=True,
                                text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, (f"prefect {' '.join(args)} failed ({result.returncode}):\n"
                                        f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}\n{self.log_tails()}")
        return result.stdout


def _stop(process: subprocess.Popen, grace_seconds: float = 15.0) -> None:
    """Terminate the process group this test started (by its id), then kill it after a grace period."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            pass
    try:  # the group may outlive its leader (a flow-run process of the worker)
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _copy_project(destination: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO_ROOT, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    for name in files:
        source = REPO_ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def _wait_for_health(stack: Stack, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the Prefect server exited ({server.returncode}) before answering:\n{stack.log_tails()}")
        try:
            with urllib.request.urlopen(f"{stack.api_url}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(1)
    pytest.fail(f"the Prefect server did not answer {stack.api_url}/health in {SERVER_START_TIMEOUT} s:\n"
                f"{stack.log_tails()}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A Prefect server, a process pool and the deployment from prefect.yaml, all in a project copy."""
    if not PREFECT.is_file():
        pytest.skip(f"no prefect executable next to {sys.executable}")
    base = tmp_path_factory.mktemp("deployment")
    project = _copy_project(base / "project")
    # device: auto, so that the job variable UAAFUSION_DEVICE decides (as on the GPU host).
    write_tiny_params(project / "params.yaml", device="auto")
    logs = base / "logs"
    logs.mkdir()
    api_url = f"http://127.0.0.1:{_free_port()}/api"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("MLFLOW_", "PREFECT_", "DVC_", "UAAFUSION_", "CUDA_VISIBLE_DEVICES"))}
    env.update({
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "PREFECT_HOME": str(base / "prefect-home"),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_CLI_COLORS": "false",
        "PREFECT_CLI_WRAP_LINES": "false",
        # Where the deployment's pull step finds the project on this "worker host".
        "UAAFUSION_PROJECT_DIR": str(project),
        "OMP_NUM_THREADS": "2",
    })
    stack = Stack(project=project, env=env, api_url=api_url, logs=logs)
    try:
        port = api_url.rsplit(":", 1)[1].split("/")[0]
        server = stack.start("server", [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", port,
                                        "--no-ui", "--analytics-off"], cwd=base)
        _wait_for_health(stack, server)
        stack.cli("work-pool", "create", POOL, "--type", "process")
        job_variables = json.dumps({"env": CPU_ENV})
        # Deployed without UAAFUSION_PROJECT_DIR (as from a laptop): the pull step keeps the
        # placeholder and the worker host resolves it (set in the worker's environment).
        stack.cli("--no-prompt", "deploy", "-n", DEPLOYMENT_NAME, "--pool", POOL, "--job-variable", job_variables,
                  without=("UAAFUSION_PROJECT_DIR",))
        yield stack
    finally:
        for process, _ in reversed(stack.processes):
            _stop(process)


@contextlib.contextmanager
def _client(stack: Stack) -> Iterator[Any]:
    """A synchronous Prefect client of the test's server (not the user's configured one)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: stack.api_url}):
        with get_client(sync_client=True) as client:
            yield client


def _run_deployment_on_worker(stack: Stack, name: str, parameters: dict[str, Any],
                              job_variables: dict[str, Any] | None = None):
    """Create a flow run of the deployment, let a `--run-once` worker run it, return it when final."""
    with _client(stack) as client:
        deployment = client.read_deployment_by_name(f"{FLOW_NAME}/{DEPLOYMENT_NAME}")
        flow_run = client.create_flow_run_from_deployment(deployment.id, parameters=parameters,
                                                          job_variables=job_variables, name=name)
        worker = stack.start(f"worker-{name}", [PREFECT, "worker", "start", "--pool", POOL, "--run-once",
                                                "--name", f"worker-{name}"], cwd=stack.logs)
        deadline = time.monotonic() + FLOW_RUN_TIMEOUT
        worker_gone_since = None
        while True:
            flow_run = client.read_flow_run(flow_run.id)
            if flow_run.state is not None and flow_run.state.is_final():
                break
            now = time.monotonic()
            if now > deadline:
                pytest.fail(f"flow run {name} is still {flow_run.state_name} after {FLOW_RUN_TIMEOUT} s:\n"
                            f"{stack.log_tails()}")
            if worker.poll() is not None:
                worker_gone_since = worker_gone_since or now
                if now - worker_gone_since > 30:
                    pytest.fail(f"the worker exited ({worker.returncode}) but flow run {name} is still "
                                f"{flow_run.state_name}:\n{stack.log_tails()}")
            time.sleep(2)
        try:  # --run-once: the worker exits once its flow run is over
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            _stop(worker)
    return flow_run


def _flow_run_logs(stack: Stack, flow_run_id: Any, wait_for: str, timeout: float = 30.0) -> str:
    """The flow run's log messages on the server, once ``wait_for`` is among them (or after ``timeout``)."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + timeout
    with _client(stack) as client:
        while True:
            records = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                                       limit=200)
            text = "\n".join(record.message for record in records)
            if wait_for in text or time.monotonic() > deadline:
                return text
            time.sleep(1)


@pytest.mark.slow
def test_deployment_from_prefect_yaml_keeps_the_runtime_pull_step(stack: Stack) -> None:
    with _client(stack) as client:
        deployment = client.read_deployment_by_name(f"{FLOW_NAME}/{DEPLOYMENT_NAME}")
    assert deployment.entrypoint == "flows/pipeline.py:pipeline"
    assert deployment.work_pool_name == POOL
    assert deployment.job_variables == {"env": CPU_ENV}
    # The project directory is resolved on the worker when a run starts, not at deploy time.
    assert deployment.pull_steps == [{"prefect.deployments.steps.set_working_directory": {
        "directory": "{{ $UAAFUSION_PROJECT_DIR }}"}}]
    assert deployment.parameters["params_file"] == "params.yaml"


@pytest.mark.slow
def test_worker_runs_the_deployment_and_tracks_it_in_mlflow(stack: Stack) -> None:
    from mlflow import MlflowClient

    flow_run = _run_deployment_on_worker(
        stack, "cpu-run", parameters={"rounds": 1, "overrides": {"report.samples": 1}})
    logs = _flow_run_logs(stack, flow_run.id, wait_for="Finished in state")
    assert flow_run.state.is_completed(), (f"flow run ended {flow_run.state_name}: {flow_run.state.message}\n"
                                           f"{logs[-4000:]}\n{stack.log_tails()}")
    project = stack.project
    # The pull step moved the run into the project copy; the flow logged the device it used.
    assert f"device cpu, project {project.resolve()}" in logs, logs[-4000:]
    for output in ("models/uaafusion.pt", "reports/metrics.json", "reports/index.html",
                   "data/synthetic/montage.png"):
        assert (project / output).is_file(), output
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert "mIoU" in metrics["ours"]
    assert any((project / "checkpoints").iterdir())

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("uaafusion")
    runs = client.search_runs([experiment.experiment_id])
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == "cpu-run"  # the Prefect flow run's name
    assert parent.data.tags["uaafusion.device"] == "cpu"
    assert parent.data.params["train.rounds"] == "1"
    children = {run.data.tags["mlflow.runName"]: run for run in runs
                if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert {"pretrain", "round-1/fusion", "round-1/segmentation", "round-1/validation",
            "evaluate", "report"} <= set(children)
    assert children["report"].data.params["report.samples"] == "1"  # deployment parameters reach the params
    assert list((project / "mlartifacts").rglob("uaafusion.pt"))


@pytest.mark.slow
def test_worker_runs_the_train_step_in_two_processes(stack: Stack) -> None:
    """``-p gpus=2``: the flow run on the worker trains under torchrun (two CPU processes here)."""
    from mlflow import MlflowClient

    flow_run = _run_deployment_on_worker(stack, "two-process-run", parameters={
        "steps": ["prepare", "train"], "rounds": 1, "gpus": 2, "overrides": {"seed": 1}})
    logs = _flow_run_logs(stack, flow_run.id, wait_for="Finished in state")
    assert flow_run.state.is_completed(), (f"flow run ended {flow_run.state_name}: {flow_run.state.message}\n"
                                           f"{logs[-4000:]}\n{stack.log_tails()}")
    assert "by 2 training processes" in logs, logs[-4000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{stack.project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("uaafusion").experiment_id],
                              filter_string="attributes.run_name = 'two-process-run'")
    (parent,) = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    assert parent.info.status == "FINISHED" and parent.data.params["world_size"] == "2"
    assert parent.data.tags["uaafusion.devices"].startswith("2 x cpu")


@pytest.mark.slow
def test_worker_refuses_cuda_without_a_gpu(stack: Stack) -> None:
    # Per-run job variables are merged into the deployment's env; no GPU is visible to the run.
    flow_run = _run_deployment_on_worker(
        stack, "cuda-run", parameters={"steps": ["prepare"]},
        job_variables={"env": {"UAAFUSION_DEVICE": "cuda", "CUDA_VISIBLE_DEVICES": ""}})
    assert flow_run.state.is_failed(), f"flow run ended {flow_run.state_name}: {flow_run.state.message}"
    assert "CUDA is not available" in (flow_run.state.message or ""), flow_run.state.message
    logs = _flow_run_logs(stack, flow_run.id, wait_for="DeviceError")
    assert "DeviceError" in logs and "CUDA is not available" in logs, logs[-4000:]
    # Refused before any work: not one task of the flow ran.
    assert "pipeline: steps" not in logs
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with _client(stack) as client:
        assert client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id]))) == []


def _kill_process_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process below it, as when the worker's host or container dies (the
    worker starts each flow run in a session of its own, so its process group alone is not enough)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, queue = [], [pid]
    while queue:
        current = queue.pop()
        tree.append(current)
        queue += children.get(current, [])
    for member in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)


@pytest.mark.slow
def test_a_killed_worker_leaves_a_crashed_flow_run_and_the_deployment_resumes(stack: Stack) -> None:
    """The worker and its flow-run process are killed after the first checkpoint: the crash detection
    (flows.automations, heartbeats every 30 s) sets the run Crashed; the deployment run again resumes."""
    within = 45
    result = subprocess.run([sys.executable, "-m", "flows.automations", "--within", str(within)],
                            cwd=stack.project, env=stack.env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    parameters = {"rounds": 2, "steps": ["prepare", "train"], "overrides": {"train.pretrain_epochs": 3}}
    job_variables = {"env": {**CPU_ENV, "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
                             "PREFECT_LOGGING_EXTRA_LOGGERS": "uaafusion"}}
    folders_before = set((stack.project / "checkpoints").glob("*"))
    with _client(stack) as client:
        deployment = client.read_deployment_by_name(f"{FLOW_NAME}/{DEPLOYMENT_NAME}")
        flow_run = client.create_flow_run_from_deployment(deployment.id, parameters=parameters,
                                                          job_variables=job_variables, name="worker-killed")
        worker = stack.start("worker-killed", [PREFECT, "worker", "start", "--pool", POOL, "--name",
                                               "worker-killed"], cwd=stack.logs)
        deadline = time.monotonic() + FLOW_RUN_TIMEOUT
        while not [folder for folder in set((stack.project / "checkpoints").glob("*")) - folders_before
                   if (folder / "history.json").is_file()]:
            state = client.read_flow_run(flow_run.id).state
            if state is not None and state.is_final() or time.monotonic() > deadline:
                pytest.fail(f"no checkpoint before the flow run ended ({state}):\n{stack.log_tails()}")
            time.sleep(0.2)
        assert client.read_flow_run(flow_run.id).state.is_running()
        _kill_process_tree(worker.pid)
        killed_at = time.monotonic()
        while not (state := client.read_flow_run(flow_run.id).state).is_final():
            if time.monotonic() - killed_at > within + 30 + 120:
                pytest.fail(f"flow run still {state.name} {time.monotonic() - killed_at:.0f} s after the kill:\n"
                            f"{stack.log_tails()}")
            time.sleep(2)
    assert state.is_crashed(), f"the flow run ended {state.name}: {state.message}"
    assert "No heartbeat" in (state.message or "")
    (run_folder,) = set((stack.project / "checkpoints").glob("*")) - folders_before
    steps_before = len(json.loads((run_folder / "history.json").read_text())["steps"])

    rerun = _run_deployment_on_worker(stack, "worker-killed-again", parameters, job_variables)
    logs = _flow_run_logs(stack, rerun.id, wait_for="Finished in state")
    assert rerun.state.is_completed(), f"the rerun ended {rerun.state_name}: {rerun.state.message}\n{logs[-3000:]}"
    assert f"resuming from {run_folder}" in logs, logs[-3000:]
    assert set((stack.project / "checkpoints").glob("*")) - folders_before == {run_folder}
    steps = [row["step"] for row in json.loads((run_folder / "history.json").read_text())["steps"]]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) > steps_before
