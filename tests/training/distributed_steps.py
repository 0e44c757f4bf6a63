"""What each process does in tests/training/test_distributed.py, started by torchrun:

    torchrun --standalone --nproc-per-node 2 -m tests.training.distributed_steps DATA RUN_DIR OUT

Each rank computes the round's attribution weights (its share, gathered), one fusion step and, from
fresh models, one segmenter step (in float64,
without dropout: :class:`ComparableSegmenter`) on the same global batch, and saves what it ended with to
``OUT/rank-N.pt``: the weights, the parameters after each step and their gradients.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from uaafusion import ddp
from uaafusion.config import Params, params_from_dict

FUSION_UNIT = "round-1/fusion/epoch-1"
SEGMENTER_UNIT = "pretrain/epoch-1"


def step_params(data_root: Path) -> Params:
    """The tiny configuration with one global batch of all six training crops (one step per epoch)."""
    from tests.helpers import tiny_params_dict

    return params_from_dict(tiny_params_dict(**{"data.root": str(data_root), "data.batch_size": 6}))


def trained_state(module: torch.nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """Parameters and their gradients (the averaged ones under DistributedDataParallel), by name."""
    return {"parameters": {name: value.detach().clone() for name, value in module.named_parameters()},
            "gradients": {name: value.grad.detach().clone() for name, value in module.named_parameters()
                          if value.grad is not None}}


class ComparableSegmenter(torch.nn.Module):
    """The segmenter in float64 and without dropout, for comparing one step in two processes with one
    process. Dropout masks are random draws of each process, which no split of a batch can reproduce.
    In float32 its gradients carry noise of about 1e-3 of their norm (BatchNorm over few values per
    channel amplifies rounding; biases that the next BatchNorm cancels have a true gradient of 0 and
    a noisy computed one, which AdamW's first step turns into +-lr): float64 leaves the engine's own
    differences to see."""

    def __init__(self, segmenter: torch.nn.Module) -> None:
        super().__init__()
        for layer in segmenter.modules():
            if isinstance(layer, torch.nn.modules.dropout._DropoutNd):
                layer.p = 0.0
        self.segmenter = segmenter.double()  # the same parameter objects: the optimiser keeps them

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.segmenter(image.double())


def main(data_root: str, run_dir: str, out: str) -> None:
    from uaafusion.training.context import open_training
    from uaafusion.training.epochs import fusion_epoch, segmenter_epoch
    from uaafusion.training.round_stores import round_weights

    current = ddp.init_process_group("cpu", timeout_s=120)
    params = step_params(Path(data_root))
    context = open_training(params, Path(run_dir))
    weights = dict(round_weights(context, 1))
    fusion_epoch(context, FUSION_UNIT, weights)
    fusion = trained_state(context.fusion)
    context = open_training(params, Path(run_dir))  # fresh models: nothing was saved
    context.objects.segmenter = ComparableSegmenter(context.segmenter)
    segmenter_epoch(context, SEGMENTER_UNIT, fused_store=None)
    result = {"world_size": current.world_size, "weights": weights, "fusion": fusion,
              "segmenter": trained_state(context.segmenter.segmenter), "steps": context.progress.global_step}
    Path(out).mkdir(parents=True, exist_ok=True)
    torch.save(result, Path(out) / f"rank-{current.rank}.pt")
    ddp.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:4])
