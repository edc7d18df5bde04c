"""Grounding: is every claim of a run's conclusions traced to logged evidence?

A pure function over plain data taken from a run's log (``evals`` never imports ``agent``: the agent
builds a :class:`RunRecord` from its log and passes it here). For each conclusion (:class:`Claim`):

1. **Citations.** Every cited ``seq`` exists, is an ``execution_result`` with status ``ok``, and concerns
   the concluded component, or a component the explanation names (a joint ablation with a partner, a
   path into a named receiver). What a cell concerns comes from its typed result (the
   :mod:`tools.experiments` model its function returns): ``components``, ``sender`` + ``receivers``,
   ``head``, the keys of ``dla`` / ``scores`` / ``effects``...; a free-form ``run_code`` cell concerns the
   component under investigation when it ran. A conclusion that cites nothing is ungrounded.
2. **Numbers.** Every number written in the explanation matches a number of a cited result about the
   component (or a component the explanation names), within the number's printed rounding, and is the
   quantity the text names it as, in the unit it names. The rules (validated in ``docs/GROUNDING.md``)
   are :func:`numbers_in`, :func:`matches`, :func:`quantities`, :func:`unit` and :func:`values`:

   - checked: numbers with a decimal point, an exponent or a ``%`` sign. Bare integers are counts,
     offsets, seeds and layer indices ("2 tokens back", "seed 1", "t-L+3") and are not checked; digits
     inside identifiers (``L0H1``, ``R2``, ``S1``, ``resid_pre3``) are not numbers;
   - thresholds are not claims: a number right after ``>=``, ``<=``, ``≥``, ``≤``, ``<``, ``>``,
     ``at least``, ``at most`` or ``threshold (of)`` (a prediction's bar), or after ``confidence``;
   - ``x`` printed with ``d`` decimals matches a value ``v`` when ``|v − x| ≤ ½·10⁻ᵈ`` (``x`` with a sign)
     or ``||v| − |x|| ≤ ½·10⁻ᵈ`` (no sign: "removes 0.35 of the gap" for an effect of −0.35 reads as a
     magnitude); ``x%`` matches ``v = x/100`` at ``d + 2`` decimals; ``6e-05`` at its mantissa's decimals;
   - a number is the quantity named by the last quantity word before it (``mean-ablation effect``,
     ``DLA``, ``induction score``, ``L1H1:k``, ``attention ... IO``; :func:`quantities`), and followed by
     "of the gap" / "of the clean metric" it is a fraction of that (:func:`unit`); a ``2.5x`` is a ratio;
   - the values of a cited result: its numeric fields, keeping only the entries of component-keyed
     tables (``dla``, ``scores``, ``effects``...) for the component and the components the explanation
     names, plus derived numbers: a DLA as a fraction of the clean metric and of the gap, attention per
     place and the ratios between a head's attention on task roles (:func:`values`).
3. **Tested role.** A role (anything but ``unclear ...`` / ``inconclusive``) rests on a hypothesis about
   the component that was marked ``supported`` before the conclusion, citing a held-out result: a cell
   run with ``prompts="heldout"``, ``head_scores`` with a seed other than 0 (fresh random sequences), or
   a ``run_code`` cell that uses ``batches['heldout']``.

Per run (:meth:`GroundingReport.scores`): ``ground_rate`` (grounded conclusions / conclusions the planner
made; the loop's automatic ``inconclusive`` ones are not claims), ``ground_numbers`` (numbers checked),
``ground_ungrounded_numbers``, ``ground_bad_citations``, ``ground_untested`` (roles without a tested,
supported hypothesis) and ``ground_undecided`` (hypotheses never marked supported, refuted or
inconclusive).

>>> cell = LoggedCell(seq=3, tool="ablate", function="ablation", component="L1H0", data={
...     "components": ["L1H0"], "clean": 3.0, "corrupt": -1.0, "gap": 4.0, "ablated": 1.6, "effect": 1.4,
...     "effect_frac": 0.35})
>>> rec = RunRecord(kinds={0: "run_started", 3: "execution_result"}, cells=[cell])
>>> c = check_claim(Claim(component="L1H0", role="unclear role", explanation="ablation removes 35% "
...                        "(0.36 of the gap)", evidence=[3, 9]), rec)
>>> [n.text for n in c.numbers if not n.grounded], c.citations[1].problem
(['0.36'], 'evidence seq 9 does not exist (the log has seqs 0–3)')
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tools import experiments as X
from tools.components import Component

NON_CLAIM_ROLES = ("inconclusive", "unclear")
"""A conclusion whose role starts with one of these claims no role: it needs no tested hypothesis."""


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


# ---------------------------------------------------------------------------------------------- input


class LoggedCell(_Data):
    """An executed cell (an ``execution_result`` and the tool call behind it)."""

    seq: int
    tool: str = "run_code"
    function: str | None = None
    """The :mod:`tools.experiments` function the tool's cell calls (``ablation``...); None: free-form code."""
    component: str | None = None
    """The component under investigation when the cell ran."""
    status: str = "ok"
    data: Any = None
    """The cell's ``_result`` JSON."""
    input: dict[str, Any] = Field(default_factory=dict)
    """The tool call's input."""
    code: str = ""
    error: str | None = None
    """``ErrorName: message`` of a failed cell."""

    def typed(self) -> BaseModel | None:
        """The data as its function's result model (None: free-form, failed or malformed)."""
        model = X.RESULT_MODELS.get(self.function or "")
        if model is None or self.status != "ok" or not isinstance(self.data, dict):
            return None
        try:
            return model.model_validate(self.data)
        except ValidationError:
            return None


