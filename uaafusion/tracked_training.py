"""The train step with its MLflow tracking: a parent run, a nested run per stage, the registered model.

One place for what the Prefect flow's training tasks (``flows/pipeline.py``) and the distributed entry
point (:mod:`uaafusion.training.distributed`, rank 0) do around the plain training stages of
:mod:`uaafusion.training`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from uaafusion.config import Params, flatten
from uaafusion.paths import ProjectPaths
from uaafusion.tracking import FAILED, RUN_RECORD_NAME
from uaafusion.tracking_journal import JOURNAL_NAME, JournaledTracker

WORLD_SIZE_PARAM = "world_size"
DEVICES_TAG = "uaafusion.devices"


def open_tracker(paths: ProjectPaths, run_dir: str | Path | None = None, offline_ok: bool = False) -> JournaledTracker:
    """The pipeline run's tracker; its journal (kept while the server is away) is in the training run's
    folder: ``run_dir``, else the one the pointer file records. ``offline_ok``: a parent run may start
    while the server is away (``tracking.offline_ok``)."""
    if run_dir is None and paths.mlflow_pointer.is_file():
        run_dir = json.loads(paths.mlflow_pointer.read_text()).get("run_dir")
    return JournaledTracker(project_root=paths.root, pointer_path=paths.mlflow_pointer,
                            journal_path=Path(run_dir) / JOURNAL_NAME if run_dir else None, offline_ok=offline_ok)


def start_training_run(params: Params, paths: ProjectPaths, params_path: Path, run_dir: Path, run_name: str | None,
                       overrides: dict[str, Any] | None, world_size: int = 1) -> str:
    """Open the training run's MLflow parent: the one its folder records (a resumed run), else a new
    one; log its training params and ``world_size`` (processes), lineage tags with the devices, dataset
    inputs and the params file as given. Returns the parent run id."""
    from uaafusion import ddp
    from uaafusion.device import resolve_device
    from uaafusion.lineage import dataset_record, run_tags
    from uaafusion.lineage import run_name as choose_run_name
    from uaafusion.steps import with_absolute_data_root
    from uaafusion.training import training_params

    device = ddp.rank_device(resolve_device(params.device))
    tracker = open_tracker(paths, run_dir, params.tracking.offline_ok)
    tags = {**run_tags(paths.root, params_path, device), "uaafusion.run_dir": str(run_dir),
            "uaafusion.schedule": params.train.schedule, DEVICES_TAG: ddp.describe_devices(device, world_size)}
    logged = {**flatten(training_params(params)), WORLD_SIZE_PARAM: world_size}
    parent = tracker.start_parent(choose_run_name(run_name, params_path), logged, tags,
                                  run_record=Path(run_dir) / RUN_RECORD_NAME)
    data_params = with_absolute_data_root(params, paths)
    for split, context in ((params.data.train_split, "training"), (params.data.test_split, "test")):
        record = dataset_record(data_params, split)
        tracker.log_dataset(parent, record.name, record.digest, record.source, record.profile, context)
    tracker.log_artifact(parent, params_path, "params")
    if overrides:
        tracker.log_dict(parent, overrides, "params/overrides.json")
    return parent


def run_tracked_stage(params: Params, paths: ProjectPaths, run_dir: Path, stage: str, round_index: int) -> dict[str, float]:
    """One training stage (it resumes from the run's last checkpoint) with each step's metrics in the
    stage's nested run, logged once (a resumed stage skips the steps logged before the kill); a
    validation's sample panels and metrics go to the parent run at the round's step."""
    from uaafusion.lineage import stage_params
    from uaafusion.steps import with_absolute_data_root
    from uaafusion.training import run_stage, sample_panels_dir

    tracker = open_tracker(paths, run_dir)
    tracker.attach_parent()

    def sink(run_name: str, metrics: dict[str, float], step: int) -> None:
        tracker.log_metrics(tracker.nested(run_name, stage_params(params, run_name)), metrics, step, once=True)

    try:
        # Relative data roots are relative to the project, not to the worker's current directory.
        metrics = run_stage(with_absolute_data_root(params, paths), Path(run_dir), stage, round_index, sink)
    except BaseException:
        for name in list(tracker.nested_run_ids):
            tracker.close_nested(name, FAILED)
        raise
    for name in list(tracker.nested_run_ids):
        tracker.close_nested(name)
    if stage == "validation" and metrics:
        panels = sample_panels_dir(Path(run_dir), round_index)
        if panels.is_dir():
            tracker.log_image_folder(tracker.parent_run_id, panels, round_index)
        tracker.log_metrics(tracker.parent_run_id, {f"validation_{key}": value for key, value in metrics.items()},
                            round_index, once=True)
    return metrics


def export_and_register(params: Params, paths: ProjectPaths, run_dir: Path) -> tuple[Path, Any]:
    """Write the checkpoint and the training curves, log the pyfunc model and register it (the alias
    ``champion`` moves only when this run is better on ``tracking.champion_metric``).

    Returns ``(checkpoint, registration)``; the registration is ``None`` while it waits in the journal
    for the MLflow server."""
    from uaafusion.steps import write_training_curves
    from uaafusion.training import export_models, read_history

    checkpoint = export_models(params, Path(run_dir), paths.model_checkpoint)
    curves = write_training_curves(read_history(Path(run_dir)), paths.training_plots)
    tracker = open_tracker(paths, run_dir)
    tracker.attach_parent()
    registration = tracker.register(checkpoint, params.tracking.champion_metric, params.tracking.champion_goal)
    for path in curves.values():
        tracker.log_artifact(tracker.parent_run_id, path, "training")
    return checkpoint, registration
