"""Benchmarks: run `make bench` (or `python -m bench.run_all`)."""