class LoggedHypothesis(_Data):
    """One ``hypothesis`` event (an id recurs when its status changes)."""

    seq: int
    hypothesis_id: str
    component: str
    statement: str = ""
    status: str
    evidence: list[int] = Field(default_factory=list)


class Claim(_Data):
    """A conclusion: the role of one component, its explanation and the evidence it cites."""

    seq: int | None = None
    """The ``conclusion`` event's seq; None for a conclusion not logged yet (the loop's check)."""
    component: str
    role: str
    explanation: str
    evidence: list[int] = Field(default_factory=list)
    inconclusive_reason: str | None = None
    """Set on the loop's own ``inconclusive`` conclusions (a budget, an error): not a planner claim."""


class RunRecord(_Data):
    """What grounding reads from a run's log."""

    kinds: dict[int, str] = Field(default_factory=dict)
    """Every event's seq → its kind."""
    cells: list[LoggedCell] = Field(default_factory=list)
    hypotheses: list[LoggedHypothesis] = Field(default_factory=list)
    conclusions: list[Claim] = Field(default_factory=list)
    """The latest conclusion of each component."""


# ---------------------------------------------------------------------------------------------- output


class NumberCheck(_Data):
    """One number written in an explanation."""

    text: str
    """As written (``+0.40``, ``35%``, ``6e-05``)."""
    start: int
    end: int
    """Its span in the explanation."""
    value: float
    """The value it stands for (``35%`` → 0.35)."""
    tolerance: float
    """Half a unit of its last printed digit (in ``value``'s units)."""
    signed: bool
    ratio: bool = False
    """Written as a ratio (``2.5x``, ``2.5×``, ``2.5 times``): it matches only ratios (attention on one role
    over another), and other numbers never match a ratio."""
    kind: Literal["claim", "threshold"] = "claim"
    quantity: str | None = None
    """What the text names it as (``ablation``, ``DLA``, ``head score``...; :func:`quantities`); None: anything."""
    unit: str | None = None
    """``gap`` / ``clean`` when followed by "of the gap" / "of the clean metric" (:func:`unit`); None: any."""
    grounded: bool = True
    source: str | None = None
    """Where it was found (``seq 12 effect_frac``), or the nearest value of the cited results when not."""


class CitationCheck(_Data):
    seq: int
    ok: bool
    problem: str | None = None
    concerns: list[str] = Field(default_factory=list)
    """Components the cited result is about."""


class ClaimCheck(_Data):
    """The grounding of one conclusion."""

    component: str
    role: str
    seq: int | None = None
    automatic: bool = False
    """The loop's own ``inconclusive`` conclusion: not checked, not counted."""
    citations: list[CitationCheck] = Field(default_factory=list)
    numbers: list[NumberCheck] = Field(default_factory=list)
    tested: bool | None = None
    """A supported hypothesis tested on held-out data backs the role (None: the role claims nothing)."""
    hypothesis: str | None = None
    """The id of that hypothesis."""
    problems: list[str] = Field(default_factory=list)
    """One sentence per problem: what is wrong and how to fix it."""

    @property
    def grounded(self) -> bool:
        return not self.problems

    @property
    def ungrounded_numbers(self) -> list[NumberCheck]:
        return [n for n in self.numbers if n.kind == "claim" and not n.grounded]


