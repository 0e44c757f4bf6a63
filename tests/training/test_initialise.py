"""``train.init_from``: training starts from a checkpoint's (or a registered model's) weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import tiny_params_dict
from uaafusion.config import params_from_dict
from uaafusion.errors import ConfigError
from uaafusion.models.checkpoint import save_models
from uaafusion.training import run_training
from uaafusion.training.builders import build_models
from uaafusion.training.context import open_training


def tiny_params(data_root: Path, **extra):
    return params_from_dict(tiny_params_dict(**{"data.root": str(data_root), **extra}))


def source_checkpoint(path: Path, data_root: Path, **extra) -> tuple[Path, torch.nn.Module, torch.nn.Module]:
    """A checkpoint of models built with another seed (so their weights differ from a fresh build)."""
    params = tiny_params(data_root, seed=123, **extra)
    fusion, segmenter = build_models(params, torch.device("cpu"))
    return save_models(path, fusion, segmenter), fusion, segmenter


def assert_same_weights(model: torch.nn.Module, reference: torch.nn.Module, skip: str | None = None) -> None:
    reference_state = reference.state_dict()
    for key, value in model.state_dict().items():
        if skip is None or skip not in key:
            torch.testing.assert_close(value, reference_state[key], msg=key)


def test_training_starts_from_the_checkpoint_weights(tiny_data: Path, tmp_path: Path) -> None:
    checkpoint, fusion, segmenter = source_checkpoint(tmp_path / "source.pt", tiny_data)
    fresh = open_training(tiny_params(tiny_data), tmp_path / "fresh")
    assert not torch.equal(fresh.fusion.step_size_logits, fusion.step_size_logits) or any(
        not torch.equal(a, b) for a, b in zip(fresh.segmenter.state_dict().values(), segmenter.state_dict().values()))
    context = open_training(tiny_params(tiny_data, **{"train.init_from": str(checkpoint)}), tmp_path / "run")
    assert_same_weights(context.fusion, fusion)
    assert_same_weights(context.segmenter, segmenter)


def test_a_head_for_other_classes_starts_fresh_and_the_rest_is_copied(tiny_data: Path, tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    checkpoint, fusion, segmenter = source_checkpoint(tmp_path / "source.pt", tiny_data,
                                                   **{"data.num_classes": 3, "data.class_names": ["a", "b", "c"]})
    context = open_training(tiny_params(tiny_data, **{"train.init_from": str(checkpoint)}), tmp_path / "run")
    assert_same_weights(context.fusion, fusion)
    assert_same_weights(context.segmenter, segmenter, skip="segmentation_head")
    assert "head tensor(s) differ in shape" in caplog.text


@pytest.mark.parametrize(("override", "message"), [
    ({"model.fusion.stages": 3}, r"fusion network differs from model\.fusion \(stages 3"),
    ({"model.segmenter.arch": "Unet"}, r"another architecture than model\.segmenter"),
])
def test_networks_that_do_not_fit_are_a_config_error(tiny_data: Path, tmp_path: Path, override, message) -> None:
    checkpoint, _, _ = source_checkpoint(tmp_path / "source.pt", tiny_data, **override)
    with pytest.raises(ConfigError, match=r"train\.init_from = .*source\.pt.*" + message):
        open_training(tiny_params(tiny_data, **{"train.init_from": str(checkpoint)}), tmp_path / "run")


def test_a_missing_source_names_the_param_and_the_file(tiny_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train\.init_from = .*nowhere\.pt.*not found"):
        open_training(tiny_params(tiny_data, **{"train.init_from": str(tmp_path / "nowhere.pt")}), tmp_path / "run")


def test_a_registered_model_is_a_source_and_a_resumed_run_keeps_its_own_state(
        tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from uaafusion.config import TrackingConfig
    from uaafusion.serving import register_model
    from uaafusion.tracking import PipelineTracker

    monkeypatch.chdir(tmp_path)  # the default MLflow store is ./mlflow.db
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    checkpoint, fusion, _ = source_checkpoint(tmp_path / "source.pt", tiny_data)
    tracker = PipelineTracker(project_root=tmp_path, pointer_path=tmp_path / "models" / "mlflow-run.json")
    tracker.start_parent("source", {"seed": 123})
    register_model(tracker, checkpoint, TrackingConfig())
    tracker.end_parent()

    params = tiny_params(tiny_data, **{"train.init_from": "models:/uaafusion@champion"})
    assert open_training(params, tmp_path / "probe").fusion.state_dict().keys() == fusion.state_dict().keys()
    assert_same_weights(open_training(params, tmp_path / "probe").fusion, fusion)
    run_training(params, tmp_path / "run")  # fine-tunes, then saves its own state
    trained = open_training(params, tmp_path / "run").fusion
    assert not torch.equal(trained.step_size_logits, fusion.step_size_logits)
