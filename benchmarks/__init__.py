"""Benchmarks for issue 8: throughput, reruns, loader vs trainer, memory; ``python -m benchmarks.run``."""
