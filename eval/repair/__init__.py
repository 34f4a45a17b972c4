"""Self-repair of the knowledge base: diagnosis from stored signals, small repair actions built as candidate KB
versions, a guard on held-out probes, promotion or rollback, and the audit trail in `kb_changes`.

Modules: diagnose (findings), actions (what each repair writes), candidate (building a KB version beside the
active one), guard (held-out scoring and the decision), planner (`run_planner`: the loop), llm_outputs
(constrained, validated model outputs). Reverts and pruning are KB-version operations in store/ (revert, prune);
which metrics may drive a repair is judging's (eval.judging.trust).
"""
