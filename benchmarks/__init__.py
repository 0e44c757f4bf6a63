"""Speed benchmarks of the package: ``python -m benchmarks`` (:mod:`benchmarks.suite`)."""
