"""Kill anywhere: SIGKILL during prepare, during the per-round attribution weights, during evaluate
(some fused images written) and during report; each step run again finishes, and the outputs are
byte for byte those of a run that was never interrupted (one thread, so both runs compute the same
numbers). No output is ever half-written: after each kill every output file is whole (the killed
writer's bytes are in a temporary ``.NAME.tmp`` beside it, never under the output's name), and after
the reruns no temporary file is left in an output.

The kills are real SIGKILLs at exact places, armed through ``UAAFUSION_FAILPOINT``
(:mod:`uaafusion.failpoints`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.helpers import write_tiny_params

pytestmark = pytest.mark.slow

# Two attribution batches a round (4 training images, batches of 2), two test pairs.
PARAMS = {"synthetic.train": 4}
OUTPUT_FOLDERS = ("data/synthetic", "data/fused", "reports")
# Files that name their own run (MLflow run ids, commit, times): compared without those fields.
RUN_RECORDS = {"reports/build.json"}


def _environment(**extra: str) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith(("MLFLOW_", "DVC_", "UAAFUSION_"))}
    environment.update({"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "OMP_NUM_THREADS": "1",
                        "MKL_NUM_THREADS": "1", **extra})
    return environment


def _step(project: Path, step: str, failpoint: str | None = None) -> int:
    """Run one pipeline step in a session of its own; returns its exit status. Output goes to files,
    not pipes: a killed run's local Prefect server outlives it and would hold a pipe open. What is left
    of the session (that server) is killed afterwards."""
    environment = _environment(**({"UAAFUSION_FAILPOINT": failpoint} if failpoint else {}))
    log = project.parent / f"{project.name}-{step}{'-killed' if failpoint else ''}.log"
    with open(log, "w") as output:
        process = subprocess.Popen([sys.executable, "-m", "flows.pipeline", "--root", str(project), "--steps", step],
                                   cwd=project, env=environment, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            returncode = process.wait(timeout=900)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    if failpoint is None:
        assert returncode == 0, f"{step} failed:\n{log.read_text()[-6000:]}"
    else:
        assert returncode == -signal.SIGKILL, f"{step} was not killed at {failpoint} ({returncode}):\n{log.read_text()[-6000:]}"
    return returncode


def _outputs(project: Path) -> dict[str, Path]:
    files = {}
    for folder in OUTPUT_FOLDERS:
        for path in sorted((project / folder).rglob("*")):
            if path.is_file():
                files[path.relative_to(project).as_posix()] = path
    return files


def _temporaries(project: Path) -> list[str]:
    return [name for name in _outputs(project) if Path(name).name.endswith(".tmp")]


def _assert_every_output_whole(project: Path) -> None:
    """Every PNG decodes completely and every JSON parses: nothing half-written under a real name."""
    import json

    for name, path in _outputs(project).items():
        if name.endswith(".tmp"):
            continue
        if name.endswith(".png"):
            with Image.open(path) as image:
                image.load()
        elif name.endswith(".json"):
            json.loads(path.read_text())


def _comparable(project: Path, name: str, path: Path) -> bytes:
    """The file's bytes, without what names its own run: the MLflow parent run's id (in the report's
    pages), and in ``build.json`` the commit, the parent run and the time."""
    import json

    if name in RUN_RECORDS:
        record = json.loads(path.read_text())
        return json.dumps({key: value for key, value in record.items()
                           if key not in ("git_commit", "mlflow_parent_run", "created")}).encode()
    parent_run = json.loads((project / "models/mlflow-run.json").read_text())["parent_run_id"]
    return path.read_bytes().replace(parent_run.encode(), b"<parent run>")


def test_every_step_killed_and_run_again_gives_the_outputs_of_an_uninterrupted_run(tmp_path: Path) -> None:
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    for project in (reference, killed):
        project.mkdir()
        write_tiny_params(project / "params.yaml", **PARAMS)
    for step in ("prepare", "train", "evaluate", "report"):
        _step(reference, step)

    kills = {
        "prepare": "write:*/synthetic/train/ir/*@3",       # the third training image of prepare
        "train": "attribution:*@2",                        # round 1's weights, one batch of two done
        "evaluate": "write:*/fused/ours/*@2",               # one of our two fused test images written
        "report": "write:*/reports/figures/*@2",           # the second figure
    }
    for step, failpoint in kills.items():
        _step(killed, step, failpoint)
        _assert_every_output_whole(killed)
        if failpoint.startswith("write:"):
            assert _temporaries(killed), f"the {step} kill left no temporary file: it did not hit a write"
        _step(killed, step)
        _assert_every_output_whole(killed)
        assert not _temporaries(killed), f"{step} run again left temporary files: {_temporaries(killed)}"

    expected, actual = _outputs(reference), _outputs(killed)
    assert sorted(actual) == sorted(expected)
    different = [name for name in expected
                 if _comparable(reference, name, expected[name]) != _comparable(killed, name, actual[name])]
    assert not different, f"outputs differ from the uninterrupted run's: {different}"
    model_reference = torch.load(reference / "models/uaafusion.pt", map_location="cpu", weights_only=False)
    model_killed = torch.load(killed / "models/uaafusion.pt", map_location="cpu", weights_only=False)
    # (Their digests differ: they cover the run's fingerprint, which names the project's own data folder.)
    assert model_killed["extra"]["units"] == model_reference["extra"]["units"]
    for state in ("fusion_state", "segmenter_state"):
        for key, tensor in model_reference[state].items():
            assert torch.equal(tensor, model_killed[state][key]), f"{state} {key} differs"

    with sqlite3.connect(f"file:{killed / 'mlflow.db'}?mode=ro", uri=True) as connection:
        statuses = dict(connection.execute("select name, status from runs").fetchall())
    assert "RUNNING" not in statuses.values(), f"runs left RUNNING after the reruns: {statuses}"
