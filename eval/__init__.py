"""Kaizen's judging and repairing side: RAGAS wiring, probes, the worker, drop detection and benchmarks."""
