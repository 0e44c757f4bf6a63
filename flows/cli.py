"""``uaafusion train``: the pipeline flow run locally, added to the ``uaafusion`` command line through the
entry-point group ``uaafusion.commands`` (the package itself never imports the flows)."""

from __future__ import annotations

import argparse


def register_train_command(subparsers: argparse._SubParsersAction) -> None:
    """Add ``uaafusion train`` (light: Prefect is imported only when the command runs)."""
    parser = subparsers.add_parser(
        "train",
        help="run pipeline steps (default: train) as the Prefect flow, tracked in MLflow",
        description="Run steps of the pipeline flow locally: prepare, train (pretrain the segmenter, then "
                    "rounds of fusion and segmentation stages; resumes from the last checkpoint of the same "
                    "params), evaluate, report. Tracked in MLflow (a parent run, nested runs per stage).",
    )
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--steps", default="train",
                        help="pipeline steps to run, comma-separated (prepare,train,evaluate,report)")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a param, e.g. -S train.rounds=1")
    parser.add_argument("--run-name", default=None,
                        help="name of a new MLflow parent run (default: the DVC experiment, else params stem + time)")
    parser.add_argument("--nproc-per-node", type=int, default=1, metavar="N",
                        help="train in N processes with torchrun: one per GPU (CPU processes with gloo without CUDA)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    # flows.pipeline.main checks steps, params, device and data before Prefect starts (one message, no
    # traceback); the flow's root is the current directory.
    from flows.pipeline import main

    naming = ["--run-name", args.run_name] if args.run_name else []
    return main(["--params", args.params, "--steps", args.steps, *naming, "--nproc-per-node", str(args.nproc_per_node),
                 *(item for value in args.set for item in ("--set", value))])
