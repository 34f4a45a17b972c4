"""Self-evaluation: probes (questions with references and gold documents), evaluation runs, per-item metric
scores (RAGAS and the non-LLM ones), judge calibration, quality alerts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE probes (
            id                 bigserial PRIMARY KEY,
            probe_set          text NOT NULL,
            external_id        text,
            question           text NOT NULL,
            reference          text,
            answers            jsonb NOT NULL DEFAULT '[]'::jsonb,
            answerable         boolean NOT NULL DEFAULT true,
            gold_source_ids    text[] NOT NULL DEFAULT '{}',
            gold_document_ids  bigint[] NOT NULL DEFAULT '{}',
            gold_chunk_ids     bigint[] NOT NULL DEFAULT '{}',
            gold_kb_version    integer REFERENCES kb_versions(id) ON DELETE SET NULL,
            split              text NOT NULL CHECK (split IN ('train', 'heldout')),
            origin             text NOT NULL CHECK (origin IN ('imported', 'generated')),
            source_document_id bigint REFERENCES documents(id) ON DELETE SET NULL,
            source_hash        text,
            language           text,
            status             text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'retired')),
            created_at         timestamptz NOT NULL DEFAULT now(),
            retired_at         timestamptz,
            UNIQUE (probe_set, external_id)
        )
        """
    )
    op.execute("CREATE INDEX probes_active ON probes (split) WHERE status = 'active'")
    op.execute("CREATE INDEX probes_source_document ON probes (source_document_id)")
    op.execute(
        """
        CREATE TABLE eval_runs (
            id           bigserial PRIMARY KEY,
            kind         text NOT NULL,
            kb_version   integer REFERENCES kb_versions(id) ON DELETE SET NULL,
            judge_model  text,
            status       text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done', 'failed')),
            items        integer NOT NULL DEFAULT 0,
            summary      jsonb NOT NULL DEFAULT '{}'::jsonb,
            error        text,
            started_at   timestamptz NOT NULL DEFAULT now(),
            finished_at  timestamptz
        )
        """
    )
    op.execute("CREATE INDEX eval_runs_version ON eval_runs (kb_version, kind, started_at)")
    op.execute(
        """
        CREATE TABLE eval_scores (
            id              bigserial PRIMARY KEY,
            run_id          bigint REFERENCES eval_runs(id) ON DELETE CASCADE,
            interaction_id  bigint REFERENCES interactions(id) ON DELETE CASCADE,
            probe_id        bigint REFERENCES probes(id) ON DELETE CASCADE,
            kb_version      integer REFERENCES kb_versions(id) ON DELETE SET NULL,
            metric          text NOT NULL,
            value           double precision CHECK (value IS NULL OR value = value),
            reason          text,
            judge_model     text,
            detail          jsonb NOT NULL DEFAULT '{}'::jsonb,
            created_at      timestamptz NOT NULL DEFAULT now(),
            CHECK (interaction_id IS NOT NULL OR probe_id IS NOT NULL)
        )
        """
    )
    op.execute("CREATE INDEX eval_scores_metric ON eval_scores (metric, kb_version, created_at)")
    op.execute("CREATE INDEX eval_scores_interaction ON eval_scores (interaction_id)")
    op.execute("CREATE INDEX eval_scores_run ON eval_scores (run_id)")
    op.execute(
        """
        CREATE TABLE judge_calibration (
            id           bigserial PRIMARY KEY,
            judge_model  text NOT NULL,
            metric       text NOT NULL,
            auc          double precision,
            pairs        integer NOT NULL,
            threshold    double precision NOT NULL,
            trusted      boolean NOT NULL,
            seconds_per_item double precision,
            detail       jsonb NOT NULL DEFAULT '{}'::jsonb,
            created_at   timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX judge_calibration_latest ON judge_calibration (judge_model, metric, created_at DESC)")
    op.execute(
        """
        CREATE TABLE quality_alerts (
            id           bigserial PRIMARY KEY,
            kb_version   integer REFERENCES kb_versions(id) ON DELETE SET NULL,
            metric       text NOT NULL,
            baseline     double precision NOT NULL,
            observed     double precision NOT NULL,
            window_size  integer NOT NULL,
            tolerance    double precision NOT NULL,
            status       text NOT NULL DEFAULT 'open'
                         CHECK (status IN ('open', 'planning', 'repaired', 'no_repair', 'dismissed')),
            detail       jsonb NOT NULL DEFAULT '{}'::jsonb,
            created_at   timestamptz NOT NULL DEFAULT now(),
            resolved_at  timestamptz
        )
        """
    )
    op.execute("CREATE INDEX quality_alerts_open ON quality_alerts (created_at) WHERE status = 'open'")
    op.execute(
        """
        CREATE VIEW trusted_metrics AS
        SELECT DISTINCT ON (judge_model, metric) judge_model, metric, auc, pairs, threshold, trusted, created_at
        FROM judge_calibration
        ORDER BY judge_model, metric, created_at DESC
        """
    )
    op.execute(
        """
        CREATE VIEW quality_trend AS
        SELECT date_trunc('hour', s.created_at) AS hour, s.kb_version, s.metric,
               CASE WHEN s.interaction_id IS NOT NULL THEN 'interaction' ELSE 'probe' END AS subject,
               count(*) AS items, count(s.value) AS scored, avg(s.value) AS mean
        FROM eval_scores s
        GROUP BY 1, 2, 3, 4
        """
    )
    op.execute(
        """
        CREATE VIEW worst_chunks AS
        SELECT r.chunk_id, c.document_id, d.source_uri, d.title, s.metric,
               count(DISTINCT s.interaction_id) AS answers, avg(s.value) AS mean_score,
               left(c.text, 160) AS text_start
        FROM eval_scores s
        JOIN retrievals r ON r.interaction_id = s.interaction_id AND r.cited
        JOIN chunks c ON c.id = r.chunk_id
        JOIN documents d ON d.id = c.document_id
        WHERE s.value IS NOT NULL
        GROUP BY r.chunk_id, c.document_id, d.source_uri, d.title, s.metric, c.text
        ORDER BY avg(s.value) ASC, count(DISTINCT s.interaction_id) DESC
        """
    )
    op.execute(
        """
        CREATE VIEW eval_run_overview AS
        SELECT id, kind, kb_version, judge_model, status, items, started_at, finished_at,
               finished_at - started_at AS took, summary
        FROM eval_runs
        ORDER BY started_at DESC
        """
    )
    comments = {
        ("TABLE", "probes"): "Questions with a reference answer and gold documents/chunks, "
        "used to measure the knowledge "
        "base: imported question sets and questions the local model generated from chunks. split = train (repairs "
        "may be derived from it) or heldout (only used to judge repairs).",
        ("TABLE", "eval_runs"): "One evaluation pass (of new interactions, a probe set on a KB version, a judge "
        "calibration, a candidate version) with its summary.",
        ("TABLE", "eval_scores"): "One metric value for one interaction or probe. value is NULL (never NaN) when the "
        "metric could not be computed, and reason says why.",
        ("TABLE", "judge_calibration"): "How well each LLM-judged metric separates good from bad answers with a given "
        "judge model (ROC AUC on labelled pairs); only trusted metrics may trigger repairs on their own.",
        ("TABLE", "quality_alerts"): "A trusted metric dropped below the active KB version's baseline over a rolling "
        "window; the repair planner picks open alerts up.",
        ("VIEW", "trusted_metrics"): "The latest calibration of each metric per judge model.",
        ("VIEW", "quality_trend"): "Mean of each metric per hour and KB version, for interactions and for probes.",
        ("VIEW", "worst_chunks"): "Cited chunks by the mean score of the answers that cited them, worst first.",
        ("VIEW", "eval_run_overview"): "Evaluation runs, newest first, with how long they took.",
    }
    for (kind, name), text in comments.items():
        quoted = text.replace("'", "''")
        op.execute(f"COMMENT ON {kind} {name} IS '{quoted}'")


def downgrade() -> None:
    raise NotImplementedError("Kaizen's migrations are append-only")
