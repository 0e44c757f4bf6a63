"""Checkpoints: round trip with identical outputs at a new size, atomic write, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.models.segmenters_for_tests import random_images
from uaafusion.errors import DataError, DeviceError, TrainingError
from uaafusion.models import create_fusion_model, create_segmenter, load_models, save_models
from uaafusion.models.checkpoint import model_spec

SEGMENTER_SPEC = {"arch": "Unet", "encoder": "mobilenet_v2", "num_classes": 3, "encoder_depth": 3,
                  "decoder_channels": (16, 8, 8)}
FUSION_SPEC = {"name": "uaafusion", "stages": 2, "features": 8, "attribution_steps": 2}


def _models():
    segmenter = create_segmenter(**SEGMENTER_SPEC)
    fusion_kwargs = {k: v for k, v in FUSION_SPEC.items() if k != "name"}
    fusion = create_fusion_model("uaafusion", **fusion_kwargs)
    with torch.no_grad():  # make the weights differ from a fresh initialisation
        fusion.step_size_logits.add_(0.3)
        for parameter in segmenter.parameters():
            parameter.add_(0.01)
    segmenter.train()
    segmenter(random_images(2, 32, 32))  # move BatchNorm running statistics away from defaults
    return fusion.eval(), segmenter.eval()


def test_round_trip_gives_identical_outputs_at_any_size(tmp_path):
    fusion, segmenter = _models()
    path = tmp_path / "sub" / "models.pt"
    save_models(path, fusion, segmenter, {"segmenter": SEGMENTER_SPEC, "fusion": FUSION_SPEC},
                extra={"epoch": 3, "metrics": {"loss": 0.5}, "names": ["a", "b"]})
    assert [p.name for p in path.parent.iterdir()] == ["models.pt"]  # no temporary file left
    loaded = load_models(path)
    assert loaded.extra == {"epoch": 3, "metrics": {"loss": 0.5}, "names": ["a", "b"]}
    assert loaded.spec["fusion"]["stages"] == 2
    assert not loaded.fusion.training and not loaded.segmenter.training
    ir, vi = random_images(1, 29, 41, 1), random_images(1, 29, 41, 2)
    with torch.no_grad():
        expected = fusion(ir, vi, segmenter)
        actual = loaded.fusion(ir, vi, loaded.segmenter)
        assert torch.equal(loaded.segmenter(ir), segmenter(ir))
    assert torch.equal(actual.fused, expected.fused)
    assert torch.equal(actual.weight_ir, expected.weight_ir)
    # The file holds plain data only.
    content = torch.load(path, weights_only=True)
    assert content["format"] == "uaafusion-models"


def test_spec_defaults_to_the_factories_record(tmp_path):
    fusion, segmenter = _models()
    spec = model_spec(fusion, segmenter)
    assert spec["segmenter"]["encoder_depth"] == 3 and spec["fusion"]["name"] == "uaafusion"
    path = save_models(tmp_path / "m.pt", fusion, segmenter)
    loaded = load_models(path)
    with torch.no_grad():
        image = random_images(1, 16, 16)
        assert torch.equal(loaded.segmenter(image), segmenter(image))
    with pytest.raises(TrainingError, match="rebuild"):
        save_models(tmp_path / "x.pt", fusion, torch.nn.Conv2d(1, 3, 1))


def test_bad_files_raise_errors_naming_the_path(tmp_path):
    missing = tmp_path / "missing.pt"
    with pytest.raises(DataError, match="missing.pt"):
        load_models(missing)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"this is not a checkpoint")
    with pytest.raises(DataError, match="corrupt.pt"):
        load_models(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(TrainingError, match="foreign.pt"):
        load_models(foreign)
    fusion, segmenter = _models()
    mismatched = tmp_path / "mismatched.pt"
    save_models(mismatched, fusion, segmenter, {"segmenter": SEGMENTER_SPEC, "fusion": {**FUSION_SPEC, "features": 4}})
    with pytest.raises(TrainingError, match="mismatched.pt.*fusion_state"):
        load_models(mismatched)
    truncated = tmp_path / "truncated.pt"
    save_models(truncated, fusion, segmenter)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    with pytest.raises(DataError, match="truncated.pt"):
        load_models(truncated)


def test_non_plain_extra_is_refused_before_writing(tmp_path):
    fusion, segmenter = _models()
    path = tmp_path / "m.pt"
    with pytest.raises(TrainingError, match="extra.when"):
        save_models(path, fusion, segmenter, extra={"when": object()})
    assert not path.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_loading_onto_missing_cuda_is_a_device_error(tmp_path):
    fusion, segmenter = _models()
    path = save_models(tmp_path / "m.pt", fusion, segmenter)
    with pytest.raises(DeviceError, match="CUDA"):
        load_models(path, map_location="cuda")


def test_older_checkpoints_load_without_the_removed_guard_and_one_that_used_it_is_refused(tmp_path):
    """Checkpoints written before the infrared guard was removed carry its keys in their spec: off, the
    model is the same and loads; on, it cannot fuse as trained, and the message says what to do."""
    fusion, segmenter = _models()
    guard_off = {"guard_classes": [], "guard_radius": 16, "guard_sigma": 16.0, "guard_missed": False,
                 "guard_keep": [], "guard_keep_sigma": 0.0}
    spec = {"segmenter": dict(SEGMENTER_SPEC), "fusion": {**FUSION_SPEC, **guard_off}}
    loaded = load_models(save_models(tmp_path / "old.pt", fusion, segmenter, spec=spec))
    ir, vi = random_images(1, 24, 24), random_images(1, 24, 24)
    assert torch.equal(loaded.fusion(ir, vi, loaded.segmenter).fused, fusion(ir, vi, segmenter).fused)
    spec["fusion"]["guard_classes"] = [2]
    with pytest.raises(TrainingError, match="infrared guard.*archive/msrs-investigation"):
        load_models(save_models(tmp_path / "guarded.pt", fusion, segmenter, spec=spec))


def test_a_checkpoint_whose_weights_changed_after_saving_is_refused(tmp_path: Path) -> None:
    """The digest inside the file: a still readable file with other weights is never used silently."""
    from tests.commands.test_fuse import make_tiny_models

    fusion, segmenter = make_tiny_models()
    path = save_models(tmp_path / "uaafusion.pt", fusion, segmenter)
    load_models(path)
    content = torch.load(path, weights_only=True)
    name = next(iter(content["segmenter_state"]))
    content["segmenter_state"][name] = content["segmenter_state"][name] + 1e-3
    torch.save(content, path)
    with pytest.raises(DataError, match=rf"{path}: the weights no longer match the digest"):
        load_models(path)
    del content["digest"]  # a checkpoint written before digests: loads as before
    torch.save(content, path)
    load_models(path)
