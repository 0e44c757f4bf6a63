"""torch.distributed for training: the process group torchrun describes, each rank's role, and the
few collective operations the training stages need.

One process per device (``torchrun --nproc-per-node N``): ``nccl`` on CUDA, ``gloo`` on the CPU. Every
rank runs the same stages on its share of each global batch; DistributedDataParallel averages the
gradients, so one step changes the parameters as one process would on the whole batch (the segmenter's
BatchNorm statistics are synchronised on CUDA, per rank on the CPU: ``SyncBatchNorm`` needs a GPU).
Only rank 0 writes the run folder, logs to MLflow and shows progress. Without a process group (one
process, the default) every function here is the one-process identity.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch.utils.data import BatchSampler, Sampler

from uaafusion.errors import TrainingError

Item = TypeVar("Item")
Value = TypeVar("Value")

# What torchrun (and every launcher following its contract) sets in each worker's environment.
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """The current process group's world (one process when none is initialised)."""
    if not is_distributed():
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main() -> bool:
    """True in the one process that writes files, logs to MLflow and shows progress (rank 0)."""
    return world().is_main


def progress_disabled() -> bool | None:
    """tqdm's ``disable`` for this process: ``None`` (shown on a terminal) in rank 0, ``True`` elsewhere."""
    return None if is_main() else True


def environment_rank() -> int:
    """The global rank torchrun gave this process (0 without torchrun), known before the group exists."""
    return int(os.environ.get("RANK", "0"))


def launched_by_torchrun() -> bool:
    """True when the environment describes a process group (torchrun's variables are set)."""
    return all(name in os.environ for name in LAUNCHER_VARIABLES)


def init_process_group(device_type: str, timeout_s: float) -> World:
    """Join the process group that torchrun's environment describes: ``nccl`` when ``device_type`` is
    ``cuda`` (each rank on ``cuda:LOCAL_RANK``), else ``gloo``. A collective that waits longer than
    ``timeout_s`` for another rank raises instead of hanging."""
    if not launched_by_torchrun():
        return World()
    local_rank = int(os.environ["LOCAL_RANK"])
    backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl":
        if local_rank >= torch.cuda.device_count():
            raise TrainingError(f"local rank {local_rank} has no GPU: this node has {torch.cuda.device_count()}. "
                                "Start at most that many processes per node (--nproc-per-node).")
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return world()


def destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_device(device: torch.device) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` when ``device`` is CUDA under a process group."""
    if device.type == "cuda" and is_distributed():
        return torch.device("cuda", world().local_rank)
    return device


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def from_main(value: Value) -> Value:
    """Rank 0's ``value`` on every rank (a decision all ranks must take alike)."""
    if not is_distributed():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def shard(items: Sequence[Item]) -> list[Item]:
    """This rank's share of ``items``: every ``world_size``-th one from its rank on."""
    current = world()
    return list(items[current.rank::current.world_size])


def gather_shards(items: Sequence[Item], compute: Callable[[list[Item]], dict[str, Value]]) -> dict[str, Value]:
    """``compute`` over this rank's :func:`shard` of ``items``; returns the union of every rank's
    results (keys unique across ranks), the same dict on every rank."""
    mine = compute(shard(items))
    if not is_distributed():
        return mine
    gathered: list[dict[str, Value] | None] = [None] * world().world_size
    dist.all_gather_object(gathered, mine)
    merged: dict[str, Value] = {}
    for part in gathered:
        merged.update(part or {})
    return merged


def mean_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Each value averaged over the ranks (what one step logs: the mean of the ranks' losses)."""
    if not is_distributed() or not values:
        return values
    keys = list(values)  # the same order on every rank: the same code made them
    tensor = torch.tensor([float(values[key]) for key in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    tensor /= world().world_size
    return dict(zip(keys, tensor.tolist()))


def wrap(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` in DistributedDataParallel (its trainable parameters' gradients averaged over the ranks
    at each backward pass); ``module`` itself in one process. Wrap after choosing what trains: the
    parameters that require a gradient at this point are the ones kept in step."""
    if not is_distributed():
        return module
    from torch.nn.parallel import DistributedDataParallel

    parameter = next(module.parameters())
    device_ids = [parameter.device.index] if parameter.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)  # buffers follow rank 0 at each forward


def synchronise_batch_norm(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """BatchNorm layers as ``SyncBatchNorm`` (statistics over the global batch) when several CUDA ranks
    train; unchanged otherwise (``SyncBatchNorm`` runs on GPUs only; CPU ranks normalise their share)."""
    if is_distributed() and device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return module


class RankShareSampler(Sampler[list[int]]):
    """This rank's share of each global batch of ``batches``: positions ``rank, rank + world_size, ...``.

    One process draws the same global batches (same seed, same crops); each rank takes its share, so
    the ranks together see exactly what one process would. A global batch smaller than the number of
    ranks (a last, short one) is left out: every rank must take part in every step.
    """

    def __init__(self, batches: BatchSampler, rank: int, world_size: int) -> None:
        self.batches = batches
        self.rank = rank
        self.world_size = world_size

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            if len(batch) >= self.world_size:
                yield list(batch[self.rank::self.world_size])

    def __len__(self) -> int:
        full, rest = divmod(len(self.batches.sampler), self.batches.batch_size)
        return full + int(not self.batches.drop_last and rest >= self.world_size)


def check_world(batch_size: int) -> None:
    """Every rank needs a share of every global batch: ``data.batch_size`` >= the number of ranks."""
    size = world().world_size
    if batch_size < size:
        raise TrainingError(f"data.batch_size = {batch_size} is smaller than the {size} training processes: each "
                            f"process takes a share of every batch. Set data.batch_size to at least {size} "
                            "(a multiple of it splits evenly) or start fewer processes.")


def describe_devices(device: torch.device, world_size: int) -> str:
    """The devices of a run of ``world_size`` processes as a tag: ``"2 x cpu (model)"``,
    ``"4 x cuda (NVIDIA H100 80GB HBM3)"``."""
    from uaafusion.device import device_name

    return f"{world_size} x {device.type} ({device_name(device)})"
