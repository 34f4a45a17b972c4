"""The self-repair commands: `kaizen improve`, `kaizen gaps`, `kaizen kb log|revert`, `kaizen export qa`,
`kaizen bench recovery`."""

from __future__ import annotations


def register(sub) -> None:
    """Add the repair commands to the top-level subparsers."""


def register_bench(bsub) -> None:
    """Add `kaizen bench recovery` to the bench subparsers."""
