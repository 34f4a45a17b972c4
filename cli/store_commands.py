"""The knowledge-store commands: `kaizen ingest`, `reindex`, `search`, `sql`, `status`, `schema`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import click

from .output import err, json_option, out, print_json, print_table, progress_bar


def open_store():
    from store.database import Store

    return Store()


def embedder(settings=None):
    """The embedder the settings (default: read from the environment now) ask for."""
    from store.embeddings import store_embedder
    from store.settings import StoreSettings

    return store_embedder(settings or StoreSettings())


def register_commands(cli: click.Group) -> None:
    @cli.command(name="ingest")
    @click.argument("paths", nargs=-1, required=True)
    @click.option("--if-empty", is_flag=True, help="do nothing when the knowledge base has documents")
    @click.option("--sample", is_flag=True,
                  help="PATHS are the sample knowledge base (`make chat`: README.md and docs/), loaded only into a "
                       "knowledge base with no documents of your own")
    @json_option
    def ingest_command(paths: tuple[str, ...], if_empty: bool, sample: bool, as_json: bool) -> int:
        """add files and folders (.md .txt .html .pdf .jsonl) to the knowledge base

        Unchanged documents (same content hash) are skipped and changed ones replaced; documents whose source
        vanished from a scanned file or folder are marked missing. Exits 1 when a source could not be loaded.

        --sample is what `make chat` runs on README.md and docs/: PATHS are the sample knowledge base, ingested
        only while every active document is a sample document (or a /bad correction), so the sample loads into
        an empty knowledge base and stays current, and one holding documents of your own is left alone (one line
        says so). Sample documents are named by their path relative to the current directory
        (kaizen://sample/docs/cli.md, source id docs/cli.md), not by their absolute path, so another clone
        refreshes the same documents instead of adding copies; PATHS must lie inside the current directory.
        PATHS are the whole sample: sample documents they no longer include are marked missing."""
        from store.ingest import ingest
        from store.status import has_documents, own_documents

        if sample and if_empty:
            raise click.UsageError("--sample and --if-empty are alternatives: choose one")
        if sample:
            here = os.path.realpath(os.getcwd())
            outside = [p for p in paths if os.path.commonpath([here, os.path.realpath(p)]) != here]
            if outside:
                raise click.UsageError(f"--sample names documents by their path relative to the current "
                                       f"directory; {outside[0]} is outside it")
        store = open_store()
        if if_empty and has_documents(store):
            return 0
        if sample and (own := own_documents(store)):
            if as_json:
                print_json({"sample": "skipped", "own_documents": own})
            else:
                err.print(f"the knowledge base holds {own} document{'s' * (own != 1)} of your own, so the sample "
                          f"({' '.join(paths)}) was left out", highlight=False)
            return 0
        with progress_bar("ingesting") as progress:
            report = ingest(store, embedder(), list(paths), progress=progress,
                            relative_to=os.getcwd() if sample else None)
        if as_json:
            print_json(report.as_dict())
        else:
            out.print(
                f"{'sample: ' if sample else ''}added {report.added}, updated {report.updated}, "
                f"unchanged {report.unchanged}, missing {report.missing}, failed {report.failed}; {report.chunks} "
                f"chunks in {report.seconds:.1f}s (KB version {report.kb_version})"
            )
            for error in report.errors:
                err.print(f"[red]error[/red] {error.source}: {error.message}", highlight=False)
        return 0 if report.ok else 1

    @cli.command(name="reindex")
    @click.option("--reason", default="reindex", help="why, as recorded with the new KB version (default reindex)")
    @json_option
    def reindex_command(reason: str, as_json: bool) -> int:
        """rebuild all chunks and embeddings into a new KB version and switch to it"""
        from store.reindex import reindex

        store = open_store()
        with progress_bar("re-indexing") as progress:
            report = reindex(store, embedder(), reason=reason, progress=progress)
        if as_json:
            print_json(report.as_dict())
        else:
            out.print(f"KB version {report.new_version} is active ({report.documents} documents, {report.chunks} "
                      f"chunks, {report.seconds:.1f}s); version {report.previous_version} retired")
        return 0

    @cli.command(name="search")
    @click.argument("query")
    @click.option("-k", "k", type=int, default=5, help="how many chunks (default 5)")
    @click.option("--mode", type=click.Choice(["hybrid", "vector", "text"]), default="hybrid",
                  help="hybrid (default), vector or text (full-text) search")
    @click.option("--source", help="only documents whose source URI starts with this prefix")
    @click.option("--doc", type=int, multiple=True, help="only this document id (repeatable)")
    @json_option
    def search_command(query: str, k: int, mode: str, source: str | None, doc: tuple[int, ...],
                       as_json: bool) -> int:
        """hybrid search over the active KB version"""
        from store.search import Filters, search

        store = open_store()
        filters = Filters(source_prefix=source, document_ids=tuple(doc) if doc else None)
        with store.session() as s:
            hits = search(s, embedder(), query, k=k, mode=mode, filters=filters, settings=store.settings)
        if as_json:
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

    @cli.command(name="sql")
    @click.argument("statement", required=False)
    @click.option("--write", is_flag=True, help="run as the owner role, which may change data")
    @json_option
    def sql_command(statement: str | None, write: bool, as_json: bool) -> int:
        """run SQL against the knowledge store (read-only unless --write)

        Without --write it logs in as the read-only role (kaizen_reader), which PostgreSQL lets read Kaizen's
        tables and views and nothing else; where that role cannot be used (a server whose owner may not create
        roles), one line says so and what a superuser can run, and a non-superuser owner reads in a read-only
        transaction meanwhile. --write runs as the owner, the application's role.

        Without STATEMENT: psql when it is installed and this is a terminal, else a prompt that reads statements
        ending in ';' (from a pipe too)."""
        from store.sql_console import SqlConsole, sql_login

        login = sql_login(open_store(), write=write)
        if login.notice:
            err.print(f"[yellow]note[/yellow] {login.notice}", highlight=False)
        if statement is None:
            return _interactive_sql(login)
        with SqlConsole(login) as console:
            result = console.run(statement)
        if as_json:
            print_json([dict(zip(result.columns, row)) for row in result.rows])
        elif result.columns:
            print_table(result.columns, result.rows)
            out.print(f"[dim]{len(result.rows)} row(s)[/dim]")
        else:
            out.print(result.status)
        return 0

    @cli.command(name="status")
    @json_option
    def status_command(as_json: bool) -> int:
        """where the database is, counts, the active KB version, the models"""
        from store.status import status_data

        data = status_data(open_store())
        if as_json:
            print_json(data)
        else:
            print_status(data)
        return 0

    @cli.command(name="schema")
    def schema_command() -> int:
        """print the database schema as Markdown (docs/schema.md is generated from it)"""
        from store.sql_console import schema_markdown

        sys.stdout.write(schema_markdown(open_store()))
        return 0


def psql_invocation(psql: str, login) -> tuple[list[str], dict[str, str]]:
    """psql's command line and environment for a `kaizen sql` session (the password in PGPASSWORD, not argv)."""
    env = dict(os.environ)
    extra = login.environment()
    if "PGOPTIONS" in extra:
        extra["PGOPTIONS"] = (env.get("PGOPTIONS", "") + " " + extra["PGOPTIONS"]).strip()
    env.update(extra)
    return [psql, login.conninfo], env


def _interactive_sql(login) -> int:
    from store.sql_console import SqlConsole, SqlError

    mode = f"as {login.role}" + (", read-only" if login.read_only else "")
    psql = shutil.which("psql")
    if psql and sys.stdin.isatty():
        err.print(f"[dim]psql session ({mode}); \\q quits[/dim]")
        argv, env = psql_invocation(psql, login)
        return subprocess.call(argv, env=env)
    err.print(f"[dim]Kaizen SQL prompt ({mode}); end statements with ';', an empty line or Ctrl-D quits[/dim]")
    with SqlConsole(login) as console:
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
                    result = console.run(buffer.rstrip().rstrip(";"))
                    if result.columns:
                        print_table(result.columns, result.rows)
                    else:
                        out.print(result.status)
                except SqlError as exc:
                    err.print(f"[red]error[/red] {exc}", highlight=False)
                buffer = ""
    return 0


def print_status(data: dict) -> None:
    db = data["database"]
    out.print(f"database: {'embedded PostgreSQL in ' + db['location'] if db['embedded'] else db['url']} "
              f"(PostgreSQL {db['server_version']}, pgvector {db['pgvector_version']}, shared_buffers "
              f"{db['shared_buffers']})", highlight=False)
    reader = db.get("reader_role")
    if reader and not reader["ready"]:
        out.print(f"`kaizen sql` without --write: {reader['problem']} (`kaizen sql` says what to run)",
                  highlight=False)
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
