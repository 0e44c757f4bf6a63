"""The CPU memory allocator: keep freed memory for the next tensor instead of handing it back.

glibc's ``malloc`` serves every block above its mmap threshold (32 MiB at most) with a fresh
``mmap`` and gives it back with ``munmap`` when freed. A training step or an attribution pass
allocates and frees the same large activations (``8 x 32 x 256 x 256`` floats = 64 MiB) over and
over, so each of them costs one page fault per 4 KiB page, every time: on 2 CPU cores that was
up to half the time of an attribution call (reports/benchmarks.md). :func:`keep_freed_memory`
tells glibc (``mallopt``) to serve large blocks from the heap and not to trim freed memory, so
the pages are reused: the process keeps its peak memory until it ends, in exchange for no
repeated page faults (the same trade that PyTorch's CPU performance guide makes with jemalloc
or tcmalloc).

The entry points (``uaafusion`` commands, the pipeline flow, the benchmarks) call it once at
start. ``UAAFUSION_ALLOCATOR=system`` leaves glibc's defaults. It does nothing where the C
library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

from uaafusion.errors import ConfigError

ENVIRONMENT_VARIABLE = "UAAFUSION_ALLOCATOR"
_M_TRIM_THRESHOLD = -1  # mallopt parameters from glibc's malloc.h
_M_MMAP_MAX = -4
_NEVER_TRIM = 2**31 - 1  # mallopt takes an int; 2 GiB of free heap top before trimming

_state: dict[str, bool] = {}


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse; True when the setting is in effect.

    Idempotent. False (nothing changed) when ``UAAFUSION_ALLOCATOR=system``, off Linux, or when
    the C library has no ``mallopt`` (musl). Raises :class:`~uaafusion.errors.ConfigError` for any other value of
    the environment variable (the allowed ones are ``keep`` and ``system``).
    """
    choice = os.environ.get(ENVIRONMENT_VARIABLE, "keep").strip().lower() or "keep"
    if choice not in ("keep", "system"):
        raise ConfigError(f"{ENVIRONMENT_VARIABLE}={choice!r}: allowed values are 'keep' (default) and 'system'.")
    if choice == "system" or platform.system() != "Linux":
        return False
    if "applied" in _state:
        return _state["applied"]
    libc_name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(libc_name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        _state["applied"] = False
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))
    _state["applied"] = applied
    return applied
