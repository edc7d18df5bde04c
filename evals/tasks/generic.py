"""Generic task kinds: define a new task in YAML alone, with no Python.

``template`` — prompts from text templates with named slots::

    generator:
      kind: template
      templates: ["{S} saw {O} at the {PLACE} and then"]
      slots:
        S: {he: [John, Tom], she: [Mary, Anna]}   # grouped fillers: {S.group} is the drawn group's label
        O: {he: [John, Tom], she: [Mary, Anna]}
        PLACE: [park, school]                      # plain fillers
      answer: "{S.group}"                          # he / she: the subject's group
      wrong: "{S.other}"                           # the label of another group of S (the one the corruption uses)
      corruption: {redraw: [S]}                    # corrupt prompt: S re-drawn from that other group
      positions: {S: S, O: O}                      # the task's roles (END, the last token, is always added)

Rules a user can predict:

- ``{X}`` is the value drawn for slot ``X`` (the same value at every occurrence), ``{X.group}`` the label
  of the group it was drawn from (grouped slots only). In ``answer``/``wrong``, ``{X.other}`` is the label
  of a second group of ``X`` drawn for the prompt (the *foil*); anything else is literal text. The answer
  and wrong tokens follow the prompt after ``answer_prefix`` (default one space, as GPT-2's ``" Mary"``)
  and must each be one token.
- Every prompt draws one template, then each slot in the order written: a group (uniformly) and a
  foil group (another one), then a value from that group. Values are distinct within a prompt (two slots
  sharing a list never get the same word).
- ``corruption.redraw``: each listed slot gets a fresh value (from its foil group when grouped, so the
  answer flips; distinct from every clean value), at all its occurrences (``X``) or one (``X#2``: the
  second ``{X}``). ``corruption.swap``: pairs of slots (or of single occurrences) exchange their values.
- ``positions`` (the task's roles): role name → ``X`` (first ``{X}``), ``X#k`` (k-th ``{X}``) or
  ``X.group`` (first ``{X.group}``). Without ``positions``, every ``{X}`` occurrence is a role: ``X`` when it occurs once in a
  template, ``X1``, ``X2``... when it repeats. A role's slot must land on exactly one token.

``pairs`` — explicit prompts::

    generator:
      kind: pairs
      items:
        - {clean: "When Mary and John went out, John gave it to", corrupt: "When Mary and John went out,
           Kate gave it to", answer: Mary, wrong: John, positions: {IO: Mary, S2: "John#2"}}

Roles by word: ``word`` (its first whole-word occurrence in the clean prompt) or ``word#k``. Every item
names the same roles. A batch uses the items whose clean prompt has the most common token length
(prompts in a batch share one length), in an order shuffled by the seed, repeating them when more
prompts are asked for than there are items.

Tokenisation is checked against the model's own tokenizer: a role slot of several tokens, an answer of
several tokens, or clean and corrupt prompts of different lengths is one :class:`TokenizationError`
naming the slot (or item), the word and the fix. Template draws that fail are redrawn;
:meth:`~evals.tasks.generators._Generator.diagnose` lists every problem met.

>>> from tools.tiny import word_tokenizer
>>> g = TemplateGenerator(kind="template", templates=["{S} saw {O} and then"],
...     slots={"S": {"he": ["Tom", "Bob"], "she": ["Ann", "Eve"]}, "O": ["Kim", "Lee"]},
...     answer="{S.group}", wrong="{S.other}", corruption={"redraw": ["S"]})
>>> g.roles()
['S', 'O', 'END']
>>> tok = word_tokenizer(g.vocabulary())
>>> b = g.make_batch(tok, 2, seed=0)
>>> b.prompts[0], tok.decode([int(b.answer_ids[0])]), tok.decode([int(b.wrong_ids[0])])
('Eve saw Lee and then', 'she', 'he')
>>> tok.decode(b.corrupt_ids[0].tolist()[1:])  # S re-drawn from the other group: the answer flips
'Bob saw Lee and then'
>>> {r: int(p[0]) for r, p in b.positions.items()}  # index 0 is BOS
{'S': 1, 'O': 3, 'END': 5}
"""

