"""``uaafusion methods``: every registered fusion model with its parameter count at the params' sizes."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import REPO_ROOT
from uaafusion.cli import main as cli_main
from uaafusion.models import available_fusion_models, count_parameters, create_fusion_model


def test_lists_every_model_with_its_parameters_at_the_params_sizes(capsys: pytest.CaptureFixture) -> None:
    assert cli_main(["methods", "--params", str(REPO_ROOT / "params.yaml"), "-S", "model.fusion.features=12"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert list(lines) == available_fusion_models()  # with any a plugin (or another test) registered
    for name in ("uaafusion", "alpha_blend", "mask_guided", "prompt"):
        expected = count_parameters(create_fusion_model(name, stages=3, features=12))
        assert f"{expected:,} parameters" in lines[name]
        assert len(lines[name].split("parameters", 1)[1].strip()) > 10  # one line saying what it is


def test_a_model_that_takes_other_arguments_is_listed_with_the_reason(capsys: pytest.CaptureFixture) -> None:
    from uaafusion.models import register_fusion_model

    @register_fusion_model("fixed-blend-for-test")
    class FixedBlend(torch.nn.Module):
        """A blend without sizes."""

        def __init__(self, share: float = 0.5) -> None:
            super().__init__()

    assert cli_main(["methods", "--params", str(REPO_ROOT / "params.yaml")]) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("fixed-blend-for-test")]
    assert "? parameters  cannot be built from model.fusion" in line and "stages" in line


def test_a_bad_size_is_named(capsys: pytest.CaptureFixture) -> None:
    assert cli_main(["methods", "--params", str(REPO_ROOT / "params.yaml"), "-S", "model.fusion.features=1"]) == 2
    assert "model.fusion.features" in capsys.readouterr().err
