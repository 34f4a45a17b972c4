"""`kaizen eval probes`: probes generated from chunks by the local model (one constrained JSON call per chunk),
each with its gold chunk and document, put in train / held-out by `split_for`, and refreshed when a document
changes (its generated probes are retired and new ones written from the new text).

Every reply is validated before it becomes a probe: a question and an answer that are not empty, a question that
is not a copy of the passage, an answer that is not the whole passage, both in the passage's script (CJK or not).
A reply that fails is skipped and recorded with its reason and raw text in the pass's `eval_runs` row
(kind `probe_generation`); nothing is raised for it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import sqlalchemy as sa

from eval.metrics import normalise_tokens
from eval.run_rows import finish_run
from store.errors import KaizenError

from .sets import split_for

SCHEMA = {
    "type": "object",
    "properties": {
        "question": {"type": "string", "minLength": 1, "maxLength": 200},
        "answer": {"type": "string", "minLength": 1, "maxLength": 300},
    },
    "required": ["question", "answer"],
}
PASSAGE_TOKENS = 320
SYSTEM = ("You write quiz questions about a passage. Reply with JSON: a question the passage answers, and its short "
          "answer taken from the passage. Write both in the language of the passage. Ask in your own words; do not "
          "copy a sentence of the passage as the question.")


class ProbeRejected(KaizenError, ValueError):
    """A generated question/answer that cannot be a probe; the message says why."""


def script(text: str) -> str | None:
    """"cjk" or "latin" from the letters of `text` (digits and punctuation say nothing: None)."""
    from store.lexical import cjk_ratio

    letters = "".join(ch for ch in text if ch.isalpha())
    if not letters:
        return None
    return "cjk" if cjk_ratio(letters) > 0.3 else "latin"


def validate_probe(value, passage: str) -> dict:
    """The reply as {"question", "answer"} if it can be a probe, else ProbeRejected with the reason."""
    if not isinstance(value, dict):
        raise ProbeRejected("not a JSON object")
    question = str(value.get("question") or "").strip()
    answer = str(value.get("answer") or "").strip()
    if not question or not answer:
        raise ProbeRejected("empty question or answer")
    q_tokens, p_tokens = normalise_tokens(question), normalise_tokens(passage)
    if len(q_tokens) < 3:
        raise ProbeRejected("question too short")
    flat = lambda tokens: " ".join(tokens)  # noqa: E731
    if flat(q_tokens) in flat(p_tokens) or (
            len(q_tokens) >= 6 and sum(t in set(p_tokens) for t in q_tokens) / len(q_tokens) >= 0.95):
        raise ProbeRejected("question copies the passage")
    if normalise_tokens(answer) == q_tokens:
        raise ProbeRejected("answer repeats the question")
    if len(answer) >= 0.8 * len(passage) and len(passage) > 40:
        raise ProbeRejected("answer is the whole passage")
    expected = script(passage)
    if script(question) != expected or script(answer) not in (expected, None):
        raise ProbeRejected(f"not in the passage's script ({expected})")
    return {"question": question, "answer": answer}


@dataclass
class GenerationReport:
    probe_set: str
    run_id: int | None = None
    added: int = 0
    rejected: int = 0
    retired: int = 0
    skipped: int = 0
    seconds: float = 0.0
    rejections: dict[str, int] = field(default_factory=dict)
    probes: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def retire_changed(session, probe_set: str) -> int:
    """Retire generated probes whose document changed (hash), vanished, or went missing."""
    return session.execute(sa.text(
        """
        UPDATE probes p SET status = 'retired', retired_at = now()
        WHERE p.origin = 'generated' AND p.probe_set = :set AND p.status = 'active'
          AND NOT EXISTS (SELECT 1 FROM documents d WHERE d.id = p.source_document_id AND d.status = 'active'
                          AND d.content_hash = p.source_hash)
        """), {"set": probe_set}).rowcount


def candidate_chunks(session, probe_set: str, per_document: int) -> tuple[list[dict], int]:
    """Chunks of the active version to write probes from: up to `per_document` per document, spread over it,
    leaving out chunks that already have an active probe for the document's current text."""
    rows = session.execute(sa.text(
        """
        SELECT c.id AS chunk_id, c.ordinal, c.text, c.kb_version, d.id AS document_id, d.content_hash,
               count(*) OVER (PARTITION BY d.id) AS chunks_in_document,
               row_number() OVER (PARTITION BY d.id ORDER BY c.ordinal) - 1 AS position,
               EXISTS (SELECT 1 FROM probes p WHERE p.probe_set = :set AND p.origin = 'generated'
                       AND p.status = 'active' AND p.source_document_id = d.id AND p.source_hash = d.content_hash
                       AND p.external_id = 'doc' || d.id || '-' || left(d.content_hash, 12) || '-c' || c.ordinal)
                   AS has_probe
        FROM chunks c JOIN documents d ON d.id = c.document_id
        JOIN kb_versions v ON v.id = c.kb_version AND v.status = 'active'
        WHERE d.status = 'active' AND c.origin = 'original'
        ORDER BY d.id, c.ordinal
        """), {"set": probe_set}).mappings().all()
    chosen, skipped = [], 0
    for row in rows:
        n, k = row["chunks_in_document"], min(per_document, row["chunks_in_document"])
        spread = {round(i * (n - 1) / (k - 1)) if k > 1 else 0 for i in range(k)}
        if row["position"] not in spread:
            continue
        if row["has_probe"]:
            skipped += 1
        else:
            chosen.append(dict(row))
    return chosen, skipped