from __future__ import annotations

import random
import re
from collections import Counter
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from evals.tasks.errors import TaskSpecError, TokenizationError
from evals.tasks.generators import (
    CLEAN_CORRUPT_LENGTHS,
    LENGTHS_FIX,
    TokenizationIssue,
    _Encoder,
    _Generator,
    _tok_error,
    split_words,
)

_MARK = re.compile(r"\{(\w+)(?:\.(\w+))?\}")
_REF = re.compile(r"^(\w+)(?:\.(group))?(?:#(\d+))?$")
_SINGLE_FIX = "use words that are one token for the model's tokenizer (check tokenizer.tokenize)"

Fillers = list[str] | dict[str, list[str]]


# --------------------------------------------------------------------------------------------- helpers
@lru_cache(maxsize=512)
def _parse(template: str) -> tuple[tuple[str, str | None, int] | str, ...]:
    """A template as literal strings and markers ``(slot, attr, occurrence)`` (occurrence counts from 1).

    >>> _parse("{S} met {O} , {S} and {S.group}")
    (('S', None, 1), ' met', ('O', None, 1), ' ,', ('S', None, 2), ' and', ('S', 'group', 1))

    A space before a marker belongs to the marker's piece (GPT-2 tokens carry their leading space), so it
    is cut from the literal before it; :func:`_pieces` puts it back.
    """
    out: list[Any] = []
    seen: Counter[tuple[str, str | None]] = Counter()
    pos = 0
    for m in _MARK.finditer(template):
        lit = template[pos:m.start()]
        if lit.endswith(" "):
            lit = lit[:-1]
        if lit:
            out.append(lit)
        key = (m.group(1), m.group(2))
        seen[key] += 1
        out.append((m.group(1), m.group(2), seen[key]))
        pos = m.end()
    if template[pos:]:
        out.append(template[pos:])
    return tuple(out)


def _space_before(template: str) -> list[bool]:
    """For each marker of ``template`` in order: is it preceded by a space?"""
    return [m.start() > 0 and template[m.start() - 1] == " " for m in _MARK.finditer(template)]


def _parse_ref(ref: str) -> tuple[str, str | None, int | None]:
    m = _REF.match(ref.strip())
    if not m:
        raise ValueError(f"cannot parse slot reference {ref!r}: use X, X#2 or X.group")
    return m.group(1), m.group(2), int(m.group(3)) if m.group(3) else None


def _build(enc: _Encoder, pieces: list[tuple[str, str | None]], what: str = "slot"
           ) -> tuple[list[int], dict[str, int], str]:
    """Tokenise ``(text, role)`` pieces; each role's piece must be exactly one token, kept in the whole prompt."""
    text, roles, role_ids, role_text = "", {}, {}, {}
    for piece, role in pieces:
        if role is not None:
            before, after = enc.encode(text), enc.encode(text + piece)
            k = len(after) - len(before)
            if after[: len(before)] != before:
                raise _tok_error(f"{what} {role} ({piece.strip()!r}) merges with the text before it "
                                 f"({text[-20:]!r}) into other tokens",
                                 fix="put a space or punctuation before the slot")
            if k != 1:
                raise _tok_error(f"{what} {role} ({piece.strip()!r}) is {k} tokens for this tokenizer; a role "
                                 "position must be one token", fix=_SINGLE_FIX)
            if enc.unk is not None and after[-1] == enc.unk:
                raise _tok_error(f"{what} {role} ({piece.strip()!r}) is not in the tokenizer's vocabulary",
                                 fix="use the model's own tokenizer, or words it knows")
            roles[role], role_ids[role], role_text[role] = len(before), after[-1], piece.strip()
        text += piece
    ids = enc.encode(text)
    for role, idx in roles.items():
        if idx >= len(ids) or ids[idx] != role_ids[role]:
            raise _tok_error(f"{what} {role} ({role_text[role]!r}) merges with the text after it once the whole "
                             "prompt is tokenised", fix="put a space or punctuation after the slot")
    roles["END"] = len(ids) - 1
    return ids, roles, text


