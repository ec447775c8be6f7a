"""Benchmarks for the loldu method library (run as modules, e.g. ``python -m benchmarks.step_time``)."""
