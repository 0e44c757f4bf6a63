"""Named points where the fault suite kills the process (``tests/flows/test_kill_anywhere.py``).

With ``UAAFUSION_FAILPOINT=PATTERN[@N]`` in its environment, a process sends itself ``SIGKILL`` the
N-th time (default: the first) it reaches a point whose name matches the shell pattern ``PATTERN``.
That is a real kill at an exact place, which a test cannot time from outside. The points:

- ``write:<path>``: an output's temporary file is written and synced but not yet renamed
  (:func:`uaafusion.integrity.write_atomically`);
- ``attribution:<images done>``: the per-round attribution weights of that many training images
  are computed and not yet kept (:mod:`uaafusion.training.round_stores`).

Without the variable (every run but the fault suite's), :func:`reach` does nothing.
"""

from __future__ import annotations

import fnmatch
import os
import signal

ENVIRONMENT_VARIABLE = "UAAFUSION_FAILPOINT"
_reached: dict[str, int] = {}


def reach(point: str) -> None:
    """Kill this process with SIGKILL if ``point`` is the armed failpoint's N-th match."""
    armed = os.environ.get(ENVIRONMENT_VARIABLE)
    if not armed:
        return
    pattern, _, count = armed.partition("@")
    if not fnmatch.fnmatchcase(point, pattern):
        return
    _reached[pattern] = _reached.get(pattern, 0) + 1
    if _reached[pattern] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
