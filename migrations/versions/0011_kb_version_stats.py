"""BM25's corpus statistics per KB version, kept by triggers: `kb_version_stats` (chunks, their lexical length).

Search normalises BM25 by the number of chunks of the version and their average length. Counting them was a scan
of the version's chunks on every query, a second and more at a million chunks. Statement-level triggers on
`chunks` now keep the two sums in the writing transaction, so an ingest or a candidate build that rolls back
leaves them as they were, and every path that writes chunks (ingestion, re-indexing, repairs, cascaded deletes,
TRUNCATE) is covered without the code having to remember. An UPDATE that changes no length touches nothing (no
row lock for the repairs that only relabel chunks).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE kb_version_stats (
            kb_version      integer PRIMARY KEY,
            chunks          bigint NOT NULL,
            lexical_length  bigint NOT NULL
        )
        """
    )
    op.execute(
        "COMMENT ON TABLE kb_version_stats IS 'Per KB version: how many chunks it has and the sum of their "
        "lexical_length, for BM25 (store.search). Kept by triggers on chunks; no foreign key, because a version''s "
        "row must outlive the cascaded delete of its chunks by the moment the trigger needs.'"
    )
    op.execute(
        """
        CREATE FUNCTION kb_version_stats_keep() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'TRUNCATE' THEN
                DELETE FROM kb_version_stats;
            ELSIF TG_OP = 'INSERT' THEN
                INSERT INTO kb_version_stats AS s (kb_version, chunks, lexical_length)
                SELECT kb_version, count(*), coalesce(sum(lexical_length), 0) FROM new_rows
                GROUP BY kb_version ORDER BY kb_version
                ON CONFLICT (kb_version) DO UPDATE SET chunks = s.chunks + excluded.chunks,
                                                       lexical_length = s.lexical_length + excluded.lexical_length;
            ELSIF TG_OP = 'DELETE' THEN
                UPDATE kb_version_stats s SET chunks = s.chunks - d.chunks, lexical_length = s.lexical_length - d.len
                FROM (SELECT kb_version, count(*) AS chunks, coalesce(sum(lexical_length), 0) AS len
                      FROM old_rows GROUP BY kb_version) d
                WHERE s.kb_version = d.kb_version;
                DELETE FROM kb_version_stats WHERE chunks <= 0;
            ELSE  -- UPDATE: the net change per version, and nothing (no row lock) when no length changed
                INSERT INTO kb_version_stats AS s (kb_version, chunks, lexical_length)
                SELECT kb_version, sum(n), sum(len) FROM (
                    SELECT kb_version, 1 AS n, lexical_length AS len FROM new_rows
                    UNION ALL
                    SELECT kb_version, -1, -lexical_length FROM old_rows) d
                GROUP BY kb_version HAVING sum(n) <> 0 OR sum(len) <> 0 ORDER BY kb_version
                ON CONFLICT (kb_version) DO UPDATE SET chunks = s.chunks + excluded.chunks,
                                                       lexical_length = s.lexical_length + excluded.lexical_length;
                DELETE FROM kb_version_stats WHERE chunks <= 0;
            END IF;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER chunks_stats_insert AFTER INSERT ON chunks REFERENCING NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION kb_version_stats_keep()"
    )
    op.execute(
        "CREATE TRIGGER chunks_stats_update AFTER UPDATE ON chunks REFERENCING OLD TABLE AS old_rows "
        "NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION kb_version_stats_keep()"
    )
    op.execute(
        "CREATE TRIGGER chunks_stats_delete AFTER DELETE ON chunks REFERENCING OLD TABLE AS old_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION kb_version_stats_keep()"
    )
    op.execute(
        "CREATE TRIGGER chunks_stats_truncate AFTER TRUNCATE ON chunks "
        "FOR EACH STATEMENT EXECUTE FUNCTION kb_version_stats_keep()"
    )
    op.execute(
        "INSERT INTO kb_version_stats (kb_version, chunks, lexical_length) "
        "SELECT kb_version, count(*), coalesce(sum(lexical_length), 0) FROM chunks GROUP BY kb_version"
    )


def downgrade() -> None:
    raise NotImplementedError("Kaizen's migrations are append-only")
