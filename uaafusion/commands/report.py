"""``uaafusion report``: build ``reports/index.html`` and ``reports/README.md`` from the pipeline's outputs."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="build the report (metrics table, training curves, sample grids) into reports/",
        description="Build reports/index.html (self-contained), reports/README.md and reports/figures/ from "
                    "reports/evaluation.json, reports/training/*.csv, data/fused/, the test split and "
                    "models/uaafusion.pt (the same as the pipeline's report step, without MLflow).",
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="params file (default: params.yaml)")
    parser.add_argument("--root", type=Path, default=None,
                        help="project root holding reports/, data/ and models/ (default: the nearest folder above the "
                             "params file that holds dvc.yaml, else the params file's folder)")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a param override the run used (as given to 'uaafusion train -S'); it goes into the "
                             "report's parameters and its reproduce command")
    parser.add_argument("--discussion-only", action="store_true",
                        help="rewrite only the Discussion section of the existing index.html and README.md from "
                             "report.discussion (tables, figures and provenance stay; no model or data needed)")
    parser.add_argument("--tables-only", action="store_true",
                        help="rewrite only the summary and the tables of the existing index.html and README.md "
                             "from evaluation.json and generalisation.json (notes, figures and provenance stay; no "
                             "model or data needed); with --discussion-only, both")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from uaafusion.config import load_params, parse_overrides
    from uaafusion.paths import ProjectPaths, project_root_for
    from uaafusion.report import build_report, refresh_report

    overrides = parse_overrides(args.set)
    params = load_params(args.params, overrides)
    root = args.root if args.root is not None else project_root_for(args.params)
    sections = [name for name, chosen in (("tables", args.tables_only), ("discussion", args.discussion_only))
                if chosen]
    if sections:
        written = refresh_report(params, ProjectPaths.at(root, params.outputs), sections)
        print(f"{' and '.join(sections)} refreshed in " + " and ".join(str(path) for path in written))
        return 0
    index = build_report(params, ProjectPaths.at(root, params.outputs), params_file=Path(args.params),
                         overrides=overrides or None)
    print(f"report written to {index} (and {index.parent / 'README.md'})")
    return 0
