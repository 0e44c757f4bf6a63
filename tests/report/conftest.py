"""Fixtures of the report tests: a whole fake project built once, and a bare one per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.report.fake_project import (
    write_evaluation,
    write_fused_images,
    write_models,
    write_params,
    write_tiny_dataset,
    write_training_csvs,
)
from uaafusion.cli import main as cli_main
from uaafusion.paths import ProjectPaths


@pytest.fixture(scope="session")
def built_report(tmp_path_factory: pytest.TempPathFactory) -> ProjectPaths:
    """A fake project with every input (model, curves, fused images, comparison), built by ``uaafusion report``;
    a stale sample figure from an earlier build lies in ``figures/``."""
    root = tmp_path_factory.mktemp("project")
    paths = ProjectPaths.at(root)
    write_params(paths.params)
    write_tiny_dataset(root / "data" / "tiny")
    write_models(paths.model_checkpoint)
    write_evaluation(paths)
    write_training_csvs(paths)
    write_fused_images(paths)
    (paths.reports / "figures").mkdir(parents=True, exist_ok=True)
    (paths.reports / "figures" / "sample_stale.png").write_bytes(b"old")
    assert cli_main(["report", "--params", str(paths.params)]) == 0
    return paths


@pytest.fixture
def project(tmp_path: Path) -> ProjectPaths:
    """A project with its test split, ``evaluation.json`` and ``comparison.json`` only (no model, curves or
    fused images), its params (one sample) in ``params.yaml``."""
    paths = ProjectPaths.at(tmp_path)
    write_params(paths.params, report={"samples": 1})
    write_tiny_dataset(tmp_path / "data" / "tiny")
    write_evaluation(paths)
    return paths
