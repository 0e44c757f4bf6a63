"""Fixtures of the metrics tests: small evaluation folders written per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.metrics.evaluation_fixtures import write_evaluation_folders


@pytest.fixture()
def evaluation_folders(tmp_path: Path) -> dict[str, Path]:
    """``{"ir", "vi", "fused"}`` folders of three 24x32 triples (names alpha, beta, gamma; png/bmp/tif)."""
    return write_evaluation_folders(tmp_path)
