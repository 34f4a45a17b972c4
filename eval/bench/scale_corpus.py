"""Real-looking chunks by the million, for `kaizen bench scale --corpus`: the corpora's own sentences recombined.

Embedding a million chunks would take this machine days, and a synthetic vector says nothing about BM25 (its cost
is the length of the postings lists of the query's words, which real text decides). So the corpora are ingested
the normal way, and every sentence of their chunks, with the sentence vector ingestion stored for it, becomes
material. Each language's documents are laid end to end in a random order, and a distractor chunk takes as many
sentences as a real chunk of the language has, in order, out of twice as many consecutive ones from a random place
in that stream: coherent text (mostly one document, sometimes the end of one and the start of the next), never
twice the same chunk, its vector the unit mean of its
sentences' (which is how ingestion makes a chunk's vector, store.indexing.embed_chunks), its title that of its
first sentence's document, and its tsvector made by PostgreSQL from the lexical text ingestion would index
(store.lexical; per sentence, so MeCab reads each sentence once, not once per copy). Sentences drawn at random
from all over would not do: the mean of unrelated sentence vectors lies near the centre of the embedding space,
close to every query, and such chunks outrank every real one.

Sentences of the documents the evaluated questions are about are left out of the material, so that a question's
gold passage competes with a million other chunks, not with copies of itself. But the material is small (a few
thousand sentences a language), so each sentence recurs in hundreds of distractors: a passage that outranked the
gold one on the small corpus now does so hundreds of times over, and document-level recall falls for that reason
alone. The vocabulary is the corpora's, so every word is common: BM25's postings are longer than in a real corpus
of that size, a pessimistic case for latency.

Distractors are written with binary COPY straight into `chunks` (ten a document, under `scale://<lang>/`), with
the version's HNSW and GIN indexes dropped first and built again afterwards, as a bulk load should.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import sqlalchemy as sa

CHUNKS_PER_DOCUMENT = 10
URI_PREFIX = "scale://"


@dataclass
class Material:
    """One language's documents, each its sentences in order: body text, lexical text, vector; and their titles."""

    lang: str
    titles: list[str] = field(default_factory=list)
    documents: list[list[tuple[str, str, np.ndarray]]] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # sentences a real chunk of this language has

    @property
    def sentences(self) -> int:
        return sum(len(d) for d in self.documents)


def language(text: str) -> str:
    from store.lexical import cjk_ratio
    from store.search import CJK_QUERY_SHARE

    return "ja" if cjk_ratio(text) >= CJK_QUERY_SHARE else "en"


def collect_material(session, version, exclude_source_ids: set[str]) -> dict[str, Material]:
    """Every sentence of the active chunks (with its stored vector), by language and document in order, less the
    excluded documents' and the distractors' (a kept --home has them)."""
    from store.lexical import lexical_text
    from store.sentences import split_sentences

    rows = session.execute(sa.text(
        "SELECT d.id, d.source_id, d.title, c.search_text, c.sentence_embeddings FROM chunks c "
        "JOIN documents d ON d.id = c.document_id WHERE c.kb_version = :v AND NOT starts_with(d.source_uri, :scale) "
        "ORDER BY d.id, c.ordinal"), {"v": version.id, "scale": URI_PREFIX}).all()
    material: dict[str, Material] = {}
    current = None
    for document_id, source_id, title, search_text, vectors in rows:
        if source_id in exclude_source_ids or not vectors:
            continue
        body = search_text[len(title) + 1:] if title and search_text.startswith(f"{title}\n") else search_text
        sentences = split_sentences(body)
        if len(sentences) != len(vectors):
            continue  # a chunk whose sentences do not line up with its vectors is not material
        m = material.setdefault(language(body), Material(language(body)))
        m.sizes.append(len(sentences))
        if current != (m.lang, document_id):
            current = (m.lang, document_id)
            m.titles.append(title)
            m.documents.append([])
        # chunks overlap: a sentence the previous chunk of the document ended with is not repeated
        seen = {text for text, _, _ in m.documents[-1][-len(sentences):]}
        m.documents[-1] += [(t, lexical_text(t, version.lexical_scheme), v.to_numpy())
                            for t, v in zip(sentences, vectors) if t not in seen]
    return material


def _stream(m: Material, rng: np.random.Generator):
    """The language's documents end to end in a random order: texts, lexical texts, vectors and each sentence's
    title, as parallel sequences."""
    order = rng.permutation(len(m.documents))
    texts, lexical, titles, vectors = [], [], [], []
    for d in order:
        for text, lex, vec in m.documents[d]:
            texts.append(text)
            lexical.append(lex)
            titles.append(m.titles[d])
            vectors.append(vec)
    return texts, lexical, titles, np.vstack(vectors).astype(np.float32)


def _documents(session, lang: str, count: int, titles: list[str], rng: np.random.Generator) -> list[int]:
    """`count` distractor documents under scale://<lang>/, numbered with as many digits as the largest number
    needs, so that a prefix selects a known share ("scale://en/0" a tenth of them, "scale://en/00" a hundredth)."""
    width = len(str(max(count - 1, 0)))
    uris = [f"{URI_PREFIX}{lang}/{i:0{width}d}" for i in range(count)]
    names = [titles[int(rng.integers(len(titles)))] for _ in range(count)]
    ids = []
    for at in range(0, count, 5000):
        ids += session.execute(sa.text(
            "INSERT INTO documents (source_uri, source_path, title, content_hash, body) "
            "SELECT u, u, t, 'scale', '' FROM unnest(CAST(:uris AS text[]), CAST(:titles AS text[])) "
            "WITH ORDINALITY AS x(u, t, o) ORDER BY o RETURNING id"),
            {"uris": uris[at:at + 5000], "titles": names[at:at + 5000]}).scalars().all()
    return ids


