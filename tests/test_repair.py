"""Self-repair against the real database and embedder: the planner on a clean KB, a crash half-way, two
planners, rejected model outputs, a source deleted between plan and apply, reverts, the CLI. A fake model is
used only to force the rejected-output branches; tests/test_recovery.py runs the real loop and the real model."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from tests.support.common import run_cli
from tests.support.repair import QUESTIONS, TINY, ScriptedLLM, _jsonl, active_id, bad_feedback, reset_eval


def changes(store, kind=None):
    with store.session() as s:
        sql = "SELECT kind, decision, target, after FROM kb_changes"
        rows = s.execute(sa.text(sql + (" WHERE kind = :k" if kind else "") + " ORDER BY id"), {"k": kind}).all()
    return rows


def test_clean_kb_the_planner_finds_nothing_and_changes_nothing(tiny_kb, embedder):
    from eval.repair.planner import run_planner

    before = active_id(tiny_kb)
    plan = run_planner(tiny_kb, embedder=embedder, llm=lambda: pytest.fail("no model call on a clean KB"))
    assert plan.status == "nothing_to_do" and "nothing to do" in plan.message
    assert active_id(tiny_kb) == before and not plan.results


def test_a_crash_half_way_leaves_the_active_version_untouched(tiny_kb, embedder):
    from eval.bench.degrade import degrade
    from eval.repair.planner import run_planner

    damage = degrade(tiny_kb, embedder, fragment_tokens=8, noise_share=0.5)
    with tiny_kb.session() as s:
        before = s.execute(sa.text("SELECT id, text, search_text FROM chunks WHERE kb_version = :v ORDER BY id"),
                           {"v": damage["version"]}).all()
    calls = []

    def crash():
        calls.append(1)
        if len(calls) >= 2:
            raise RuntimeError("injected crash")

    plan = run_planner(tiny_kb, embedder=embedder, check=crash, llm=lambda: pytest.fail("no model"))
    assert plan.results and all(r.decision == "failed" for r in plan.results)
    assert "injected crash" in plan.results[0].reason
    assert active_id(tiny_kb) == damage["version"]
    with tiny_kb.session() as s:
        after = s.execute(sa.text("SELECT id, text, search_text FROM chunks WHERE kb_version = :v ORDER BY id"),
                          {"v": damage["version"]}).all()
        leftovers = s.execute(sa.text("SELECT count(*) FROM chunks c JOIN kb_versions v ON v.id = c.kb_version "
                                      "WHERE v.status IN ('building', 'candidate', 'rolled_back')")).scalar_one()
    assert after == before and leftovers == 0
    assert [r.decision for r in changes(tiny_kb) if r.kind.startswith("repair:")] == ["failed"] * len(plan.results)


@pytest.mark.slow
@pytest.mark.parametrize("build_fails", [False, True], ids=["build-survives", "build-fails"])
def test_connections_cut_half_way_leave_a_retryable_error_and_the_next_run_repairs(tiny_kb, embedder, build_fails):
    """A database restart under the planner (the soak found it): every session of this database ends mid-build,
    including the one holding the planner's advisory locks; the build either reconnects and finishes, or fails
    with the error the restart gave it. Either way the planner stops with an error the worker retries (never a
    PendingRollbackError from reusing the dead session for the next action's lock, never a promotion without
    the lock), the active version is untouched, and the next run repairs."""
    from eval.bench.degrade import degrade
    from eval.repair.planner import run_planner
    from eval.worker.jobs import _transient_errors

    damage = degrade(tiny_kb, embedder, fragment_tokens=8, noise_share=0.5)
    calls = []

    def cut():
        calls.append(1)
        if len(calls) == 2:
            with tiny_kb.engine.connect() as c:
                c.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
                                  "current_database() AND pid <> pg_backend_pid() AND usename = current_user"))
            if build_fails:
                raise sa.exc.OperationalError("INSERT ...", {}, Exception("server closed the connection"))

    with pytest.raises(_transient_errors()) as raised:
        run_planner(tiny_kb, embedder=embedder, check=cut, llm=lambda: pytest.fail("no model"))
    assert "session ended" in str(raised.value), raised.value
    # nothing promoted; a failed build stops the planner at once (no next action on the dead session)
    assert active_id(tiny_kb) == damage["version"] and (len(calls) == 2 if build_fails else len(calls) >= 2)
    plan = run_planner(tiny_kb, embedder=embedder, llm=lambda: pytest.fail("no model"))
    assert [r.decision for r in plan.results][-1:] == ["promoted"], plan.as_dict()
    with tiny_kb.session() as s:
        leftovers = s.execute(sa.text("SELECT count(*) FROM chunks c JOIN kb_versions v ON v.id = c.kb_version "
                                      "WHERE v.status IN ('building', 'candidate', 'rolled_back')")).scalar_one()
    assert leftovers == 0


@pytest.mark.slow
def test_two_planners_one_runs_the_other_exits_with_a_message(tiny_kb, embedder):
    from eval.repair.planner import run_planner
    from store import locks

    with tiny_kb.engine.connect() as other, locks.session_lock(other, locks.PLANNER):
        plan = run_planner(tiny_kb, embedder=embedder)
        assert plan.status == "busy" and "another repair planner is running" in plan.message
        cli = run_cli("improve")
        assert cli.returncode == 1 and "another repair planner is running" in cli.stderr
    assert run_planner(tiny_kb, embedder=embedder).status == "nothing_to_do"


def test_rewrites_returned_empty_or_in_another_language_are_rejected_and_recorded(tiny_kb, embedder):
    from eval.repair.actions import Rewrite
    from eval.repair.planner import run_actions

    with tiny_kb.session() as s:
        ids = s.execute(sa.text("SELECT id FROM active_chunks ORDER BY id LIMIT 2")).scalars().all()
    before = active_id(tiny_kb)
    fake = ScriptedLLM(['{"text": "   "}', '{"text": "フクロウは夜に狩りをする鳥で、首を大きく回すことができます。"}'])
    [result] = run_actions(tiny_kb, embedder, [Rewrite(target="2 chunks", reason="test", chunk_ids=ids)],
                           llm=lambda: fake)
    assert result.decision == "skipped" and "rejected for all 2" in result.reason
    assert active_id(tiny_kb) == before
    rejected = changes(tiny_kb, "repair_output_rejected")
    errors = sorted(r.after["error"] for r in rejected)
    assert len(rejected) == 2 and "empty" in errors[0] and "another language" in errors[1]


def test_generated_questions_are_kept_only_in_the_chunks_language_and_if_they_find_their_chunk(tiny_kb, embedder,
                                                                                                 monkeypatch):
    import eval.repair.expansion as expansion
    from eval.repair.expansion import GENERATED_HEADER, ExpandWithQuestions
    from eval.repair.llm_outputs import QUESTIONS_INSTRUCTION, generate_questions
    from eval.repair.planner import run_actions

    monkeypatch.setattr(expansion, "FILTER_RANK", 1)  # four documents: the top ten would be all of them
    monkeypatch.setattr(ExpandWithQuestions, "guard", "non_inferior")  # to read what a promotion keeps
    with tiny_kb.session() as s:
        owl = s.execute(sa.text("SELECT c.id FROM active_chunks c JOIN documents d ON d.id = c.document_id "
                                "WHERE d.source_id = 'd-owl'")).scalar_one()
    fake = ScriptedLLM(['{"questions": ["How far can an owl turn its head?", "What is the capital of Peru?", '
                        '"フクロウの首は何度回りますか？"]}'])
    [result] = run_actions(tiny_kb, embedder, [ExpandWithQuestions(target="1 chunk", reason="test", chunk_ids=[owl])],
                           llm=lambda: fake)
    assert result.decision == "promoted", result.reason
    with tiny_kb.session() as s:
        row = s.execute(sa.text("SELECT c.text, c.search_text, c.origin FROM active_chunks a JOIN chunks c USING (id) "
                                "JOIN documents d ON d.id = c.document_id WHERE d.source_id = 'd-owl'")).one()
    generated = row.search_text.split(f"\n{GENERATED_HEADER}\n", 1)[1].splitlines()
    assert generated == ["How far can an owl turn its head?"] and row.origin == "enrichment"
    assert "Peru" not in row.text and GENERATED_HEADER not in row.text  # the shown text is untouched
    # a Japanese chunk is asked in Japanese (asked in English, the model wrote English questions, all rejected)
    fake = ScriptedLLM(['{"questions": ["梅雨はいつですか？"]}'])
    assert generate_questions(fake, "梅雨", "梅雨は六月から七月にかけての雨の季節である。").ok
    assert fake.prompts[0][0]["content"] == QUESTIONS_INSTRUCTION["ja"]


def test_a_source_deleted_between_plan_and_apply_is_skipped(clean_store, embedder, tmp_path):
    from eval.repair.diagnose import staleness
    from eval.repair.planner import run_actions
    from store.ingest import ingest

    reset_eval(clean_store)
    doc = tmp_path / "owls.md"
    doc.write_text("# Owls\n\nOwls hunt at night.")
    assert ingest(clean_store, embedder, [str(tmp_path)]).ok
    doc.write_text("# Owls\n\nOwls hunt at night and sleep by day.")
    [finding] = staleness(clean_store)
    assert finding.kind == "stale_sources" and finding.count == 1
    doc.unlink()  # gone before the plan is applied
    before = active_id(clean_store)
    [result] = run_actions(clean_store, embedder, [finding.action])
    assert result.decision == "skipped" and "vanished" in result.reason
    assert active_id(clean_store) == before
    with clean_store.session() as s:
        assert s.execute(sa.text("SELECT body FROM documents")).scalar_one().endswith("Owls hunt at night.")


@pytest.mark.slow
def test_corrections_become_user_knowledge_and_reverts_respect_later_changes(tiny_kb, embedder, tmp_path):
    from eval.repair.planner import run_planner
    from store.reindex import reindex
    from store.revert import RevertError, revert

    first = active_id(tiny_kb)
    bad_feedback(tiny_kb, "Who designed the Golden Gate Bridge?", "Joseph Strauss was its chief engineer.")
    plan = run_planner(tiny_kb, embedder=embedder, max_rounds=1)
    [one] = plan.results
    assert one.decision == "promoted", one.reason
    with tiny_kb.session() as s:
        origins = s.execute(sa.text("SELECT origin, text FROM active_chunks WHERE origin = 'user'")).all()
    assert origins and "Joseph Strauss" in origins[0].text
    bad_feedback(tiny_kb, "How old is the Moon?", "About 4.5 billion years.")
    [two] = run_planner(tiny_kb, embedder=embedder, max_rounds=1).results
    assert two.decision == "promoted"
    assert run_planner(tiny_kb, embedder=embedder).status == "nothing_to_do"  # corrections are used once

    with pytest.raises(RevertError, match="later changes built on it"):
        revert(tiny_kb, one.change_id)
    cli = run_cli("kb", "revert", str(one.change_id))
    assert cli.returncode == 2 and "revert those first" in cli.stderr and "Traceback" not in cli.stderr
    assert revert(tiny_kb, two.change_id)["active"] == one.candidate_version
    undone = revert(tiny_kb, one.change_id)
    assert undone["active"] == first and len(undone["documents_withdrawn"]) == 1
    with pytest.raises(RevertError, match="already reverted"):
        revert(tiny_kb, one.change_id)
    # The reverted corrections are withdrawn: a reindex, which chunks the documents table, does not bring them back.
    with tiny_kb.session() as s:
        statuses = s.execute(sa.text("SELECT status FROM documents WHERE source_uri LIKE 'kaizen://feedback/%'"))
        assert sorted(statuses.scalars()) == ["missing", "missing"]
    reindex(tiny_kb, embedder)
    with tiny_kb.session() as s:
        assert s.execute(sa.text("SELECT count(*) FROM active_chunks WHERE origin = 'user'")).scalar_one() == 0

    log = json.loads(run_cli("kb", "log", "--json").stdout)
    assert [r["kind"] for r in log[:2]] == ["revert", "revert"]
    assert any(r["kind"] == "repair:add_correction" and r["metrics_after"] for r in log)


def test_a_revert_is_refused_when_documents_were_ingested_after_the_repair(tiny_kb, embedder, tmp_path):
    from eval.repair.planner import run_planner
    from store.ingest import ingest
    from store.revert import RevertError, revert

    bad_feedback(tiny_kb, "Who designed the Golden Gate Bridge?", "Joseph Strauss.")
    [one] = run_planner(tiny_kb, embedder=embedder, max_rounds=1).results
    assert one.decision == "promoted"
    (tmp_path / "more.md").write_text("# Tides\n\nTides follow the Moon.")
    assert ingest(tiny_kb, embedder, [str(tmp_path / "more.md")]).ok
    with pytest.raises(RevertError, match="would drop those changes"):
        revert(tiny_kb, one.change_id)


@pytest.mark.slow
def test_a_reverted_reingest_puts_the_old_text_back_and_is_not_proposed_again(clean_store, embedder, tmp_path):
    from eval.probes.sets import import_probes
    from eval.repair.diagnose import staleness
    from eval.repair.planner import run_planner
    from store.ingest import ingest
    from store.reindex import reindex
    from store.revert import revert

    reset_eval(clean_store)
    # The source first held the wrong text (so its probe ranks it low: a re-ingest can gain on MRR@10).
    wrong = [*TINY, {"id": "d-tides", "title": "Baking", "text": "Bread rises because yeast makes carbon dioxide."}]
    right = [*TINY, {"id": "d-tides", "title": "Tides", "text": "Tides are caused by the Moon's gravity pulling on "
                     "the oceans; there are two high tides a day."}]
    corpus = _jsonl(tmp_path / "corpus.jsonl", wrong)
    assert ingest(clean_store, embedder, [str(corpus)]).ok
    questions = [*QUESTIONS, {"id": "q-tides", "question": "What causes the tides?", "gold_passage_ids": ["d-tides"],
                              "reference": "the Moon"}]
    import_probes(clean_store, _jsonl(tmp_path / "q.jsonl", questions), probe_set="tides", heldout_share=1.0)
    first = active_id(clean_store)
    _jsonl(corpus, right)  # the source changed on disk
    [repair] = [r for r in run_planner(clean_store, embedder=embedder, max_rounds=1).results
                if r.action["kind"] == "reingest_sources"]
    assert repair.decision == "promoted", repair.reason

    def tides_body():
        with clean_store.session() as s:
            return s.execute(sa.text("SELECT body FROM documents WHERE source_id = 'd-tides'")).scalar_one()

    assert "gravity" in tides_body()
    undone = revert(clean_store, repair.change_id)
    assert undone["active"] == first and len(undone["documents_restored"]) == 1
    assert "yeast" in tides_body()  # the documents table agrees with the active chunks again
    assert staleness(clean_store) == []  # the reverted text is not proposed again ...
    reindex(clean_store, embedder)  # ... and a reindex keeps the revert
    with clean_store.session() as s:
        text = s.execute(sa.text("SELECT string_agg(c.text, ' ') FROM active_chunks c JOIN documents d "
                                 "ON d.id = c.document_id WHERE d.source_id = 'd-tides'")).scalar_one()
    assert "yeast" in text and "gravity" not in text
    report = ingest(clean_store, embedder, [str(corpus)])  # a person's ingest still takes the new text
    assert report.ok and "gravity" in tides_body()


@pytest.mark.slow
def test_improve_dry_run_gaps_and_export_from_the_cli(tiny_kb, embedder, tmp_path):
    from eval.bench.degrade import degrade

    degrade(tiny_kb, embedder, fragment_tokens=8, noise_share=0.5)
    with tiny_kb.session() as s:
        iid = s.execute(sa.text("INSERT INTO interactions (thread_id, question, answer, model, abstained) VALUES "
                                "('t', 'Who won the 1990 World Cup?', '', 'test', true) RETURNING id")).scalar_one()
        s.execute(sa.text("INSERT INTO knowledge_gaps (interaction_id, question, reason) VALUES (:i, "
                          "'Who won the 1990 World Cup?', 'no relevant context')"), {"i": iid})
    before = active_id(tiny_kb)
    dry = run_cli("improve", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["status"] == "dry_run" and plan["planned"][0]["kind"] == "rechunk_all"
    assert {"chunking", "integrity", "knowledge_gaps"} <= {f["kind"] for f in plan["findings"]}
    assert active_id(tiny_kb) == before
    text = run_cli("improve", "--dry-run")
    assert "plan (nothing applied)" in text.stdout and "rechunk_all" in text.stdout
    gaps = run_cli("gaps")
    assert gaps.returncode == 0 and "1990 World Cup" in gaps.stdout
    out = tmp_path / "qa.jsonl"
    exported = run_cli("export", "qa", "--min-score", "0.5", str(out), "--json")
    assert exported.returncode == 0, exported.stderr
    summary = json.loads(exported.stdout)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary["interactions"] == 0  # no trusted LLM metric: no interaction qualifies
    assert all(r["origin"] == "probe" and r["split"] == "train" for r in rows)
    if rows:
        assert rows[0]["messages"][-1]["role"] == "assistant" and rows[0]["sources"][0]["source_uri"]


def test_the_guard_needs_a_real_gain_and_refuses_regressions():
    from eval.repair.guard import decide

    base = {"recall@1": 0.9, "recall@5": 0.95, "recall@10": 0.97, "mrr@10": 0.93, "probes": 100}
    noise = dict(base, **{"mrr@10": 0.9301})
    assert not decide(base, noise, tol=0.02).promote
    better = dict(base, **{"recall@5": 0.97})
    assert decide(base, better, tol=0.02).promote
    worse = dict(better, **{"recall@1": 0.85})
    verdict = decide(base, worse, tol=0.02)
    assert not verdict.promote and "recall@1" in verdict.reason
    assert decide(base, base, "non_inferior", tol=0.02).promote
    assert not decide(dict(base, probes=0), better, tol=0.02).promote
