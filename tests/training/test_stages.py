"""Training stages on the tiny synthetic configuration: determinism, resume, NaN handling."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO_ROOT, tiny_params_dict
from uaafusion.config import params_from_dict
from uaafusion.data.synthetic import write_synthetic_dataset
from uaafusion.errors import ConfigError, TrainingError
from uaafusion.training import read_history, run_training, training_units
from uaafusion.training.stages import background_only
from uaafusion.training.state import STATE_FILE_NAME


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    params = params_from_dict(tiny_params_dict())
    write_synthetic_dataset(params.synthetic, root)
    return root


def tiny_params(data_root: Path, **extra):
    return params_from_dict(tiny_params_dict(**{"data.root": str(data_root), **extra}))


def numbers(history: dict) -> list[dict]:
    return [{key: value for key, value in row.items() if isinstance(value, (int, float))} for row in history["units"]]


def test_schedule_units_follow_params(tiny_data: Path) -> None:
    params = tiny_params(tiny_data, **{"train.rounds": 2})
    assert training_units(params) == [("pretrain", 0), ("fusion", 1), ("segmentation", 1), ("validation", 1),
                                      ("fusion", 2), ("segmentation", 2), ("validation", 2)]
    joint = tiny_params(tiny_data, **{"train.schedule": "joint"})
    assert [name for name, _ in training_units(joint)] == ["pretrain", "joint", "validation"]


def test_alternating_training_is_deterministic_and_records_history(tiny_data: Path, tmp_path: Path) -> None:
    params = tiny_params(tiny_data)
    first = run_training(params, tmp_path / "a")
    second = run_training(params, tmp_path / "b")
    assert first == second
    assert {"mIoU", "mIoU_ir", "mIoU_vi", "SSIM", "Qabf", "VIF"} <= set(first)
    history = read_history(tmp_path / "a")
    assert [row["unit"] for row in history["units"]] == [
        "pretrain/epoch-1", "round-1/fusion/epoch-1", "round-1/segmentation/epoch-1", "round-1/validation"]
    assert numbers(history) == numbers(read_history(tmp_path / "b"))
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in history["steps"])
    # A finished run is not trained again: calling it again changes nothing.
    state_before = (tmp_path / "a" / STATE_FILE_NAME).read_bytes()
    assert run_training(params, tmp_path / "a") == first
    assert (tmp_path / "a" / STATE_FILE_NAME).read_bytes() == state_before


def test_joint_schedule_trains(tiny_data: Path, tmp_path: Path) -> None:
    metrics = run_training(tiny_params(tiny_data, **{"train.schedule": "joint"}), tmp_path / "joint")
    assert 0.0 <= metrics["mIoU"] <= 1.0
    stages = {row["stage"] for row in read_history(tmp_path / "joint")["steps"]}
    assert stages == {"pretrain", "joint"}


def test_class_balance_weights_the_segmentation_loss_and_are_recorded(tiny_data: Path, tmp_path: Path) -> None:
    plain = tiny_params(tiny_data)
    balanced = tiny_params(tiny_data, **{"loss.class_balance": 0.5})
    run_training(plain, tmp_path / "plain")
    run_training(balanced, tmp_path / "balanced")
    assert not (tmp_path / "plain" / "class_weights.json").exists()
    record = json.loads((tmp_path / "balanced" / "class_weights.json").read_text())
    counts, weights = record["pixel_counts"], record["weights"]
    assert record["classes"] == list(balanced.data.class_names) and len(weights) == balanced.data.num_classes
    frequencies = [count / sum(counts) for count in counts]
    assert sum(f * w for f, w in zip(frequencies, weights)) == pytest.approx(1.0, rel=1e-4)
    rarest = min((f, c) for c, f in enumerate(frequencies) if f > 0)[1]
    commonest = max((f, c) for c, f in enumerate(frequencies))[1]
    assert weights[rarest] > weights[commonest]
    first_loss = [row["loss"] for row in read_history(tmp_path / "plain")["steps"]][0]
    assert [row["loss"] for row in read_history(tmp_path / "balanced")["steps"]][0] != pytest.approx(first_loss)


def test_fusion_class_balance_weights_only_the_fusion_stages_segmentation_term(tiny_data: Path,
                                                                              tmp_path: Path) -> None:
    from uaafusion.training.stages import fusion_stage, open_training, pretrain_segmenter

    shared = tiny_params(tiny_data, **{"loss.class_balance": 0.5})
    assert shared.loss.fusion_class_balance is None and shared.loss.fusion_exponent == 0.5
    plain_fusion = tiny_params(tiny_data, **{"loss.class_balance": 0.5, "loss.fusion_class_balance": 0})
    first_fusion_steps = {}
    for name, params in (("shared", shared), ("plain", plain_fusion)):
        context = open_training(params, tmp_path / name)
        assert context.class_weights is not None
        if name == "shared":
            assert torch.equal(context.fusion_class_weights, context.class_weights)
        else:
            assert context.fusion_class_weights is None
        record = json.loads((tmp_path / name / "class_weights.json").read_text())
        assert record["fusion_weights"] == (record["weights"] if name == "shared" else None)
        pretrain_segmenter(params, tmp_path / name)
        fusion_stage(params, tmp_path / name, 1)
        steps = read_history(tmp_path / name)["steps"]
        first_fusion_steps[name] = next(row for row in steps if row["stage"] == "round-1/fusion")
    # The same segmenter (same pretraining) and the same first fused crops: only the term's class weights differ.
    pretrain = [[row["loss"] for row in read_history(tmp_path / name)["steps"] if row["stage"] == "pretrain"]
                for name in ("shared", "plain")]
    assert pretrain[0] == pretrain[1]
    shared_step, plain_step = first_fusion_steps["shared"], first_fusion_steps["plain"]
    assert shared_step["loss_intensity"] == pytest.approx(plain_step["loss_intensity"], rel=1e-6)
    assert shared_step["loss_segmentation"] != pytest.approx(plain_step["loss_segmentation"], rel=1e-3)


def test_segmentation_stage_trains_on_fused_images_made_as_inference_makes_them(tiny_data: Path, tmp_path: Path,
                                                                            ) -> None:
    from uaafusion.data.datasets import create_dataset
    from uaafusion.inference import fuse_luma
    from uaafusion.training.stages import (
        _fused_image_store, _round_weights, fusion_stage, open_training, pretrain_segmenter)

    params = tiny_params(tiny_data, **{"train.fused_mask": "predicted"})
    assert tiny_params(tiny_data).train.fused_mask == "labels"  # the default: as the fusion stage
    pretrain_segmenter(params, tmp_path / "run")
    fusion_stage(params, tmp_path / "run", 1)
    context = open_training(params, tmp_path / "run")
    predicted = _fused_image_store(context, None)
    labelled = _fused_image_store(context, _round_weights(context, 1, None))
    dataset = create_dataset(params.data, params.data.train_split, crop=False)
    assert sorted(predicted) == sorted(dataset.names)
    for index in range(len(dataset)):
        sample = dataset[index]
        with torch.no_grad():
            expected = fuse_luma(context.fusion, context.segmenter, sample["ir"][None], sample["vi"][None]).fused[0]
        assert torch.allclose(predicted[sample["name"]], expected, atol=1e-6)
    # The label mask changes the fused images (weights per labelled region): a different training input.
    assert any(not torch.allclose(labelled[name], predicted[name], atol=1e-4) for name in predicted)

    losses = {}
    for mode in ("predicted", "labels"):
        run_training(tiny_params(tiny_data, **{"train.fused_mask": mode}), tmp_path / mode)
        losses[mode] = [row["loss_fused"] for row in read_history(tmp_path / mode)["steps"] if "loss_fused" in row]
    assert losses["predicted"] and losses["predicted"] != pytest.approx(losses["labels"])


def test_mixed_sources_train_the_segmenter_on_random_blends_of_the_sources(tiny_data: Path, tmp_path: Path) -> None:
    from uaafusion.training.stages import _source_mixing, open_training

    params = tiny_params(tiny_data, **{"train.mixed_sources": 0.5})
    context = open_training(params, tmp_path / "probe")
    assert _source_mixing(open_training(tiny_params(tiny_data), tmp_path / "off"), "pretrain/epoch-1") is None
    ir, vi = torch.rand(3, 1, 8, 8), torch.rand(3, 1, 8, 8)
    blend = _source_mixing(context, "pretrain/epoch-1")(ir, vi)
    # One share a in [0, 1] per sample: blend = a I + (1 - a) V at every pixel of that sample.
    shares = ((blend - vi) / (ir - vi)).flatten(1)
    assert torch.allclose(shares, shares[:, :1].expand_as(shares), atol=1e-4)
    assert ((shares >= 0) & (shares <= 1)).all() and shares[:, 0].unique().numel() == 3
    # The same unit draws the same blends (a resumed unit trains on what it would have); another unit does not.
    assert torch.equal(_source_mixing(context, "pretrain/epoch-1")(ir, vi), blend)
    assert not torch.allclose(_source_mixing(context, "pretrain/epoch-2")(ir, vi), blend)

    run_training(params, tmp_path / "mixed")
    steps = [row for row in read_history(tmp_path / "mixed")["steps"]
             if row["stage"] in ("pretrain", "round-1/segmentation")]
    assert {"pretrain", "round-1/segmentation"} == {row["stage"] for row in steps}
    for row in steps:  # the blend's loss is logged and weighted into the total
        sources = row["loss_ir"] + row["loss_vi"] + row.get("loss_fused", 0.0)
        assert row["loss"] == pytest.approx(sources + 0.5 * row["loss_mixed"], rel=1e-5)
    joint = tiny_params(tiny_data, **{"train.mixed_sources": 0.5, "train.schedule": "joint"})
    assert run_training(joint, tmp_path / "joint") != run_training(
        tiny_params(tiny_data, **{"train.schedule": "joint"}), tmp_path / "joint-plain")
    with pytest.raises(ConfigError, match="train.mixed_sources"):
        tiny_params(tiny_data, **{"train.mixed_sources": -1})


def test_visible_weight_scales_or_drops_the_segmenters_loss_on_the_visible_image(tiny_data: Path, tmp_path: Path) -> None:
    assert tiny_params(tiny_data).train.visible_weight == 1.0  # the default: METHOD.md, F, I and V alike
    trained_stages = ("pretrain", "round-1/segmentation")
    for weight in (0.5, 0.0):
        run_training(tiny_params(tiny_data, **{"train.visible_weight": weight}), tmp_path / f"vi-{weight}")
        steps = [row for row in read_history(tmp_path / f"vi-{weight}")["steps"] if row["stage"] in trained_stages]
        assert set(trained_stages) == {row["stage"] for row in steps}
        for row in steps:
            others = row["loss_ir"] + row.get("loss_fused", 0.0)
            if weight == 0.0:  # the visible image is not run at all
                assert "loss_vi" not in row and row["loss"] == pytest.approx(others, rel=1e-5)
            else:
                assert row["loss"] == pytest.approx(others + weight * row["loss_vi"], rel=1e-5)
    # Leaving the visible image out trains another segmenter (the pretraining differs from step 1 on).
    half_visible = [row["loss_ir"] for row in read_history(tmp_path / "vi-0.5")["steps"] if row["stage"] == "pretrain"]
    infrared_only = [row["loss_ir"] for row in read_history(tmp_path / "vi-0.0")["steps"] if row["stage"] == "pretrain"]
    assert half_visible[0] == pytest.approx(infrared_only[0]) and half_visible[1:] != pytest.approx(infrared_only[1:])
    with pytest.raises(ConfigError, match="train.visible_weight"):
        tiny_params(tiny_data, **{"train.visible_weight": -0.5})


def test_background_only_ignores_the_object_pixels_and_keeps_background_and_ignored() -> None:
    labels = torch.tensor([[[0, 1, 2], [3, 255, 0]]])
    assert background_only(labels, 255).tolist() == [[[0, 255, 255], [255, 255, 0]]]
    assert labels.tolist() == [[[0, 1, 2], [3, 255, 0]]]  # the caller's labels are not changed


def test_visible_labels_background_trains_the_visible_image_on_its_background_only(tiny_data: Path,
                                                                                    tmp_path: Path) -> None:
    assert tiny_params(tiny_data).train.visible_labels == "all"  # the default: METHOD.md
    run_training(tiny_params(tiny_data), tmp_path / "all")
    run_training(tiny_params(tiny_data, **{"train.visible_labels": "background"}), tmp_path / "background")
    pretrain = {name: [row for row in read_history(tmp_path / name)["steps"] if row["stage"] == "pretrain"]
                for name in ("all", "background")}
    first_all, first_background = pretrain["all"][0], pretrain["background"][0]
    # Same segmenter at step 1: the infrared loss is the same, the visible one scores fewer pixels.
    assert first_background["loss_ir"] == pytest.approx(first_all["loss_ir"], rel=1e-6)
    assert first_background["loss_vi"] != pytest.approx(first_all["loss_vi"], rel=1e-3)
    assert first_background["loss"] == pytest.approx(first_background["loss_ir"] + first_background["loss_vi"], rel=1e-5)
    with pytest.raises(ConfigError, match="train.visible_labels"):
        tiny_params(tiny_data, **{"train.visible_labels": "objects"})


def test_fusion_stage_can_train_with_the_inference_mask(tiny_data: Path, tmp_path: Path) -> None:
    from uaafusion.attribution import labels_to_one_hot, modality_weights
    from uaafusion.data.datasets import create_dataset
    from uaafusion.training.stages import _round_masks, _round_weights, open_training, pretrain_segmenter

    assert tiny_params(tiny_data).train.fusion_mask == "labels"  # the default: METHOD.md's label mask
    params = tiny_params(tiny_data, **{"train.fusion_mask": "predicted"})
    run_dir = tmp_path / "run"
    pretrain_segmenter(params, run_dir)
    context = open_training(params, run_dir)
    masks = _round_masks(context, 1)
    weights = _round_weights(context, 1, masks)
    assert (run_dir / "masks-round-1.pt").is_file()
    dataset = create_dataset(params.data, params.data.train_split, crop=False)
    differs_from_labels = False
    for index in range(len(dataset)):
        sample = dataset[index]
        ir, vi = sample["ir"][None], sample["vi"][None]
        predicted = context.fusion.predicted_mask(context.segmenter, ir, vi)
        assert torch.equal(masks[sample["name"]].long(), predicted.argmax(dim=1))
        differs_from_labels |= not torch.equal(masks[sample["name"]][0].long(), sample["label"])
        if index < 2:  # the round's weights are computed with that mask, not the labels
            expected, _ = modality_weights(context.segmenter, ir, vi, predicted, params.attribution.steps,
                                           params.attribution.method, params.attribution.internal_batch_size,
                                           engine=params.attribution.engine, scale=params.attribution.scale)
            assert torch.allclose(weights[sample["name"]], expected[0], atol=1e-5)
            with_labels, _ = modality_weights(
                context.segmenter, ir, vi, labels_to_one_hot(sample["label"][None], params.data.num_classes,
                                                             params.data.ignore_index),
                params.attribution.steps, params.attribution.method, params.attribution.internal_batch_size,
                engine=params.attribution.engine, scale=params.attribution.scale)
            differs_from_labels |= not torch.allclose(with_labels[0], expected[0], atol=1e-4)
    assert differs_from_labels

    # A whole run trains (both schedules), deterministically, and differently from the label mask.
    first = run_training(params, tmp_path / "a")
    assert first == run_training(params, tmp_path / "b")
    labelled = run_training(tiny_params(tiny_data), tmp_path / "labels")
    assert first != labelled
    joint = run_training(tiny_params(tiny_data, **{"train.fusion_mask": "predicted", "train.schedule": "joint"}),
                         tmp_path / "joint")
    assert 0.0 <= joint["mIoU"] <= 1.0
    with pytest.raises(ConfigError, match="train.fusion_mask"):
        tiny_params(tiny_data, **{"train.fusion_mask": "boxes"})


@pytest.mark.parametrize("inference_mask", ["average", "infrared"])
def test_unlabeled_training_images_get_the_inference_mask(tiny_data: Path, tmp_path: Path, inference_mask: str) -> None:
    """The fusion stage's mask: the labels where an image has any, else the mask ``uaafusion fuse``
    uses (the model's ``inference_mask``), not a fixed choice of its own."""
    from uaafusion.attribution import labels_to_one_hot
    from uaafusion.data.datasets import create_dataset
    from tests.metrics.evaluation_fixtures import BinningSegmenter
    from uaafusion.training.stages import attribution_mask, open_training

    params = tiny_params(tiny_data, **{"model.fusion.inference_mask": inference_mask})
    context = open_training(params, tmp_path / "run")
    segmenter = BinningSegmenter(params.data.num_classes).eval()  # classes by brightness: known masks
    dataset = create_dataset(params.data, params.data.train_split, crop=False)
    samples = [dataset[0], dataset[1]]
    ir = torch.stack([sample["ir"] for sample in samples])
    vi = torch.stack([sample["vi"] for sample in samples])
    labels = torch.stack([samples[0]["label"], torch.full_like(samples[1]["label"], params.data.ignore_index)])
    mask = attribution_mask(context.fusion, segmenter, ir, vi, labels, params.data.num_classes,
                            params.data.ignore_index)
    assert torch.equal(mask[:1], labels_to_one_hot(labels[:1], params.data.num_classes, params.data.ignore_index))
    source = ir[1:] if inference_mask == "infrared" else (ir[1:] + vi[1:]) / 2
    other_source = (ir[1:] + vi[1:]) / 2 if inference_mask == "infrared" else ir[1:]
    assert torch.equal(mask[1:], context.fusion.predicted_mask(segmenter, ir[1:], vi[1:]))
    assert torch.equal(mask[1:].argmax(dim=1), segmenter(source).argmax(dim=1))
    assert not torch.equal(mask[1:].argmax(dim=1), segmenter(other_source).argmax(dim=1))  # the choice matters


@pytest.mark.parametrize("schedule", ["alternating", "joint"])
def test_mixed_precision_trains_on_the_cpu(tiny_data: Path, tmp_path: Path, schedule: str) -> None:
    """``train.amp`` (bfloat16 autocast) runs every training step on any device; the GPU preset
    uses it, and this is the same code path (the frozen segmenter's derivative passes included)."""
    amp = run_training(tiny_params(tiny_data, **{"train.amp": True, "train.schedule": schedule}), tmp_path / "amp")
    full = run_training(tiny_params(tiny_data, **{"train.schedule": schedule}), tmp_path / "full")
    steps = read_history(tmp_path / "amp")["steps"]
    assert steps and all(torch.isfinite(torch.tensor(row["loss"])) for row in steps)
    assert 0.0 <= amp["mIoU"] <= 1.0
    # Lower-precision arithmetic really ran: the losses differ from float32's, but not by much.
    amp_losses = [row["loss"] for row in steps]
    full_losses = [row["loss"] for row in read_history(tmp_path / "full")["steps"]]
    assert amp_losses != full_losses
    assert amp_losses[0] == pytest.approx(full_losses[0], rel=0.05)
    assert set(amp) == set(full)


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(
        tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from uaafusion.training import fusion_stage, pretrain_segmenter

    params = tiny_params(tiny_data)
    run_dir = tmp_path / "run"
    pretrain_segmenter(params, run_dir)
    good_state = (run_dir / STATE_FILE_NAME).read_bytes()

    import uaafusion.losses as losses

    original = losses.FusionLoss.__call__

    def poisoned(self, *args, **kwargs):
        terms = original(self, *args, **kwargs)
        terms["total"] = terms["total"] * float("nan")
        return terms

    monkeypatch.setattr(losses.FusionLoss, "__call__", poisoned)
    with pytest.raises(TrainingError, match=r"round-1/fusion/epoch-1: the loss became nan.*last good checkpoint"):
        fusion_stage(params, run_dir, 1)
    assert (run_dir / STATE_FILE_NAME).read_bytes() == good_state


_CHILD = """
import sys
from tests.helpers import tiny_params_dict
from uaafusion.config import params_from_dict
from uaafusion.training import run_training
params = params_from_dict(tiny_params_dict(**{"data.root": sys.argv[1], "train.rounds": 2}))
run_training(params, sys.argv[2])
"""


def _start_child(data_root: Path, run_dir: Path) -> subprocess.Popen:
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(data_root), str(run_dir)], cwd=REPO_ROOT,
                            env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_run_killed_mid_training_resumes_to_the_same_result(tiny_data: Path, tmp_path: Path) -> None:
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    reference = _start_child(tiny_data, reference_dir)
    assert reference.wait(timeout=600) == 0, reference.stderr.read().decode()[-3000:]

    child = _start_child(tiny_data, killed_dir)
    state = killed_dir / STATE_FILE_NAME
    deadline = time.monotonic() + 600
    # Kill right after the second unit is saved: the third is then half done.
    while time.monotonic() < deadline:
        if state.is_file() and len(read_history(killed_dir)["units"]) >= 2:
            break
        assert child.poll() is None, "the run finished before it could be killed"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    units_at_kill = len(read_history(killed_dir)["units"])
    assert units_at_kill < len(read_history(reference_dir)["units"])

    resumed = _start_child(tiny_data, killed_dir)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read().decode()[-3000:]
    assert numbers(read_history(killed_dir)) == numbers(read_history(reference_dir))
    reference_steps = json.loads((reference_dir / "history.json").read_text())["steps"]
    assert read_history(killed_dir)["steps"] == reference_steps


def test_run_fingerprint_follows_params_and_source_code(tiny_data: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A run folder is found by the fingerprint: changed code must not resume (or re-export) the
    run that the old code trained."""
    from uaafusion.training import stages

    params = tiny_params(tiny_data)
    fingerprint = stages.run_fingerprint(params)
    assert fingerprint == stages.run_fingerprint(tiny_params(tiny_data, **{"train.retries": 3}))
    assert fingerprint != stages.run_fingerprint(tiny_params(tiny_data, **{"train.lr_fusion": 0.002}))
    monkeypatch.setattr(stages, "package_source_digest", lambda: "another version of the code")
    assert stages.run_fingerprint(params) != fingerprint

    package = tmp_path / "package"
    (package / "models").mkdir(parents=True)
    (package / "losses.py").write_text("WEIGHT = 1.0\n")
    (package / "models" / "net.py").write_text("STAGES = 3\n")
    (package / "notes.txt").write_text("not code\n")
    first = stages.source_digest(package)
    (package / "notes.txt").write_text("still not code\n")
    assert stages.source_digest(package) == first
    (package / "models" / "net.py").write_text("STAGES = 4\n")
    assert stages.source_digest(package) != first
    (package / "models" / "net.py").write_text("STAGES = 3\n")
    assert stages.source_digest(package) == first
    (package / "models" / "extra.py").write_text("")
    assert stages.source_digest(package) != first
