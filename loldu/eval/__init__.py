"""Evaluation commands on finished run folders: lm-evaluation-harness benchmarks and concept-learning metrics."""
