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
from uaafusion.errors import TrainingError
from uaafusion.training import read_history, run_training, training_units
from uaafusion.training.state import STATE_FILE_NAME


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


def test_segmentation_stage_trains_on_the_images_the_fusion_stage_fused(tiny_data: Path, tmp_path: Path) -> None:
    """The segmentation stage's fused images: the frozen fusion network with each image's label mask
    and this round's cached weights (the fusion stage's inputs), one per full training image."""
    from uaafusion.attribution import labels_to_one_hot
    from uaafusion.models import exact_inference
    from uaafusion.training.round_stores import fused_image_store, round_weights
    from uaafusion.training.stages import fusion_stage, open_training, pretrain_segmenter

    params = tiny_params(tiny_data)
    pretrain_segmenter(params, tmp_path / "run")
    fusion_stage(params, tmp_path / "run", 1)
    context = open_training(params, tmp_path / "run")
    weights = round_weights(context, 1)
    assert (tmp_path / "run" / "weights-round-1.pt").is_file()  # kept for the segmentation stage and a resume
    store = fused_image_store(context, weights)
    dataset = context.dataset(params.data.train_split, crop=False)
    assert sorted(store) == sorted(dataset.names)
    sample = dataset[0]
    ir, vi = sample["ir"][None], sample["vi"][None]
    mask = labels_to_one_hot(sample["label"][None], params.data.num_classes, params.data.ignore_index)
    weight_ir = weights[sample["name"]][None]
    context.fusion.eval()
    with torch.no_grad(), exact_inference(context.fusion):  # training computes exactly, whatever the inference mode
        expected = context.fusion(ir, vi, context.segmenter, mask=mask, weights=(weight_ir, 1 - weight_ir)).fused[0]
    assert torch.allclose(store[sample["name"]], expected, atol=1e-6)
    assert context.fusion.inference_mode == "fast"  # restored after the store was made


@pytest.mark.parametrize("inference_mask", ["average", "infrared"])
def test_unlabeled_training_images_get_the_inference_mask(tiny_data: Path, tmp_path: Path, inference_mask: str) -> None:
    """The fusion stage's mask: the labels where an image has any, else the mask ``uaafusion fuse``
    uses (the model's ``inference_mask``), not a fixed choice of its own."""
    from uaafusion.attribution import labels_to_one_hot
    from uaafusion.data.datasets import create_dataset
    from tests.metrics.evaluation_fixtures import BinningSegmenter
    from uaafusion.training.context import open_training
    from uaafusion.training.round_stores import attribution_mask

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
    from uaafusion.training import context as stages

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


def test_a_damaged_training_state_falls_back_to_the_one_before_and_two_damaged_ones_stop(
        tiny_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from uaafusion.integrity import previous_path
    from uaafusion.training import open_training, pretrain_segmenter

    params = tiny_params(tiny_data, **{"train.pretrain_epochs": 2})
    run_dir = tmp_path / "run"
    pretrain_segmenter(params, run_dir)
    state = run_dir / STATE_FILE_NAME
    state.write_bytes(state.read_bytes()[:1000])  # truncated, as by a crash of the disk
    with caplog.at_level("WARNING"):
        context = open_training(params, run_dir)
    assert context.progress.completed == ["pretrain/epoch-1"]  # the state before: epoch 2 is trained again
    assert f"{state}: its SHA-256" in caplog.text and "trying the state before it" in caplog.text
    previous = previous_path(state)
    previous.write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match=rf"every saved training state is damaged:\n  {state}.*\n  {previous}"):
        open_training(params, run_dir)


def test_a_damaged_weight_store_is_computed_again(tiny_data: Path, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    from uaafusion.training.round_stores import _kept_in_run_folder

    calls = []

    def compute() -> dict[str, torch.Tensor]:
        calls.append(1)
        return {"day_0000": torch.full((1, 4, 4), 0.25)}

    path = tmp_path / "weights-round-1.pt"
    assert torch.equal(_kept_in_run_folder(path, compute)["day_0000"], _kept_in_run_folder(path, compute)["day_0000"])
    assert len(calls) == 1
    path.write_bytes(path.read_bytes()[:-10])
    with caplog.at_level("WARNING"):
        assert float(_kept_in_run_folder(path, compute)["day_0000"].mean()) == 0.25
    assert len(calls) == 2 and f"{path}: its SHA-256" in caplog.text and "computing it again" in caplog.text
