"""Benchmark of the distributed engine: samples per second of one training round (fusion stage with
its attribution weights, segmentation stage) in one process with N threads against N processes of one
thread each (torchrun, ``gloo`` on the CPU, ``nccl`` on CUDA: one process per GPU).

On a CPU this is the engine's overhead (the same cores either way), not a speed-up claim. The round
runs on the params' data in a scratch project (the embedded synthetic set is written there).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from benchmarks.timing import log, summarize


# --quick: a few scenes and one fusion epoch (the rest of the params is already shrunk by the suite).
QUICK_ROUND = {"synthetic": {"train": 6, "test": 2}, "train": {"fusion_epochs": 1, "segmentation_epochs": 1}}


def benchmark_distributed(params: Any, device_type: str, processes: int, repeats: int,
                          quick: bool = False) -> dict[str, dict[str, Any]]:
    """``distributed/1x{N}-threads`` and ``distributed/{N}x1-threads`` cases (CPU), or ``distributed/1-gpu``
    and ``distributed/{N}-gpus`` (CUDA), each with ``samples_per_s``."""
    from uaafusion.paths import ProjectPaths
    from uaafusion.steps import prepare_step

    with tempfile.TemporaryDirectory(prefix="uaafusion-ddp-bench-") as scratch:
        project = Path(scratch)
        raw = params.to_dict()
        raw["data"]["root"] = str(project / "data" / "synthetic")  # the workers run in the repository
        for section, values in (QUICK_ROUND.items() if quick else ()):
            raw[section].update(values)
        (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        from uaafusion.config import load_params

        local = load_params(project / "params.yaml")
        prepare_step(local, ProjectPaths.at(project, local.outputs))
        settings = ([("1-gpu", 1, None), (f"{processes}-gpus", processes, None)] if device_type == "cuda"
                    else [(f"1x{processes}-threads", 1, processes), (f"{processes}x1-threads", processes, 1)])
        cases = {}
        for name, world_size, threads in settings:
            runs = [_one_round(project, world_size, threads, index) for index in range(repeats)]
            summary = summarize([run["seconds"] for run in runs])
            samples = runs[-1]["samples"]
            cases[f"distributed/{name}"] = {**summary, "processes": world_size, "threads_per_process": threads,
                                            "steps": runs[-1]["steps"], "samples": samples,
                                            "samples_per_s": samples / summary["median_s"]}
            log(f"distributed/{name}: {samples / summary['median_s']:.2f} samples/s")
    return cases


def _one_round(project: Path, world_size: int, threads: int | None, index: int) -> dict[str, Any]:
    run_dir = project / "runs" / f"{world_size}-{index}"
    out = project / f"round-{world_size}-{index}.json"
    worker = ["-m", "benchmarks.distributed_round", "--root", str(project), "--run-dir", str(run_dir), "--out", str(out)]
    command = ([sys.executable, *worker] if world_size == 1 else
               [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(world_size), *worker])
    environment = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    result = subprocess.run(command, env=environment, capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return json.loads(out.read_text())
