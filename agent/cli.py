"""`kaizen`: the command line. The only module that sees store/, agent/ and eval/ (imports stay lazy)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")


def _store_commands(sub) -> None:
    from . import cli_store

    p = sub.add_parser("ingest", help="add files and folders (.md .txt .html .pdf .jsonl) to the knowledge base")
    p.add_argument("paths", nargs="+")
    p.add_argument("--if-empty", action="store_true", help="do nothing when the knowledge base has documents")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cli_store.cmd_ingest)

    p = sub.add_parser("reindex", help="rebuild all chunks and embeddings into a new KB version and switch to it")
    p.add_argument("--reason", default="reindex")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cli_store.cmd_reindex)

    p = sub.add_parser("search", help="hybrid search over the active KB version")
    p.add_argument("query")
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--mode", choices=["hybrid", "vector", "text"], default="hybrid")
    p.add_argument("--source", help="only documents whose source URI starts with this prefix")
    p.add_argument("--doc", type=int, action="append", help="only this document id (repeatable)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cli_store.cmd_search)

    p = sub.add_parser("sql", help="run SQL against the knowledge store (read-only unless --write)")
    p.add_argument("statement", nargs="?")
    p.add_argument("--write", action="store_true", help="allow statements that change data")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cli_store.cmd_sql)

    p = sub.add_parser("status", help="where the database is, counts, the active KB version, the models")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cli_store.cmd_status)

    p = sub.add_parser("schema", help="print the database schema as Markdown (the README's schema section)")
    p.set_defaults(func=cli_store.cmd_schema)


def _bench_commands(sub) -> None:
    bench = sub.add_parser("bench", help="benchmarks (JSON with --json)")
    bsub = bench.add_subparsers(dest="bench", required=True)
    p = bsub.add_parser("retrieval", help="recall@k / MRR / latency / ingestion speed on a question set")
    p.add_argument("--corpus", required=True)
    p.add_argument("--questions", required=True)
    p.add_argument("--limit", type=int, default=None, help="use only the first N answerable questions")
    p.add_argument("--home", help="keep the benchmark database in this KAIZEN_HOME (default: temporary)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=lambda a: __import__("eval.bench_retrieval", fromlist=["main"]).main(a))
    p = bsub.add_parser("scale", help="HNSW on synthetic clustered vectors: insert rate, build time, recall, latency")
    p.add_argument("--n", type=int, default=100000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=lambda a: __import__("eval.bench_scale", fromlist=["main"]).main(a))
    p = bsub.add_parser("answer", help="answer latency vs raw llama.cpp, LLM calls, tokens, abstention, F1/EM")
    p.add_argument("--corpus", required=True)
    p.add_argument("--questions", required=True)
    p.add_argument("--limit", type=int, default=20, help="the first N questions (answerable and unanswerable)")
    p.add_argument("--skip", type=int, default=0,
                   help="skip the first N answerable and N unanswerable questions (for example, those tuned on)")
    p.add_argument("--home", help="keep the benchmark database in this KAIZEN_HOME (default: temporary)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=lambda a: __import__("eval.bench_answer", fromlist=["main"]).main(a))
    from . import cli_eval, cli_repair

    cli_eval.register_bench(bsub)
    cli_repair.register_bench(bsub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kaizen", description="Kaizen: a self-improving RAG agent.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens (and show tracebacks)")
    sub = parser.add_subparsers(dest="command", required=True)
    _store_commands(sub)
    _bench_commands(sub)
    from . import cli_agent

    cli_agent.register(sub)
    from . import cli_eval, cli_repair

    cli_eval.register(sub)
    cli_repair.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from .errors import explain

    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("kaizen: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line for a person; -v shows the traceback
        message = explain(exc)
        if message is None or args.verbose:
            raise
        print(f"kaizen: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
