"""One training round timed in each process that torchrun starts (or in a process alone):

    python -m benchmarks.distributed_round --root PROJECT --run-dir DIR --out FILE.json

The fusion stage (attribution weights of every training image, then ``train.fusion_epochs``) and the
segmentation stage of round 1, from the params' untrained models; rank 0 writes ``{"seconds", "steps",
"samples", "world_size", "threads"}`` to ``--out``. Started by :mod:`benchmarks.distributed`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from uaafusion import ddp


def main(argv: list[str] | None = None) -> int:
    from uaafusion.config import load_params
    from uaafusion.device import resolve_device
    from uaafusion.training import run_stage

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, required=True, help="project with params.yaml and its data")
    parser.add_argument("--run-dir", type=Path, required=True, help="a fresh run folder (the same for every rank)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file rank 0 writes")
    args = parser.parse_args(argv)
    params = load_params(args.root / "params.yaml")
    current = ddp.init_process_group(resolve_device(params.device).type, params.train.distributed_timeout_s)
    ddp.barrier()
    started = time.perf_counter()
    for stage in ("fusion", "segmentation"):
        run_stage(params, args.run_dir, stage, 1)
    ddp.barrier()
    seconds = time.perf_counter() - started
    if current.is_main:
        steps = len(json.loads((args.run_dir / "history.json").read_text())["steps"])
        args.out.write_text(json.dumps({"seconds": seconds, "steps": steps, "samples": steps * params.data.batch_size,
                                        "world_size": current.world_size, "threads": torch.get_num_threads()}))
    ddp.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
