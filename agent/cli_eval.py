"""The self-evaluation commands: `kaizen eval ...`, `kaizen worker`, `kaizen bench judge`."""

from __future__ import annotations


def register(sub) -> None:
    """Add `kaizen eval ...` and `kaizen worker` to the top-level subparsers."""


def register_bench(bsub) -> None:
    """Add `kaizen bench judge` to the bench subparsers."""
