"""Which metrics may drive a repair. Gold-id retrieval metrics on probes are deterministic and always trusted;
an LLM-judged metric is trusted only if the judge calibration (eval.judging.calibration, when installed) says so for
the judge model in use. Without a calibration every LLM metric is untrusted, and no repair rests on one."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

GOLD_METRICS = ("recall@1", "recall@5", "recall@10", "mrr@10")
GUARD_METRICS = ("recall@5", "mrr@10")  # a promotion needs one of these to improve


def _names(value) -> set[str]:
    if value is None:
        return set()
    if isinstance(value, dict):
        out = set()
        for name, v in value.items():
            trusted = v.get("trusted") if isinstance(v, dict) else getattr(v, "trusted", v)
            if trusted:
                out.add(str(name))
        return out
    out = set()
    for item in value:
        if isinstance(item, str):
            out.add(item)
        elif isinstance(item, dict) and item.get("trusted", True):
            out.add(str(item.get("metric")))
        elif getattr(item, "trusted", True) and getattr(item, "metric", None):
            out.add(str(item.metric))
    return out


def judge_model_name(judge_model: str | Path | None = None, chat_model: str | Path | None = None) -> str | None:
    """The judge's model file name: `judge_model` (KAIZEN_JUDGE_MODEL), else `chat_model` (KAIZEN_CHAT_MODEL), else
    the default chat model's; None when there is no model file."""
    path = judge_model or chat_model
    if path:
        from agent.model_files import model_file

        return model_file(path).name
    try:
        from agent.model_files import chat_model_path

        return chat_model_path().name
    except Exception:  # no model file: nothing the judge said can be trusted either
        return None


def configured_judge_name(settings=None) -> str | None:
    """The judge model `settings` (an EvalSettings; default: EvalSettings()) and the agent's settings name."""
    from agent.settings import AgentSettings
    from eval.settings import EvalSettings

    settings = settings or EvalSettings()
    return judge_model_name(settings.judge_model, None if settings.judge_model else AgentSettings().chat_model)


def trusted_llm_metrics(store, judge_model: str | None = None, *, settings=None) -> set[str]:
    """LLM-judged metrics the calibration trusts for `judge_model` (default: the judge `settings` configure)."""
    try:
        from eval.judging.calibration import trusted_metrics
    except ImportError:
        return set()
    judge_model = judge_model or configured_judge_name(settings)
    try:
        return _names(trusted_metrics(store, judge_model)) - set(GOLD_METRICS)
    except Exception as exc:  # a calibration that cannot be read is no calibration
        log.warning("judge calibration unreadable, treating LLM metrics as untrusted: %s", exc)
        return set()
