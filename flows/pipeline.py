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
import signal
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
from uaafusion.preflight import PIPELINE_STEPS, check_pipeline_run, check_steps, flow_overrides  # noqa: E402
from uaafusion.tracked_training import open_tracker  # noqa: E402

DEFAULT_ROOT = Path(__file__).resolve().parents[1]


def _params_path(root: str, params_file: str) -> Path:
    params_path = Path(params_file)
    return params_path if params_path.is_absolute() else Path(root).resolve() / params_path


def _load(root: str, params_file: str, overrides: dict[str, Any] | None) -> tuple[Params, ProjectPaths]:
    params = load_params(_params_path(root, params_file), overrides)
    return params, ProjectPaths.at(root, params.outputs)


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
                        run_name: str | None) -> str:
    """Open the training run's MLflow parent (:func:`uaafusion.tracked_training.start_training_run`)."""
    from uaafusion.tracked_training import start_training_run

    params, paths = _load(root, params_file, overrides)
    parent = start_training_run(params, paths, _params_path(root, params_file), Path(run_dir), run_name, overrides)
    get_run_logger().info("MLflow parent run %s; training on device %s", parent, resolve_device(params.device))
    return parent


@task(name="train-stage", cache_policy=NO_CACHE)
def train_stage_task(root: str, params_file: str, overrides: dict[str, Any] | None, run_dir: str,
                     stage: str, round_index: int) -> dict[str, float]:
    """One training stage, tracked (:func:`uaafusion.tracked_training.run_tracked_stage`); on retry it
    resumes from the run's last checkpoint."""
    from uaafusion.tracked_training import run_tracked_stage

    params, paths = _load(root, params_file, overrides)
    metrics = run_tracked_stage(params, paths, Path(run_dir), stage, round_index)
    get_run_logger().info("%s %s: %s", stage, round_index or "", metrics)
    return metrics


@task(name="export-models", cache_policy=NO_CACHE)
def export_task(root: str, params_file: str, overrides: dict[str, Any] | None, run_dir: str) -> str:
    """Write the checkpoint and the training curves, register the model
    (:func:`uaafusion.tracked_training.export_and_register`)."""
    from uaafusion.tracked_training import export_and_register

    params, paths = _load(root, params_file, overrides)
    checkpoint, registration = export_and_register(params, paths, Path(run_dir))
    get_run_logger().info("models written to %s; %s", checkpoint,
                          f"registered as version {registration.version} ({registration.reason})" if registration
                          else "registration journaled until the MLflow server answers")
    return str(checkpoint)