def write_distractors(store, version, material: dict[str, Material], n: int, seed: int = 7) -> dict:
    """`n` distractor chunks, split evenly between the languages of `material`, written with binary COPY; returns
    how many of each language and the timings. Each language's chunk sizes (in sentences) follow its real
    chunks'."""
    from pgvector.psycopg import register_vector

    from store.indexing import search_text_for
    from store.kb_versions import index_name

    rng = np.random.default_rng(seed)
    langs = sorted(material)
    per_lang = {lang: n // len(langs) + (1 if i < n % len(langs) else 0) for i, lang in enumerate(langs)}
    timings = {}
    with store.engine.connect() as conn:
        raw = conn.connection.driver_connection
        raw.autocommit = True
        register_vector(raw)
        raw.execute(f"DROP INDEX IF EXISTS {index_name(version.id)}")
        raw.execute("DROP INDEX IF EXISTS chunks_tsv")
        # The lexical text rides in a column of its own, and a trigger turns it into the tsvector and its length as
        # ingestion's INSERT does (store.indexing._INSERT), before the NOT NULL checks: one pass over the rows.
        # Both go away after the load.
        raw.execute("ALTER TABLE chunks ADD COLUMN IF NOT EXISTS scale_lexical text")
        raw.execute(f"""
            CREATE OR REPLACE FUNCTION scale_tsv() RETURNS trigger AS $$
            BEGIN
                NEW.tsv := to_tsvector('{version.text_search_config}'::regconfig, NEW.scale_lexical);
                NEW.lexical_length := coalesce((SELECT sum(cardinality(u.positions)) FROM unnest(NEW.tsv) u), 0);
                NEW.scale_lexical := NULL;
                RETURN NEW;
            END $$ LANGUAGE plpgsql""")
        raw.execute("CREATE TRIGGER scale_tsv BEFORE INSERT ON chunks FOR EACH ROW EXECUTE FUNCTION scale_tsv()")
        started = time.perf_counter()
        for lang in langs:
            m = material[lang]
            texts, lexical, titles, matrix = _stream(m, rng)
            joiner = "" if lang == "ja" else " "
            count = per_lang[lang]
            with store.session() as s:
                doc_ids = _documents(s, lang, -(-count // CHUNKS_PER_DOCUMENT), m.titles, rng)
            sizes = rng.choice(np.asarray(m.sizes), size=count)
            starts = rng.integers(len(texts), size=count)
            with raw.cursor().copy(
                "COPY chunks (document_id, kb_version, ordinal, text, search_text, embedding, sentence_embeddings, "
                "token_count, origin, scale_lexical) FROM STDIN WITH (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["int8", "int4", "int4", "text", "text", "vector", "vector[]", "int4", "text", "text"])
                for i in range(count):
                    size = int(sizes[i])
                    # `size` sentences in order out of the next 2 × size: coherent, and no two chunks the same
                    # (identical vectors by the hundred would wreck the HNSW graph, which no real corpus does)
                    offsets = np.sort(rng.choice(2 * size, size=size, replace=False))
                    picks = [(int(starts[i]) + int(j)) % len(texts) for j in offsets]
                    title = titles[picks[0]]
                    text = joiner.join(texts[p] for p in picks)
                    sentence_vectors = matrix[picks]
                    mean = sentence_vectors.mean(axis=0)
                    lexical_body = "\n".join(lexical[p] for p in picks)
                    copy.write_row((doc_ids[i // CHUNKS_PER_DOCUMENT], version.id, i % CHUNKS_PER_DOCUMENT, text,
                                    search_text_for(title, text), mean / (np.linalg.norm(mean) or 1.0),
                                    list(sentence_vectors),
                                    len(text) // 4, "original", f"{title}\n{lexical_body}"))
        timings["copy_seconds"] = round(time.perf_counter() - started, 1)
        timings["copy_rows_per_second"] = round(n / timings["copy_seconds"], 1)
        raw.execute("DROP TRIGGER scale_tsv ON chunks")
        raw.execute("DROP FUNCTION scale_tsv()")
        raw.execute("ALTER TABLE chunks DROP COLUMN scale_lexical")
        raw.execute("SET maintenance_work_mem = '4GB'")
        raw.execute("SET max_parallel_maintenance_workers = 1")
        started = time.perf_counter()
        raw.execute("CREATE INDEX chunks_tsv ON chunks USING gin (tsv)")
        timings["gin_build_seconds"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        with store.session() as s:
            from store.kb_versions import create_vector_index

            s.execute(sa.text("SET maintenance_work_mem = '4GB'"))
            s.execute(sa.text("SET max_parallel_maintenance_workers = 1"))
            create_vector_index(s, version.id, version.embedding_dim)
        timings["hnsw_build_seconds"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        raw.execute("VACUUM ANALYZE chunks")
        raw.execute("VACUUM ANALYZE documents")
        timings["analyze_seconds"] = round(time.perf_counter() - started, 1)
    return {"per_language": per_lang, "timings": timings}
