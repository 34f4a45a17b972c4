"""Handlers of the knowledge-store commands: ingest, reindex, search, sql, status, schema."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from .console import err, out, print_json, print_table, progress_bar


def open_store():
    from store.database import Store

    return Store()


def embedder():
    from store.config import StoreSettings
    from store.embeddings import load_embedder

    return load_embedder(threads=StoreSettings.from_env().embed_threads)


def cmd_ingest(args) -> int:
    from store.ingest import ingest

    store = open_store()
    if args.if_empty:
        import sqlalchemy as sa

        with store.session() as s:
            if s.execute(sa.text("SELECT count(*) FROM documents")).scalar_one():
                return 0
    with progress_bar("ingesting") as progress:
        report = ingest(store, embedder(), args.paths, progress=progress)
    if args.json:
        print_json(report.as_dict())
    else:
        out.print(
            f"added {report.added}, updated {report.updated}, unchanged {report.unchanged}, "
            f"missing {report.missing}, failed {report.failed}; {report.chunks} chunks in {report.seconds:.1f}s "
            f"(KB version {report.kb_version})"
        )
        for error in report.errors:
            err.print(f"[red]error[/red] {error.source}: {error.message}", highlight=False)
    return 0 if report.ok else 1


def cmd_reindex(args) -> int:
    from store.reindex import reindex

    store = open_store()
    with progress_bar("re-indexing") as progress:
        report = reindex(store, embedder(), reason=args.reason, progress=progress)
    if args.json:
        print_json(report.as_dict())
    else:
        out.print(f"KB version {report.new_version} is active ({report.documents} documents, {report.chunks} chunks, "
                  f"{report.seconds:.1f}s); version {report.previous_version} retired")
    return 0


def cmd_search(args) -> int:
    from store.search import Filters, search

    store = open_store()
    filters = Filters(source_prefix=args.source, document_ids=tuple(args.doc) if args.doc else None)
    with store.session() as s:
        hits = search(s, embedder(), args.query, k=args.k, mode=args.mode, filters=filters, settings=store.settings)
    if args.json:
        print_json([h.as_dict() for h in hits])
        return 0
    if not hits:
        out.print("no matching chunks")
    for rank, hit in enumerate(hits, start=1):
        out.print(f"[bold]{rank}. {hit.title}[/bold]  [dim]{hit.source_uri} · chunk {hit.chunk_id} · "
                  f"score {hit.score:.4f}[/dim]", highlight=False)
        text = hit.text if len(hit.text) <= 400 else hit.text[:400] + "…"
        out.print(f"   {text}", highlight=False, markup=False)
    return 0


def cmd_sql(args) -> int:
    from store.sql_console import run_sql

    store = open_store()
    if args.statement is None:
        return _interactive_sql(store, args.write)
    result = run_sql(store, args.statement, write=args.write)
    if args.json:
        print_json([dict(zip(result.columns, row)) for row in result.rows])
    elif result.columns:
        print_table(result.columns, result.rows)
        out.print(f"[dim]{len(result.rows)} row(s)[/dim]")
    else:
        out.print(result.status)
    return 0


def _interactive_sql(store, write: bool) -> int:
    psql = shutil.which("psql")
    if psql and sys.stdin.isatty():
        env = dict(os.environ)
        if not write:
            env["PGOPTIONS"] = (env.get("PGOPTIONS", "") + " -c default_transaction_read_only=on").strip()
        err.print("[dim]psql session" + ("" if write else " (read-only)") + "; \\q quits[/dim]")
        from store.database import libpq_url

        return subprocess.call([psql, libpq_url(store.url)], env=env)
    from store.sql_console import SqlError, run_sql

    err.print("[dim]Kaizen SQL prompt" + ("" if write else " (read-only)") + "; end statements with ';', "
              "an empty line or Ctrl-D quits[/dim]")
    buffer = ""
    while True:
        try:
            line = input("sql> " if not buffer else "...> ") if sys.stdin.isatty() else sys.stdin.readline()
        except EOFError:
            break
        if not sys.stdin.isatty() and line == "":
            break
        line = line.rstrip("\n")
        if not line.strip() and not buffer:
            if sys.stdin.isatty():
                break
            continue
        buffer += line + "\n"
        if buffer.rstrip().endswith(";"):
            try:
                result = run_sql(store, buffer.rstrip().rstrip(";"), write=write)
                if result.columns:
                    print_table(result.columns, result.rows)
                else:
                    out.print(result.status)
            except SqlError as exc:
                err.print(f"[red]error[/red] {exc}", highlight=False)
            buffer = ""
    return 0


def status_data(store) -> dict:
    import sqlalchemy as sa

    from store.database import describe_url
    from store.kb_versions import active_version
    from store.lexical import CURRENT_SCHEME

    with store.session() as s:
        version = active_version(s)
        docs = dict(s.execute(sa.text("SELECT status, count(*) FROM documents GROUP BY status")).all())
        chunks = s.execute(sa.text("SELECT count(*) FROM active_chunks")).scalar_one()
        # Chunks indexed before sentence vectors (migration 0006) are scored by their chunk vector alone.
        without_sentences = s.execute(sa.text(
            "SELECT count(*) FROM active_chunks a JOIN chunks c USING (id) WHERE c.sentence_embeddings IS NULL"
        )).scalar_one()
        versions = dict(s.execute(sa.text("SELECT status, count(*) FROM kb_versions GROUP BY status")).all())
        retired_chunks = s.execute(sa.text(
            "SELECT count(*) FROM chunks c JOIN kb_versions v ON v.id = c.kb_version AND v.status = 'retired'"
        )).scalar_one()
    caps = store.capabilities
    return {
        "database": {
            "embedded": store.embedded,
            "location": str(store.settings.pgdata) if store.embedded else None,
            "url": describe_url(store.url),
            "server_version": caps.server_version,
            "pgvector_version": caps.pgvector_version,
            "iterative_index_scans": caps.iterative_index_scans,
        },
        "kaizen_home": str(store.settings.home),
        "documents": {"active": docs.get("active", 0), "missing": docs.get("missing", 0)},
        "active_chunks": chunks,
        "active_chunks_without_sentence_vectors": without_sentences,
        "kb_versions": versions,
        "retired_chunks": retired_chunks,
        "active_kb_version": None if version is None else {
            "id": version.id, "reason": version.reason, "embedding_model": version.embedding_model,
            "embedding_dim": version.embedding_dim, "text_search_config": version.text_search_config,
            "chunk_tokens": version.chunk_tokens, "chunk_overlap": version.chunk_overlap,
            "lexical_scheme": version.lexical_scheme,
            # A version indexed with an older scheme still searches correctly; `kaizen reindex` upgrades it.
            "lexical_scheme_current": version.lexical_scheme == CURRENT_SCHEME,
        },
        "models": {"embedding": f"{__import__('store.embeddings', fromlist=['MODEL_NAME']).MODEL_NAME} "
                                f"({os.environ.get('KAIZEN_EMBEDDER', 'numpy')} runtime)"},
    }


def cmd_status(args) -> int:
    data = status_data(open_store())
    if args.json:
        print_json(data)
        return 0
    db = data["database"]
    out.print(f"database: {'embedded PostgreSQL in ' + db['location'] if db['embedded'] else db['url']} "
              f"(PostgreSQL {db['server_version']}, pgvector {db['pgvector_version']})", highlight=False)
    out.print(f"documents: {data['documents']['active']} active, {data['documents']['missing']} missing; "
              f"{data['active_chunks']} chunks in the active version")
    v = data["active_kb_version"]
    out.print("active KB version: " + ("none (run `kaizen ingest PATH`)" if v is None else
              f"{v['id']} ({v['reason']}); embeddings {v['embedding_model']} ({v['embedding_dim']} dims), "
              f"{v['chunk_tokens']}-token chunks, lexical scheme {v['lexical_scheme']}"
              + ("" if v["lexical_scheme_current"] else " (older than this Kaizen's; `kaizen reindex` upgrades it)")),
              highlight=False)
    if data["active_chunks_without_sentence_vectors"]:
        out.print(f"{data['active_chunks_without_sentence_vectors']} active chunks were indexed before sentence "
                  "vectors and are ranked by their chunk vector alone; `kaizen reindex` adds them", highlight=False)
    if data["retired_chunks"]:
        retired = data["kb_versions"].get("retired", 0)
        out.print(f"{data['retired_chunks']} chunks belong to {retired} retired KB version{'s' * (retired != 1)} "
                  "(kept for `kaizen kb revert`); `kaizen kb prune` frees the older ones", highlight=False)
    out.print(f"models: embedding {data['models']['embedding']}", highlight=False)
    return 0


def cmd_schema(args) -> int:
    from store.sql_console import schema_markdown

    sys.stdout.write(schema_markdown(open_store()))
    return 0
