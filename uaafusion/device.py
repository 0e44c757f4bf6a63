"""Choosing the torch device: ``auto`` | ``cpu`` | ``cuda`` (``cuda:N``)."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
from collections.abc import Iterator

import torch

from uaafusion.errors import DeviceError

DEVICE_ENV_VARIABLE = "UAAFUSION_DEVICE"


def resolve_device(name: str | None = "auto") -> torch.device:
    """Turn a device name into a ``torch.device``.

    ``auto`` picks CUDA when available, else CPU. ``cuda`` on a machine without CUDA is an
    error, never a silent fallback. The environment variable ``UAAFUSION_DEVICE`` overrides
    ``auto`` (used by the Prefect deployment's job variables).
    """
    requested = (name or "auto").strip().lower()
    if requested == "auto":
        requested = os.environ.get(DEVICE_ENV_VARIABLE, "auto").strip().lower() or "auto"
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cpu":
        return torch.device("cpu")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device '{requested}' was requested but CUDA is not available on this machine "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}). "
                "Use device: auto or device: cpu, or run on a GPU host."
            )
        device = torch.device(requested)
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            existing = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
            raise DeviceError(
                f"device '{requested}' does not exist: this machine has {count} CUDA device(s). "
                f"Use {existing}, cuda, auto or cpu."
            )
        return device
    raise DeviceError(f"device '{name}' is not understood; allowed: auto, cpu, cuda, cuda:N.")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, ``sysctl`` on macOS, else ``platform``)."""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    if sys.platform == "darwin":
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                  timeout=5, check=True).stdout.strip()
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """What ``device`` is: the GPU model for CUDA (``NVIDIA H100 80GB HBM3``), else the CPU model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


# The lower precision of ``train.amp``: bfloat16 keeps float32's range (no loss scaling needed).
AMP_DTYPE = torch.bfloat16


@contextlib.contextmanager
def mixed_precision(enabled: bool, device: torch.device) -> Iterator[None]:
    """``torch.autocast`` to :data:`AMP_DTYPE` on ``device`` when ``enabled`` (``train.amp``), on CUDA
    and on the CPU alike. On a CPU it pays only where the cores compute bfloat16 natively
    (AVX512-BF16 or AMX); elsewhere it is emulated and slower."""
    with torch.autocast(device_type=device.type, dtype=AMP_DTYPE, enabled=enabled):
        yield
