"""One training process per run folder: a second one stops with a message; a dead holder frees it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from uaafusion.errors import TrainingError
from uaafusion.training.lock import LOCK_FILE_NAME, run_folder_lock


def test_a_second_holder_is_refused_with_the_folder_and_the_first_holders_pid(tmp_path: Path) -> None:
    run_dir = tmp_path / "checkpoints" / "abc123"
    with run_folder_lock(run_dir):
        with pytest.raises(TrainingError, match=rf"{run_dir} is being trained by another process \(pid {os.getpid()}\)"):
            with run_folder_lock(run_dir):
                pass
    with run_folder_lock(run_dir):  # released at the end of the first
        assert (run_dir / LOCK_FILE_NAME).read_text() == str(os.getpid())


def test_a_holder_killed_with_sigkill_leaves_the_folder_free(tmp_path: Path) -> None:
    script = ("import sys, time\nfrom pathlib import Path\nfrom uaafusion.training.lock import run_folder_lock\n"
              "with run_folder_lock(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(600)\n")
    holder = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(TrainingError, match=f"pid {holder.pid}"):
            with run_folder_lock(tmp_path):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    deadline = time.monotonic() + 10
    with run_folder_lock(tmp_path):
        assert time.monotonic() < deadline
