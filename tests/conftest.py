"""Test configuration shared by the whole suite."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

# Tests import `tests.helpers`; make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Two cores on CI: keep intra-op threads bounded so parallel work does not thrash.
torch.set_num_threads(2)
