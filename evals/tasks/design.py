"""What the LLM task designer runs in the sandboxed kernel: the model's facts, a tokenizer probe, and the
usability check of a proposed spec.

Each is a pure function of a :class:`tools.Model` returning a pydantic result, so a framing cell is one
call (as every experiment cell is) whose JSON the agent reads back with the same model. It imports only
``evals`` and ``tools``: the kernel can run it.

>>> from evals.zoo import load_zoo_model
>>> m = load_zoo_model("toy-pronoun")
>>> f = model_facts(m, ["she", "Mary", "zebra"])
>>> f.n_layers, f.n_heads, f.vocab_size, len(f.vocabulary or [])
(2, 4, 45, 41)
>>> [(w.word, w.one_token) for w in f.words]
[('she', True), ('Mary', True), ('zebra', False)]
>>> tokenize(m, ["Mary saw John and then"]).texts[0].tokens
['Mary', 'saw', 'John', 'and', 'then']
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from evals.tasks.check import TaskCheck, check_task

VOCAB_LIST_MAX = 2000
"""A vocabulary up to this size is listed whole in the model's facts (word-level toy tokenizers)."""
MAX_WORDS = 40
"""Words of the question whose tokenisation the facts show."""
MAX_TEXTS = 50
"""Texts one :func:`tokenize` call takes."""
MAX_TEXT_CHARS = 1000
"""Characters per text given to :func:`tokenize`."""


class WordTokens(BaseModel):
    """How one word tokenises: mid-prompt (after a space, as slot values and answers are) and at the start."""

    model_config = ConfigDict(frozen=True)

    word: str
    spaced: list[str]
    """Tokens of ``" " + word``."""
    bare: list[str]
    """Tokens of ``word`` alone (a prompt's first word)."""
    one_token: bool
    """``" " + word`` is one token the tokenizer knows (not its unknown token): usable as a slot value or answer."""


class ModelFacts(BaseModel):
    """What the designer needs to know about the model to write prompts it can read."""

    model_config = ConfigDict(frozen=True)

    name: str
    arch: str
    n_layers: int
    n_heads: int
    d_model: int
    vocab_size: int
    tokenizer: str
    """The tokenizer's class name."""
    bos: str | None = None
    """The BOS token the task prompts start with (None: the tokenizer has none)."""
    vocabulary: list[str] | None = None
    """Every token string, when the vocabulary has at most :data:`VOCAB_LIST_MAX` entries, else None."""
    words: list[WordTokens] = Field(default_factory=list)
    """The question's words, tokenised."""


class TextTokens(BaseModel):
    """One text as the model's tokenizer splits it."""

    model_config = ConfigDict(frozen=True)

    text: str
    tokens: list[str]
    ids: list[int]
    unknown: int = 0
    """Tokens that are the tokenizer's unknown token (words the model cannot read)."""


class Tokenization(BaseModel):
    """The result of :func:`tokenize`."""

    model_config = ConfigDict(frozen=True)

    texts: list[TextTokens]


def _encode(tok: Any, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


def _tokens(tok: Any, ids: list[int]) -> list[str]:
    return [str(t) for t in tok.convert_ids_to_tokens(ids)]


def question_words(question: str, limit: int = MAX_WORDS) -> list[str]:
    """The distinct words of a question, in order (at most ``limit``).

    >>> question_words("Which heads decide whether the pronoun is he or she? he, she!")
    ['Which', 'heads', 'decide', 'whether', 'the', 'pronoun', 'is', 'he', 'or', 'she']
    """
    return list(dict.fromkeys(re.findall(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?", question)))[:limit]


def model_facts(model: Any, words: list[str] | None = None) -> ModelFacts:
    """The model's architecture, vocabulary size (and whole vocabulary when small) and how ``words`` tokenise."""
    tok = model.tokenizer
    unk = getattr(tok, "unk_token_id", None)
    size = len(tok)
    vocab = None
    if size <= VOCAB_LIST_MAX:
        specials = set(getattr(tok, "all_special_ids", []) or [])
        vocab = [t for t, i in sorted(tok.get_vocab().items(), key=lambda kv: kv[1]) if i not in specials]
    out = []
    for w in list(dict.fromkeys(words or []))[:MAX_WORDS]:
        spaced, bare = _encode(tok, " " + w), _encode(tok, w)
        out.append(WordTokens(word=w, spaced=_tokens(tok, spaced), bare=_tokens(tok, bare),
                              one_token=len(spaced) == 1 and spaced[0] != unk))
    return ModelFacts(name=str(getattr(model, "name", "") or ""), arch=str(model.arch), n_layers=model.n_layers,
                      n_heads=model.n_heads, d_model=model.d_model, vocab_size=size, tokenizer=type(tok).__name__,
                      bos=getattr(tok, "bos_token", None), vocabulary=vocab, words=out)


def tokenize(model: Any, texts: list[str]) -> Tokenization:
    """Each text as the model's tokenizer splits it (at most :data:`MAX_TEXTS` texts of
    :data:`MAX_TEXT_CHARS` characters; longer ones are cut)."""
    tok = model.tokenizer
    unk = getattr(tok, "unk_token_id", None)
    out = []
    for text in texts[:MAX_TEXTS]:
        text = str(text)[:MAX_TEXT_CHARS]
        ids = _encode(tok, text)
        out.append(TextTokens(text=text, tokens=_tokens(tok, ids), ids=ids,
                              unknown=sum(1 for i in ids if unk is not None and i == unk)))
    return Tokenization(texts=out)


def check_proposal(model: Any, spec_json: str, n: int = 64, seed: int = 0) -> TaskCheck:
    """:func:`evals.tasks.check.check_task` of a spec given as JSON text (what a framing cell embeds)."""
    from evals.tasks.spec import TaskSpec

    return check_task(TaskSpec.model_validate_json(spec_json), model, n=n, seed=seed)