class GroundingReport(_Data):
    """The grounding of every conclusion of a run."""

    claims: list[ClaimCheck] = Field(default_factory=list)
    undecided: list[str] = Field(default_factory=list)
    """Hypothesis ids whose latest status is still ``proposed``."""

    def scores(self) -> dict[str, float | None]:
        """The per-run scores (see the module docstring); ``ground_rate`` is None without claims.

        >>> GroundingReport().scores()["ground_rate"] is None
        True
        """
        checked = [c for c in self.claims if not c.automatic]
        nums = [n for c in checked for n in c.numbers if n.kind == "claim"]
        return {
            "ground_rate": sum(c.grounded for c in checked) / len(checked) if checked else None,
            "ground_claims": float(len(checked)),
            "ground_numbers": float(len(nums)),
            "ground_ungrounded_numbers": float(sum(not n.grounded for n in nums)),
            "ground_bad_citations": float(sum(not x.ok for c in checked for x in c.citations)),
            "ground_untested": float(sum(c.tested is False for c in checked)),
            "ground_undecided": float(len(self.undecided)),
        }


# ---------------------------------------------------------------------------------------------- numbers

_NUMBER = re.compile(r"(?<![\w.])([+\-−]?)(\d+(?:\.\d+)?)(?:[eE]([+\-−]?\d+))?(%)?(?!\.\d)"
                     r"((?:x(?![A-Za-z])|×)|\s?times\b)?")
_THRESHOLD = re.compile(r"(>=|<=|≥|≤|<|>|\bat least|\bat most|\bthreshold(?: of)?|\bconfidence(?: of)?)\s*:?\s*$",
                        re.IGNORECASE)


def numbers_in(text: str) -> list[NumberCheck]:
    """The checked numbers of ``text`` (see the module docstring), not yet matched.

    >>> [(n.text, n.value, n.kind) for n in numbers_in("L0H1: DLA +0.40 of clean, 35% (>= 0.10), seed 1, 6e-05")]
    [('+0.40', 0.4, 'claim'), ('35%', 0.35, 'claim'), ('0.10', 0.1, 'threshold'), ('6e-05', 6e-05, 'claim')]
    """
    out = []
    for m in _NUMBER.finditer(text):
        sign, mant, exp, pct, ratio = m.group(1), m.group(2), m.group(3), m.group(4), m.group(5)
        if "." not in mant and exp is None and pct is None:
            continue  # a count, an offset, a seed
        decimals = len(mant.split(".")[1]) if "." in mant else 0
        e = (int(exp.replace("−", "-")) if exp else 0) - (2 if pct else 0)
        value = float(f"{'-' if sign in ('-', '−') else ''}{mant}e{e}")  # decimal parsing: 35% is 0.35 exactly
        kind: Literal["claim", "threshold"] = "threshold" if _THRESHOLD.search(text[:m.start()]) else "claim"
        end = m.end(4) if pct else (m.end(3) if exp else m.end(2))
        out.append(NumberCheck(text=text[m.start():end], start=m.start(), end=end, value=value,
                               tolerance=float(f"5e{e - decimals - 1}"), signed=bool(sign), kind=kind,
                               ratio=bool(ratio)))
    return out


def matches(n: NumberCheck, v: float) -> bool:
    """``v`` rounds to ``n`` at ``n``'s printed precision (magnitudes when ``n`` has no sign).

    >>> n = numbers_in("0.36")[0]
    >>> matches(n, 0.3612), matches(n, -0.3612), matches(n, 0.3651), matches(numbers_in("+0.36")[0], -0.36)
    (True, True, False, False)
    """
    if not math.isfinite(v):
        return False
    eps = 1e-9 * max(1.0, abs(n.value))
    if n.signed:
        return abs(v - n.value) <= n.tolerance + eps
    return abs(abs(v) - abs(n.value)) <= n.tolerance + eps


# ---------------------------------------------------------------------------------------------- results


def _components(key: str) -> list[str]:
    """The components a table key names: ``L0H1``, ``L0H0,L0H1`` (a pair), ``L1H1:q``; [] for other keys."""
    out = []
    for part in re.split(r"[,+]", key):
        try:
            out.append(str(Component.parse(part.split(":")[0].strip())))
        except ValueError:
            return []
    return out


