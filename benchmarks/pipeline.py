"""Benchmark of the whole embedded pipeline: the wall time of ``dvc repro`` from a fresh copy.

The project's files (``git ls-files -co --exclude-standard``: committed and new, not ignored;
checkpoints, MLflow and Prefect state are ignored, so nothing resumes) are copied into a temporary
folder, which becomes a git repository with one commit; then ``dvc repro --force`` runs every
stage (prepare, train, evaluate, report) there, with the virtual environment's ``bin`` first on
``PATH``, ``PREFECT_HOME`` inside the temporary folder (``prefect-home/``) and no inherited
``MLFLOW_*``/``PREFECT_*``/``DVC_*`` variables. ``--force``: the copied ``dvc.lock`` would
otherwise let DVC skip stages whose dependencies did not change (the report), and the number is
the cost of the whole pipeline.

The result (seconds, and per stage from the time each "Running stage" line appeared) goes into
``reports/pipeline-timing.json`` when the default params ran, and the suite reads that file when
it does not run this benchmark itself (it takes minutes). ``python -m benchmarks --only pipeline``
runs it; ``--quick`` uses tiny params (a smoke test; the timing file is then not written).
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.suite import QUICK_PARAM_OVERRIDES
from benchmarks.timing import machine_info, summarize, utc_now, version_info

PIPELINE_TIMING_FILE = Path("reports") / "pipeline-timing.json"
COMMAND: tuple[str, ...] = ("dvc", "repro", "--force")
STAGE_LINE = re.compile(r"Running stage '([^']+)'")

# Tiny params for a smoke run (seconds per stage, not the embedded default).
QUICK_OVERRIDES: dict[str, Any] = {
    "device": "cpu",
    "synthetic.train": 4,
    "synthetic.test": 2,
    **QUICK_PARAM_OVERRIDES,  # the suite's tiny images and models
    "train.rounds": 1,
    "train.pretrain_epochs": 1,
    "train.fusion_epochs": 1,
    "train.segmentation_epochs": 1,
    "train.joint_epochs": 1,
    "train.retries": 0,
    "report.samples": 1,
}


class PipelineError(RuntimeError):
    """A command of the pipeline benchmark failed (its output tail is in the message)."""


def project_files(root: Path) -> list[str]:
    """Files a fresh checkout of the project holds: ``git ls-files -co --exclude-standard`` under ``root``."""
    result = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root, capture_output=True,
                            check=False)
    if result.returncode != 0:
        raise PipelineError(f"{root}: `git ls-files` failed ({result.stderr.decode(errors='replace').strip()}); "
                            "the pipeline benchmark needs the project's git checkout.")
    return [name for name in result.stdout.decode().split("\0") if name and (root / name).is_file()]


def _environment(copy: Path) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith(("MLFLOW_", "PREFECT_", "DVC_"))}
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    environment["PREFECT_HOME"] = str(copy / "prefect-home")  # ignored by the project's .gitignore
    environment.setdefault("GIT_AUTHOR_NAME", "uaafusion-bench")
    environment.setdefault("GIT_AUTHOR_EMAIL", "bench@example.invalid")
    environment.setdefault("GIT_COMMITTER_NAME", "uaafusion-bench")
    environment.setdefault("GIT_COMMITTER_EMAIL", "bench@example.invalid")
    return environment


def _git(arguments: list[str], cwd: Path, environment: dict[str, str]) -> None:
    result = subprocess.run(["git", *arguments], cwd=cwd, env=environment, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise PipelineError(f"git {' '.join(arguments)} failed in {cwd}: {result.stderr.strip()[-2000:]}")


def prepare_copy(root: Path, destination: Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Copy the project's files to ``destination`` and commit them in a new git repository."""
    import yaml

    files = project_files(root)
    for name in files:
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target)
    if overrides:
        params_path = destination / "params.yaml"
        raw = yaml.safe_load(params_path.read_text())
        for dotted, value in overrides.items():
            node = raw
            *parents, leaf = dotted.split(".")
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = value
        params_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    environment = _environment(destination)
    _git(["init", "-q"], destination, environment)
    _git(["add", "-A"], destination, environment)
    _git(["commit", "-q", "-m", "uaafusion pipeline benchmark"], destination, environment)
    return {"files_copied": len(files), "environment": environment}


