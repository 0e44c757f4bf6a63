"""The train step in several processes: the entry point that torchrun starts once per device.

    torchrun --standalone --nproc-per-node 4 -m uaafusion.training.distributed --params params.yaml
    uaafusion train --nproc-per-node 4          # the same, launched by the pipeline flow

Every rank runs every stage on its share of each batch (:mod:`uaafusion.ddp`); rank 0 alone holds the
run folder's lock, opens (or continues) the MLflow parent run, logs the nested runs, writes the
checkpoints and exports the model, as one process would. A killed run resumes from its last checkpoint
on every rank. Started without torchrun's environment it trains in one process.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from torch.distributed.elastic.multiprocessing.errors import record

from uaafusion import ddp
from uaafusion.config import load_params, parse_overrides
from uaafusion.errors import UAAFusionError

LOGGER = logging.getLogger(__name__)


def train_distributed(root: Path, params_file: str, overrides: dict[str, Any] | None = None,
                      run_name: str | None = None) -> Path:
    """Train with the params of ``params_file`` (relative to ``root``) in the process group torchrun
    describes; returns the exported checkpoint (written by rank 0)."""
    from uaafusion.device import resolve_device
    from uaafusion.paths import ProjectPaths
    from uaafusion.steps import with_absolute_data_root
    from uaafusion.tracked_training import export_and_register, open_tracker, run_tracked_stage, start_training_run
    from uaafusion.training import run_fingerprint, run_stage, training_units
    from uaafusion.training.lock import run_folder_lock

    params_path = Path(params_file) if Path(params_file).is_absolute() else root / params_file
    params = load_params(params_path, overrides)
    paths = ProjectPaths.at(root, params.outputs)
    current = ddp.init_process_group(resolve_device(params.device).type, params.train.distributed_timeout_s)
    ddp.check_world(params.data.batch_size)
    run_dir = paths.run_dir(run_fingerprint(params))
    main = current.is_main
    with run_folder_lock(run_dir) if main else contextlib.nullcontext():
        tracker = None
        if main:
            start_training_run(params, paths, params_path, run_dir, run_name, overrides, current.world_size)
            tracker = open_tracker(paths, run_dir)
            tracker.attach_parent()
        ddp.barrier()
        with tracker.running() if tracker is not None else contextlib.nullcontext():
            for stage, round_index in training_units(params):
                if main:
                    run_tracked_stage(params, paths, run_dir, stage, round_index)
                else:
                    run_stage(with_absolute_data_root(params, paths), run_dir, stage, round_index)
            if main:
                export_and_register(params, paths, run_dir)
        ddp.barrier()
    return paths.model_checkpoint


def _exit_on_sigterm(signal_number: int, frame: Any) -> None:
    """torchrun stops the other ranks with SIGTERM when one fails: end as a failure (MLflow: KILLED)."""
    raise SystemExit(128 + signal_number)


@record  # a rank's uncaught error goes to torchrun's summary of the failure
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m uaafusion.training.distributed",
                                     description="The uaafusion train step in each process that torchrun starts.")
    parser.add_argument("--params", default="params.yaml", help="params file (relative to --root)")
    parser.add_argument("--root", default=".", help="project root (default: the current directory)")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a param, e.g. -S train.rounds=1 (value parsed as YAML)")
    parser.add_argument("--run-name", default=None, help="name of a new MLflow parent run")
    args = parser.parse_args(argv)
    rank = ddp.environment_rank()
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(levelname)s [rank {rank}] %(message)s")
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        checkpoint = train_distributed(Path(args.root).resolve(), args.params, parse_overrides(args.set) or None,
                                       args.run_name)
    except UAAFusionError as error:
        print(f"error: rank {rank}: {error}", file=sys.stderr, flush=True)
        return 2
    finally:
        ddp.destroy_process_group()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a late SIGTERM (torchrun stopping us) just ends us
    if rank == 0:
        LOGGER.info("models written to %s", checkpoint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
