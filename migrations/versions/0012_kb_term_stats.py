"""BM25's document frequencies per KB version, kept by triggers: `kb_term_stats` (term, chunks containing it).

Search counted each query term's chunks through the GIN index and the table on every query: at a million chunks
about 10 ms a term, and a Japanese question has a dozen terms (bigrams and words). Statement-level triggers on
`chunks` now keep the counts in the writing transaction, as 0011 keeps the chunk count and length. Every change is
applied as an upsert of per-term deltas in term order, so two writers lock rows in the same order and cannot
deadlock; terms whose count falls to zero are removed.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_APPLY = """
    INSERT INTO kb_term_stats AS s (kb_version, term, df)
    SELECT kb_version, term, sum(n) FROM ({rows}) d
    GROUP BY kb_version, term HAVING sum(n) <> 0 ORDER BY kb_version, term
    ON CONFLICT (kb_version, term) DO UPDATE SET df = s.df + excluded.df;
    DELETE FROM kb_term_stats s USING (SELECT DISTINCT kb_version, term FROM ({rows}) d) t
    WHERE s.kb_version = t.kb_version AND s.term = t.term AND s.df <= 0;
"""
_NEW = "SELECT r.kb_version, u.lexeme AS term, 1 AS n FROM new_rows r CROSS JOIN LATERAL unnest(r.tsv) u"
_OLD = "SELECT r.kb_version, u.lexeme AS term, -1 AS n FROM old_rows r CROSS JOIN LATERAL unnest(r.tsv) u"
# An UPDATE counts only the rows whose terms or version changed: one that sets another column of a million chunks
# compares them instead of unnesting every tsvector twice.
_CHANGED = ("SELECT {side}.kb_version, u.lexeme AS term, {n} AS n FROM new_rows r JOIN old_rows o ON o.id = r.id "
            "CROSS JOIN LATERAL unnest({side}.tsv) u "
            "WHERE r.tsv IS DISTINCT FROM o.tsv OR r.kb_version IS DISTINCT FROM o.kb_version")


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE kb_term_stats (
            kb_version  integer NOT NULL,
            term        text NOT NULL,
            df          bigint NOT NULL,
            PRIMARY KEY (kb_version, term)
        )
        """
    )
    op.execute(
        "COMMENT ON TABLE kb_term_stats IS 'Per KB version and full-text term (a tsvector lexeme): how many of the "
        "version''s chunks contain it, the document frequency of BM25 (store.search). Kept by triggers on chunks.'"
    )
    op.execute(
        f"""
        CREATE FUNCTION kb_term_stats_keep() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'TRUNCATE' THEN
                DELETE FROM kb_term_stats;
            ELSIF TG_OP = 'INSERT' THEN
                {_APPLY.format(rows=_NEW)}
            ELSIF TG_OP = 'DELETE' THEN
                {_APPLY.format(rows=_OLD)}
            ELSIF TG_OP = 'UPDATE' THEN
                {_APPLY.format(rows=_CHANGED.format(side="r", n=1) + " UNION ALL " + _CHANGED.format(side="o", n=-1))}
            END IF;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER chunks_terms_insert AFTER INSERT ON chunks REFERENCING NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION kb_term_stats_keep()"
    )
    op.execute(
        # (no column list: PostgreSQL allows none with transition tables; an UPDATE that leaves the tsvectors as
        # they were reads its rows and writes nothing)
        "CREATE TRIGGER chunks_terms_update AFTER UPDATE ON chunks REFERENCING OLD TABLE AS old_rows "
        "NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION kb_term_stats_keep()"
    )
    op.execute(
        "CREATE TRIGGER chunks_terms_delete AFTER DELETE ON chunks REFERENCING OLD TABLE AS old_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION kb_term_stats_keep()"
    )
    op.execute(
        "CREATE TRIGGER chunks_terms_truncate AFTER TRUNCATE ON chunks "
        "FOR EACH STATEMENT EXECUTE FUNCTION kb_term_stats_keep()"
    )
    op.execute(
        "INSERT INTO kb_term_stats (kb_version, term, df) "
        "SELECT c.kb_version, u.lexeme, count(*) FROM chunks c CROSS JOIN LATERAL unnest(c.tsv) u "
        "GROUP BY c.kb_version, u.lexeme"
    )


def downgrade() -> None:
    raise NotImplementedError("Kaizen's migrations are append-only")
