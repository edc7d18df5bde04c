"""Validation of the grounding rules (:mod:`evals.grounding`) on real runs plus synthetic perturbations.

Ground truth: the conclusions of real runs of the offline planner, whose every number is copied from a
result it cites (so any number flagged is a **false positive**), and perturbed copies of them, each with
exactly one known defect (a defect not flagged is a **false negative**):

- ``digit``: one digit of a number changed (a random mantissa digit after the leading zeros, to another
  digit): the number no longer rounds to the value it came from;
- ``invented``: a number replaced by a random one of the same format (same decimals and sign style) drawn
  uniformly from [0, 2·|x| + 0.1), away from the true value by more than its rounding;
- ``other``: a number replaced by a number of another component's result in the run (that component's
  numbers in the cells it is about), formatted the same way, away from the true value;
- ``cite-other``: one cited seq replaced by the seq of a cell about a component the explanation does not
  name.

:func:`validate` returns the counts per run; ``benchmarks/grounding_validation.py`` prints the table of
``docs/GROUNDING.md``.

>>> import random
>>> n = numbers_in("removes +0.36 of the gap")[0]
>>> _with_digit(n, random.Random(0)) != "+0.36"
True
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

from pydantic import BaseModel, ConfigDict, Field

from evals.grounding import Claim, NumberCheck, RunRecord, check_claim, concerns, matches, numbers_in, values

KINDS = ("digit", "invented", "other", "cite-other")
_SHARED = {"clean", "corrupt", "gap"}
"""Fields every result of a batch shares (the baseline): not another component's numbers."""