def concerns(cell: LoggedCell) -> list[str]:
    """The components a cell's result is about (see the module docstring)."""
    r = cell.typed()
    if r is None:
        return [cell.component] if cell.component else []
    found: list[str] = []
    for name in ("components", "receivers"):
        found += list(getattr(r, name, None) or [])
    for name in ("sender", "head", "site"):
        v = getattr(r, name, None)
        if isinstance(v, str):
            found.append(v)
    for name in ("dla", "scores", "effects", "ablation_frac", "single", "patterns"):
        table = getattr(r, name, None)
        if isinstance(table, dict):
            found += [c for k in table for c in _components(k)]
    norm = []
    for c in found:
        try:
            norm.append(str(Component.parse(c)))
        except ValueError:
            continue
    return list(dict.fromkeys(norm))


def _walk(x: Any, allowed: set[str], path: str) -> Iterator[tuple[str, float]]:
    if isinstance(x, bool) or x is None:
        return
    if isinstance(x, int | float):
        yield path, float(x)
    elif isinstance(x, dict):
        for k, v in x.items():
            comps = _components(str(k))
            if comps and not allowed.intersection(comps):
                continue  # another component's entry of a component-keyed table
            yield from _walk(v, allowed, f"{path}.{k}" if path else str(k))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _walk(v, allowed, f"{path}[{i}]")


QUANTITIES: dict[type[BaseModel], str] = {
    X.AblationResult: "ablation", X.RedundancyResult: "ablation", X.PatchingResult: "patching",
    X.SweepResult: "patching", X.PathPatchingResult: "path patching", X.SteeringResult: "steering",
    X.AttentionResult: "attention", X.AttentionPatterns: "attention", X.DLAResult: "DLA",
    X.HeadProfileResult: "head score", X.ProbingResult: "probe",
}
"""Result model → the quantity its numbers are (what a number named "ablation ..." must come from). Finer:
a path (``path patching L1H1 k``), an ablation method (``ablation mean``), a head score (``head score
induction``), attention on a place (``attention IO``); the metric itself (``clean``, ``corrupt``, ``gap``, ``ablated``...) is ``metric``."""

_METRIC_FIELDS = {"clean", "corrupt", "gap", "ablated", "patched", "steered"}
_SCORE_FIELDS = {"copying": "copying", "prev_token": "previous token", "lookback": "look-back",
                 "induction": "induction", "induction_textbook": "induction", "duplicate_token": "duplicate token"}
_GAP_TABLES = {"effect_frac", "ablation_frac", "single", "pairs"}
_GAP_FIELDS = {"effect_frac", "joint", "sum_single"}

_QUANTITY = re.compile(
    r"(?P<path>path[- ]patch\w*|\bpaths?\b)"
    r"|(?P<dla>\bDLA\b|logit attribution|direct (?:logit )?(?:effect|attribution)|direct logit)"
    r"|(?P<s_lookback>look-?back(?:\s+scores?)?)|(?P<s_prev>previous[- ]token(?:\s+scores?)?)"
    r"|(?P<s_dup>duplicate[- ]token(?:\s+scores?)?)|(?P<s_ind>induction(?:\s+scores?)?)"
    r"|(?P<s_copy>copying(?:\s+scores?)?)|(?P<score>\bscores?\b)"
    r"|(?P<attention>attention|\battends?\b|attending)"
    r"|(?P<a_mean>mean[- ]ablat\w*)|(?P<a_zero>zero[- ]ablat\w*)|(?P<a_resample>resampl\w*[- ]ablat\w*)"
    r"|(?P<ablation>ablat\w*|knock\w* out)"
    r"|(?P<patching>patch\w*|sweep)"
    r"|(?P<steering>steer\w*)"
    r"|(?P<probe>\bprob(?:e|es|ing)\b|accuracy)"
    r"|(?P<metric>\bclean\b|\bcorrupt\b|\bgap\b|\bmetric\b|logit diff\w*)", re.IGNORECASE)
_GROUP = {"path": "path patching", "dla": "DLA", "s_lookback": "head score look-back",
          "s_prev": "head score previous token", "s_dup": "head score duplicate token",
          "s_ind": "head score induction", "s_copy": "head score copying", "score": "head score",
          "attention": "attention", "ablation": "ablation", "a_mean": "ablation mean", "a_zero": "ablation zero",
          "a_resample": "ablation resample", "patching": "patching", "steering": "steering",
          "probe": "probe", "metric": "metric"}
