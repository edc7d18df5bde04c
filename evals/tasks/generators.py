"""Seeded prompt generators: clean/corrupt pairs with answer, wrong answer and named positions.

Each generator is a frozen pydantic model (its parameters, as written in a task spec) with
``make_batch(tokenizer, n, seed) -> tools.TaskBatch``, ``roles()`` and ``vocabulary()``. Prompts are
built piece by piece so that a named slot (a name, a year) is checked to be exactly one token *for the
tokenizer in hand* — a GPT-2 BPE at run time, or a word-level tokenizer for the zoo. Draws that do not
tokenise as needed (a two-token name, a prompt of another length) are redrawn; if too many fail, a
:class:`~evals.tasks.errors.TokenizationError` says which word and why.

Prompts in one batch share a token count (``TaskBatch`` requires it); a draw whose length differs from
the first prompt's is redrawn.

>>> from tools.tiny import word_tokenizer
>>> g = IOIGenerator(kind="ioi", names=["Ann", "Bob", "Cat"], templates=["then {S} and {IO} met , {S} waved to"])
>>> tok = word_tokenizer(g.vocabulary())
>>> b = g.make_batch(tok, 2, seed=0)
>>> b.prompts[0]
'then Ann and Bob met , Ann waved to'
>>> tok.decode([int(b.answer_ids[0])]), tok.decode([int(b.wrong_ids[0])])
('Bob', 'Ann')
>>> {r: int(p[0]) for r, p in b.positions.items()}
{'IO': 4, 'S1': 2, 'S2': 7, 'END': 9}
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from evals.tasks.errors import TokenizationError

_SLOT = re.compile(r"\{(\w+)\}")
_WORDS = re.compile(r"\w+|[^\w\s]+")


def _tok_error(what: str, fix: str) -> TokenizationError:
    return TokenizationError(what, fix=fix)


def split_words(text: str) -> list[str]:
    """Word pieces as a ``Whitespace`` pre-tokenizer splits them (``\\w+`` runs and punctuation runs).

    >>> split_words("def f(self, a):")
    ['def', 'f', '(', 'self', ',', 'a', '):']
    """
    return _WORDS.findall(text)


class _Encoder:
    """Tokenises prompts piece by piece and checks that each named slot is exactly one token."""

    def __init__(self, tokenizer: Any) -> None:
        self.tok = tokenizer
        self.unk = getattr(tokenizer, "unk_token_id", None)
        self._cache: dict[str, list[int]] = {}

    def encode(self, text: str) -> list[int]:
        ids = self._cache.get(text)
        if ids is None:
            ids = list(self.tok(text, add_special_tokens=False)["input_ids"])
            if len(self._cache) < 50_000:
                self._cache[text] = ids
        return ids

    def appended(self, prefix: str, piece: str) -> int:
        """The one token id that ``piece`` adds after ``prefix``; raise if it adds more or re-splits."""
        before, after = self.encode(prefix), self.encode(prefix + piece)
        if len(after) != len(before) + 1 or after[: len(before)] != before:
            raise _tok_error(f"{piece!r} is not a single token after {prefix[-30:]!r} for this tokenizer "
                             f"({len(after) - len(before)} tokens)",
                             fix="use words that are single tokens for the model (check tokenizer.tokenize)")
        tid = after[-1]
        if self.unk is not None and tid == self.unk:
            raise _tok_error(f"{piece.strip()!r} is not in the tokenizer's vocabulary",
                             fix="use the model's own tokenizer, or add the word to the vocabulary")
        return tid

    def build(self, pieces: list[tuple[str, str | None]]) -> tuple[list[int], dict[str, int], str]:
        """Concatenate ``(text, role)`` pieces; return ids, role → index, and the text."""
        text, roles, role_ids = "", {}, {}
        for piece, role in pieces:
            if role is not None:
                roles[role] = len(self.encode(text))
                role_ids[role] = self.appended(text, piece)
            text += piece
        ids = self.encode(text)
        for role, idx in roles.items():
            if idx >= len(ids) or ids[idx] != role_ids[role]:
                raise _tok_error(f"slot {role} does not keep its token once the whole prompt is tokenised",
                                 fix="put a space or punctuation around the slot in the template")
        roles["END"] = len(ids) - 1
        return ids, roles, text


def _template_pieces(template: str, values: dict[str, str], roles: dict[str, list[str | None]]
                     ) -> list[tuple[str, str | None]]:
    """Split ``template`` at ``{SLOT}`` markers; a space before a slot moves into the slot's piece."""
    out: list[tuple[str, str | None]] = []
    seen: dict[str, int] = {}
    pos = 0
    for m in _SLOT.finditer(template):
        lit = template[pos:m.start()]
        slot = m.group(1)
        space = lit.endswith(" ")
        if space:
            lit = lit[:-1]
        if lit:
            out.append((lit, None))
        k = seen.get(slot, 0)
        seen[slot] = k + 1
        role_list = roles.get(slot, [])
        role = role_list[k] if k < len(role_list) else None
        out.append(((" " if space else "") + values[slot], role))
        pos = m.end()
    if template[pos:]:
        out.append((template[pos:], None))
    return out


