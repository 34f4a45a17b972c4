"""Generated expansion with a filter (doc2query--): for chunks the train probes miss, the model writes the
questions the chunk answers, and a question is kept only if it is in the chunk's language (validated with the
reply) and, searched on the version the candidate is built from, finds its own chunk among the first
`FILTER_RANK` (a question the chunk does not answer, the hallucination doc2query-- filters out, finds other
chunks). The kept questions are appended to the chunk's indexed text under their own line; the shown and cited
text never changes. Like every action it is built as a candidate and judged by the held-out guard; it runs in
improvement passes, after learning from traffic and tuning, on at most KAIZEN_REPAIR_MAX_MODEL_CHUNKS chunks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from store.search import search

from .actions import _ModelAction
from .llm_outputs import generate_questions

FILTER_RANK = 10
GENERATED_HEADER = "Questions it may answer:"


@dataclass
class ExpandWithQuestions(_ModelAction):
    kind: ClassVar[str] = "expand_questions"
    origin: ClassVar[str] = "enrichment"

    def generate(self, llm, title, text):
        return generate_questions(llm, title, text)

    def keep(self, ctx, builder, row, generated: str) -> str:
        kept = []
        with ctx.store.session() as s:
            for question in generated.splitlines():
                hits = search(s, ctx.embedder, question, k=FILTER_RANK, settings=ctx.store.settings,
                              version=builder.base)
                if any(h.document_id == row.document_id and h.ordinal == row.ordinal for h in hits):
                    kept.append(question)
        return "\n".join(kept)

    def indexed_text(self, title, text, search_text, generated):
        return f"{search_text}\n{GENERATED_HEADER}\n{generated}"


__all__ = ["ExpandWithQuestions", "FILTER_RANK"]
