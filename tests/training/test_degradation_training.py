"""Degradation-aware training (``degrade:`` in params.yaml): degraded inputs, clean loss targets,
the kind of each sample given to models that ask for it and logged; off by default."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import tiny_params_dict
from tests.training.test_stages import tiny_params
from uaafusion.config import params_from_dict
from uaafusion.data.datasets import create_dataset
from uaafusion.errors import ConfigError
from uaafusion.losses import FusionLoss
from uaafusion.models.registry import register_fusion_model
from uaafusion.models.unfolding import UnfoldingFusionNet
from uaafusion.training import read_history, run_training

KINDS = ["noise", "ir_stripes"]


@register_fusion_model("test-degradation-spy")
class DegradationSpy(UnfoldingFusionNet):
    """The unfolding network, recording the inputs and the degradation kinds each call is given."""

    accepts_degradation = True
    calls: list[tuple[torch.Tensor, torch.Tensor, list[str] | None]] = []

    def forward(self, ir, vi, segmenter, mask=None, weights=None, degradation=None):
        DegradationSpy.calls.append((ir.detach().clone(), vi.detach().clone(), degradation))
        return super().forward(ir, vi, segmenter, mask=mask, weights=weights)


def test_training_crops_are_degraded_reproducibly_and_keep_their_clean_sources(tiny_data: Path) -> None:
    params = tiny_params(tiny_data, **{"degrade.kinds": ["haze", "ir_stripes"], "degrade.probability": 1.0})
    dataset = create_dataset(params.data, "train", crop=True, seed=3, degrade=params.degrade)
    kinds = set()
    for index in range(len(dataset)):
        sample = dataset[index]
        kinds.add(sample["degradation"])
        if sample["degradation"] == "haze":  # the visible crop changes (luma and colour), the infrared does not
            assert torch.equal(sample["ir"], sample["ir_clean"]) and not torch.equal(sample["vi"], sample["vi_clean"])
        else:
            assert torch.equal(sample["vi"], sample["vi_clean"]) and not torch.equal(sample["ir"], sample["ir_clean"])
        again = dataset[index]
        assert all(torch.equal(sample[key], again[key]) for key in ("ir", "vi", "vi_crcb"))
    assert kinds == {"haze", "ir_stripes"}
    dataset.set_epoch(1)  # another epoch draws other degradations
    assert any(not torch.equal(dataset[index]["ir"], create_dataset(
        params.data, "train", crop=True, seed=3, degrade=params.degrade)[index]["ir"]) for index in range(len(dataset)))

    never = tiny_params(tiny_data, **{"degrade.kinds": KINDS, "degrade.probability": 0.0})
    sample = create_dataset(never.data, "train", crop=True, seed=3, degrade=never.degrade)[0]
    assert sample["degradation"] == "clean" and torch.equal(sample["ir"], sample["ir_clean"])


def test_degradation_is_off_by_default_and_never_touches_whole_images(tiny_data: Path) -> None:
    params = tiny_params(tiny_data)
    assert params.degrade.kinds == ()
    sample = create_dataset(params.data, "train", crop=True, seed=0, degrade=params.degrade)[0]
    assert set(sample) == {"name", "ir", "vi", "vi_crcb", "label", "roi", "crop"}
    on = tiny_params(tiny_data, **{"degrade.kinds": KINDS, "degrade.probability": 1.0})
    whole = create_dataset(on.data, "train", crop=False, seed=0, degrade=on.degrade)[0]  # validation, attribution
    assert "degradation" not in whole


def test_fusion_sees_degraded_inputs_and_its_losses_the_clean_sources(tiny_data: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    targets: list[tuple[torch.Tensor, torch.Tensor]] = []
    original = FusionLoss.__call__

    def recording(self, output, ir, vi, *rest):
        targets.append((ir.detach().clone(), vi.detach().clone()))
        return original(self, output, ir, vi, *rest)

    monkeypatch.setattr(FusionLoss, "__call__", recording)
    DegradationSpy.calls.clear()
    params = tiny_params(tiny_data, **{"degrade.kinds": KINDS, "degrade.probability": 1.0,
                                       "model.fusion.name": "test-degradation-spy"})
    run_training(params, tmp_path / "run")

    training_calls = [call for call in DegradationSpy.calls if call[2] is not None]
    assert len(training_calls) == len(targets) > 0
    for (ir, vi, kinds), (ir_target, vi_target) in zip(training_calls, targets):
        assert set(kinds) <= set(KINDS) and len(kinds) == ir.shape[0]
        for index, kind in enumerate(kinds):
            degraded, clean = (ir, ir_target) if kind == "ir_stripes" else (vi, vi_target)
            untouched, same = (vi, vi_target) if kind == "ir_stripes" else (ir, ir_target)
            assert not torch.equal(degraded[index], clean[index])
            assert torch.equal(untouched[index], same[index])
    # The share of each kind is logged with every training step of both networks.
    steps = read_history(tmp_path / "run")["steps"]
    for row in steps:
        shares = [row[f"degraded_{kind}"] for kind in ("clean", *KINDS)]
        assert sum(shares) == pytest.approx(1.0) and row["degraded_clean"] == 0.0
    assert {row["stage"] for row in steps} == {"pretrain", "round-1/fusion", "round-1/segmentation"}


def test_a_model_without_the_flag_is_not_given_the_kinds(tiny_data: Path, tmp_path: Path) -> None:
    """The default network trains on degraded crops without a degradation argument (it would refuse one)."""
    params = tiny_params(tiny_data, **{"degrade.kinds": KINDS, "degrade.probability": 1.0,
                                       "train.schedule": "joint"})
    metrics = run_training(params, tmp_path / "joint")
    assert 0.0 <= metrics["mIoU"] <= 1.0
    assert all(row["degraded_clean"] == 0.0 for row in read_history(tmp_path / "joint")["steps"])


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("degrade.kinds", ["fog"], "fog"),
    ("degrade.probability", 1.5, "degrade.probability"),
    ("degrade.severity", [0.9, 0.2], "degrade.severity"),
    ("evaluate.degraded.kinds", ["snow"], "snow"),
    ("evaluate.degraded.severity", -0.1, "evaluate.degraded.severity"),
])
def test_bad_degradation_params_name_the_key(key: str, value: object, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        params_from_dict(tiny_params_dict(**{key: value}))
