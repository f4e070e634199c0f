"""Benchmarks of the service: where the time goes, throughput, start-up and memory.

Run ``python -m bench`` from the repository root; see ``docs/performance.md``.
"""