class Perturbed(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str
    claim: Claim
    """The conclusion with its one defect."""
    number: NumberCheck | None = None
    """The perturbed number as it now reads (number perturbations)."""
    seq: int | None = None
    """The wrongly cited seq (``cite-other``)."""


class ValidationCounts(BaseModel):
    """False positives on the real conclusions; detections per perturbation kind."""

    model_config = ConfigDict(extra="forbid")

    claims: int = 0
    numbers: int = 0
    """Claim numbers in the real conclusions."""
    false_positive_numbers: int = 0
    """Real numbers flagged ungrounded."""
    false_positive_citations: int = 0
    """Real citations flagged invalid."""
    perturbed: dict[str, int] = Field(default_factory=dict)
    """Kind → perturbations made."""
    caught: dict[str, int] = Field(default_factory=dict)
    """Kind → perturbations flagged (the defect found)."""

    def add(self, other: ValidationCounts) -> ValidationCounts:
        out = self.model_copy(deep=True)
        for f in ("claims", "numbers", "false_positive_numbers", "false_positive_citations"):
            setattr(out, f, getattr(out, f) + getattr(other, f))
        for k in KINDS:
            out.perturbed[k] = out.perturbed.get(k, 0) + other.perturbed.get(k, 0)
            out.caught[k] = out.caught.get(k, 0) + other.caught.get(k, 0)
        return out


def _fmt(v: float, n: NumberCheck) -> str:
    """``v`` written like ``n`` (its decimals, its sign style, a percentage when ``n`` is one)."""
    decimals = max(0, -round(math.log10(n.tolerance * 2)))
    if n.text.endswith("%"):
        decimals = max(0, decimals - 2)
        body = f"{abs(v) * 100:.{decimals}f}%"
    else:
        body = f"{abs(v):.{decimals}f}"
    sign = ("-" if v < 0 else "+") if n.signed else ""
    return sign + body


def _with_digit(n: NumberCheck, rng: random.Random) -> str:
    """``n``'s text with one significant mantissa digit changed."""
    text = n.text
    mant_end = len(text) - 1 if text.endswith("%") else len(text)
    if "e" in text.lower():
        mant_end = text.lower().index("e")
    digits = [i for i in range(mant_end) if text[i].isdigit()]
    first = next((i for i in digits if text[i] != "0"), digits[-1])
    pos = rng.choice([i for i in digits if i >= first])
    new = rng.choice([d for d in "0123456789" if d != text[pos]])
    return text[:pos] + new + text[pos + 1:]


def _replace(claim: Claim, n: NumberCheck, text: str) -> tuple[Claim, NumberCheck]:
    """``claim`` with ``n`` rewritten as ``text``, and the new number as the checker reads it."""
    e = claim.explanation
    new = claim.model_copy(update={"explanation": e[:n.start] + text + e[n.end:]})
    return new, next(x for x in numbers_in(new.explanation) if x.start == n.start)


def _true_value(n: NumberCheck, pool: list[float]) -> float:
    return next(v for v in pool if matches(n, v))


def perturbations(claim: Claim, record: RunRecord, rng: random.Random) -> Iterator[Perturbed]:
    """The perturbed copies of one (grounded) conclusion (see the module docstring)."""
    base = check_claim(claim, record)
    cells = {c.seq: c for c in record.cells}
    named = {claim.component} | {c for x in base.citations for c in x.concerns if c in claim.explanation}
    pool = [v.value for x in base.citations if x.ok for v in values(cells[x.seq], named)]
    others = [v for c in record.cells if c.status == "ok" and (about := concerns(c)) and not set(about) & named
              for name, v, *_ in values(c, set(about)) if name not in _SHARED]
    for n in base.numbers:
        if n.kind != "claim" or not n.grounded:
            continue
        true = _true_value(n, pool)
        c, num = _replace(claim, n, _with_digit(n, rng))
        yield Perturbed(kind="digit", claim=c, number=num)
        for _ in range(20):
            t = _fmt(rng.uniform(0, 2 * abs(n.value) + 0.1) * (-1 if n.value < 0 else 1), n)
            if not matches(numbers_in(t)[0], true):
                c, num = _replace(claim, n, t)
                yield Perturbed(kind="invented", claim=c, number=num)
                break
        cands = [v for v in others if abs(v) < 1e6 and not matches(numbers_in(_fmt(v, n))[0], true)]
        if cands:
            c, num = _replace(claim, n, _fmt(rng.choice(cands), n))
            yield Perturbed(kind="other", claim=c, number=num)
    foreign = [c.seq for c in record.cells if c.status == "ok" and (about := concerns(c)) and not set(about) & named
               and (claim.seq is None or c.seq < claim.seq)]
    if foreign and claim.evidence:
        i = rng.randrange(len(claim.evidence))
        seq = rng.choice(foreign)
        ev = list(claim.evidence)
        ev[i] = seq
        yield Perturbed(kind="cite-other", claim=claim.model_copy(update={"evidence": ev}), seq=seq)


def _caught(p: Perturbed, record: RunRecord, by_name: bool = True) -> bool:
    """The check flags the perturbation's defect (that number, or that citation)."""
    chk = check_claim(p.claim, record, by_name=by_name)
    if p.number is not None:
        return any(not n.grounded and n.start == p.number.start for n in chk.numbers)
    return any(not x.ok and x.seq == p.seq for x in chk.citations)


def validate(record: RunRecord, seed: int = 0, by_name: bool = True) -> ValidationCounts:
    """False positives on ``record``'s conclusions, and detections of their perturbed copies (``by_name``: see
    :func:`evals.grounding.check_claim`; the perturbations are the same either way)."""
    rng = random.Random(seed)
    out = ValidationCounts(perturbed={k: 0 for k in KINDS}, caught={k: 0 for k in KINDS})
    for claim in record.conclusions:
        if claim.inconclusive_reason is not None:
            continue
        chk = check_claim(claim, record, by_name=by_name)
        out.claims += 1
        nums = [n for n in chk.numbers if n.kind == "claim"]
        out.numbers += len(nums)
        out.false_positive_numbers += sum(not n.grounded for n in nums)
        out.false_positive_citations += sum(not x.ok for x in chk.citations)
        for p in perturbations(claim, record, rng):
            out.perturbed[p.kind] += 1
            out.caught[p.kind] += _caught(p, record, by_name)
    return out
