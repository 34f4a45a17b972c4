"""What a repair asks the local model for, constrained by a JSON schema and validated: search questions and
keywords for a chunk (enrichment), the questions a chunk answers (generated expansion), and a cleaned-up rewrite
of a chunk. Each is asked in the chunk's language. An empty reply, a reply in another script than the chunk's, or
a rewrite that drops most of the chunk is rejected with a reason (the caller records it in kb_changes); nothing
here raises for a bad reply."""

from __future__ import annotations

from dataclasses import dataclass

from store.lexical import cjk_ratio

ENRICH_SCHEMA = {
    "type": "object",
    "properties": {
        "questions": {"type": "array", "minItems": 1, "maxItems": 3,
                      "items": {"type": "string", "minLength": 1, "maxLength": 160}},
        "keywords": {"type": "array", "minItems": 1, "maxItems": 8,
                     "items": {"type": "string", "minLength": 1, "maxLength": 40}},
    },
    "required": ["questions", "keywords"],
}
QUESTIONS_SCHEMA = {
    "type": "object",
    "properties": {"questions": {"type": "array", "minItems": 1, "maxItems": 5,
                                 "items": {"type": "string", "minLength": 1, "maxLength": 160}}},
    "required": ["questions"],
}
REWRITE_SCHEMA = {
    "type": "object",
    "properties": {"text": {"type": "string", "minLength": 1, "maxLength": 1500}},
    "required": ["text"],
}
CHUNK_PROMPT_CHARS = 1200


@dataclass
class Generated:
    ok: bool
    text: str = ""
    error: str | None = None
    raw: str = ""


def same_script(original: str, produced: str) -> bool:
    """Japanese/Chinese chunks need a CJK reply and others a non-CJK one (the model drifting into English on a
    Japanese chunk, or the reverse, is the failure this catches)."""
    a, b = cjk_ratio(original), cjk_ratio(produced)
    if a >= 0.3:
        return b >= 0.15
    if a <= 0.05:
        return b <= 0.2
    return True


def _require_text(value: str, original: str, what: str) -> str:
    value = " ".join(str(value).split())
    if not value:
        raise ValueError(f"the {what} is empty")
    if not same_script(original, value):
        raise ValueError(f"the {what} is in another language than the chunk")
    return value


def validate_enrichment(original: str):
    def check(value) -> str:
        questions = [q for q in (" ".join(str(x).split()) for x in value["questions"]) if q]
        keywords = [k for k in (" ".join(str(x).split()) for x in value["keywords"]) if k]
        return _require_text("\n".join(questions + ([" ".join(keywords)] if keywords else [])), original,
                             "enrichment")
    return check


def validate_questions(original: str):
    """The questions in the chunk's script, one a line (at least one survives, or the reply is rejected)."""
    def check(value) -> str:
        kept = [q for q in (" ".join(str(x).split()) for x in value["questions"]) if q and same_script(original, q)]
        if not kept:
            raise ValueError("no question in the chunk's language")
        return "\n".join(dict.fromkeys(kept))
    return check


def validate_rewrite(original: str):
    def check(value) -> str:
        text = _require_text(value["text"], original, "rewrite")
        if len(text) < 0.3 * min(len(original), 600):
            raise ValueError("the rewrite drops most of the chunk")
        return text
    return check


def _messages(instruction: str, title: str, text: str) -> list[dict]:
    return [
        {"role": "system", "content": instruction},
        {"role": "user", "content": f"Title: {title}\n\nPassage:\n{text[:CHUNK_PROMPT_CHARS]}"},
    ]


def _in_language(instructions: dict[str, str], text: str) -> str:
    """The instruction in the chunk's language: asked in English, the small model writes English questions
    about a Japanese passage, which the script check then rejects."""
    return instructions["ja"] if cjk_ratio(text) >= 0.3 else instructions["en"]


ENRICH_INSTRUCTION = {
    "en": ("Write up to three short questions that the passage answers, and up to eight keywords, in the passage's "
           "own language. Use only facts stated in the passage. Reply in JSON."),
    "ja": ("この文章が答えになる短い質問を最大三つと、キーワードを最大八つ、日本語で書いてください。"
           "文章に書かれている事実だけを使ってください。JSONで答えてください。"),
}
QUESTIONS_INSTRUCTION = {
    "en": ("Write up to five different questions that a reader could ask and that the passage answers, each on its "
           "own, in the passage's own language. Use only facts stated in the passage. Reply in JSON."),
    "ja": ("この文章が答えになる、読者が尋ねそうな質問を、それぞれ独立した日本語の文で最大五つ書いてください。"
           "文章に書かれている事実だけを使ってください。JSONで答えてください。"),
}
REWRITE_INSTRUCTION = ("Rewrite the passage as clean, clear prose in its own language: fix broken spacing and "
                       "punctuation, keep every fact, add nothing that is not in it. Reply in JSON.")


def generate_enrichment(llm, title: str, text: str) -> Generated:
    result = llm.json_chat(_messages(_in_language(ENRICH_INSTRUCTION, text), title, text), ENRICH_SCHEMA,
                           validate=validate_enrichment(text), max_tokens=200, kind="repair_enrich")
    return Generated(result.ok, result.value or "", result.error, result.raw)


def generate_questions(llm, title: str, text: str) -> Generated:
    result = llm.json_chat(_messages(_in_language(QUESTIONS_INSTRUCTION, text), title, text), QUESTIONS_SCHEMA,
                           validate=validate_questions(text), max_tokens=240, kind="repair_questions")
    return Generated(result.ok, result.value or "", result.error, result.raw)


def generate_rewrite(llm, title: str, text: str) -> Generated:
    result = llm.json_chat(_messages(REWRITE_INSTRUCTION, title, text), REWRITE_SCHEMA,
                           validate=validate_rewrite(text), max_tokens=400, kind="repair_rewrite")
    return Generated(result.ok, result.value or "", result.error, result.raw)
