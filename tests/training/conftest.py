"""Fixtures of the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import tiny_params_dict
from uaafusion.config import params_from_dict
from uaafusion.data.synthetic import write_synthetic_dataset


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded synthetic dataset at the tiny test size, written once per test module."""
    root = tmp_path_factory.mktemp("synthetic")
    params = params_from_dict(tiny_params_dict())
    write_synthetic_dataset(params.synthetic, root)
    return root