def ask_model(llm) -> Callable[[str], tuple[object, str, str | None]]:
    """The default generator: the local model, constrained to SCHEMA. Returns (value, raw reply, error)."""
    def ask(passage: str) -> tuple[object, str, str | None]:
        messages = [{"role": "system", "content": SYSTEM},
                    {"role": "user", "content": f"Passage:\n{llm.truncate(passage, PASSAGE_TOKENS)}\n\n"
                                                "Write one question about this passage and its short answer."}]
        result = llm.json_chat(messages, SCHEMA, max_tokens=120, kind="probe_generation")
        return result.value, result.raw, result.error

    return ask


def _store_probe(session, probe_set: str, chunk: dict, probe: dict) -> int:
    external = f"doc{chunk['document_id']}-{chunk['content_hash'][:12]}-c{chunk['ordinal']}"
    return session.execute(sa.text(
        """
        INSERT INTO probes (probe_set, external_id, question, reference, answers, answerable, gold_document_ids,
                            gold_chunk_ids, gold_kb_version, split, origin, source_document_id, source_hash, language)
        VALUES (:set, :ext, :q, :a, CAST(:answers AS jsonb), true, :docs, :chunks, :v, :split, 'generated', :doc,
                :hash, :lang)
        ON CONFLICT (probe_set, external_id) DO UPDATE SET
            question = EXCLUDED.question, reference = EXCLUDED.reference, answers = EXCLUDED.answers,
            gold_chunk_ids = EXCLUDED.gold_chunk_ids, gold_kb_version = EXCLUDED.gold_kb_version,
            status = 'active', retired_at = NULL
        RETURNING id
        """), {"set": probe_set, "ext": external, "q": probe["question"], "a": probe["answer"],
               "answers": json.dumps([probe["answer"]], ensure_ascii=False), "docs": [chunk["document_id"]],
               "chunks": [chunk["chunk_id"]], "v": chunk["kb_version"], "split": split_for(probe_set, external),
               "doc": chunk["document_id"], "hash": chunk["content_hash"], "lang": script(chunk["text"])}).scalar_one()


def generate_probes(store, *, per_document: int = 2, limit: int | None = None, probe_set: str = "generated",
                    ask: Callable[[str], tuple[object, str, str | None]] | None = None,
                    progress=None) -> GenerationReport:
    """Retire the probes of changed documents, then write probes for chunks that have none (at most `limit` model
    calls). `ask` replaces the local model (tests)."""
    report = GenerationReport(probe_set=probe_set)
    started = time.perf_counter()
    with store.session() as s:
        report.retired = retire_changed(s, probe_set)
        chunks, report.skipped = candidate_chunks(s, probe_set, max(1, per_document))
        report.run_id = s.execute(sa.text(
            "INSERT INTO eval_runs (kind, kb_version, status) SELECT 'probe_generation', id, 'running' "
            "FROM kb_versions WHERE status = 'active' RETURNING id")).scalar()
    chunks = chunks[:limit] if limit is not None else chunks
    if ask is None and chunks:
        from agent.llm import get_llm

        ask = ask_model(get_llm())
    for done, chunk in enumerate(chunks):
        if progress:
            progress(done, len(chunks), f"chunk {chunk['chunk_id']}")
        value, raw, error = ask(chunk["text"])
        try:
            if error:
                raise ProbeRejected(f"model reply unusable: {error}")
            probe = validate_probe(value, chunk["text"])
        except ProbeRejected as exc:
            reason = str(exc).split(":")[0]
            report.rejected += 1
            report.rejections[reason] = report.rejections.get(reason, 0) + 1
            report.failures.append({"chunk_id": chunk["chunk_id"], "reason": str(exc)[:300], "raw": (raw or "")[:300]})
            continue
        with store.session() as s:
            probe_id = _store_probe(s, probe_set, chunk, probe)
        report.added += 1
        report.probes.append({"id": probe_id, "chunk_id": chunk["chunk_id"], **probe})
    if progress:
        progress(len(chunks), len(chunks), "")
    report.seconds = round(time.perf_counter() - started, 2)
    if report.run_id is not None:
        with store.session() as s:
            finish_run(s, report.run_id, report.added,
                       {k: v for k, v in report.as_dict().items() if k != "probes"})
    return report
