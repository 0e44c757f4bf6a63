"""uaafusion.ddp without a process group: the rank shares of a batch, the world checks, one-process identities."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler

from uaafusion import ddp


def global_batches(size: int, batch_size: int, drop_last: bool, seed: int = 0) -> BatchSampler:
    return BatchSampler(RandomSampler(range(size), generator=torch.Generator().manual_seed(seed)), batch_size, drop_last)


@pytest.mark.parametrize("size, batch_size, world_size", [(12, 4, 2), (10, 4, 2), (9, 3, 3), (7, 6, 4)])
def test_rank_shares_together_are_one_process_batches(size: int, batch_size: int, world_size: int) -> None:
    one_process = list(global_batches(size, batch_size, drop_last=False))
    shares = [list(ddp.RankShareSampler(global_batches(size, batch_size, drop_last=False), rank, world_size))
              for rank in range(world_size)]
    kept = [batch for batch in one_process if len(batch) >= world_size]  # a last batch too short to share is left out
    assert all(len(share) == len(kept) for share in shares)  # every rank takes part in every step
    for step, batch in enumerate(kept):
        assert sorted(index for share in shares for index in share[step]) == sorted(batch)
        assert shares[0][step] == batch[0::world_size]
    assert all(len(ddp.RankShareSampler(global_batches(size, batch_size, False), rank, world_size)) == len(kept)
               for rank in range(world_size))


def test_one_rank_share_is_the_whole_batch_in_the_same_order() -> None:
    batches = BatchSampler(SequentialSampler(range(10)), 4, drop_last=True)
    assert list(ddp.RankShareSampler(batches, 0, 1)) == list(batches) == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_without_process_group_everything_is_one_process() -> None:
    assert ddp.world() == ddp.World(0, 1, 0) and ddp.is_main() and not ddp.is_distributed()
    assert ddp.from_main("value") == "value"
    assert ddp.shard([1, 2, 3]) == [1, 2, 3]
    assert ddp.gather_shards(["a", "b"], lambda items: {item: item.upper() for item in items}) == {"a": "A", "b": "B"}
    assert ddp.mean_over_ranks({"loss": 2.0}, torch.device("cpu")) == {"loss": 2.0}
    module = torch.nn.Linear(2, 2)
    assert ddp.wrap(module) is module
    assert ddp.synchronise_batch_norm(module, torch.device("cpu")) is module


def test_init_without_torchrun_environment_stays_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ddp.LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert ddp.init_process_group("cpu", timeout_s=5) == ddp.World()
    assert not torch.distributed.is_initialized()


def test_describe_devices_names_count_and_kind() -> None:
    assert ddp.describe_devices(torch.device("cpu"), 2).startswith("2 x cpu (")
