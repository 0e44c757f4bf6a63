"""Benchmarks of the package's expensive parts (each module runs as a script and prints JSON)."""