def _run_timed(command: list[str], cwd: Path, environment: dict[str, str], timeout: float | None,
               log: Callable[[str], None] | None) -> tuple[float, dict[str, float], str]:
    """Run ``command``, streaming its output; returns (seconds, seconds per stage, output tail)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, bufsize=1)
    stage_starts: list[tuple[str, float]] = []
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            match = STAGE_LINE.search(line)
            if match:
                stage_starts.append((match.group(1), time.perf_counter()))
                if log is not None:
                    log(f"pipeline: stage {match.group(1)}")

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        reader.join(5)
        raise PipelineError(f"`{' '.join(command)}` ran past {timeout} s in {cwd}:\n{''.join(lines[-40:])}") from None
    finished = time.perf_counter()
    reader.join()
    tail = "".join(lines[-60:])
    if code != 0:
        raise PipelineError(f"`{' '.join(command)}` failed (exit {code}) in {cwd}:\n{tail}")
    stages: dict[str, float] = {}
    for index, (name, start) in enumerate(stage_starts):
        end = stage_starts[index + 1][1] if index + 1 < len(stage_starts) else finished
        stages[name] = stages.get(name, 0.0) + (end - start)
    return finished - started, stages, tail


def benchmark_pipeline(root: str | Path = ".", repeats: int = 1, quick: bool = False, keep: bool = False,
                       timeout: float | None = None, write: bool | None = None,
                       log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time ``dvc repro --force`` in ``repeats`` fresh copies of the project at ``root``.

    Returns the record (timing summary, per-stage seconds of each run, the command, files copied,
    machine, versions). ``write`` (default: not ``quick``) stores it in ``root/reports/pipeline-timing.json``.
    ``keep`` leaves the temporary copies on disk (their paths are in the record).
    """
    root = Path(root).resolve()
    if shutil.which("git") is None:
        raise PipelineError("git is not installed; the pipeline benchmark copies the project into a new repository.")
    if not (Path(sys.executable).parent / "dvc").exists() and shutil.which("dvc") is None:
        raise PipelineError("dvc is not installed in this environment (pip install -e '.[dev]').")
    write = (not quick) if write is None else write
    times: list[float] = []
    runs: list[dict[str, Any]] = []
    copies: list[str] = []
    files_copied = 0
    for run in range(repeats):
        copy = Path(tempfile.mkdtemp(prefix="uaafusion-pipeline-"))
        try:
            if log is not None:
                log(f"pipeline: copying the project to {copy} (run {run + 1}/{repeats})")
            prepared = prepare_copy(root, copy, QUICK_OVERRIDES if quick else None)
            files_copied = prepared["files_copied"]
            seconds, stages, _ = _run_timed(list(COMMAND), copy, prepared["environment"], timeout, log)
            times.append(seconds)
            runs.append({"seconds": seconds, "stages_s": stages})
        finally:
            if keep:
                copies.append(str(copy))
            else:
                shutil.rmtree(copy, ignore_errors=True)
    record: dict[str, Any] = {
        **summarize(times),
        "command": " ".join(COMMAND),
        "params": "tiny (quick smoke run)" if quick else "params.yaml (embedded default)",
        "quick": quick,
        "stages_s": runs[-1]["stages_s"] if runs else {},
        "runs": runs,
        "files_copied": files_copied,
        "source_commit": _head_commit(root),
        "measured_at": utc_now(),
        "machine": machine_info("cpu"),
        "versions": version_info(),
    }
    if copies:
        record["copies"] = copies
    if write:
        path = root / PIPELINE_TIMING_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2) + "\n")
        record["written_to"] = str(PIPELINE_TIMING_FILE)
    return record


def read_pipeline_timing(root: str | Path = ".") -> dict[str, Any] | None:
    """The record stored by a previous :func:`benchmark_pipeline` run, or None."""
    path = Path(root) / PIPELINE_TIMING_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and "median_s" in record else None


def _head_commit(root: Path) -> str | None:
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=False)
    return result.stdout.strip() or None if result.returncode == 0 else None
