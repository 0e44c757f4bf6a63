"""Shared timing helpers of the benchmarks: repeated timed runs, peak memory, machine and versions.

Every benchmark times a zero-argument callable with :func:`time_call`: ``warmup`` untimed calls,
then ``repeats`` timed calls, each bracketed by a CUDA synchronisation when the work runs on a
CUDA device (kernels are asynchronous; without it the clock stops before the GPU is done). The
summary (:func:`summarize`) is ``{"median_s", "min_s", "max_s", "stdev_s", "repeats", "runs_s"}``.

Peak memory (:class:`PeakMemory`) is measured around one call:

- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus what was
  allocated before (tensors the call allocated at its peak, caching allocator excluded);
- CPU on Linux: the process's peak resident set size ``VmHWM`` after resetting it through
  ``/proc/self/clear_refs`` (``5``), minus the resident size before (no tracemalloc: it slows
  the measured code and misses memory allocated by torch's C++ allocator); free heap pages are
  returned to the system first (``malloc_trim``) so that reused heap does not hide the growth;
- CPU elsewhere: a background thread samples the resident size every few milliseconds (psutil)
  or, without psutil, the growth of ``ru_maxrss`` (a lower bound: 0 when the process already
  peaked higher earlier). The method used is recorded with the number.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as _datetime
import gc
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any, TypeVar

import torch

T = TypeVar("T")

# Distributions whose versions go into every benchmark file.
VERSIONED_DISTRIBUTIONS: tuple[tuple[str, str], ...] = (
    ("uaafusion", "uaafusion"),
    ("torch", "torch"),
    ("torchvision", "torchvision"),
    ("segmentation_models_pytorch", "segmentation-models-pytorch"),
    ("smp", "segmentation-models-pytorch"),
    ("captum", "captum"),
    ("numpy", "numpy"),
    ("scipy", "scipy"),
    ("dvc", "dvc"),
    ("prefect", "prefect"),
    ("mlflow", "mlflow"),
)


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------
def synchronize(device: torch.device | str | None) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    if device is None:
        return
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summarize(times: list[float]) -> dict[str, Any]:
    """Median and spread of timed runs (seconds): ``median_s, min_s, max_s, stdev_s, repeats, runs_s``."""
    if not times:
        raise ValueError("no timed runs to summarise")
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "stdev_s": statistics.stdev(times) if len(times) > 1 else 0.0,
        "repeats": len(times),
        "runs_s": list(times),
    }


def timed_runs(function: Callable[[], T], device: torch.device | str | None = None, repeats: int = 3,
               warmup: int = 1) -> tuple[list[float], T]:
    """``warmup`` untimed calls, then ``repeats`` timed calls (synchronised on CUDA).

    Returns the seconds of each timed call and the last call's result.
    """
    if repeats < 1:
        raise ValueError(f"repeats = {repeats}: expected >= 1")
    result: Any = None
    for _ in range(max(0, warmup)):
        result = function()
    synchronize(device)
    times = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        result = function()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return times, result


def time_call(function: Callable[[], T], device: torch.device | str | None = None, repeats: int = 3,
              warmup: int = 1) -> tuple[dict[str, Any], T]:
    """:func:`timed_runs` summarised with :func:`summarize` (plus ``warmup``): ``(summary, last result)``."""
    times, result = timed_runs(function, device, repeats, warmup)
    return {**summarize(times), "warmup": max(0, warmup)}, result


# --------------------------------------------------------------------------------------------
# Peak memory
# --------------------------------------------------------------------------------------------
def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            match = re.search(rf"^{field}:\s+(\d+)\s+kB", status.read(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0); False when not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return _proc_status_kib("VmHWM") is not None


def release_free_memory() -> None:
    """Collect garbage and hand the C heap's free pages back to the system (glibc ``malloc_trim``),
    so that the resident size measured next grows with what the measured code really touches."""
    gc.collect()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def _max_rss_bytes() -> int:
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(value if sys.platform == "darwin" else value * 1024)  # bytes on macOS, KiB on Linux


class _RssSampler:
    """Samples the resident set size in a thread (psutil) and keeps the largest value."""

    def __init__(self, interval_s: float = 0.002) -> None:
        import psutil

        self._process = psutil.Process()
        self.interval_s = interval_s
        self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "_RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


class PeakMemory:
    """Context manager: the peak memory of the enclosed code above what was in use at entry.

    After the block: :attr:`peak_bytes` (the peak above the starting level), :attr:`method`
    (how it was measured) and :meth:`as_dict` (``peak_memory_bytes``, ``peak_memory_mib``,
    ``peak_memory_method``).
    """

    def __init__(self, device: torch.device | str | None = "cpu") -> None:
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.peak_bytes: int = 0
        self.method: str = ""
        self._start = 0
        self._sampler: Any = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            self.method = "torch.cuda.max_memory_allocated"
            return self
        release_free_memory()
        if _reset_peak_rss():
            self._start = (_proc_status_kib("VmRSS") or 0) * 1024
            self.method = "VmHWM after /proc/self/clear_refs (peak RSS delta)"
        else:
            try:
                self._sampler = self._stack.enter_context(_RssSampler())
                self._start = self._sampler.peak
                self.method = "RSS sampled every 2 ms (psutil)"
            except ImportError:
                self._start = _max_rss_bytes()
                self.method = "ru_maxrss growth (lower bound)"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.method.startswith("VmHWM"):
            peak = (_proc_status_kib("VmHWM") or 0) * 1024
        elif self._sampler is not None:
            self._stack.close()
            peak = self._sampler.peak
        else:
            peak = _max_rss_bytes()
        self.peak_bytes = max(0, int(peak - self._start))

    def as_dict(self) -> dict[str, Any]:
        return {
            "peak_memory_bytes": self.peak_bytes,
            "peak_memory_mib": round(self.peak_bytes / 2**20, 2),
            "peak_memory_method": self.method,
        }


def measure_peak_memory(function: Callable[[], Any], device: torch.device | str | None = "cpu") -> dict[str, Any]:
    """Run ``function`` once under :class:`PeakMemory` and return :meth:`PeakMemory.as_dict`."""
    with PeakMemory(device) as peak:
        function()
    return peak.as_dict()


# --------------------------------------------------------------------------------------------
# Machine and versions
# --------------------------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, ``sysctl`` on macOS, else ``platform``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                  text=True, timeout=5, check=True).stdout.strip()
    return platform.processor() or platform.machine()


def usable_cores() -> int | None:
    """Cores this process may run on (affinity / cgroup CPU quota), else ``os.cpu_count()``."""
    try:
        cores: int | None = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count()
    with contextlib.suppress(OSError, ValueError):
        quota, period = open("/sys/fs/cgroup/cpu.max", encoding="ascii").read().split()[:2]
        if quota != "max":
            cores = min(cores or 10**6, max(1, int(float(quota) / float(period))))
    return cores


def _memory_total_bytes() -> int | None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return None


def machine_info(device: torch.device | str | None = None) -> dict[str, Any]:
    """What the numbers were measured on: CPU model, cores, threads, load, memory, OS, CUDA device."""
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "memory_total_bytes": _memory_total_bytes(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_device": None,
    }
    target = torch.device(device) if device is not None else None
    if torch.cuda.is_available() and (target is None or target.type == "cuda"):
        index = target.index if target is not None and target.index is not None else torch.cuda.current_device()
        properties = torch.cuda.get_device_properties(index)
        info["cuda_device"] = {
            "index": index,
            "name": properties.name,
            "capability": f"{properties.major}.{properties.minor}",
            "memory_total_bytes": int(properties.total_memory),
            "multiprocessors": properties.multi_processor_count,
            "device_count": torch.cuda.device_count(),
        }
    return info


def version_info() -> dict[str, Any]:
    """Python and library versions (``None`` for a library that is not installed), CUDA and cuDNN."""
    versions: dict[str, Any] = {"python": platform.python_version()}
    for key, distribution in VERSIONED_DISTRIBUTIONS:
        try:
            versions[key] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[key] = None
    versions["torch_cuda"] = torch.version.cuda
    versions["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return versions


def utc_now() -> str:
    """Current time, ISO 8601, UTC, seconds."""
    return _datetime.datetime.now(_datetime.timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (``None``: leave it)."""
    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
