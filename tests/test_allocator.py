"""The CPU allocator setting: freed large blocks are reused (no page fault per reuse)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from uaafusion import allocator
from uaafusion.errors import ConfigError

pytestmark = pytest.mark.skipif(platform.system() != "Linux", reason="glibc mallopt is Linux-only")

# A few training steps of a small convolution network on 4 x 256 x 256 images (activations of
# 16 MiB, allocated and freed every step); prints whether the setting applied and the minor
# page faults of the last five steps. One torch thread: with more, a block that an intra-op
# worker thread happens to allocate in its own glibc arena is now and then faulted in afresh
# (4096 faults each), which made the count vary from run to run (one failure in a full suite).
_FAULTS_OF_TRAINING_STEPS = textwrap.dedent("""
    import resource, torch
    from uaafusion.allocator import keep_freed_memory
    applied = keep_freed_memory()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3, padding=1))
    image = torch.rand(4, 1, 256, 256, requires_grad=True)
    for _ in range(2):  # warm-up: the heap grows to its working size
        net(image).square().sum().backward()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        net(image).square().sum().backward()
    print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _page_faults(setting: str) -> tuple[bool, int]:
    result = subprocess.run(
        [sys.executable, "-c", _FAULTS_OF_TRAINING_STEPS], capture_output=True, text=True, check=True,
        env={**os.environ, allocator.ENVIRONMENT_VARIABLE: setting},
    )
    applied, faults = result.stdout.split()
    return applied == "True", int(faults)


def test_kept_memory_is_reused_instead_of_faulted_in_again():
    applied, kept_faults = _page_faults("keep")
    not_applied, system_faults = _page_faults("system")
    assert applied and not not_applied
    # glibc's defaults map each large activation afresh every step; kept memory is reused
    # (measured with 4 KiB pages: about 8k vs 78k faults).
    assert kept_faults * 4 <= system_faults


def test_unknown_setting_names_the_variable(monkeypatch):
    monkeypatch.setenv(allocator.ENVIRONMENT_VARIABLE, "jemalloc")
    with pytest.raises(ConfigError, match="UAAFUSION_ALLOCATOR"):
        allocator.keep_freed_memory()
