"""Training in two processes (gloo on the CPU, launched by torchrun) against one process.

One optimisation step of each network on the same global batch: the fusion network (no BatchNorm)
ends with the parameters one process gets from the whole batch; the segmenter's BatchNorm normalises
each rank's share on the CPU (``SyncBatchNorm`` needs CUDA), so its reference is one process that
averages the gradients of the two shares, which is what DistributedDataParallel computes (both sides
in float64 and without dropout: :class:`~tests.training.distributed_steps.ComparableSegmenter`). The gathered
attribution weights equal one process's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO_ROOT
from tests.training.distributed_steps import FUSION_UNIT, SEGMENTER_UNIT, ComparableSegmenter, step_params, trained_state
from uaafusion.training.context import open_training
from uaafusion.training.epochs import fusion_epoch, segmenter_loss
from uaafusion.training.loop import clip_gradients, set_trainable, train_batches
from uaafusion.training.round_stores import round_weights

WORLD_SIZE = 2
PARAMETER_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def two_ranks(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """What each of two torchrun processes ended with (tests/training/distributed_steps.py)."""
    work = tmp_path_factory.mktemp("two-ranks")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(WORLD_SIZE),
               "-m", "tests.training.distributed_steps", str(tiny_data), str(work / "run"), str(work / "out")]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return [torch.load(work / "out" / f"rank-{rank}.pt", weights_only=False) for rank in range(WORLD_SIZE)]


def assert_close(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], tolerance: float) -> None:
    assert actual.keys() == expected.keys()
    worst = max((actual[name] - expected[name]).abs().max().item() for name in expected)
    assert worst <= tolerance, f"largest difference {worst:.3g} > {tolerance}"


def test_ranks_stay_identical(two_ranks: list[dict]) -> None:
    first, second = two_ranks
    assert first["world_size"] == WORLD_SIZE and first["steps"] == 1  # one step: the whole batch in one
    for network in ("fusion", "segmenter"):
        assert_close(second[network]["parameters"], first[network]["parameters"], 0.0)


def test_gathered_weights_equal_one_process(two_ranks: list[dict], tiny_data: Path, tmp_path: Path) -> None:
    context = open_training(step_params(tiny_data), tmp_path / "one")
    expected = dict(round_weights(context, 1))
    gathered = two_ranks[0]["weights"]
    assert list(gathered) == list(expected)  # every training image, in the dataset's order
    assert_close(gathered, expected, 1e-6)
    assert_close(two_ranks[1]["weights"], gathered, 0.0)


def test_fusion_step_equals_one_process_on_the_whole_batch(two_ranks: list[dict], tiny_data: Path,
                                                           tmp_path: Path) -> None:
    context = open_training(step_params(tiny_data), tmp_path / "one")
    fusion_epoch(context, FUSION_UNIT, dict(round_weights(context, 1)))
    expected = trained_state(context.fusion)
    before = dict(open_training(step_params(tiny_data), tmp_path / "fresh").fusion.named_parameters())
    assert max((expected["parameters"][name] - before[name]).abs().max().item() for name in before) > 1e-4  # it moved
    assert_close(two_ranks[0]["fusion"]["gradients"], expected["gradients"], 1e-6)
    assert_close(two_ranks[0]["fusion"]["parameters"], expected["parameters"], PARAMETER_TOLERANCE)


def test_segmenter_step_equals_one_process_averaging_the_shares(two_ranks: list[dict], tiny_data: Path,
                                                                tmp_path: Path) -> None:
    context = open_training(step_params(tiny_data), tmp_path / "one")
    segmenter = context.objects.segmenter = ComparableSegmenter(context.segmenter)
    set_trainable(segmenter, True)
    segmenter.train()
    optimizer = context.objects.optimizers["segmenter"]
    (batch,) = list(train_batches(context, SEGMENTER_UNIT))  # the global batch (one process draws it all)
    optimizer.zero_grad(set_to_none=True)
    for rank in range(WORLD_SIZE):  # each rank's share: positions rank, rank + 2, ...
        share = slice(rank, None, WORLD_SIZE)
        loss, _ = segmenter_loss(context, {"ir": batch["ir"][share], "vi": batch["vi"][share]},
                                 batch["label"][share], segmenter)
        (loss / WORLD_SIZE).backward()  # DistributedDataParallel averages the ranks' gradients
    clip_gradients(segmenter, context.params.train.grad_clip)
    optimizer.step()
    expected = trained_state(segmenter.segmenter)
    assert_close(two_ranks[0]["segmenter"]["gradients"], expected["gradients"], 1e-6)
    assert_close(two_ranks[0]["segmenter"]["parameters"], expected["parameters"], PARAMETER_TOLERANCE)
