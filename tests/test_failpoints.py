"""The fault suite's kill switch: SIGKILL at the N-th matching point, nothing otherwise."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from uaafusion.failpoints import ENVIRONMENT_VARIABLE

# Reaches three points, printing each before it; a kill stops the printing where it happens.
SCRIPT = """
from uaafusion.failpoints import reach
for point in ("write:out/a.png", "attribution:2", "write:out/b.png"):
    print(point, flush=True)
    reach(point)
print("done", flush=True)
"""


def _run(failpoint: str | None) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != ENVIRONMENT_VARIABLE}
    if failpoint is not None:
        environment[ENVIRONMENT_VARIABLE] = failpoint
    return subprocess.run([sys.executable, "-c", SCRIPT], env=environment, capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[1])


def test_the_process_is_killed_at_the_nth_matching_point() -> None:
    result = _run("write:*@2")
    assert result.returncode == -signal.SIGKILL
    assert result.stdout.split() == ["write:out/a.png", "attribution:2", "write:out/b.png"]


def test_the_first_match_kills_when_no_count_is_given() -> None:
    result = _run("attribution:*")
    assert result.returncode == -signal.SIGKILL
    assert result.stdout.split() == ["write:out/a.png", "attribution:2"]


def test_unarmed_or_unmatched_points_do_nothing() -> None:
    for failpoint in (None, "", "report:*", "write:*@3"):
        result = _run(failpoint)
        assert result.returncode == 0, (failpoint, result.stderr)
        assert result.stdout.split()[-1] == "done"
