"""The evaluation's settings, declared once: the judge, its calibration, the background worker and its queue,
drift detection and self-repair. Each is an environment variable `KAIZEN_<NAME>`; see store.settings for how they
are read (once, where a command or the worker starts) and how a bad value is reported.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from store.settings import ConfigError, KaizenSettings, server_url

DEFAULT_EVALUATOR = "eval.judging.interactions:evaluate_interaction"


class EvalSettings(KaizenSettings):
    """The judge, the worker, drift detection and repair."""

    # -- the judge -----------------------------------------------------------------------------------------------
    judge_model: str | None = Field(None, json_schema_extra={"doc_default": "the chat model (KAIZEN_CHAT_MODEL)"},
                                    description="the judge's model: a named model or a .gguf path; by default the "
                                                "chat model, so one loaded model serves the agent and the judge")
    judge_url: str | None = Field(None, json_schema_extra={"doc_default": "the chat model's (KAIZEN_LLM_URL), unless "
                                  "KAIZEN_JUDGE_MODEL names a file"},
                                  description="an OpenAI-compatible model server for the judge (docs/serve.md)")
    judge_max_tokens: int = Field(512, ge=32, description="the longest judge reply in tokens")
    judge_context_tokens: int = Field(400, ge=32, description="each retrieved context is cut to this many judge "
                                                              "tokens, so judge prompts always fit")
    eval_metrics: str | None = Field(None, json_schema_extra={
        "doc_default": "every reference-free metric (once the judge is calibrated: the trusted ones)"},
        description="comma-separated RAGAS metrics the worker scores each answer with")
    trust_auc: float = Field(0.75, ge=0.0, description="the calibration AUC a judged metric needs to be trusted "
                                                       "(to drive drift alerts and repairs)")
    trust_coverage: float = Field(0.75, ge=0.0, description="the share of calibration items the judge must score "
                                                            "for a metric to be trusted")

    # -- the worker and its queue --------------------------------------------------------------------------------
    interaction_evaluator: str = Field(DEFAULT_EVALUATOR, description="module:function that scores one recorded "
                                                                      "answer in the worker")
    probe_every_minutes: int = Field(60, ge=0, description="minutes between the worker's periodic probe runs "
                                                           "(0: none)")
    worker_llm_threads: int = Field(1, ge=1, description="threads the worker's model and embedder use (it shares "
                                                         "the machine with the REPL)")
    worker_nice: int = Field(10, ge=0, description="how much the worker lowers its CPU priority")
    worker_stalled_seconds: int = Field(30, ge=3, description="a worker without a heartbeat this long is dead: its "
                                                              "jobs are queued again")
    worker_reconnect_seconds: int = Field(60, ge=0, description="how long the worker keeps trying to reach a lost "
                                                                "database before it stops")

    # -- drift ---------------------------------------------------------------------------------------------------
    drift_window: int = Field(50, ge=1, description="the latest scores compared with the KB version's baseline")
    drift_min_samples: int = Field(10, ge=1, description="scores the window needs before a drop is judged")
    drift_tolerance: float = Field(0.05, ge=0.0, description="a drop larger than this below the baseline raises a "
                                                             "quality alert")

    # -- repair --------------------------------------------------------------------------------------------------
    repair_tolerance: float = Field(0.02, ge=0.0, description="the held-out metric regression a repair may cause "
                                                              "and still be promoted")
    repair_min_gain: float = Field(0.005, ge=0.0, description="the smallest held-out rise that counts as an "
                                                              "improvement")
    guard_answers: int = Field(8, ge=0, description="held-out probes the agent answers on the base and the "
                                                    "candidate version before a promotion (0: retrieval metrics only)")
    guard_answer_tolerance: float = Field(0.05, ge=0.0, description="how much lower a candidate's held-out answers "
                                                                    "may score (token F1, string presence, "
                                                                    "semantic similarity) and still be promoted")
    repair_max_rounds: int = Field(5, ge=1, description="diagnose-and-repair rounds per planner run")
    repair_max_model_chunks: int = Field(12, ge=1, description="chunks per round the repair may rewrite with the "
                                                               "model")

    # -- improvement -----------------------------------------------------------------------------------------------
    improve_min_evidence: int = Field(5, ge=1, description="new questions answered well (train probes, /good "
                                                           "answers, answers every trusted metric scored high) the "
                                                           "planner waits for before it tries learning them into "
                                                           "the index")
    improve_every_minutes: int = Field(60, ge=0, description="minutes between the worker's improvement passes, "
                                                             "each run only when idle and with new evidence (0: none)")
    improve_idle_minutes: int = Field(10, ge=0, description="an improvement pass waits until no question was asked "
                                                            "for this long and no answer waits to be graded")
    improve_budget_seconds: int = Field(900, ge=1, description="seconds after which an improvement pass starts no "
                                                               "new action")
    tune_min_probes: int = Field(20, ge=1, description="train probes the planner needs before it tunes the "
                                                       "retrieval parameters and the chunk size on them")
    tune_max_probes: int = Field(200, ge=1, description="train probes (an even sample) each point of the tuning "
                                                        "grid is scored on")

    @field_validator("judge_url", mode="after")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return server_url(value, "KAIZEN_JUDGE_URL")

    @field_validator("interaction_evaluator", mode="after")
    @classmethod
    def _module_and_function(cls, value: str) -> str:
        if ":" not in value:
            raise ConfigError(f"KAIZEN_INTERACTION_EVALUATOR={value!r}: use module:function")
        return value


__all__ = ["EvalSettings", "DEFAULT_EVALUATOR"]