def _slot_has_space(template: str, slot: str) -> bool:
    i = template.find("{" + slot + "}")
    return i > 0 and template[i - 1] == " "


class _Generator(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    prepend_bos: bool = True
    """Start every prompt with the tokenizer's BOS token (when it has one)."""

    def roles(self) -> list[str]:  # pragma: no cover - overridden
        raise NotImplementedError

    def vocabulary(self) -> list[str]:  # pragma: no cover - overridden
        raise NotImplementedError

    def _draw(self, enc: _Encoder, rng: random.Random) -> dict:  # pragma: no cover - overridden
        raise NotImplementedError

    def make_batch(self, tokenizer: Any, n: int, seed: int = 0):
        """``n`` prompt pairs drawn with ``random.Random(seed)``; see the module docstring."""
        enc = _Encoder(tokenizer)
        rng = random.Random(seed)
        rows: list[dict] = []
        failures, length = 0, None
        reasons: Counter[str] = Counter()
        examples: dict[str, tuple[str, str]] = {}
        limit = max(200, 20 * n)
        while len(rows) < n:
            try:
                row = self._draw(enc, rng)
            except TokenizationError as e:  # redraw, remember why
                failures += 1
                key = problem_key(e.what)
                reasons[key] += 1
                examples.setdefault(key, (e.what, e.fix or ""))
                if failures > limit:  # report the most frequent problem: that is the one to fix first
                    key, k = reasons.most_common(1)[0]
                    what, fix = examples[key]
                    raise _tok_error(f"{failures} draws failed to tokenise ({k} with this problem, e.g. {what})",
                                     fix=fix or "check the task's words against the tokenizer") from None
                continue
            if length is None:
                length = len(row["clean"])
            if len(row["clean"]) != length or len(row["corrupt"]) != length:
                failures += 1
                if failures > limit:
                    raise _tok_error(f"prompts of this task tokenise to different lengths ({len(row['clean'])} "
                                     f"vs {length}) too often to fill a batch",
                                     fix="use templates and words whose token counts match for this tokenizer")
                continue
            rows.append(row)
        return self._to_batch(rows, tokenizer)

    def _to_batch(self, rows: list[dict], tokenizer: Any):
        """Stack drawn rows (``clean``/``corrupt`` ids, ``answer``, ``wrong``, ``positions``, ``text``)."""
        from tools.batch import TaskBatch

        bos = getattr(tokenizer, "bos_token_id", None) if self.prepend_bos else None
        off = 1 if bos is not None else 0

        def ids(key: str) -> torch.Tensor:
            return torch.tensor([([bos] if off else []) + r[key] for r in rows], dtype=torch.long)

        positions = {role: torch.tensor([r["positions"][role] + off for r in rows], dtype=torch.long)
                     for role in self.roles()}
        return TaskBatch(clean_ids=ids("clean"), corrupt_ids=ids("corrupt"),
                         answer_ids=torch.tensor([r["answer"] for r in rows], dtype=torch.long),
                         wrong_ids=torch.tensor([r["wrong"] for r in rows], dtype=torch.long),
                         positions=positions, prompts=[r["text"] for r in rows])


    def diagnose(self, tokenizer: Any, draws: int = 200, seed: int = 0) -> list[TokenizationIssue]:
        """What goes wrong when this task's prompts meet ``tokenizer``: one issue per distinct problem.

        Makes ``draws`` draws (seeded) and tallies the ones that fail (a slot word of several tokens, an
        answer of several tokens, clean and corrupt prompts of different lengths...) and the token lengths
        of those that succeed: prompts of several lengths cannot share a batch, so only those of the first
        drawn length are used. An empty list means every draw tokenised as the task needs.
        """
        enc = _Encoder(tokenizer)
        rng = random.Random(seed)
        reasons: Counter[str] = Counter()
        examples: dict[str, tuple[str, str]] = {}
        lengths: Counter[int] = Counter()
        first: int | None = None
        for _ in range(draws):
            try:
                row = self._draw(enc, rng)
                if len(row["corrupt"]) != len(row["clean"]):
                    raise _tok_error(f"{CLEAN_CORRUPT_LENGTHS} ({len(row['clean'])} vs {len(row['corrupt'])} "
                                     "tokens)", fix=LENGTHS_FIX)
            except TokenizationError as e:
                key = problem_key(e.what)
                reasons[key] += 1
                examples.setdefault(key, (e.what, e.fix or ""))
                continue
            first = len(row["clean"]) if first is None else first
            lengths[len(row["clean"])] += 1
        out = [TokenizationIssue(problem=examples[key][0], count=k, draws=draws, fix=examples[key][1])
               for key, k in reasons.most_common(MAX_ISSUES)]
        if len(lengths) > 1:
            other = sum(k for n, k in lengths.items() if n != first)
            out.append(TokenizationIssue(
                problem=f"prompts tokenise to {len(lengths)} different lengths "
                        f"({', '.join(f'{n} tokens: {k}' for n, k in sorted(lengths.items()))}); a batch keeps only "
                        f"those of the first drawn length ({first})",
                count=other, draws=draws,
                fix="make every template (and filler) the same number of tokens for this tokenizer"))
        return out


CLEAN_CORRUPT_LENGTHS = "clean and corrupt prompts tokenise to different lengths"
LENGTHS_FIX = ("per-position patching needs equal lengths: corrupt with words of the same token count as the ones "
               "they replace")
MAX_ISSUES = 12
"""At most this many distinct problems are listed by :meth:`_Generator.diagnose`."""


def problem_key(what: str) -> str:
    """A tokenisation problem without its particular words and numbers, to count draws that share it.

    >>> problem_key("slot IO (' Christopher') is 2 tokens after 'Then, '")
    'slot IO (…) is # tokens after …'
    """
    return re.sub(r"\d+", "#", re.sub(r"'[^']*'|\"[^\"]*\"", "…", what))


class TokenizationIssue(BaseModel):
    """One problem found when a task's prompts are tokenised (see :meth:`_Generator.diagnose`)."""

    model_config = ConfigDict(frozen=True)

    problem: str
    """What went wrong, naming the slot, word or item (the first example met, e.g. ``"slot IO (' Christopher')
    is 2 tokens"``)."""
    count: int
    """How many of the ``draws`` (or items) showed this problem (with any words)."""
    draws: int
    """Draws (template kinds) or items (``pairs``) examined."""
    fix: str = ""
    """How to fix it."""


# ------------------------------------------------------------------------------------------ IOI
class IOIGenerator(_Generator):
    """Indirect object identification: ``When {IO} and {S} went ..., {S} gave a drink to`` → ``IO``.

    Roles: ``IO`` (the indirect object's name), ``S1``/``S2`` (the subject's two mentions), ``END``.
    Corruption ``flip`` puts the IO name at S2 (so the corrupt prompt's answer is S: the logit
    difference flips sign); ``abc`` replaces the three names by three fresh distinct names
    (Wang et al. 2022's ABC distribution). ``wrong`` is always the subject S.
    """

    kind: Literal["ioi"]
    names: list[str] = Field(min_length=3)
    templates: list[str] = Field(min_length=1)
    """Each has one ``{IO}`` and two ``{S}``; other ``{SLOT}`` names are filled from ``fillers``."""
    fillers: dict[str, list[str]] = Field(default_factory=dict)
    corruption: Literal["flip", "abc"] = "flip"

    @model_validator(mode="after")
    def _check_templates(self) -> IOIGenerator:
        for t in self.templates:
            slots = _SLOT.findall(t)
            if slots.count("IO") != 1 or slots.count("S") != 2:
                raise ValueError(f"template {t!r} needs exactly one {{IO}} and two {{S}}")
            for s in set(slots) - {"IO", "S"}:
                if s not in self.fillers:
                    raise ValueError(f"template {t!r} uses {{{s}}} but fillers has no list {s!r}")
        return self

    def roles(self) -> list[str]:
        return ["IO", "S1", "S2", "END"]

    def vocabulary(self) -> list[str]:
        words = {w for t in self.templates for w in split_words(_SLOT.sub(" ", t))}
        words |= {w for v in [self.names, *self.fillers.values()] for x in v for w in split_words(x)}
        return sorted(words)

    def _draw(self, enc: _Encoder, rng: random.Random) -> dict:
        template = self.templates[rng.randrange(len(self.templates))]
        io, s = rng.sample(self.names, 2)
        fill = {k: v[rng.randrange(len(v))] for k, v in self.fillers.items()}
        role_map: dict[str, list[str | None]] = {"IO": ["IO"], "S": ["S1", "S2"]}
        clean, pos, text = enc.build(_template_pieces(template, {"IO": io, "S": s, **fill}, role_map))
        if self.corruption == "flip":
            pieces = _template_pieces(template, {"IO": io, "S": s, **fill}, role_map)
            # S2 gets the IO name: the corrupt prompt's answer becomes S.
            s2 = [i for i, (_, r) in enumerate(pieces) if r == "S2"][0]
            lead = " " if pieces[s2][0].startswith(" ") else ""
            pieces[s2] = (lead + io, "S2")
        else:
            a, b, c = rng.sample(self.names, 3)
            vals = {"IO": a, "S": b, **fill}
            pieces = _template_pieces(template, vals, role_map)
            s2 = [i for i, (_, r) in enumerate(pieces) if r == "S2"][0]
            lead = " " if pieces[s2][0].startswith(" ") else ""
            pieces[s2] = (lead + c, "S2")
        corrupt, _, _ = enc.build(pieces)
        answer = enc.appended(text, " " + io)
        wrong = enc.appended(text, " " + s)
        return dict(clean=clean, corrupt=corrupt, positions=pos, answer=answer, wrong=wrong, text=text)


# ------------------------------------------------------------------------------------ induction
class InductionGenerator(_Generator):
    """Repeated random tokens: filler, a segment, then the segment again up to ``END``.

    The answer is the token that followed ``END``'s token in the first copy. Roles: ``MATCH`` (the
    earlier occurrence of the END token), ``NEXT`` (the token after it: the one to copy), ``END``.
    The corrupt prompt changes the token at ``NEXT`` to a fresh token, which becomes ``wrong``.
    Every token occurs once before the repeat (segment tokens are distinct and absent from filler).
    """

    kind: Literal["induction"]
    tokens: list[str] | None = None
    """Token pool (single tokens of the vocabulary); None: the tokenizer's whole non-special vocabulary."""
    seq_len: int = Field(32, ge=6)
    """Prompt length in tokens, BOS included."""
    segment_len: tuple[int, int] = (6, 12)
    filler_len: tuple[int, int] = (0, 7)

    @model_validator(mode="after")
    def _check_lengths(self) -> InductionGenerator:
        if not self._lengths():
            raise ValueError(f"no segment/filler lengths fit seq_len={self.seq_len} with 2 <= repeated <= "
                             "segment-1; change seq_len, segment_len or filler_len")
        return self

    def _lengths(self) -> list[tuple[int, int]]:
        body = self.seq_len - (1 if self.prepend_bos else 0)
        out = []
        for seg in range(self.segment_len[0], self.segment_len[1] + 1):
            for fill in range(self.filler_len[0], self.filler_len[1] + 1):
                k = body - fill - seg
                if 2 <= k <= seg - 1:
                    out.append((seg, fill))
        return out

    def roles(self) -> list[str]:
        return ["MATCH", "NEXT", "END"]

    def vocabulary(self) -> list[str]:
        return sorted(set(self.tokens or []))

    def _pool(self, enc: _Encoder) -> list[int]:
        cached = getattr(enc, "_pool", None)
        if cached is not None:
            return cached
        tok = enc.tok
        if self.tokens is None:
            special = set(getattr(tok, "all_special_ids", []) or [])
            pool = [i for i in range(len(tok)) if i not in special]
        else:
            pool = []
            for w in self.tokens:
                tid = tok.convert_tokens_to_ids(w)
                if tid is None or tid == enc.unk:
                    raise _tok_error(f"induction token {w!r} is not in the tokenizer's vocabulary",
                                     fix="list tokens the model's tokenizer has, or leave tokens empty")
                pool.append(tid)
        if len(pool) < self.segment_len[1] + self.filler_len[1] + 1:
            raise _tok_error(f"only {len(pool)} tokens to draw from", fix="give a larger token pool")
        enc._pool = pool  # type: ignore[attr-defined]
        return pool

    def _draw(self, enc: _Encoder, rng: random.Random) -> dict:
        pool = self._pool(enc)
        seg_len, fill_len = rng.choice(self._lengths())
        body = self.seq_len - (1 if self.prepend_bos else 0)
        k = body - fill_len - seg_len
        chosen = rng.sample(pool, seg_len + fill_len + 1)
        seg, filler, fresh = chosen[:seg_len], chosen[seg_len:seg_len + fill_len], chosen[-1]
        clean = filler + seg + seg[:k]
        match = fill_len + k - 1
        corrupt = list(clean)
        corrupt[match + 1] = fresh
        text = enc.tok.decode(clean)
        return dict(clean=clean, corrupt=corrupt, answer=seg[k], wrong=fresh, text=text,
                    positions={"MATCH": match, "NEXT": match + 1, "END": len(clean) - 1})


# ---------------------------------------------------------------------------------- greater-than
class GreaterThanGenerator(_Generator):
    """``The war lasted from the year 17{YY} to the year 17`` → a year greater than YY (Hanna et al. 2023).

    Roles: ``NOUN``, ``XX1`` (first century), ``YY``, ``END`` (second century). ``answer`` is YY+1
    and ``wrong`` is YY, so the logit difference measures the decision boundary; the ``prob_diff``
    metric sums probabilities of years above minus at-or-below YY. Corruption ``01`` sets YY to 01.
    """

    kind: Literal["greater_than"]
    nouns: list[str] = Field(min_length=1)
    templates: list[str] = Field(min_length=1)
    """Each uses ``{NOUN}``, ``{XX}`` twice (the second ends the prompt) and ``{YY}``."""
    centuries: list[int] = Field(default_factory=lambda: list(range(11, 18)))
    yy_range: tuple[int, int] = (2, 97)

    @model_validator(mode="after")
    def _check(self) -> GreaterThanGenerator:
        for t in self.templates:
            slots = _SLOT.findall(t)
            if sorted(slots) != ["NOUN", "XX", "XX", "YY"] or not t.rstrip().endswith("{XX}"):
                raise ValueError(f"template {t!r} needs {{NOUN}}, {{XX}}, {{YY}} and must end with {{XX}}")
        lo, hi = self.yy_range
        if not 1 <= lo < hi <= 98:
            raise ValueError(f"yy_range {self.yy_range} must satisfy 1 <= low < high <= 98")
        return self

    def roles(self) -> list[str]:
        return ["NOUN", "XX1", "YY", "END"]

    def vocabulary(self) -> list[str]:
        words = {w for t in self.templates for w in split_words(_SLOT.sub(" ", t))}
        words |= {w for x in self.nouns for w in split_words(x)}
        words |= {f"{i:02d}" for i in range(100)} | {str(c) for c in self.centuries}
        return sorted(words)

    def year_piece(self, template: str, yy: int) -> str:
        return (" " if _slot_has_space(template, "YY") else "") + f"{yy:02d}"

    def year_token_ids(self, tokenizer: Any) -> list[int]:
        """Token id of each two-digit year ``00``..``99`` as it follows the century (index = year)."""
        enc = _Encoder(tokenizer)
        t = self.templates[0]
        prefix = f"the year {self.centuries[0]}"
        return [enc.appended(prefix, self.year_piece(t, yy)) for yy in range(100)]

    def _draw(self, enc: _Encoder, rng: random.Random) -> dict:
        template = self.templates[rng.randrange(len(self.templates))]
        noun = self.nouns[rng.randrange(len(self.nouns))]
        xx = str(self.centuries[rng.randrange(len(self.centuries))])
        yy = rng.randint(*self.yy_range)
        roles: dict[str, list[str | None]] = {"NOUN": ["NOUN"], "XX": ["XX1", None], "YY": ["YY"]}

        def pieces(y: int) -> list[tuple[str, str | None]]:
            out = _template_pieces(template, {"NOUN": noun, "XX": xx, "YY": "@@"}, roles)
            return [(p.replace("@@", f"{y:02d}"), r) for p, r in out]

        clean, pos, text = enc.build(pieces(yy))
        corrupt, _, _ = enc.build(pieces(1))
        answer = enc.appended(text, self.year_piece(template, yy + 1))
        wrong = enc.appended(text, self.year_piece(template, yy))
        return dict(clean=clean, corrupt=corrupt, positions=pos, answer=answer, wrong=wrong, text=text)


# ------------------------------------------------------------------------------------- docstring
DOCSTRING_TEMPLATE = (
    'def {F}(self, {A}, {B}, {C}):\n    """{D1} {D2}\n\n    :param {A}: {W1} {W2}\n'
    '    :param {B}: {W3} {W4}\n    :param'
)


class DocstringGenerator(_Generator):
    """Python docstrings (Heimersheim & Janiak 2023): predict the third argument's name after ``:param``.

    Roles: ``A_def``, ``B_def``, ``C_def`` (arguments in the signature), ``A_doc``, ``B_doc`` (their
    ``:param`` lines), ``END``. The corrupt prompt renames C in the signature to a fresh name, which
    becomes ``wrong``.
    """

    kind: Literal["docstring"]
    names: list[str] = Field(min_length=4)
    """Argument names (single tokens with a leading space for the model)."""
    functions: list[str] = Field(min_length=1)
    words: list[str] = Field(min_length=2)
    """Words for the description and the ``:param`` explanations."""
    template: str = DOCSTRING_TEMPLATE

    def roles(self) -> list[str]:
        return ["A_def", "B_def", "C_def", "A_doc", "B_doc", "END"]

    def vocabulary(self) -> list[str]:
        words = set(split_words(_SLOT.sub(" ", self.template)))
        words |= {w for v in (self.names, self.functions, self.words) for x in v for w in split_words(x)}
        return sorted(words)

    def _draw(self, enc: _Encoder, rng: random.Random) -> dict:
        a, b, c, c2 = rng.sample(self.names, 4)
        fill = {"F": rng.choice(self.functions), **{k: rng.choice(self.words) for k in
                                                     ("D1", "D2", "W1", "W2", "W3", "W4")}}
        roles: dict[str, list[str | None]] = {"A": ["A_def", "A_doc"], "B": ["B_def", "B_doc"], "C": ["C_def"]}
        clean, pos, text = enc.build(_template_pieces(self.template, {"A": a, "B": b, "C": c, **fill}, roles))
        corrupt, _, _ = enc.build(_template_pieces(self.template, {"A": a, "B": b, "C": c2, **fill}, roles))
        answer = enc.appended(text, " " + c)
        wrong = enc.appended(text, " " + c2)
        return dict(clean=clean, corrupt=corrupt, positions=pos, answer=answer, wrong=wrong, text=text)


GENERATORS: dict[str, Callable[..., _Generator]] = {
    "ioi": IOIGenerator, "induction": InductionGenerator, "greater_than": GreaterThanGenerator,
    "docstring": DocstringGenerator,
}
