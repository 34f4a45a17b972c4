"""Kaizen's knowledge store: Postgres + pgvector, ingestion, hybrid search and KB versions.

Knows nothing about LLMs, prompts or RAGAS (see ../shared/DESIGN.md, "Packages and their rooms").
"""
