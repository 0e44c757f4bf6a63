"""``python -m benchmarks [--quick] [--device auto|cpu|cuda] [--only SECTIONS] [--out FILE] ...``: the suite."""

from __future__ import annotations

import sys

from benchmarks.suite import main

if __name__ == "__main__":
    sys.exit(main())
