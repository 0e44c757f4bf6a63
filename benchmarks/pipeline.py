"""Benchmark of the whole embedded pipeline: the wall time of ``dvc repro --force`` in a fresh copy.

The project's files (``git ls-files -co --exclude-standard``: committed and new, not ignored, so no
checkpoint, MLflow or Prefect state to resume from) are copied into a temporary folder, which becomes
a git repository with one commit; ``dvc repro --force`` then runs every stage there (``--force``: the
copied ``dvc.lock`` would let DVC skip stages whose dependencies did not change), with the virtual
environment's ``bin`` first on ``PATH``, ``PREFECT_HOME`` inside the copy and no inherited
``MLFLOW_*``/``PREFECT_*``/``DVC_*`` variables. Per stage: the time from its "Running stage" line
to the next one.

The record goes to ``reports/pipeline-timing.json`` (not with ``--quick``: tiny params, a smoke
test), which the suite reads when it does not run this section (it takes minutes).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.suite import QUICK_PARAM_OVERRIDES
from benchmarks.timing import log, machine_info, summarize, utc_now, version_info

PIPELINE_TIMING_FILE = Path("reports") / "pipeline-timing.json"
COMMAND: tuple[str, ...] = ("dvc", "repro", "--force")
STAGE_LINE = re.compile(r"Running stage '([^']+)'")
QUICK_OVERRIDES: dict[str, Any] = {
    "device": "cpu", "synthetic.train": 4, "synthetic.test": 2, **QUICK_PARAM_OVERRIDES, "train.rounds": 1,
    "train.pretrain_epochs": 1, "train.fusion_epochs": 1, "train.segmentation_epochs": 1, "train.joint_epochs": 1,
    "train.retries": 0, "report.samples": 1,
}


class PipelineError(RuntimeError):
    """A command of the pipeline benchmark failed (its output tail is in the message)."""


def _git(arguments: list[str], cwd: Path, environment: dict[str, str] | None = None) -> str:
    result = subprocess.run(["git", *arguments], cwd=cwd, env=environment, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise PipelineError(f"git {' '.join(arguments)} failed in {cwd} (the pipeline benchmark needs the "
                            f"project's git checkout): {result.stderr.strip()[-2000:]}")
    return result.stdout


def project_files(root: Path) -> list[str]:
    """Files a fresh checkout of the project holds: ``git ls-files -co --exclude-standard`` under ``root``."""
    names = _git(["ls-files", "-co", "--exclude-standard", "-z"], root).split("\0")
    return [name for name in names if name and (root / name).is_file()]


def prepare_copy(root: Path, destination: Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Copy the project's files to ``destination`` (``overrides``: dotted keys set in its ``params.yaml``)
    and commit them in a new git repository. Returns ``files_copied`` and the ``environment`` to run in."""
    import yaml

    files = project_files(root)
    for name in files:
        (destination / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, destination / name)
    if overrides:
        raw = yaml.safe_load((destination / "params.yaml").read_text())
        for dotted, value in overrides.items():
            *parents, leaf = dotted.split(".")
            node = raw
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = value
        (destination / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith(("MLFLOW_", "PREFECT_", "DVC_"))}
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    environment["PREFECT_HOME"] = str(destination / "prefect-home")  # ignored by the project's .gitignore
    for role in ("AUTHOR", "COMMITTER"):
        environment.setdefault(f"GIT_{role}_NAME", "uaafusion-bench")
        environment.setdefault(f"GIT_{role}_EMAIL", "bench@example.invalid")
    for arguments in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "uaafusion pipeline benchmark"]):
        _git(arguments, destination, environment)
    return {"files_copied": len(files), "environment": environment}


