"""A tiny project for the experiment scripts: shrunk params.yaml and its synthetic data."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, write_tiny_params
from uaafusion.config import Params, load_params
from uaafusion.data.synthetic import write_synthetic_dataset

if str(REPO_ROOT) not in sys.path:  # the scripts under experiments/ import as a package from the root
    sys.path.insert(0, str(REPO_ROOT))


@pytest.fixture
def tiny_project(tmp_path: Path) -> tuple[Path, Params]:
    """``(params file, params)`` of a tiny project under ``tmp_path`` whose synthetic data is written."""
    data_root = tmp_path / "synthetic"
    params_file = write_tiny_params(tmp_path / "params.yaml", **{"data.root": str(data_root)})
    params = load_params(params_file)
    write_synthetic_dataset(params.synthetic, data_root)
    return params_file, params
