"""The uaafusion pipeline as a Prefect flow: prepare -> train (pretrain, rounds x (fusion,
segmentation, validation)) -> evaluate -> report.

Tasks pass paths, never tensors; each calls a plain step function from ``uaafusion``. Training
tasks retry (``train.retries``) and resume from the run's last checkpoint. MLflow: the train step
opens a parent run, every stage and round gets a nested run, evaluate and report attach to it.

Run locally (no server needed): ``python -m flows.pipeline`` (all steps) or
``python -m flows.pipeline --steps train`` (what ``dvc.yaml`` does, one step per stage).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

# The temporary Prefect server of a local run would send usage analytics and, offline, log an ERROR
# when that fails; set before Prefect is imported (a user's own setting wins).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from prefect import flow, get_run_logger, task  # noqa: E402 (after the setting above)
from prefect.cache_policies import NO_CACHE  # noqa: E402

from uaafusion.config import Params, load_params  # noqa: E402
from uaafusion.device import resolve_device  # noqa: E402
from uaafusion.paths import ProjectPaths  # noqa: E402
from uaafusion.tracking import PipelineTracker  # noqa: E402

STEPS = ("prepare", "train", "evaluate", "report")
DEFAULT_ROOT = Path(__file__).resolve().parents[1]


def _params_path(root: str, params_file: str) -> Path:
    params_path = Path(params_file)
    return params_path if params_path.is_absolute() else Path(root).resolve() / params_path


def _load(root: str, params_file: str, overrides: dict[str, Any] | None) -> tuple[Params, ProjectPaths]:
    params = load_params(_params_path(root, params_file), overrides)
    return params, ProjectPaths.at(root, params.outputs)


def _tracker(paths: ProjectPaths) -> PipelineTracker:
    return PipelineTracker(project_root=paths.root, pointer_path=paths.mlflow_pointer)


@task(name="prepare", cache_policy=NO_CACHE)
def prepare_task(root: str, params_file: str, overrides: dict[str, Any] | None) -> dict[str, Any]:
    from uaafusion.steps import prepare_step

    params, paths = _load(root, params_file, overrides)
    summary = prepare_step(params, paths)
    get_run_logger().info("prepared data: %s", json.dumps(summary, default=str)[:500])
    if params.evaluate.degraded.kinds:
        from uaafusion.degraded_benchmark import prepare_degraded_sets

        degraded = prepare_degraded_sets(params, paths)
        get_run_logger().info("degraded test sets: %s", ", ".join(degraded["sets"]))
    return summary


@task(name="start-tracking", cache_policy=NO_CACHE)
def start_tracking_task(root: str, params_file: str, overrides: dict[str, Any] | None, run_dir: str,
                        flow_run_name: str) -> str:
    params, paths = _load(root, params_file, overrides)
    device = resolve_device(params.device)
    tracker = _tracker(paths)
    parent = tracker.start_parent(
        run_name=flow_run_name,
        params=params.flat(),
        tags={"uaafusion.device": str(device), "uaafusion.run_dir": run_dir,
              "uaafusion.schedule": params.train.schedule},
    )
    get_run_logger().info("MLflow parent run %s at %s; training on device %s", parent, tracker.uri, device)
    return parent


@task(name="train-stage", cache_policy=NO_CACHE)
def train_stage_task(root: str, params_file: str, overrides: dict[str, Any] | None, run_dir: str,
                     stage: str, round_index: int) -> dict[str, float]:
    """One training stage; on retry it resumes from the run's last checkpoint."""
    from uaafusion.steps import with_absolute_data_root
    from uaafusion.training import run_stage

    params, paths = _load(root, params_file, overrides)
    tracker = _tracker(paths)
    tracker.attach_parent()

    def sink(run_name: str, metrics: dict[str, float], step: int) -> None:
        tracker.log_metrics(tracker.nested(run_name), metrics, step)

    try:
        # Relative data roots are relative to the project, not to the worker's current directory.
        metrics = run_stage(with_absolute_data_root(params, paths), Path(run_dir), stage, round_index, sink)
    except Exception:
        for name in list(tracker.nested_run_ids):
            tracker.close_nested(name, "FAILED")
        raise
    for name in list(tracker.nested_run_ids):
        tracker.close_nested(name)
    if stage == "validation" and metrics:
        tracker.log_metrics(tracker.parent_run_id, {f"validation_{key}": value for key, value in metrics.items()},
                            round_index)
    get_run_logger().info("%s %s: %s", stage, round_index or "", metrics)
    return metrics


