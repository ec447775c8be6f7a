"""Benchmarks for the loldu method library (run with ``python -m benchmarks.run``; ``make bench``)."""
