"""Benchmarks: throughput, latency and cost of the outbox path against a naive baseline.

Not tests: they measure. Run `python -m benchmarks [--quick] [--only NAME]` (see README.md).
"""