_OF = r"of (?:the )?(?:clean\s*[-−]\s*corrupt\s+)?"
_UNIT = re.compile(rf"^\s*(?:{_OF}(?:metric\s+)?(?P<gap>gap)\b|{_OF}(?P<clean>clean)\b)", re.IGNORECASE)
_QUALIFIER = re.compile(rf"\b{_OF}(?:clean(?: metric)?|gap|corrupt(?: metric)?)\b|\bas (?:a )?fractions? "
                        r"of the (?:clean )?gap\b", re.IGNORECASE)
""""of the gap", "of the clean metric": the unit of the number before, not a name of the number after."""
_SENTENCE = re.compile(r"[.!?](?:\s|$)")
_ROLE = re.compile(r"\b(?!DLA\b)([A-Z][A-Z0-9]*|previous|first|self)\b")
_OF_ITS = re.compile(r"\s*of (?:its|the|their) ([^,;.()]*)")
_ROLE_AFTER = re.compile(r"^\s*(?:of (?:its|the) attention\s+)?(?:on|to|at|for)\s+(?:the\s+)?"
                         r"(?!DLA\b)([A-Z][A-Z0-9]*|previous|first|self)\b")
"""A position an attention number can be about: a task role (``IO``, ``S2``, ``END``) or previous / first / self."""


def quantities(text: str, numbers: list[NumberCheck]) -> list[str | None]:
    """The quantity each number is named as: the last quantity word between the previous number and it
    (``mean-ablation effect +0.17`` → ``ablation mean``; words for the metric itself — ``logit difference``,
    ``clean``, ``gap`` — count only when no experiment is named there; ``"of the gap"`` after a number is
    its unit, not a name of the next); with none, the last experiment named for a number of the same
    sentence (``q +0.00, k +0.07`` after ``path patching``); else None (any quantity). A path-patching
    number right after a path's name (``L1H1:k +0.07``, ``L1H1's k input (+0.07``) is that path's; an
    attention number is that of the place named right after it (``0.36 on IO``) or last before it; a
    quantity named right after (``0.36 of its attention``) wins.

    >>> t = "ablation +0.17 and patching +0.55 of the gap; path patching: q +0.00, L1H1:k +0.07. DLA 0.4, then 0.2"
    >>> quantities(t, numbers_in(t))
    ['ablation', 'patching', 'path patching', 'path patching L1H1 k', 'DLA', 'DLA']
    >>> quantities("It is 0.5. Then 0.3", numbers_in("It is 0.5. Then 0.3"))
    [None, None]
    >>> t = "from END it puts 0.36 of its attention on IO, 0.002 on S1; look-back score 0.38, clean 9.3"
    >>> quantities(t, numbers_in(t))
    ['attention IO', 'attention S1', 'head score look-back', 'metric']
    """
    out: list[str | None] = []
    prev_end, prev_q = 0, None
    bounds = [m.end() for m in _NUMBER.finditer(text)]
    for n in numbers:
        start = max([b for b in bounds if b <= n.start] + [0] + [prev_end])
        window = _QUALIFIER.sub(" ", text[start:n.start])
        found = list(_QUANTITY.finditer(window))
        named = [m for m in found if m.lastgroup != "metric"]
        if _SENTENCE.search(text[prev_end:n.start]):
            prev_q = None
        q: str | None = _GROUP[named[-1].lastgroup or ""] if named else ("metric" if found else prev_q)
        of = _OF_ITS.match(text[n.end:])  # "0.36 of its attention on IO": named after the number
        named_after = [m for m in _QUANTITY.finditer(of.group(1)) if m.lastgroup != "metric"] if of else []
        if named_after:
            q = _GROUP[named_after[0].lastgroup or ""]
        path = path_named(window)
        after = _ROLE_AFTER.match(text[n.end:])
        role = ([after.group(1)] if after else _ROLE.findall(window)) if q == "attention" else []
        if path and q in (None, "path patching"):
            q = "path patching"
            out.append(f"path patching {path}")
        elif role:
            out.append(f"attention {role[-1]}")
        else:
            out.append(q)
        if q not in (None, "metric"):
            prev_q = q
        prev_end = n.end
    return out