@task(name="train-distributed", cache_policy=NO_CACHE)
def train_distributed_task(root: str, params_file: str, overrides: dict[str, Any] | None, run_name: str | None,
                           processes: int) -> str:
    """The whole train step in ``processes`` processes under torchrun
    (:func:`uaafusion.training.launch.launch_training`); on retry it resumes from the last checkpoint."""
    from uaafusion.training.launch import launch_training

    checkpoint = launch_training(root, params_file, overrides, run_name, processes)
    get_run_logger().info("models written to %s by %d training processes", checkpoint, processes)
    return str(checkpoint)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(root: str, params_file: str, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Fuse and score the test split; the parent run gets the ``test_*`` metrics (one name per metric
    whatever the label layout) and the evaluation files, the nested run ``evaluate`` the comparisons."""
    from uaafusion.lineage import SEGMENTATION_LABELS_TAG, stage_params, unified_segmentation_names
    from uaafusion.method_names import OUR_METHOD
    from uaafusion.metrics.comparison import Comparison
    from uaafusion.steps import evaluate_step

    params, paths = _load(root, params_file, overrides)
    tracker = open_tracker(paths)
    parent = tracker.attach_parent()
    with tracker.running():
        means = evaluate_step(params, paths)
        run_id = tracker.nested("evaluate", stage_params(params, "evaluate"))
        ours, labels = unified_segmentation_names(
            {key: value for key, value in means[OUR_METHOD].items() if isinstance(value, (int, float))})
        comparison = Comparison.from_json(json.loads(paths.comparison.read_text()))
        fused_against_sources, _ = unified_segmentation_names(comparison.flat_metrics(against=False))
        tracker.log_metrics(run_id, ours, 0)
        tracker.log_metrics(run_id, unified_segmentation_names(comparison.flat_metrics())[0], 0)
        tracker.log_metrics(parent, {f"test_{key}": value for key, value in {**ours, **fused_against_sources}.items()}, 0)
        tracker.set_tag(parent, SEGMENTATION_LABELS_TAG, labels)
        for path in (paths.evaluation, paths.metrics, paths.comparison, paths.generalisation):
            tracker.log_artifact(parent, path, "evaluation")
        if params.evaluate.degraded.kinds:
            from uaafusion.degraded_benchmark import degraded_benchmark_step, tracked_metrics

            document = degraded_benchmark_step(params, paths)
            tracker.log_metrics(run_id, tracked_metrics(document), 0)
            tracker.log_artifact(parent, paths.degraded, "evaluation")
        elif paths.degraded.exists():
            paths.degraded.unlink()  # stale: no degraded benchmark configured any more
    get_run_logger().info("evaluation: %s", {key: round(value, 4) for key, value in ours.items()})
    return means


@task(name="report", cache_policy=NO_CACHE)
def report_task(root: str, params_file: str, overrides: dict[str, Any] | None) -> str:
    """Build the report; its files (not the rest of the reports folder) go to the parent run."""
    from uaafusion.lineage import stage_params
    from uaafusion.report import build_report

    params, paths = _load(root, params_file, overrides)
    tracker = open_tracker(paths)
    parent = tracker.attach_parent()
    with tracker.running():
        index = build_report(params, paths, params_file=_params_path(root, params_file), overrides=overrides)
        tracker.nested("report", stage_params(params, "report"))
        for path in paths.report_outputs:
            tracker.log_artifact(parent, path, "report/figures" if path.is_dir() else "report")
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
    run_name: str | None = None,
    gpus: int | None = None,
) -> dict[str, Any]:
    """Run the chosen pipeline steps (default: all) with params from ``params_file``.

    ``rounds`` and ``dataset_root`` are shortcuts for the overrides ``train.rounds`` and
    ``data.root`` (what a deployment usually changes); ``overrides`` takes any dotted keys.
    ``run_name`` names a new MLflow parent run (default: a deployment's flow run name, else the DVC
    experiment's name, else the params file's stem and a time stamp); a resumed training run keeps
    its parent and name. ``gpus``: training processes on this node, one per GPU (on a host without
    CUDA, CPU processes); above 1 the train step runs under torchrun (:mod:`uaafusion.training.distributed`).
    """
    from uaafusion.allocator import keep_freed_memory

    keep_freed_memory()  # also in a deployment's worker process
    root = str(Path(project_root).resolve()) if project_root else str(DEFAULT_ROOT)
    overrides = flow_overrides(overrides, rounds, dataset_root)
    chosen = check_steps(steps)
    params = check_pipeline_run(root, params_file, chosen, overrides)  # params, device and data, before any work
    paths = ProjectPaths.at(root, params.outputs)
    device = resolve_device(params.device)
    logger = get_run_logger()
    logger.info("uaafusion pipeline: steps %s, device %s, project %s", chosen, device, root)
    results: dict[str, Any] = {"device": str(device)}

    if "prepare" in chosen:
        results["prepare"] = prepare_task(root, params_file, overrides)
    if gpus is not None and gpus != 1:  # one process needs no torchrun
        from uaafusion.training.launch import check_processes

        check_processes(gpus, device.type)
    if "train" in chosen and (gpus or 1) > 1:
        distributed = train_distributed_task.with_options(retries=params.train.retries, retry_delay_seconds=1)
        results["models"] = distributed(root, params_file, overrides, run_name or _deployment_flow_run_name(), gpus)
    elif "train" in chosen:
        from uaafusion.training import read_history, run_fingerprint, training_units
        from uaafusion.training.lock import run_folder_lock

        run_dir = str(paths.run_dir(run_fingerprint(params)))
        with run_folder_lock(Path(run_dir)):  # a second process with the same params stops here
            done = len(read_history(Path(run_dir))["units"])
            if done:  # in the flow run's own log (a deployment's UI), not only in uaafusion's
                logger.info("resuming from %s (%d units done)", run_dir, done)
            start_tracking_task(root, params_file, overrides, run_dir, run_name or _deployment_flow_run_name())
            tracker = open_tracker(paths, run_dir)
            tracker.attach_parent()
            with tracker.running():  # the parent ends FINISHED, FAILED or KILLED with this step
                retrying_stage = train_stage_task.with_options(retries=params.train.retries, retry_delay_seconds=1)
                for stage, round_index in training_units(params):
                    results[f"{stage}-{round_index}"] = retrying_stage(root, params_file, overrides, run_dir, stage,
                                                                       round_index)
                results["models"] = export_task(root, params_file, overrides, run_dir)
    if "evaluate" in chosen:
        results["evaluate"] = evaluate_task(root, params_file, overrides)
    if "report" in chosen:
        results["report"] = report_task(root, params_file, overrides)
    return results


def _deployment_flow_run_name() -> str | None:
    """The flow run's name when a deployment started it (the name given in Prefect), else ``None``."""
    from prefect.runtime import deployment, flow_run

    return str(flow_run.name) if deployment.id and flow_run.name else None


def _exit_on_sigterm(signal_number: int, frame: Any) -> None:
    raise SystemExit(128 + signal_number)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the uaafusion pipeline (a Prefect flow) locally.")
    parser.add_argument("--params", default="params.yaml", help="params file (relative to the project root)")
    parser.add_argument("--steps", default=",".join(PIPELINE_STEPS),
                        help=f"comma-separated steps of {', '.join(PIPELINE_STEPS)}")
    parser.add_argument("--root", default=None, help="project root (default: this checkout)")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a param, e.g. -S train.rounds=1 (value parsed as YAML)")
    parser.add_argument("--run-name", default=None,
                        help="name of a new MLflow parent run (default: the DVC experiment, else params stem + time)")
    parser.add_argument("--nproc-per-node", type=int, default=1, metavar="N",
                        help="training processes (one per GPU; CPU processes without CUDA); above 1: torchrun")
    args = parser.parse_args(argv)
    from uaafusion.config import parse_overrides
    from uaafusion.errors import ConfigError, UAAFusionError

    try:
        overrides = parse_overrides(args.set)
    except ConfigError as error:
        parser.error(str(error))

    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # so the MLflow runs end KILLED, not RUNNING
    try:
        steps, root = [step for step in args.steps.split(",") if step], args.root or str(Path.cwd())
        check_pipeline_run(root, args.params, steps, overrides or None)  # before Prefect starts: no traceback
        pipeline(params_file=args.params, steps=steps, overrides=overrides or None, project_root=root,
                 run_name=args.run_name, gpus=args.nproc_per_node)
    except UAAFusionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
