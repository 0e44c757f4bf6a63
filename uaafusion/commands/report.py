"""``uaafusion report``: build ``index.html`` and ``README.md`` of the report folder from the pipeline's outputs."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="build the report (metric tables, training curves, sample panels) into the report folder",
        description="Draw figures/ and write index.html and README.md in the report folder (outputs.reports) from "
                    "evaluation.json, comparison.json, generalisation.json, training/*.csv, the fused images, the "
                    "test split and the model (the pipeline's report step, without MLflow). With --render-only, "
                    "rewrite both pages from the files already in the report folder (figures included), without "
                    "the model or the data: after editing the discussion or re-running the evaluation.",
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="params file (default: params.yaml)")
    parser.add_argument("--root", type=Path, default=None,
                        help="project root holding reports/, data/ and models/ (default: the nearest folder above the "
                             "params file that holds dvc.yaml, else the params file's folder)")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a param override the run used (as given to 'uaafusion train -S'); it goes into the "
                             "report's parameters and its reproduce command")
    parser.add_argument("--render-only", action="store_true",
                        help="keep figures/ and rewrite only index.html and README.md (no model or data needed)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from uaafusion.config import load_params, parse_overrides
    from uaafusion.paths import ProjectPaths, project_root_for
    from uaafusion.report import build_report, render_report

    overrides = parse_overrides(args.set)
    params = load_params(args.params, overrides)
    root = args.root if args.root is not None else project_root_for(args.params)
    make = render_report if args.render_only else build_report
    index = make(params, ProjectPaths.at(root, params.outputs), params_file=Path(args.params),
                 overrides=overrides or None)
    print(f"report {'rendered' if args.render_only else 'written'} to {index} (and {index.parent / 'README.md'})")
    return 0