def unit(text: str, n: NumberCheck) -> str | None:
    """``gap`` when the number is followed by "of the gap", ``clean`` by "of the clean metric", else None.

    >>> t = "DLA +0.40 of the clean metric, ablation 0.2 of the clean - corrupt gap, effect 3.1"
    >>> [unit(t, n) for n in numbers_in(t)]
    ['clean', 'gap', None]
    """
    m = _UNIT.match(text[n.end:])
    return None if m is None else ("gap" if m.group("gap") else "clean")


_PATH_NAME = re.compile(r"\b(L\d+H\d+|MLP\d+|ATTN\d+)(?::\s*|'s\s+)(q|k|v|resid)\b(?:[- ]input)?\W*$")


def path_named(window: str) -> str | None:
    """``"L1H1 k"`` when the text right before a number names one path (``L1H1:k``, ``L1H1's k input (``).

    >>> path_named("flows through L1H1's v input ("), path_named("; L1H0:q "), path_named("patching ")
    ('L1H1 v', 'L1H0 q', None)
    """
    m = _PATH_NAME.search(window)
    return f"{m.group(1)} {m.group(2)}" if m else None


class Value(NamedTuple):
    """One number a cited result gives."""

    name: str
    """Where it is in the result (``effect_frac``, ``scores.L0H1.prev_token``, ``dla.L1H1 / |clean|``)."""
    value: float
    quantity: str | None
    """What it is (:data:`QUANTITIES`); None for a free-form cell's numbers (they may be named anything)."""
    unit: str | None = None
    """``gap``: a fraction of the clean − corrupt gap; ``clean``: a fraction of the clean metric; None: raw."""
    metric: bool = False
    """A value of the task metric itself (``clean``, ``corrupt``, ``gap``, ``ablated``, ``patched``...)."""


def _classify(name: str, q: str | None) -> tuple[str | None, str | None, bool]:
    """(quantity, unit, is a metric value) of the field ``name`` of a result of quantity ``q``."""
    if q is None:
        return None, None, False
    parts = name.split(".")
    top, last = parts[0], parts[-1]
    if top in _METRIC_FIELDS and len(parts) == 1:
        return q, None, True
    if top == "ablation_frac":
        return "ablation zero", "gap", False
    if q == "head score" and last in _SCORE_FIELDS:
        return f"head score {_SCORE_FIELDS[last]}", None, False
    return q, ("gap" if top in _GAP_TABLES or last in _GAP_FIELDS else None), False


def values(cell: LoggedCell, allowed: set[str]) -> list[Value]:
    """Every number a cited cell gives about the ``allowed`` components, with derived ones (a DLA as a
    fraction of the clean metric and of the gap; attention per place, and as ratios between roles).
    Offsets (``induction_offset``, ``lookback_offset``) are positions, not values."""
    r = cell.typed()
    data = r.model_dump(mode="json", by_alias=True) if r is not None else cell.data
    q = QUANTITIES.get(type(r)) if r is not None else None
    if isinstance(r, X.PathPatchingResult):
        q = f"path patching {','.join(r.receivers)} {r.receiver_input}"
    elif isinstance(r, X.AblationResult | X.RedundancyResult):
        q = f"ablation {r.method}"
    out = [Value(name, v, *_classify(name, q)) for name, v in _walk(data, allowed, "")
           if r is None or not name.endswith("_offset")]
    if isinstance(r, X.DLAResult):
        for c, v in r.dla.items():
            if c in allowed and v is not None:
                if r.clean:
                    out.append(Value(f"dla.{c} / |clean|", v / abs(r.clean), q, "clean"))
                if r.gap:
                    out.append(Value(f"dla.{c} / gap", v / r.gap, q, "gap"))
    elif isinstance(r, X.AttentionResult):
        sm = r.summary
        places = {**sm.roles, "previous": sm.previous, "first": sm.first, "self": sm.self_}
        out = [x for x in out if not x.name.startswith("summary.")]
        out += [Value(f"attention {a}", v, f"attention {a}") for a, v in places.items() if v is not None]
        for a, va in sm.roles.items():
            for b, vb in sm.roles.items():
                if a != b and vb:
                    out.append(Value(f"attention {a} / {b}", va / vb, "ratio"))
    return out


# ---------------------------------------------------------------------------------------------- checks


def _named(text: str, component: str) -> set[str]:
    """Components the text names besides ``component``."""
    out = set()
    for m in re.finditer(r"\b(L\d+H\d+|MLP\d+|ATTN\d+|EMB|resid_(?:pre|post)\d+)\b", text):
        out.add(str(Component.parse(m.group(1))))
    out.discard(component)
    return out


