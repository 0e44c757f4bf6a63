"""The pyfunc model ``uaafusion``: its inputs, its champion alias, and loading it from the registry in a
fresh process (Python and ``mlflow models predict``) to fuse exactly as ``uaafusion fuse`` does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.commands.test_fuse import make_tiny_models, random_image
from uaafusion.config import TrackingConfig
from uaafusion.data.io import read_image, write_png
from uaafusion.errors import DataError
from uaafusion.serving import MODEL_ALIAS, REGISTERED_MODEL_NAME, champion_decision, pair_from_input, register_model
from uaafusion.tracking import PipelineTracker


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from uaafusion.models.checkpoint import save_models

    fusion, segmenter = make_tiny_models()
    return save_models(tmp_path_factory.mktemp("models") / "uaafusion.pt", fusion, segmenter)


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    return tmp_path


def trained_run(project: Path, checkpoint: Path, vif: float | None, config: TrackingConfig = TrackingConfig()):
    """A finished parent run with ``validation_VIF`` = ``vif`` whose model is registered."""
    tracker = PipelineTracker(project_root=project, pointer_path=project / "models" / "mlflow-run.json")
    tracker.start_parent(f"vif-{vif}", {})
    if vif is not None:
        tracker.log_metrics(tracker.parent_run_id, {"validation_VIF": vif}, 1)
    registration = register_model(tracker, checkpoint, config)
    tracker.end_parent()
    return tracker, registration


def test_inputs_take_colour_or_grey_visible_images_and_bad_ones_are_named() -> None:
    ir, vi = random_image(6, 7, False, 1), random_image(6, 7, True, 2)
    for visible in (vi, vi[:, :, 0], vi[:, :, :1], vi.astype(object), vi.astype(np.int64)):
        pair = pair_from_input({"ir": ir, "vi": visible})
        assert pair[0].dtype == pair[1].dtype == np.uint8 and pair[1].shape[:2] == (6, 7)
    for bad, message in [
        ({"ir": ir}, "expects"),
        ({"ir": vi, "vi": vi}, r"ir: expected a \(H, W\) image"),
        ({"ir": ir, "vi": vi[:, :, :2]}, r"vi: expected a \(H, W\) or \(H, W, 3\) image"),
        ({"ir": ir, "vi": vi[:5]}, "ir is 7x6 but vi is 7x5"),
        ({"ir": ir.astype(np.float32) * 2, "vi": vi}, "ir: expected uint8 pixel values"),
        ({"ir": ir, "vi": np.full((6, 7), "x", dtype=object)}, "vi: expected uint8"),
    ]:
        with pytest.raises(DataError, match=message):
            pair_from_input(bad)


def test_the_champion_moves_only_to_a_better_run(project: Path, checkpoint: Path) -> None:
    tracker, first = trained_run(project, checkpoint, 0.50)
    assert first.champion and first.reason == "first champion"
    _, worse = trained_run(project, checkpoint, 0.40)
    assert not worse.champion and "not better" in worse.reason
    client = tracker.client
    assert str(client.get_model_version_by_alias(REGISTERED_MODEL_NAME, MODEL_ALIAS).version) == first.version
    _, better = trained_run(project, checkpoint, 0.60)
    assert better.champion
    assert str(client.get_model_version_by_alias(REGISTERED_MODEL_NAME, MODEL_ALIAS).version) == better.version
    assert client.get_model_version(REGISTERED_MODEL_NAME, better.version).tags == {"validation_VIF": "0.6"}

    low = PipelineTracker(project_root=project, pointer_path=project / "other.json")
    low.start_parent("low", {})
    low.log_metrics(low.parent_run_id, {"validation_VIF": 0.1}, 1)
    assert champion_decision(client, low.parent_run_id, TrackingConfig(champion_goal="min"))[0]
    assert not champion_decision(client, low.parent_run_id, TrackingConfig())[0]
    moved, reason = champion_decision(client, low.parent_run_id, TrackingConfig(champion_metric="validation_mIoU"))
    assert not moved and "this run has no metric validation_mIoU" in reason


def test_the_registered_model_fuses_in_a_fresh_process_as_uaafusion_fuse_does(project: Path, checkpoint: Path) -> None:
    trained_run(project, checkpoint, 0.5)
    ir, vi = random_image(40, 52, False, 3), random_image(40, 52, True, 4)
    np.save(project / "ir.npy", ir)
    np.save(project / "vi.npy", vi)
    environment = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
                   "UAAFUSION_DEVICE": "cpu"}
    script = (
        "import sys, numpy as np, mlflow.pyfunc\n"
        "model = mlflow.pyfunc.load_model('models:/uaafusion@champion')\n"
        "ir, vi = np.load(sys.argv[1]), np.load(sys.argv[2])\n"
        "np.save(sys.argv[3], model.predict({'ir': ir, 'vi': vi}))\n"
        "np.save(sys.argv[4], model.predict({'ir': ir, 'vi': vi[:, :, 1]}))\n"
    )
    subprocess.run([sys.executable, "-c", script, str(project / "ir.npy"), str(project / "vi.npy"),
                    str(project / "colour.npy"), str(project / "grey.npy")],
                   cwd=project, env=environment, check=True, timeout=300)
    write_png(project / "ir.png", ir)
    write_png(project / "vi.png", vi)
    subprocess.run([sys.executable, "-m", "uaafusion.cli", "fuse", "--ir", "ir.png", "--vi", "vi.png",
                    "--out", "fused.png", "--model", "models:/uaafusion@champion", "--device", "cpu"],
                   cwd=project, env=environment, check=True, timeout=300)
    colour = np.load(project / "colour.npy")
    assert colour.dtype == np.uint8 and colour.shape == (40, 52, 3)
    np.testing.assert_array_equal(colour, read_image(project / "fused.png"))
    assert np.load(project / "grey.npy").shape == (40, 52)

    (project / "input.json").write_text(json.dumps({"inputs": {"ir": ir.tolist(), "vi": vi.tolist()}}))
    subprocess.run([sys.executable, "-m", "mlflow", "models", "predict", "-m", "models:/uaafusion@champion",
                    "-i", "input.json", "-t", "json", "-o", "output.json", "--env-manager", "local"],
                   cwd=project, env=environment, check=True, timeout=300, capture_output=True)
    predictions = np.asarray(json.loads((project / "output.json").read_text())["predictions"])
    np.testing.assert_array_equal(predictions, colour)
