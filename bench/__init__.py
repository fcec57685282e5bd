"""Benchmarks: `python bench/run.py [--json] [--quick] [--rows substring]`."""
