"""The Prefect flow end to end on tiny params, under a real (temporary) Prefect server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import write_tiny_params


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    write_tiny_params(root / "params.yaml")
    return root


@pytest.fixture()
def prefect_harness(tmp_path: Path):
    from prefect.settings import PREFECT_HOME, PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path / "prefect-home"
    with temporary_settings(updates={PREFECT_HOME: home, PREFECT_LOCAL_STORAGE_PATH: home / "storage"}):
        with prefect_test_harness(server_startup_timeout=120):
            yield home


@pytest.mark.slow
def test_pipeline_flow_runs_every_step_and_tracks_in_mlflow(project: Path, prefect_harness: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    from flows.pipeline import pipeline
    from uaafusion.paths import ProjectPaths

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    elsewhere = project.parent / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative paths in params are relative to the project, not the cwd
    results = pipeline(project_root=str(project))
    paths = ProjectPaths.at(project)
    assert results["device"] == "cpu"
    assert paths.model_checkpoint.is_file()
    metrics = json.loads(paths.metrics.read_text())
    assert {"ours", "average", "maximum"} <= set(metrics)
    assert {"EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM", "mIoU"} <= set(metrics["ours"])
    assert (paths.reports / "index.html").is_file()

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("uaafusion")
    runs = client.search_runs([experiment.experiment_id])
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["train.rounds"] == "1"
    assert "test_mIoU" in parent.data.metrics
    children = {run.data.tags["mlflow.runName"]: run for run in runs
                if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert {"pretrain", "round-1/fusion", "round-1/segmentation", "round-1/validation",
            "evaluate", "report"} <= set(children)
    assert "loss" in children["round-1/fusion"].data.metrics
    assert "mIoU" in children["round-1/validation"].data.metrics
    # Ours minus each method, and fused minus each source, with the bounds of their intervals.
    evaluate_metrics = children["evaluate"].data.metrics
    for name in ("ours-average/VIF", "ours-maximum/SSIM", "ours-average/mIoU", "ours/mIoU-mIoU_ir"):
        assert evaluate_metrics[f"{name}/low"] <= evaluate_metrics[name] <= evaluate_metrics[f"{name}/high"]
    assert evaluate_metrics["ours/mIoU-mIoU_ir"] == pytest.approx(metrics["ours"]["mIoU"] - metrics["ours"]["mIoU_ir"])
    assert parent.data.metrics["test_ours/mIoU-mIoU_vi"] == evaluate_metrics["ours/mIoU-mIoU_vi"]
    fusion_history = client.get_metric_history(children["round-1/fusion"].info.run_id, "loss")
    assert len(fusion_history) >= 2  # per step
    # The registered pyfunc model is the champion (the first version).
    version = client.get_model_version_by_alias("uaafusion", "champion")
    assert version.run_id == parent.info.run_id


@pytest.mark.slow
def test_pipeline_refuses_cuda_without_cuda(project: Path, prefect_harness: Path) -> None:
    import torch

    from flows.pipeline import pipeline
    from uaafusion.errors import DeviceError

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(DeviceError, match="CUDA is not available"):
        pipeline(project_root=str(project), overrides={"device": "cuda"}, steps=["prepare"])
