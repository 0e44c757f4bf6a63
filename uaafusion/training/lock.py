"""One training process per run folder: an exclusive lock on ``RUN_FOLDER/.lock`` (``fcntl.flock``), held
for the whole train step and released by the operating system when the process ends, even by SIGKILL."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from uaafusion.errors import TrainingError

LOCK_FILE_NAME = ".lock"


@contextlib.contextmanager
def run_folder_lock(run_dir: Path) -> Iterator[Path]:
    """Hold the run folder's lock; raise :class:`TrainingError` naming the folder and the holder's pid
    when another process holds it (the same params are training elsewhere)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE_NAME
    handle = open(path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise TrainingError(
                f"{run_dir} is being trained by another process (pid {holder}) with the same params. Wait for "
                "it to finish (this command then resumes or reuses its result), or change a param to start "
                "a separate run."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield path
    finally:
        handle.close()  # releases the lock
