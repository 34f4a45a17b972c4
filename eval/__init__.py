"""Kaizen's judging and improving side. Imports agent and store, never cli.

Rooms: metrics (no-LLM metrics), probes/ (probe sets, generation, retrieval and answer runs), judging/ (the judge
model, RAGAS wiring, calibration and trust, grading interactions), worker/ (procrastinate jobs, the worker loop,
drift alerts), repair/ (diagnosis, actions, candidate versions, the guard, the planner), reports/ (quality report,
knowledge gaps, QA export), bench/ (the benchmarks behind `kaizen bench`; no library module imports them).
"""
