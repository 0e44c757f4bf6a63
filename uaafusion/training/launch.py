"""Launching the train step in several processes with torchrun (``uaafusion train --nproc-per-node N``,
the Prefect flow's ``gpus`` parameter).

torchrun starts :mod:`uaafusion.training.distributed` once per device on this node (``--standalone``:
its own rendezvous on a free port) and, when one process fails, stops the others; the failure is
reported here with the failing rank's own message.
"""

from __future__ import annotations

import collections
import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from uaafusion.errors import TrainingError

# torchrun's summary of a failed worker: "rank: 1 (local_rank: 1)" then "exitcode: -9 (pid: 123)".
_FAILED_RANK = re.compile(r"rank\s*:\s*(\d+)\s*\(local_rank:\s*\d+\)\s*\n\s*exitcode\s*:\s*(-?\d+)")
_RANK_ERROR = re.compile(r"^error: rank \d+: .*")


def torchrun_command(root: str | Path, params_file: str, overrides: dict[str, Any] | None, run_name: str | None,
                     processes: int) -> list[str]:
    """The torchrun command line of the train step in ``processes`` processes on this node."""
    sets = [item for key, value in (overrides or {}).items() for item in ("-S", f"{key}={json.dumps(value)}")]
    naming = ["--run-name", run_name] if run_name else []
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
            "--max-restarts", "0", "-m", "uaafusion.training.distributed", "--root", str(root), "--params", params_file,
            *sets, *naming]


def launch_training(root: str | Path, params_file: str, overrides: dict[str, Any] | None, run_name: str | None,
                    processes: int) -> Path:
    """Run the train step in ``processes`` processes (one per GPU on CUDA, else CPU processes with ``gloo``),
    its output passed through; returns the exported checkpoint.

    Raises :class:`TrainingError` naming the rank that failed, how, and its own error message when one
    process fails (torchrun has stopped the others by then); the run folder keeps the last checkpoint.
    """
    from uaafusion.config import load_params
    from uaafusion.device import resolve_device
    from uaafusion.paths import ProjectPaths

    root = Path(root).resolve()
    params = load_params(Path(params_file) if Path(params_file).is_absolute() else root / params_file, overrides)
    check_processes(processes, resolve_device(params.device).type)
    tail: collections.deque[str] = collections.deque(maxlen=400)
    process = subprocess.Popen(torchrun_command(root, params_file, overrides, run_name, processes), cwd=root,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    try:
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            tail.append(line.rstrip("\n"))
        code = process.wait()
    except BaseException:
        process.terminate()  # torchrun passes it on to every rank
        process.wait()
        raise
    if code != 0:
        raise TrainingError(failure_message(list(tail), processes) + " The run folder keeps its last checkpoint: "
                            "run the same command again to resume from it.")
    return ProjectPaths.at(root, params.outputs).model_checkpoint


def check_processes(processes: int, device_type: str) -> None:
    """One process per GPU: at least 1, and on CUDA at most the GPUs this node shows."""
    if processes < 1:
        raise TrainingError(f"--nproc-per-node / gpus = {processes}: give a number of processes >= 1.")
    if device_type == "cuda":
        import torch

        available = torch.cuda.device_count()
        if processes > available:
            raise TrainingError(f"--nproc-per-node / gpus = {processes} but this node has {available} GPU(s) "
                                "(CUDA_VISIBLE_DEVICES limits them): start at most that many processes.")


def failure_message(lines: list[str], processes: int) -> str:
    """What went wrong, from torchrun's output: the rank that failed first and its exit code or signal
    (torchrun's "Root Cause"), the ranks that failed after it (they lost their peer), and the ranks' own
    ``error: rank N: ...`` lines."""
    text = "\n".join(lines)
    root = text.rfind("Root Cause")
    first = _FAILED_RANK.findall(text[root:]) if root >= 0 else []
    failures = first + [found for found in _FAILED_RANK.findall(text[:root] if root >= 0 else text)
                        if found not in first]
    parts = [f"distributed training ({processes} processes) failed"]
    described = [_describe(int(rank), int(code)) for rank, code in failures]
    if described:
        parts.append(": " + described[0])
    if len(described) > 1:
        parts.append(" (first; then " + ", ".join(described[1:]) + ")")
    errors = [line for line in lines if _RANK_ERROR.match(line)]
    if errors:
        parts.append(": " + " | ".join(dict.fromkeys(errors)))
    elif not described:
        parts.append(":\n" + "\n".join(lines[-30:]))
    return "".join(parts) + "."


def _describe(rank: int, code: int) -> str:
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"ended with exit code {code}"
    return f"rank {rank} {how}"
