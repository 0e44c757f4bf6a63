"""``python -m benchmarks [--quick] [--device auto|cpu|cuda] [--only SECTIONS] [--out FILE] ...``: the suite."""

from benchmarks.suite import main

raise SystemExit(main())
