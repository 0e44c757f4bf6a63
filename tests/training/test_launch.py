"""uaafusion.training.launch: the torchrun command and what a failed run reports."""

from __future__ import annotations

import json

import pytest

from uaafusion.errors import TrainingError
from uaafusion.training.launch import check_processes, failure_message, torchrun_command

# torchrun's own summary after one worker was killed (torch.distributed.elastic), shortened.
KILLED_RANK_OUTPUT = """\
W1206 21:40:01.123000 123 torch/distributed/elastic/multiprocessing/api.py:900] Sending process 4567 closing signal SIGTERM
E1206 21:40:01.456000 123 torch/distributed/elastic/multiprocessing/api.py:874] failed (exitcode: -9) local_rank: 1 (pid: 4568) of binary: /usr/bin/python
Traceback (most recent call last):
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
uaafusion.training.distributed FAILED
------------------------------------------------------------
Failures:
[1]:
  time      : 2026-12-06_21:40:01
  host      : box
  rank      : 0 (local_rank: 0)
  exitcode  : 1 (pid: 4567)
  error_file: /tmp/torchelastic_x/attempt_0/0/error.json
  traceback : RuntimeError: Connection reset by peer
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-12-06_21:40:01
  host      : box
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 4568)  (SIGKILL)
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 4568
============================================================"""


def test_killed_rank_is_named_with_its_signal() -> None:
    message = failure_message(KILLED_RANK_OUTPUT.splitlines(), 2)
    assert message.startswith("distributed training (2 processes) failed: rank 1 was killed by SIGKILL "
                              "(first; then rank 0 ended with exit code 1)")


def test_a_rank_error_message_is_passed_on() -> None:
    lines = ["INFO [rank 0] pretrain/epoch-1: loss=1", "error: rank 1: data.batch_size = 1 is smaller than the 2",
             *KILLED_RANK_OUTPUT.replace("exitcode  : -9 (pid: 4568)  (SIGKILL)", "exitcode  : 2").splitlines()]
    message = failure_message(lines, 2)
    assert "failed: rank 1 ended with exit code 2 (first; then rank 0" in message
    assert "error: rank 1: data.batch_size = 1 is smaller than the 2" in message


def test_unknown_failure_shows_the_output_tail() -> None:
    assert "something else broke" in failure_message(["a", "something else broke"], 2)


def test_command_passes_overrides_as_yaml_values() -> None:
    command = torchrun_command("/project", "params.yaml", {"train.rounds": 1, "data.class_names": ["a", "b"]},
                               "run", 2)
    assert command[1:3] == ["-m", "torch.distributed.run"]
    assert command[command.index("--nproc-per-node") + 1] == "2"
    assert command[command.index("-m", 3) + 1] == "uaafusion.training.distributed"
    sets = [command[index + 1] for index, item in enumerate(command) if item == "-S"]
    assert sets == ["train.rounds=1", f"data.class_names={json.dumps(['a', 'b'])}"]
    assert command[-2:] == ["--run-name", "run"]


def test_processes_are_checked_against_the_gpus() -> None:
    check_processes(2, "cpu")
    with pytest.raises(TrainingError, match="gpus = 0"):
        check_processes(0, "cpu")
    with pytest.raises(TrainingError, match="GPU"):
        check_processes(10_000, "cuda")
