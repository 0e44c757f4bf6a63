"""Files the pipeline writes for itself, written so that they are whole or absent and checked when read.

:func:`write_atomically` (and :func:`write_text_atomically`) is how every output is written: a
temporary file beside it, synced, then renamed, so a kill leaves the old file or the new one.

:func:`save_verified` writes a ``torch.save`` file atomically (a temporary file beside it, synced, then
renamed) with its SHA-256 beside it (``NAME.sha256``), optionally keeping the version it replaces as
``STEM.previous.SUFFIX``; a failed write (a full disk) removes the temporary file and leaves the old
files as they were. :func:`load_verified` refuses a file whose digest is missing or differs, or that
cannot be read, with a :class:`DamagedFileError` naming it, so a damaged file is never used silently.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from uaafusion.errors import DataError
from uaafusion.failpoints import reach

DIGEST_SUFFIX = ".sha256"


class DamagedFileError(DataError):
    """A file the pipeline wrote is truncated, changed or unreadable."""


def digest_path(path: Path) -> Path:
    return path.with_name(path.name + DIGEST_SUFFIX)


def previous_path(path: Path) -> Path:
    """``training-state.pt`` -> ``training-state.previous.pt``."""
    return path.with_name(f"{path.stem}.previous{path.suffix}")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomically(path: Path, write: Any) -> None:
    """Call ``write(binary stream)`` on the temporary file ``.NAME.tmp`` beside ``path``, sync it and rename
    it to ``path``; on any failure the temporary file is removed and ``path`` is untouched. The temporary
    name is fixed, so a rerun after a kill overwrites what the killed process left."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with open(temporary, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        reach(f"write:{path}")
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def write_text_atomically(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through :func:`write_atomically`: a reader (or a rerun after a
    kill) finds the old file or the new one, never half of one."""
    path = Path(path)
    write_atomically(path, lambda stream: stream.write(text.encode("utf-8")))
    return path


def save_verified(payload: Any, path: Path, keep_previous: bool = False) -> Path:
    """``torch.save`` ``payload`` to ``path`` atomically, its digest beside it; with ``keep_previous``
    the file it replaces (and its digest) becomes :func:`previous_path`. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.staged")
    write_atomically(staged, lambda stream: torch.save(payload, stream))
    digest = file_sha256(staged)
    if keep_previous and path.is_file():
        if digest_path(path).is_file():
            os.replace(digest_path(path), digest_path(previous_path(path)))
        os.replace(path, previous_path(path))
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(digest_path(path))  # the file about to be replaced loses its digest first
    os.replace(staged, path)
    write_atomically(digest_path(path), lambda stream: stream.write(f"{digest}  {path.name}\n".encode()))
    return path


def load_verified(path: Path, weights_only: bool = True) -> Any:
    """``torch.load`` ``path`` (onto the CPU) after checking its digest; :class:`DamagedFileError` names
    the file and what is wrong when the digest is missing or differs or the file cannot be read."""
    path = Path(path)
    recorded_file = digest_path(path)
    if not recorded_file.is_file():
        raise DamagedFileError(f"{path}: no digest beside it ({recorded_file.name}): the write was cut short.")
    recorded = recorded_file.read_text().split()[0] if recorded_file.read_text().strip() else ""
    actual = file_sha256(path)
    if actual != recorded:
        raise DamagedFileError(f"{path}: its SHA-256 {actual[:12]}... differs from the digest written with it "
                               f"({recorded[:12] or 'empty'}...): the file is truncated or changed.")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as error:  # noqa: BLE001 - whatever torch raises, the file cannot be used
        raise DamagedFileError(f"{path}: cannot be read ({type(error).__name__}: {error}).") from error


def tensors_sha256(*parts: Any) -> str:
    """SHA-256 over plain data and tensors (dict keys in order, tensors by dtype, shape and bytes): the
    digest a model checkpoint carries of its own weights."""
    digest = hashlib.sha256()

    def add(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                digest.update(f"K{key}".encode())
                add(value[key])
        elif isinstance(value, (list, tuple)):
            digest.update(f"L{len(value)}".encode())
            for item in value:
                add(item)
        else:
            digest.update(f"V{value!r}".encode())

    for part in parts:
        add(part)
    return digest.hexdigest()