@task(name="export-models", cache_policy=NO_CACHE)
def export_task(root: str, params_file: str, overrides: dict[str, Any] | None, run_dir: str) -> str:
    from uaafusion.steps import write_training_curves
    from uaafusion.training import export_models, read_history

    params, paths = _load(root, params_file, overrides)
    checkpoint = export_models(params, Path(run_dir), paths.model_checkpoint)
    curves = write_training_curves(read_history(Path(run_dir)), paths.training_plots)
    tracker = _tracker(paths)
    tracker.attach_parent()
    versions = tracker.register_models(checkpoint)
    for path in curves.values():
        tracker.log_artifact(tracker.parent_run_id, path, "training")
    samples = Path(run_dir) / "samples"
    if samples.is_dir():
        tracker.log_artifact(tracker.parent_run_id, samples, "samples")
    get_run_logger().info("models written to %s and registered: %s", checkpoint, versions)
    return str(checkpoint)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(root: str, params_file: str, overrides: dict[str, Any] | None) -> dict[str, Any]:
    from uaafusion.method_names import OUR_METHOD
    from uaafusion.metrics.comparison import Comparison
    from uaafusion.steps import evaluate_step

    params, paths = _load(root, params_file, overrides)
    means = evaluate_step(params, paths)
    tracker = _tracker(paths)
    tracker.attach_parent()
    run_id = tracker.nested("evaluate")
    ours = {key: value for key, value in means[OUR_METHOD].items() if isinstance(value, (int, float))}
    tracker.log_metrics(run_id, ours, 0)
    tracker.log_metrics(tracker.parent_run_id, {f"test_{key}": value for key, value in ours.items()}, 0)
    comparison = Comparison.from_json(json.loads(paths.comparison.read_text()))
    tracker.log_metrics(run_id, comparison.flat_metrics(), 0)
    fused_against_sources = comparison.flat_metrics(against=False)
    tracker.log_metrics(tracker.parent_run_id, {f"test_{key}": value for key, value in fused_against_sources.items()}, 0)
    for path in (paths.evaluation, paths.metrics, paths.comparison):
        tracker.log_artifact(run_id, path)
    if paths.generalisation.is_file():
        tracker.log_artifact(run_id, paths.generalisation)
    if params.evaluate.degraded.kinds:
        from uaafusion.degraded_benchmark import degraded_benchmark_step, tracked_metrics

        document = degraded_benchmark_step(params, paths)
        tracker.log_metrics(run_id, tracked_metrics(document), 0)
        tracker.log_artifact(run_id, paths.degraded)
    elif paths.degraded.exists():
        paths.degraded.unlink()  # stale: no degraded benchmark configured any more
    tracker.close_nested("evaluate")
    get_run_logger().info("evaluation: %s", {key: round(value, 4) for key, value in ours.items()})
    return means


@task(name="report", cache_policy=NO_CACHE)
def report_task(root: str, params_file: str, overrides: dict[str, Any] | None) -> str:
    from uaafusion.report import build_report

    params, paths = _load(root, params_file, overrides)
    index = build_report(params, paths, params_file=_params_path(root, params_file), overrides=overrides)
    tracker = _tracker(paths)
    tracker.attach_parent()
    run_id = tracker.nested("report")
    tracker.log_artifact(run_id, index.parent, "report")
    tracker.close_nested("report")
    tracker.finish_parent()
    get_run_logger().info("report written to %s", index)
    return str(index)


@flow(name="uaafusion-pipeline", log_prints=True)
def pipeline(
    params_file: str = "params.yaml",
    steps: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    rounds: int | None = None,
    dataset_root: str | None = None,
    project_root: str | None = None,
) -> dict[str, Any]:
    """Run the chosen pipeline steps (default: all) with params from ``params_file``.

    ``rounds`` and ``dataset_root`` are shortcuts for the overrides ``train.rounds`` and
    ``data.root`` (what a deployment usually changes); ``overrides`` takes any dotted keys.
    """
    from uaafusion.allocator import keep_freed_memory

    keep_freed_memory()  # also in a deployment's worker process
    root = str(Path(project_root).resolve()) if project_root else str(DEFAULT_ROOT)
    overrides = dict(overrides or {})
    if rounds is not None:
        overrides["train.rounds"] = rounds
    if dataset_root is not None:
        overrides["data.root"] = dataset_root
    chosen = list(steps or STEPS)
    unknown = [step for step in chosen if step not in STEPS]
    if unknown:
        raise ValueError(f"unknown pipeline step(s) {unknown}; allowed: {', '.join(STEPS)}")
    params, paths = _load(root, params_file, overrides)
    device = resolve_device(params.device)  # refuses cuda without CUDA, before any work
    logger = get_run_logger()
    logger.info("uaafusion pipeline: steps %s, device %s, project %s", chosen, device, root)
    results: dict[str, Any] = {"device": str(device)}

    if "prepare" in chosen:
        results["prepare"] = prepare_task(root, params_file, overrides)
    if "train" in chosen:
        from uaafusion.training import run_fingerprint, training_units

        run_dir = str(paths.run_dir(run_fingerprint(params)))
        from prefect.runtime import flow_run

        start_tracking_task(root, params_file, overrides, run_dir, str(flow_run.name or "pipeline"))
        retrying_stage = train_stage_task.with_options(retries=params.train.retries, retry_delay_seconds=1)
        for stage, round_index in training_units(params):
            results[f"{stage}-{round_index}"] = retrying_stage(root, params_file, overrides, run_dir, stage, round_index)
        results["models"] = export_task(root, params_file, overrides, run_dir)
    if "evaluate" in chosen:
        results["evaluate"] = evaluate_task(root, params_file, overrides)
    if "report" in chosen:
        results["report"] = report_task(root, params_file, overrides)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the uaafusion pipeline (a Prefect flow) locally.")
    parser.add_argument("--params", default="params.yaml", help="params file (relative to the project root)")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated steps of {', '.join(STEPS)}")
    parser.add_argument("--root", default=None, help="project root (default: this checkout)")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a param, e.g. -S train.rounds=1 (value parsed as YAML)")
    args = parser.parse_args(argv)
    from uaafusion.config import parse_overrides
    from uaafusion.errors import ConfigError, UAAFusionError

    try:
        overrides = parse_overrides(args.set)
    except ConfigError as error:
        parser.error(str(error))

    try:
        pipeline(params_file=args.params, steps=[step for step in args.steps.split(",") if step],
                 overrides=overrides or None, project_root=args.root or str(Path.cwd()))
    except UAAFusionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
