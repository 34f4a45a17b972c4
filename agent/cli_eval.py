"""The self-evaluation commands: `kaizen eval ...`, `kaizen worker`, `kaizen bench judge`.

The judge's own commands (`eval calibrate`, `eval score`, `bench judge`) live in cli_judge."""

from __future__ import annotations


def register(sub) -> None:
    """Add `kaizen eval ...` and `kaizen worker` to the top-level subparsers."""
    from . import cli_judge

    p = sub.add_parser("eval", help="self-evaluation: probes, scores, judge calibration, reports")
    esub = p.add_subparsers(dest="eval_command", required=True)
    cli_judge.register_eval(esub)


def register_bench(bsub) -> None:
    """Add `kaizen bench judge` to the bench subparsers."""
    from . import cli_judge

    cli_judge.register_bench(bsub)