def _held_out(cell: LoggedCell) -> bool:
    if cell.status != "ok":
        return False
    if cell.input.get("prompts") == "heldout":
        return True
    if cell.tool == "head_scores" and int(cell.input.get("seed") or 0) != 0:
        return True
    return bool(re.search(r"batches\[\s*['\"]heldout['\"]\s*\]", cell.code))


def _span(kinds: dict[int, str]) -> str:
    return f"{min(kinds)}–{max(kinds)}" if kinds else "none"


def _cite(seq: int, record: RunRecord, cells: dict[int, LoggedCell], claim: Claim, named: set[str]) -> CitationCheck:
    if claim.seq is not None and seq >= claim.seq and seq in record.kinds:
        return CitationCheck(seq=seq, ok=False, problem=f"evidence seq {seq} comes after the conclusion (seq "
                                                         f"{claim.seq}); cite results logged before it")
    if seq not in record.kinds:
        return CitationCheck(seq=seq, ok=False, problem=f"evidence seq {seq} does not exist (the log has seqs "
                                                         f"{_span(record.kinds)})")
    cell = cells.get(seq)
    if cell is None:
        kind = record.kinds[seq]
        return CitationCheck(seq=seq, ok=False, problem=f"evidence seq {seq} is not an experiment result (its event "
                             f"kind is {kind}); cite the seqs your tool results returned")
    if cell.status != "ok":
        why = f" ({cell.error})" if cell.error else ""
        return CitationCheck(seq=seq, ok=False, problem=f"evidence seq {seq} is a failed cell: {cell.tool} ended "
                             f"with status {cell.status}{why}; cite successful results only")
    about = concerns(cell)
    if claim.component not in about and not named.intersection(about):
        what = ", ".join(about) or "no component"
        return CitationCheck(seq=seq, ok=False, concerns=about, problem=(
            f"evidence seq {seq} ({cell.tool} of {what}) is not about {claim.component}; cite {claim.component}'s "
            f"results, or name {about[0] if about else 'the component'} in the explanation to say why it counts"))
    return CitationCheck(seq=seq, ok=True, concerns=about)


def _tested(claim: Claim, record: RunRecord, cells: dict[int, LoggedCell]) -> tuple[bool, str | None, str]:
    latest: dict[str, LoggedHypothesis] = {}
    for h in record.hypotheses:
        if h.component == claim.component and (claim.seq is None or h.seq < claim.seq):
            latest[h.hypothesis_id] = h
    supported = [h for h in latest.values() if h.status == "supported"]
    for h in supported:
        if any(q in cells and _held_out(cells[q]) for q in h.evidence):
            return True, h.hypothesis_id, ""
    if supported:
        return False, None, (f"hypothesis {supported[0].hypothesis_id} is marked supported but cites no held-out "
                             "result; test it on held-out data (prompts='heldout', or head_scores with a fresh "
                             "seed), record it supported citing that seq, or conclude 'unclear role'")
    return False, None, (f"no hypothesis about {claim.component} was tested on held-out data and marked supported "
                         "before this conclusion; record one, test it (prompts='heldout', or head_scores with a "
                         "fresh seed) and mark it supported citing that seq, or conclude 'unclear role'")


def label(q: str) -> str:
    """A quantity as words: ``ablation mean`` → ``mean-ablation``, ``head score induction`` → ``induction score``.

    >>> [label(q) for q in ("ablation mean", "head score induction", "attention IO", "path patching L1H1 k", "DLA")]
    ['mean-ablation', 'induction score', 'attention-on-IO', 'path-patching (L1H1 k)', 'DLA']
    """
    for prefix, fmt in (("ablation ", "{}-ablation"), ("head score ", "{} score"), ("attention ", "attention-on-{}"),
                        ("path patching ", "path-patching ({})")):
        if q.startswith(prefix):
            return fmt.format(q[len(prefix):])
    return q


def _same_quantity(q: str | None, vq: str | None, ratio: bool) -> bool:
    """Can a number named ``q`` (None: unnamed) be a value of quantity ``vq`` (None: free-form)?"""
    if (vq == "ratio") != ratio:
        return ratio and vq is None
    if ratio or q is None or vq is None:
        return True
    return vq == q or vq.startswith(q + " ")  # "path patching" covers each path, "head score" each score...


