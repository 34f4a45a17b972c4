"""The judge's commands: `kaizen eval calibrate`, `kaizen eval score`, `kaizen bench judge`."""

from __future__ import annotations


def register_eval(esub) -> None:
    """Add the judge's subcommands to `kaizen eval`."""


def register_bench(bsub) -> None:
    """Add `kaizen bench judge`."""