def _one_token(enc: _Encoder, text: str, piece: str, what: str) -> int:
    """The single token ``piece`` adds after ``text`` (an answer); a clear error otherwise."""
    before, after = enc.encode(text), enc.encode(text + piece)
    k = len(after) - len(before)
    fix = "choose answers that are one token (GPT-2: with a leading space, which answer_prefix adds)"
    if after[: len(before)] != before:
        raise _tok_error(f"the {what} {piece!r} merges with the end of the prompt into other tokens", fix=fix)
    if k != 1:
        raise _tok_error(f"the {what} {piece!r} is {k} tokens for this tokenizer; it must be one", fix=fix)
    if enc.unk is not None and after[-1] == enc.unk:
        raise _tok_error(f"the {what} {piece.strip()!r} is not in the tokenizer's vocabulary",
                         fix="use the model's own tokenizer, or answers it knows")
    return after[-1]


def _values(f: Fillers) -> list[str]:
    return [v for vs in f.values() for v in vs] if isinstance(f, dict) else list(f)


# -------------------------------------------------------------------------------------------- template
class TemplateCorruption(BaseModel):
    """How the corrupt prompt differs from the clean one (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    redraw: list[str] = Field(default_factory=list)
    """Slots (``X``) or single occurrences (``X#2``) given a fresh value: from the foil group when grouped."""
    swap: list[tuple[str, str]] = Field(default_factory=list)
    """Pairs of slots (``[A, B]``) or of single occurrences (``[A#1, B#2]``) that exchange their values."""

    @model_validator(mode="after")
    def _some(self) -> TemplateCorruption:
        if not self.redraw and not self.swap:
            raise ValueError("corruption needs 'redraw' or 'swap' (else the corrupt prompt equals the clean one)")
        return self


class TemplateGenerator(_Generator):
    """Prompts from text templates with named slots; see the module docstring for every rule."""

    kind: Literal["template"]
    templates: list[str] = Field(min_length=1)
    """Prompt texts with ``{X}`` / ``{X.group}`` markers; the prompt ends where the answer is predicted."""
    slots: dict[str, Fillers]
    """Slot → list of fillers, or group label → list of fillers (then ``{X.group}`` / ``{X.other}`` work)."""
    answer: str
    """Answer text: literal, or ``{X}`` / ``{X.group}`` / ``{X.other}`` of the clean draw. One token."""
    wrong: str
    """The contrasting token (the logit difference is answer − wrong); same syntax as ``answer``."""
    answer_prefix: str = " "
    """Text between the prompt and the answer token (GPT-2 words carry a leading space)."""
    corruption: TemplateCorruption
    positions: dict[str, str] | None = None
    """Named positions (the task's roles): role → slot occurrence (``X``, ``X#k``, ``X.group``); None: every
    ``{X}`` occurrence (see the module docstring)."""

    @field_validator("slots")
    @classmethod
    def _fillers(cls, v: dict[str, Fillers]) -> dict[str, Fillers]:
        for name, f in v.items():
            if not re.fullmatch(r"\w+", name):
                raise ValueError(f"slot name {name!r} must be letters, digits or _")
            if isinstance(f, dict):
                if not f:
                    raise ValueError(f"slot {name} has no groups")
                empty = [g for g, vs in f.items() if not vs]
                if empty:
                    raise ValueError(f"slot {name} group(s) {empty} have no fillers")
            elif not f:
                raise ValueError(f"slot {name} has no fillers")
        return v

    @model_validator(mode="after")
    def _check(self) -> TemplateGenerator:
        grouped = {k for k, f in self.slots.items() if isinstance(f, dict)}
        for t in self.templates:
            for m in _MARK.finditer(t):
                slot, attr = m.group(1), m.group(2)
                if slot not in self.slots:
                    raise ValueError(f"template {t!r} uses {{{slot}}} but slots has no {slot!r} "
                                     f"(slots: {sorted(self.slots)})")
                if attr is not None and (attr != "group" or slot not in grouped):
                    raise ValueError(f"template {t!r}: {m.group(0)} needs a grouped slot and the form {{{slot}.group}}")
            if not t.strip():
                raise ValueError("a template is empty")
        for field in ("answer", "wrong"):
            for m in _MARK.finditer(getattr(self, field)):
                slot, attr = m.group(1), m.group(2)
                if slot not in self.slots:
                    raise ValueError(f"{field} {getattr(self, field)!r} uses {{{slot}}} but slots has no {slot!r}")
                if attr not in (None, "group", "other"):
                    raise ValueError(f"{field}: unknown {m.group(0)}; use {{{slot}}}, {{{slot}.group}} or "
                                     f"{{{slot}.other}}")
                if attr is not None and slot not in grouped:
                    raise ValueError(f"{field}: {m.group(0)} needs slot {slot} to have groups")
                if attr == "other" and len(self.slots[slot]) < 2:
                    raise ValueError(f"{field}: {m.group(0)} needs slot {slot} to have two or more groups")
        if self.answer == self.wrong:
            raise ValueError(f"answer and wrong are the same ({self.answer!r}): the logit difference would be 0")
        refs = [*[(r, "redraw") for r in self.corruption.redraw],
                *[(r, "swap") for pair in self.corruption.swap for r in pair]]
        for ref, where in refs:
            slot, attr, occ = _parse_ref(ref)
            if attr is not None:
                raise ValueError(f"corruption.{where}: {ref!r} — re-draw or swap the slot {slot}; its group "
                                 "label follows")
            self._require_occurrence(slot, occ or 1, f"corruption.{where} {ref!r}")
            if where == "redraw" and slot in grouped and len(self.slots[slot]) < 2:
                raise ValueError(f"corruption.redraw {ref!r}: slot {slot} needs two or more groups (the re-drawn "
                                 "value comes from another group)")
            if where == "redraw" and len(_values(self.slots[slot])) < 2:
                raise ValueError(f"corruption.redraw {ref!r}: slot {slot} needs two or more fillers")
        for a, b in self.corruption.swap:
            if (_parse_ref(a)[2] is None) != (_parse_ref(b)[2] is None):
                raise ValueError(f"corruption.swap [{a}, {b}]: swap two slots or two occurrences (X#k), not one of each")
        roles = self._role_map()
        if "END" in roles.values():
            raise ValueError("END is the last token of every prompt and is added automatically; rename that role")
        return self

    def _require_occurrence(self, slot: str, occ: int, where: str, attr: str | None = None) -> None:
        for t in self.templates:
            n = sum(1 for p in _parse(t) if isinstance(p, tuple) and p[0] == slot and p[1] == attr)
            if n < occ:
                mark = "{" + slot + ("." + attr if attr else "") + "}"
                raise ValueError(f"{where}: template {t!r} has {n} {mark} (needs {occ})")

    def _role_map(self) -> dict[tuple[str, str | None, int], str]:
        """Marker ``(slot, attr, occurrence)`` → role name, the same for every template."""
        if self.positions is not None:
            out: dict[tuple[str, str | None, int], str] = {}
            for role, ref in self.positions.items():
                if not re.fullmatch(r"\w+", role):
                    raise ValueError(f"role name {role!r} must be letters, digits or _")
                slot, attr, occ = _parse_ref(ref)
                if slot not in self.slots:
                    raise ValueError(f"role {role}: no slot {slot!r} (slots: {sorted(self.slots)})")
                self._require_occurrence(slot, occ or 1, f"role {role} ({ref})", attr)
                key = (slot, attr, occ or 1)
                if key in out:
                    raise ValueError(f"roles {out[key]} and {role} name the same position {ref!r}")
                out[key] = role
            return out
        counts = [Counter(p[0] for p in _parse(t) if isinstance(p, tuple) and p[1] is None) for t in self.templates]
        for t, c in zip(self.templates[1:], counts[1:], strict=True):
            if c != counts[0]:
                raise ValueError(f"template {t!r} has other slot counts ({dict(c)}) than the first template "
                                 f"({dict(counts[0])}), so roles cannot be named by default; give "
                                 "'positions' explicitly (role: SLOT or SLOT#k)")
        return {(s, None, k): (s if n == 1 else f"{s}{k}") for s, n in counts[0].items() for k in range(1, n + 1)}

    def roles(self) -> list[str]:
        return [*self._role_map().values(), "END"]

    def vocabulary(self) -> list[str]:
        words = {w for t in self.templates for w in split_words(_MARK.sub(" ", t))}
        for f in self.slots.values():
            words |= {w for v in _values(f) for w in split_words(v)}
            if isinstance(f, dict):
                words |= {w for g in f for w in split_words(g)}
        words |= {w for x in (self.answer, self.wrong) for w in split_words(_MARK.sub(" ", x))}
        return sorted(words)

    # ------------------------------------------------------------------------------------ drawing
    def _draw(self, enc: _Encoder, rng: random.Random) -> dict:
        template = self.templates[rng.randrange(len(self.templates))]
        parts = _parse(template)
        taken: set[str] = set()

        def pick(pool: list[str], slot: str) -> str:
            cands = [x for x in pool if x not in taken]
            if not cands:
                raise TaskSpecError(f"slot {slot} has no filler left that differs from the other slots' values",
                                    fix=f"add fillers to slot {slot} (values in one prompt are distinct)")
            v = cands[rng.randrange(len(cands))]
            taken.add(v)
            return v

        value: dict[str, str] = {}
        group: dict[str, str] = {}
        foil: dict[str, str] = {}
        for slot, f in self.slots.items():
            if isinstance(f, dict):
                labels = list(f)
                group[slot] = labels[rng.randrange(len(labels))]
                others = [g for g in labels if g != group[slot]]
                if others:
                    foil[slot] = others[rng.randrange(len(others))]
                value[slot] = pick(f[group[slot]], slot)
            else:
                value[slot] = pick(f, slot)

        markers = [p for p in parts if isinstance(p, tuple)]
        clean = [group[s] if a == "group" else value[s] for s, a, _ in markers]
        corrupt = list(clean)

        def occurrences(slot: str, occ: int | None, attr: str | None = None) -> list[int]:
            return [i for i, (s, a, k) in enumerate(markers) if s == slot and a == attr and (occ is None or k == occ)]

        for ref in self.corruption.redraw:
            slot, _, occ = _parse_ref(ref)
            f = self.slots[slot]
            new = pick(f[foil[slot]] if isinstance(f, dict) else f, slot)
            for i in occurrences(slot, occ):
                corrupt[i] = new
            if occ is None and isinstance(f, dict):
                for i in occurrences(slot, None, "group"):
                    corrupt[i] = foil[slot]
        for a, b in self.corruption.swap:
            (sa, _, oa), (sb, _, ob) = _parse_ref(a), _parse_ref(b)
            attrs = [None, "group"] if oa is None else [None]
            for attr in attrs:
                ia, ib = occurrences(sa, oa, attr), occurrences(sb, ob, attr)
                va, vb = (corrupt[ia[0]] if ia else None), (corrupt[ib[0]] if ib else None)
                for i in ia:
                    corrupt[i] = vb if vb is not None else corrupt[i]
                for i in ib:
                    corrupt[i] = va if va is not None else corrupt[i]

        role_map = self._role_map()
        spaces = _space_before(template)

        def pieces(texts: list[str]) -> list[tuple[str, str | None]]:
            out, j = [], 0
            for p in parts:
                if isinstance(p, str):
                    out.append((p, None))
                else:
                    out.append(((" " if spaces[j] else "") + texts[j], role_map.get(p)))
                    j += 1
            return out

        clean_ids, pos, text = _build(enc, pieces(clean))
        corrupt_ids, pos_c, _ = _build(enc, pieces(corrupt))
        if len(corrupt_ids) != len(clean_ids):
            raise _tok_error(f"{CLEAN_CORRUPT_LENGTHS} ({len(clean_ids)} vs {len(corrupt_ids)} tokens)", fix=LENGTHS_FIX)
        moved = [r for r in pos if pos_c[r] != pos[r]]
        if moved:
            raise _tok_error(f"role {moved[0]} is at token {pos[moved[0]]} in the clean prompt but "
                             f"{pos_c[moved[0]]} in the corrupt one", fix=LENGTHS_FIX)

        def fill(s: str) -> str:
            return _MARK.sub(lambda m: {"group": group, "other": foil}.get(m.group(2), value)[m.group(1)], s)

        answer = _one_token(enc, text, self.answer_prefix + fill(self.answer), "answer")
        wrong = _one_token(enc, text, self.answer_prefix + fill(self.wrong), "wrong answer")
        if answer == wrong:
            raise _tok_error(f"answer and wrong answer are the same token ({fill(self.answer)!r})",
                             fix="make 'wrong' differ from 'answer' for every draw (e.g. use {X.other})")
        return dict(clean=clean_ids, corrupt=corrupt_ids, positions=pos, answer=answer, wrong=wrong, text=text)


# ----------------------------------------------------------------------------------------------- pairs
class PairItem(BaseModel):
    """One explicit prompt pair."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    clean: str
    corrupt: str
    answer: str
    """The correct next token after the clean prompt (after ``answer_prefix``)."""
    wrong: str
    """The contrasting token (e.g. the corrupt prompt's answer)."""
    positions: dict[str, str] = Field(default_factory=dict)
    """Named positions: role → a word of the clean prompt, ``word`` (first whole-word occurrence) or ``word#k``."""


def _word_start(text: str, ref: str) -> tuple[int, int] | None:
    """``(start, end)`` of the k-th whole-word occurrence of ``word`` (``ref`` is ``word`` or ``word#k``)."""
    word, _, k = ref.rpartition("#") if re.search(r"#\d+$", ref) else (ref, "", "1")
    hits = [m.span() for m in re.finditer(r"(?<!\w)" + re.escape(word) + r"(?!\w)", text)]
    i = int(k) - 1
    return hits[i] if 0 <= i < len(hits) else None


class PairsGenerator(_Generator):
    """An explicit list of clean/corrupt prompts with answers; see the module docstring."""

    kind: Literal["pairs"]
    items: list[PairItem] = Field(min_length=1)
    answer_prefix: str = " "
    """Text between the prompt and the answer token (GPT-2 words carry a leading space)."""

    @model_validator(mode="after")
    def _check(self) -> PairsGenerator:
        names = set(self.items[0].positions)
        if "END" in names:
            raise ValueError("END is the last token of every prompt and is added automatically; rename that role")
        for i, it in enumerate(self.items):
            if set(it.positions) != names:
                raise ValueError(f"item {i} names roles {sorted(it.positions)} but item 0 names {sorted(names)}: every "
                                 "item names the same roles")
            if it.answer == it.wrong:
                raise ValueError(f"item {i}: answer and wrong are the same ({it.answer!r})")
            spans = []
            for role, ref in it.positions.items():
                span = _word_start(it.clean, ref)
                if span is None:
                    raise ValueError(f"item {i}: role {role} names {ref!r}, which is not a whole word of the clean "
                                     f"prompt {it.clean!r}")
                spans.append(span)
            spans.sort()
            for (_, a1), (b0, _) in zip(spans, spans[1:], strict=False):
                if b0 < a1:
                    raise ValueError(f"item {i}: two roles name overlapping words")
        return self

    def roles(self) -> list[str]:
        return [*self.items[0].positions, "END"]

    def vocabulary(self) -> list[str]:
        return sorted({w for it in self.items for x in (it.clean, it.corrupt, it.answer, it.wrong)
                       for w in split_words(x)})

    def _row(self, enc: _Encoder, i: int) -> dict:
        it = self.items[i]
        cuts = []
        for role, ref in it.positions.items():
            s, e = _word_start(it.clean, ref)  # type: ignore[misc]  # checked by the validator
            s = s - 1 if s > 0 and it.clean[s - 1] == " " else s
            cuts.append((s, e, role))
        pieces: list[tuple[str, str | None]] = []
        pos = 0
        for s, e, role in sorted(cuts):
            if it.clean[pos:s]:
                pieces.append((it.clean[pos:s], None))
            pieces.append((it.clean[s:e], role))
            pos = e
        if it.clean[pos:]:
            pieces.append((it.clean[pos:], None))
        try:
            clean, positions, text = _build(enc, pieces, what="role")
            corrupt = enc.encode(it.corrupt)
            if len(corrupt) != len(clean):
                raise _tok_error(f"{CLEAN_CORRUPT_LENGTHS} ({len(clean)} vs {len(corrupt)} tokens)", fix=LENGTHS_FIX)
            answer = _one_token(enc, text, self.answer_prefix + it.answer, "answer")
            wrong = _one_token(enc, text, self.answer_prefix + it.wrong, "wrong answer")
        except TokenizationError as e:
            raise _tok_error(f"item {i}: {e.what}", fix=e.fix or _SINGLE_FIX) from None
        return dict(clean=clean, corrupt=corrupt, positions=positions, answer=answer, wrong=wrong, text=text)

    def _usable(self, enc: _Encoder) -> tuple[list[dict], int]:
        """Every item's row (raising on the first broken item) and the majority token length."""
        rows = [self._row(enc, i) for i in range(len(self.items))]
        lengths = Counter(len(r["clean"]) for r in rows)
        best = max(lengths.values())
        length = min(n for n, k in lengths.items() if k == best)
        return rows, length

    def make_batch(self, tokenizer: Any, n: int, seed: int = 0):
        """``n`` prompts from the items of the majority length, shuffled by ``seed`` (repeated if too few)."""
        rows, length = self._usable(_Encoder(tokenizer))
        keep = [r for r in rows if len(r["clean"]) == length]
        order = list(range(len(keep)))
        random.Random(seed).shuffle(order)
        return self._to_batch([keep[order[i % len(order)]] for i in range(n)], tokenizer)

    def diagnose(self, tokenizer: Any, draws: int = 0, seed: int = 0) -> list[TokenizationIssue]:
        """One issue per broken item (several-token answer or role word, clean/corrupt lengths), plus items
        left out for their length. ``draws``/``seed`` are unused (every item is examined)."""
        enc = _Encoder(tokenizer)
        out: list[TokenizationIssue] = []
        lengths: Counter[int] = Counter()
        for i in range(len(self.items)):
            try:
                lengths[len(self._row(enc, i)["clean"])] += 1
            except TokenizationError as e:
                out.append(TokenizationIssue(problem=e.what, count=1, draws=len(self.items), fix=e.fix or ""))
        if len(lengths) > 1:
            best = max(lengths.values())
            length = min(n for n, k in lengths.items() if k == best)
            other = sum(k for m, k in lengths.items() if m != length)
            out.append(TokenizationIssue(
                problem=f"{other} item(s) tokenise to another length than the majority ({length} tokens) and are left "
                        "out of batches (prompts in a batch share one length)",
                count=other, draws=len(self.items), fix="make the prompts the same number of tokens"))
        return out