def _run_timed(cwd: Path, environment: dict[str, str], timeout: float | None) -> tuple[float, dict[str, float]]:
    """Run :data:`COMMAND` in ``cwd``, reading its output as it comes; returns (seconds, seconds per stage)."""
    started = time.perf_counter()
    process = subprocess.Popen(COMMAND, cwd=cwd, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, bufsize=1)
    stage_starts: list[tuple[str, float]] = []
    lines: list[str] = []

    def read() -> None:
        for line in process.stdout or ():
            lines.append(line)
            if match := STAGE_LINE.search(line):
                stage_starts.append((match.group(1), time.perf_counter()))
                log(f"pipeline: stage {match.group(1)}")

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        reader.join(5)
        raise PipelineError(f"`{' '.join(COMMAND)}` ran past {timeout} s in {cwd}:\n{''.join(lines[-40:])}") from None
    finished = time.perf_counter()
    reader.join()
    if code != 0:
        raise PipelineError(f"`{' '.join(COMMAND)}` failed (exit {code}) in {cwd}:\n{''.join(lines[-60:])}")
    stages: dict[str, float] = {}
    for (name, start), (_, end) in zip(stage_starts, [*stage_starts[1:], ("", finished)]):
        stages[name] = stages.get(name, 0.0) + end - start
    return finished - started, stages


def benchmark_pipeline(root: Path, repeats: int = 1, quick: bool = False, keep: bool = False,
                       timeout: float | None = None) -> dict[str, Any]:
    """Time ``dvc repro --force`` in ``repeats`` fresh copies of the project at ``root``.

    Returns the record (timing summary, per-stage seconds of each run, the command, files copied,
    machine, versions), also written to ``root/reports/pipeline-timing.json`` unless ``quick``.
    ``keep`` leaves the temporary copies on disk (their paths are in the record).
    """
    root = Path(root).resolve()
    if shutil.which("git") is None:
        raise PipelineError("git is not installed; the pipeline benchmark copies the project into a new repository.")
    if not (Path(sys.executable).parent / "dvc").exists() and shutil.which("dvc") is None:
        raise PipelineError("dvc is not installed in this environment (pip install -e '.[dev]').")
    runs: list[dict[str, Any]] = []
    copies: list[str] = []
    files_copied = 0
    for run in range(repeats):
        copy = Path(tempfile.mkdtemp(prefix="uaafusion-pipeline-"))
        try:
            log(f"pipeline: copying the project to {copy} (run {run + 1}/{repeats})")
            prepared = prepare_copy(root, copy, QUICK_OVERRIDES if quick else None)
            files_copied = prepared["files_copied"]
            seconds, stages = _run_timed(copy, prepared["environment"], timeout)
            runs.append({"seconds": seconds, "stages_s": stages})
        finally:
            if keep:
                copies.append(str(copy))
            else:
                shutil.rmtree(copy, ignore_errors=True)
    try:
        commit: str | None = _git(["rev-parse", "HEAD"], root).strip() or None
    except PipelineError:
        commit = None
    record: dict[str, Any] = {
        **summarize([run["seconds"] for run in runs]), "command": " ".join(COMMAND),
        "params": "tiny (quick smoke run)" if quick else "params.yaml (embedded default)", "quick": quick,
        "stages_s": runs[-1]["stages_s"], "runs": runs, "files_copied": files_copied, "source_commit": commit,
        "measured_at": utc_now(), "machine": machine_info("cpu"), "versions": version_info(),
        **({"copies": copies} if copies else {}),
    }
    if not quick:
        (root / PIPELINE_TIMING_FILE).parent.mkdir(parents=True, exist_ok=True)
        (root / PIPELINE_TIMING_FILE).write_text(json.dumps(record, indent=2) + "\n")
        record["written_to"] = str(PIPELINE_TIMING_FILE)
    return record


def read_pipeline_timing(root: Path) -> dict[str, Any] | None:
    """The record stored by a previous :func:`benchmark_pipeline` run, or None."""
    try:
        record = json.loads((Path(root) / PIPELINE_TIMING_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and "median_s" in record else None
