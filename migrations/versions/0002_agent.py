"""Agent records: interactions, their retrieved chunks, grader verdicts, feedback, knowledge gaps.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE interactions (
            id                 bigserial PRIMARY KEY,
            thread_id          text NOT NULL,
            question           text NOT NULL,
            standalone_query   text,
            answer             text NOT NULL DEFAULT '',
            abstained          boolean NOT NULL DEFAULT false,
            warning            text,
            kb_version         integer REFERENCES kb_versions(id) ON DELETE SET NULL,
            model              text NOT NULL,
            timings            jsonb NOT NULL DEFAULT '{}'::jsonb,
            prompt_tokens      integer NOT NULL DEFAULT 0,
            prompt_tokens_processed integer NOT NULL DEFAULT 0,
            completion_tokens  integer NOT NULL DEFAULT 0,
            llm_calls          integer NOT NULL DEFAULT 0,
            llm_detail         jsonb NOT NULL DEFAULT '[]'::jsonb,
            notices            text[] NOT NULL DEFAULT '{}',
            rewrites           integer NOT NULL DEFAULT 0,
            regenerations      integer NOT NULL DEFAULT 0,
            created_at         timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX interactions_thread ON interactions (thread_id, created_at)")
    op.execute("CREATE INDEX interactions_created ON interactions (created_at)")
    # chunk_id survives the chunk (a re-ingest or a retired KB version may delete it); the rank and scores stay.
    op.execute(
        """
        CREATE TABLE retrievals (
            interaction_id  bigint NOT NULL REFERENCES interactions(id) ON DELETE CASCADE,
            attempt         integer NOT NULL DEFAULT 0,
            query           text NOT NULL,
            chunk_id        bigint REFERENCES chunks(id) ON DELETE SET NULL,
            rank            integer NOT NULL,
            score           double precision NOT NULL,
            vector_rank     integer,
            text_rank       integer,
            vector_score    double precision,
            text_score      double precision,
            relevant        boolean NOT NULL DEFAULT false,
            in_context      boolean NOT NULL DEFAULT false,
            cited           boolean NOT NULL DEFAULT false,
            PRIMARY KEY (interaction_id, attempt, rank)
        )
        """
    )
    op.execute("CREATE INDEX retrievals_chunk ON retrievals (chunk_id)")
    op.execute(
        """
        CREATE TABLE grades (
            id              bigserial PRIMARY KEY,
            interaction_id  bigint NOT NULL REFERENCES interactions(id) ON DELETE CASCADE,
            grader          text NOT NULL,
            verdict         text NOT NULL,
            score           double precision,
            detail          jsonb NOT NULL DEFAULT '{}'::jsonb,
            parse_error     text,
            created_at      timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX grades_interaction ON grades (interaction_id)")
    op.execute(
        """
        CREATE TABLE feedback (
            id              bigserial PRIMARY KEY,
            interaction_id  bigint NOT NULL REFERENCES interactions(id) ON DELETE CASCADE,
            rating          smallint NOT NULL CHECK (rating IN (-1, 1)),
            correction      text,
            created_at      timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX feedback_interaction ON feedback (interaction_id)")
    op.execute(
        """
        CREATE TABLE knowledge_gaps (
            id              bigserial PRIMARY KEY,
            interaction_id  bigint NOT NULL REFERENCES interactions(id) ON DELETE CASCADE,
            question        text NOT NULL,
            reason          text NOT NULL,
            created_at      timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX knowledge_gaps_created ON knowledge_gaps (created_at)")
    op.execute(
        """
        CREATE VIEW recent_interactions AS
        SELECT i.id, i.created_at, i.thread_id, i.question, left(i.answer, 300) AS answer, i.abstained, i.warning,
               (SELECT count(*) FROM retrievals r WHERE r.interaction_id = i.id AND r.cited) AS cited_chunks,
               (i.timings ->> 'total')::double precision AS total_ms, i.llm_calls, i.prompt_tokens,
               i.completion_tokens, i.model, i.kb_version,
               (SELECT f.rating FROM feedback f WHERE f.interaction_id = i.id ORDER BY f.created_at DESC LIMIT 1)
                   AS rating
        FROM interactions i
        ORDER BY i.created_at DESC, i.id DESC
        """
    )
    op.execute(
        """
        CREATE VIEW thread_overview AS
        SELECT thread_id, count(*) AS turns, min(created_at) AS started_at, max(created_at) AS last_at,
               (array_agg(question ORDER BY created_at, id))[1] AS first_question,
               count(*) FILTER (WHERE abstained) AS abstentions
        FROM interactions
        GROUP BY thread_id
        """
    )
    op.execute(
        """
        CREATE VIEW knowledge_gap_overview AS
        SELECT g.id, g.created_at, g.question, g.reason, i.standalone_query, i.thread_id, i.kb_version,
               g.interaction_id
        FROM knowledge_gaps g JOIN interactions i ON i.id = g.interaction_id
        ORDER BY g.created_at DESC
        """
    )

    comments = {
        ("TABLE", "interactions"): "One row per answered question: the question, the standalone query it was "
        "searched with, the answer (empty when stopped), whether Kaizen abstained, a warning shown with it, the KB "
        "version and model, per-node timings in ms (plus ttft and total), prompt tokens (all, and those llama.cpp "
        "processed after reusing its KV cache), generated tokens, and each LLM call in llm_detail.",
        ("TABLE", "retrievals"): "The chunks each interaction retrieved (attempt 0, then one per query rewrite) "
        "with rank and scores, whether the grader judged them relevant, whether they were in the prompt's context "
        "and whether the answer cited them.",
        ("TABLE", "grades"): "Every grader verdict of an interaction (retrieval relevance, citation and grounding "
        "checks, the LLM's constrained self-check); parse_error holds a malformed reply from the model.",
        ("TABLE", "feedback"): "Ratings people gave answers (/good = 1, /bad = -1) with an optional correction.",
        ("TABLE", "knowledge_gaps"): "Questions the knowledge base could not answer (nothing relevant retrieved, or "
        "the model abstained), for the improvement loop.",
        ("VIEW", "recent_interactions"): "Interactions, newest first, with their cited chunk count, total "
        "latency and latest rating.",
        ("VIEW", "thread_overview"): "Each conversation thread with its number of turns and its first question.",
        ("VIEW", "knowledge_gap_overview"): "Knowledge gaps, newest first, with the query that found nothing.",
    }
    for (kind, name), text in comments.items():
        quoted = text.replace("'", "''")
        op.execute(f"COMMENT ON {kind} {name} IS '{quoted}'")


def downgrade() -> None:
    raise NotImplementedError("Kaizen's migrations are append-only")