def check_claim(claim: Claim, record: RunRecord, by_name: bool = True) -> ClaimCheck:
    """The grounding of one conclusion against the run's record (see the module docstring).

    ``by_name=False`` drops the name and unit rules (any number of a cited result about the component
    grounds any number): the baseline the validation in ``docs/GROUNDING.md`` compares against.
    """
    out = ClaimCheck(component=claim.component, role=claim.role, seq=claim.seq,
                     automatic=claim.inconclusive_reason is not None)
    if out.automatic:
        return out
    cells = {c.seq: c for c in record.cells}
    named = _named(claim.explanation, claim.component)
    out.citations = [_cite(q, record, cells, claim, named) for q in dict.fromkeys(claim.evidence)]
    if not claim.evidence:
        out.problems.append("the conclusion cites no evidence; cite the seqs of the results it rests on")
    out.problems += [c.problem for c in out.citations if c.problem]
    allowed = {claim.component} | named
    pool: list[Value] = []
    for c in out.citations:
        if c.ok:
            pool += [v._replace(name=f"seq {c.seq} {v.name}") for v in values(cells[c.seq], allowed)]
    out.numbers = numbers_in(claim.explanation)
    bad = []
    names = quantities(claim.explanation, out.numbers) if by_name else [None] * len(out.numbers)
    for n, q in zip(out.numbers, names, strict=True):
        n.quantity, n.unit = q, unit(claim.explanation, n) if by_name else None
        if n.kind != "claim":
            continue
        if q and q.startswith("attention ") and not any(v.quantity == q for v in pool):
            q = n.quantity = "attention"  # a place the cited results do not break attention down by
        cands = [v for v in pool if not by_name or (
            (v.metric if q == "metric" else _same_quantity(q, v.quantity, n.ratio)) and (n.unit is None or v.unit == n.unit))]
        hit = next((v.name for v in cands if matches(n, v.value)), None)
        if hit is not None:
            n.source = hit
            continue
        n.grounded = False
        near = min(cands or pool, key=lambda v: abs(abs(v.value) - abs(n.value)), default=None)
        what = f" {label(q)}" if q and cands else ""
        n.source = None if near is None else f"nearest{what} value: {near.value:.4g} ({near.name})"
        bad.append(n)
    if bad:
        cited = ", ".join(str(c.seq) for c in out.citations if c.ok) or "none valid"
        for n in bad:
            what = f"{label(n.quantity)} number" if n.quantity else "number"
            out.problems.append(f"the number {n.text} matches no {what} of the cited results about "
                               f"{claim.component} (seqs {cited}){'; ' + n.source if n.source else ''}: quote the "
                               "result's number (rounded) under its name, or cite the result it comes from")
    if not claim.role.strip().lower().startswith(NON_CLAIM_ROLES):
        out.tested, out.hypothesis, why = _tested(claim, record, cells)
        if not out.tested:
            out.problems.append(why)
    return out


def undecided(record: RunRecord) -> list[str]:
    """Ids of hypotheses whose latest status is ``proposed``."""
    latest: dict[str, str] = {}
    for h in record.hypotheses:
        latest[h.hypothesis_id] = h.status
    return [h for h, s in latest.items() if s == "proposed"]


def ground_run(record: RunRecord) -> GroundingReport:
    """The grounding of every conclusion in ``record`` and the run's undecided hypotheses."""
    return GroundingReport(claims=[check_claim(c, record) for c in record.conclusions], undecided=undecided(record))


def marked(text: str, numbers: Iterable[NumberCheck]) -> list[tuple[str, bool]]:
    """``text`` cut into ``(piece, is_ungrounded_number)`` pieces, for reports that mark ungrounded numbers.

    >>> marked("DLA 0.40 and 0.99", [n.model_copy(update={"grounded": i == 0}) for i, n in
    ...                              enumerate(numbers_in("DLA 0.40 and 0.99"))])
    [('DLA 0.40 and ', False), ('0.99', True)]
    """
    out: list[tuple[str, bool]] = []
    pos = 0
    for n in sorted((n for n in numbers if n.kind == "claim" and not n.grounded), key=lambda n: n.start):
        if n.start > pos:
            out.append((text[pos:n.start], False))
        out.append((text[n.start:n.end], True))
        pos = n.end
    if pos < len(text):
        out.append((text[pos:], False))
    return out
