"""Shared helpers of the benchmarks: timed runs, peak memory, the machine and the versions.

:func:`time_call` runs ``warmup`` untimed calls, then ``repeats`` timed calls, each bracketed by a
CUDA synchronisation on a CUDA device (kernels are asynchronous: without it the clock stops before
the GPU is done), and summarises them as ``median_s, min_s, max_s, stdev_s, repeats, runs_s``.

Peak memory (:class:`PeakMemory`) of the enclosed code above what was in use at entry:

- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus what was
  allocated before (tensors the code allocated at its peak, caching allocator excluded);
- CPU on Linux: the peak resident set size ``VmHWM`` after resetting it through
  ``/proc/self/clear_refs``, minus the resident size before (no tracemalloc: it slows the code and
  misses torch's C++ allocations); the C heap's free pages are handed back first (``malloc_trim``)
  so that reused heap does not hide the growth;
- CPU elsewhere: the resident size sampled every 2 ms by a thread (psutil) or, without psutil, the
  growth of ``ru_maxrss`` (a lower bound). The method is recorded with the number.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import gc
import os
import platform
import re
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import torch

from uaafusion.device import cpu_model

T = TypeVar("T")
_STARTED = time.perf_counter()
# Versions recorded in every benchmark file: key -> distribution.
VERSIONED_DISTRIBUTIONS: dict[str, str] = {
    "uaafusion": "uaafusion", "torch": "torch", "torchvision": "torchvision",
    "segmentation_models_pytorch": "segmentation-models-pytorch", "smp": "segmentation-models-pytorch",
    "captum": "captum", "numpy": "numpy", "scipy": "scipy", "dvc": "dvc", "prefect": "prefect", "mlflow": "mlflow",
}


def log(message: str) -> None:
    """Progress on stderr, with the seconds since the benchmarks were imported."""
    print(f"[bench {time.perf_counter() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


def synchronize(device: torch.device | str | None) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def summarize(times: list[float]) -> dict[str, Any]:
    """Median and spread of timed runs (seconds): ``median_s, min_s, max_s, stdev_s, repeats, runs_s``."""
    if not times:
        raise ValueError("no timed runs to summarise")
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "stdev_s": statistics.stdev(times) if len(times) > 1 else 0.0, "repeats": len(times),
            "runs_s": list(times)}


def time_call(function: Callable[[], T], device: torch.device | str | None = None, repeats: int = 3,
              warmup: int = 1) -> tuple[dict[str, Any], T]:
    """``warmup`` untimed calls, then ``repeats`` timed ones: ``(summary plus "warmup", last result)``."""
    if repeats < 1:
        raise ValueError(f"repeats = {repeats}: expected >= 1")
    result: Any = None
    for _ in range(max(0, warmup)):
        result = function()
    times = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        result = function()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return {**summarize(times), "warmup": max(0, warmup)}, result


def _status_kib(field: str) -> int | None:
    with contextlib.suppress(OSError):
        match = re.search(rf"^{field}:\s+(\d+)\s+kB", Path("/proc/self/status").read_text(), re.MULTILINE)
        return int(match.group(1)) if match else None
    return None


def _max_rss_bytes() -> int:
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(value if sys.platform == "darwin" else value * 1024)  # bytes on macOS, KiB on Linux


class PeakMemory:
    """Context manager (module docstring); afterwards :attr:`peak_bytes`, :attr:`method` and :meth:`as_dict`."""

    def __init__(self, device: torch.device | str | None = "cpu") -> None:
        self.device = torch.device(device or "cpu")
        self.peak_bytes, self.method, self._start, self._sampler = 0, "", 0, None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start, self.method = torch.cuda.memory_allocated(self.device), "torch.cuda.max_memory_allocated"
            return self
        gc.collect()
        if sys.platform.startswith("linux"):
            with contextlib.suppress(OSError, AttributeError):
                ctypes.CDLL("libc.so.6").malloc_trim(0)
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)
            if _status_kib("VmHWM") is not None:
                self._start = (_status_kib("VmRSS") or 0) * 1024
                self.method = "VmHWM after /proc/self/clear_refs (peak RSS delta)"
                return self
        try:
            import psutil
        except ImportError:
            self._start, self.method = _max_rss_bytes(), "ru_maxrss growth (lower bound)"
            return self
        process, stop = psutil.Process(), threading.Event()
        self._start = self._peak = process.memory_info().rss

        def sample() -> None:
            while not stop.wait(0.002):
                self._peak = max(self._peak, process.memory_info().rss)

        self._sampler = (process, stop, threading.Thread(target=sample, daemon=True))
        self._sampler[2].start()
        self.method = "RSS sampled every 2 ms (psutil)"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.method.startswith("VmHWM"):
            peak = (_status_kib("VmHWM") or 0) * 1024
        elif self._sampler is not None:
            process, stop, thread = self._sampler
            stop.set()
            thread.join()
            peak = max(self._peak, process.memory_info().rss)
        else:
            peak = _max_rss_bytes()
        self.peak_bytes = max(0, int(peak - self._start))

    def as_dict(self) -> dict[str, Any]:
        return {"peak_memory_bytes": self.peak_bytes, "peak_memory_mib": round(self.peak_bytes / 2**20, 2),
                "peak_memory_method": self.method}


def usable_cores() -> int | None:
    """Cores this process may run on (affinity, cgroup CPU quota), else ``os.cpu_count()``."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores or 10**6, max(1, int(float(quota) / float(period))))
    return cores


def machine_info(device: torch.device | str | None = None) -> dict[str, Any]:
    """What the numbers were measured on: CPU model, cores, threads, load, memory, OS, CUDA device."""
    memory = None
    with contextlib.suppress(OSError, ValueError, AttributeError):
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    info: dict[str, Any] = {
        "hostname": platform.node(), "platform": platform.platform(), "machine": platform.machine(),
        "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "usable_cores": usable_cores(),
        "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "memory_total_bytes": memory, "cuda_available": torch.cuda.is_available(), "cuda_device": None,
    }
    target = torch.device(device) if device is not None else None
    if torch.cuda.is_available() and (target is None or target.type == "cuda"):
        index = target.index if target is not None and target.index is not None else torch.cuda.current_device()
        properties = torch.cuda.get_device_properties(index)
        info["cuda_device"] = {
            "index": index, "name": properties.name, "capability": f"{properties.major}.{properties.minor}",
            "memory_total_bytes": int(properties.total_memory), "multiprocessors": properties.multi_processor_count,
            "device_count": torch.cuda.device_count(),
        }
    return info


def version_info() -> dict[str, Any]:
    """Python and library versions (``None`` for a library that is not installed), CUDA and cuDNN."""
    versions: dict[str, Any] = {"python": platform.python_version()}
    for key, distribution in VERSIONED_DISTRIBUTIONS.items():
        try:
            versions[key] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[key] = None
    versions["torch_cuda"] = torch.version.cuda
    versions["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return versions


def utc_now() -> str:
    """Current time, ISO 8601, UTC, seconds."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (``None``: leave it)."""
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
