"""``uaafusion train``: the pipeline's train step (the Prefect flow, locally) with param overrides."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train the fusion network and the segmenter (alternating or joint schedule)",
        description="Run the pipeline's train step: pretrain the segmenter, then rounds of fusion and "
                    "segmentation stages; resumes from the last checkpoint of the same params. "
                    "Tracked in MLflow (parent run + nested runs).",
    )
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--steps", default="train",
                        help="pipeline steps to run, comma-separated (prepare,train,evaluate,report)")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a param, e.g. -S train.rounds=1")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from flows.pipeline import main as pipeline_main

    argv = ["--params", args.params, "--steps", args.steps]
    for item in args.set:
        argv += ["--set", item]
    return pipeline_main(argv)
