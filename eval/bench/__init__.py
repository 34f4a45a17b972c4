"""The benchmarks behind `kaizen bench`: functions that take plain parameters and return JSON-ready dicts.
Leaves of the import graph: no library module imports them (tests/test_layers.py)."""
