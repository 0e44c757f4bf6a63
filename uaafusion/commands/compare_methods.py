"""``uaafusion compare-methods``: the methods comparison report (``reports/methods``) from method presets
that were each trained and evaluated by the pipeline."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

DEFAULT_OUT = Path("reports/methods")
DEFAULT_FUSED = Path("data/fused-methods/comparison")
DEFAULT_BENCHMARKS = Path("reports/benchmarks.json")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare-methods",
        help="compare fusion methods trained by their own presets (table, bootstrap intervals, degraded sets, panel)",
        description="Read the evaluation of every method preset (train each first: uaafusion train --params "
                    "PRESET --steps prepare,train,evaluate,report; with MLFLOW_EXPERIMENT_NAME=methods their runs "
                    "share one MLflow experiment), check that they trained on the same data with the same budget, "
                    "and write OUT/index.html and OUT/README.md: every method with the nine fusion metrics, box mIoU, "
                    "parameters, training time (MLflow) and step and inference times (python -m benchmarks --only "
                    "methods), the first preset's method minus each other one with paired bootstrap intervals, the "
                    "pixel baselines and peers of the first preset's evaluation, a panel of fused images and each "
                    "model's own map; with --degraded, every model fused and scored on the degraded test sets too.",
    )
    parser.add_argument("presets", nargs="+", type=Path, metavar="PRESET",
                        help="params files of the methods, the reference first (e.g. params/methods/uaafusion.yaml "
                             "params/methods/alpha_blend.yaml ...)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"report folder (default {DEFAULT_OUT})")
    parser.add_argument("--degraded", type=Path, default=None, metavar="PARAMS",
                        help="a params file whose evaluate.degraded section names the degraded test sets (e.g. "
                             "params/msrs-degraded.yaml); prepare them first with uaafusion prepare --degraded "
                             "--params PARAMS")
    parser.add_argument("--fused", type=Path, default=DEFAULT_FUSED,
                        help=f"where the degraded sets' fused images go (default {DEFAULT_FUSED})")
    parser.add_argument("--benchmarks", type=Path, default=DEFAULT_BENCHMARKS,
                        help=f"benchmark results with the methods section (default {DEFAULT_BENCHMARKS})")
    parser.add_argument("--samples", type=int, default=None,
                        help="test pairs in the panel (default: the first preset's report.samples; 0: no panel)")
    parser.add_argument("--discussion", type=Path, default=None,
                        help="Markdown shown as the Discussion (default: OUT/discussion.md when it exists)")
    parser.add_argument("--root", type=Path, default=None,
                        help="project root (default: the nearest folder above the first preset holding dvc.yaml)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from uaafusion.errors import ConfigError
    from uaafusion.metrics.comparison import compare_methods
    from uaafusion.report.figures import Figure
    from uaafusion.report.inputs import read_parent_run
    from uaafusion.report.methods import (
        combined_evaluation,
        comparison_paths,
        degraded_comparison,
        load_method_runs,
        method_facts,
    )
    from uaafusion.report.methods_page import methods_context, write_methods_pages
    from uaafusion.report.methods_panel import PANEL_FILE, plot_methods_panel
    from uaafusion.integrity import write_text_atomically

    if args.samples is not None and args.samples < 0:
        raise ConfigError(f"--samples {args.samples}: give 0 (no panel) or more test pairs.")
    runs = load_method_runs(args.presets, args.root)
    if len(runs) < 2:
        raise ConfigError(f"{args.presets[0]}: one preset compares nothing; name the reference and at least one other.")
    out = comparison_paths(runs[0], args.out, args.fused)  # relative folders: under the reference's project root
    out.reports.mkdir(parents=True, exist_ok=True)
    results = combined_evaluation(runs)
    comparison = compare_methods(results, runs[0].name, skip_unpaired=True)
    facts = method_facts(runs, out.place(args.benchmarks))
    degraded = degraded_comparison(runs, args.degraded, out) if args.degraded is not None else None
    write_text_atomically(out.comparison, json.dumps(comparison.to_json(), indent=1) + "\n")
    write_text_atomically(out.reports / "methods.json", json.dumps({
        "presets": {run.name: str(run.params_file) for run in runs}, "facts": facts,
        "mean": {method: result.get("mean") for method, result in results.items()}}, indent=1) + "\n")
    figures = []
    samples = runs[0].params.report.samples if args.samples is None else args.samples
    if samples > 0:
        plot_methods_panel(runs, samples, out.reports / PANEL_FILE)
        figures.append(Figure("Fused images and each model's own map", PANEL_FILE,
                              "The same test pairs fused by every trained method; beside each fused image the map the "
                              "model adds (α: the visible image's share; m: the modality-aware mask; attention: the "
                              "unfolding network's last gate; prompt: the infrared weight and the predicted kind)."))
    discussion_file = args.discussion if args.discussion is not None else out.reports / "discussion.md"
    discussion = discussion_file.read_text() if discussion_file.is_file() else ""
    commands = [f"MLFLOW_EXPERIMENT_NAME=methods uaafusion train --params {preset} --steps prepare,train,evaluate,report"
                for preset in args.presets]
    commands += ["python -m benchmarks --only methods",
                 " ".join(["uaafusion compare-methods", *map(shlex.quote, map(str, args.presets)),
                           *(["--degraded", shlex.quote(str(args.degraded))] if args.degraded else []),
                           *(["--out", shlex.quote(str(args.out))] if args.out != DEFAULT_OUT else [])])]
    provenance = [(f"MLflow parent run of {run.name}", read_parent_run(run.paths.mlflow_pointer)) for run in runs]
    context = methods_context(runs, results, comparison, facts, degraded, discussion, figures, commands,
                              [(label, value) for label, value in provenance if value])
    index = write_methods_pages(context, out.reports)
    print(f"methods comparison written to {index} (and {index.parent / 'README.md'})")
    return 0

