"""Self-repair of the knowledge base: diagnosis from stored signals, small repair actions built as candidate KB
versions, a guard on held-out probes, promotion or rollback, and the audit trail in `kb_changes`.

Modules: diagnose (findings), actions (what each repair writes), candidate (building a KB version beside the
active one), guard (held-out scoring and the decision), planner (`run_planner`: the loop), revert (`kb log`,
`kb revert`), llm_outputs (constrained, validated model outputs), trust (which metrics may drive a repair),
export (`export qa`), degrade + bench_recovery (the degradation-recovery benchmark).
"""
