"""The offline planner's rules: what the battery's typed results say (features), which hypotheses they
propose, and whether a hypothesis survives its held-out test. The rules table is in
:mod:`agent.planners.offline`; thresholds are the constants below.

The planner sees only the conversation: each ``tool_result`` carries ``{"seq", "data"}``, and ``data`` is
read back through the tool's result model (:func:`agent.actions.parse_result`), the same model the
kernel's :mod:`tools.experiments` function returned.

>>> obs = Obs(results={"logit_attribution:main": DLAResult(dla={"L1H0": 1.5}, clean=3.0, gap=6.0)})
>>> dla_frac(obs.results["logit_attribution:main"], "L1H0")
0.5
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from agent.actions import parse_result
from tools.components import Component, Kind
from tools.experiments import AttentionResult, DLAResult, HeadProfile, HeadProfileResult

DLA_T = 0.20
NEG_T = -0.10
ABL_T = 0.10
SCORE_T = {"induction": 0.15, "previous token": 0.20, "duplicate token": 0.40}
HELD_SCORE_T = {"induction": 0.10, "previous token": 0.15, "duplicate token": 0.30}
SCORE_NAME = {"induction": "induction score", "previous token": "look-back score (best of offsets 1-4)",
              "duplicate token": "duplicate-token score"}
"""What each head-score rule's number is (the previous-token role is scored by the look-back, ≥ prev_token)."""
ATTN_T = 0.20
S2_T = 0.30
REL_T = 0.005


@dataclass
class Hyp:
    """One rule that fired: its id, role, statement, prediction and the held-out test it needs."""

    rule: str
    role: str
    statement: str
    prediction: str
    tests: list[str]
    evidence: list[int] = field(default_factory=list)
    strength: float = 0.0
    """How far the evidence clears the rule's bars: the smallest value / threshold of its firing conditions."""


@dataclass
class Obs:
    """What the conversation so far tells about the component: typed tool results keyed by test name."""

    results: dict[str, BaseModel] = field(default_factory=dict)
    seqs: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    turns: int = 0
    concluded: bool = False


def _key(name: str, inp: dict[str, Any]) -> str:
    if name == "head_scores":
        return f"head_scores:{inp.get('seed', 0)}"
    if name == "path_patch":
        return f"path_patch:{(inp.get('receivers') or ['?'])[0]}:{inp.get('receiver_input', 'resid')}"
    if name == "ablate" and len(inp.get("components") or []) > 1:
        return f"ablate_joint:{inp.get('prompts', 'main')}"
    if name == "ablate" and inp.get("method", "mean") != "mean":
        return f"ablate_{inp.get('method')}:{inp.get('prompts', 'main')}"
    return f"{name}:{inp.get('prompts', 'main')}"


def _parse_result(content: Any) -> tuple[Any, int | None, str | None]:
    text = content if isinstance(content, str) else " ".join(
        c.get("text", "") for c in content if isinstance(c, dict))
    try:
        body = json.loads(text)
        if isinstance(body, dict):
            return body.get("data"), body.get("seq"), None
    except (json.JSONDecodeError, TypeError):
        pass
    m = re.match(r"seq (\d+)", text or "")
    return None, int(m.group(1)) if m else None, text


def observe(messages: list[dict[str, Any]]) -> Obs:
    """Collect the typed tool results of the conversation by test key (``ablate:main``, ``head_scores:1``...)."""
    obs = Obs()
    calls: dict[str, tuple[str, dict[str, Any]]] = {}
    for m in messages:
        content = m.get("content")
        if not isinstance(content, list):
            continue
        for blk in content:
            if not isinstance(blk, dict):
                continue
            if m["role"] == "assistant" and blk.get("type") == "tool_use":
                calls[blk["id"]] = (blk["name"], blk.get("input") or {})
            elif m["role"] == "user" and blk.get("type") == "tool_result" and blk.get("tool_use_id") in calls:
                name, inp = calls[blk["tool_use_id"]]
                data, seq, err = _parse_result(blk.get("content", ""))
                if name == "conclude_component" and not blk.get("is_error"):
                    obs.concluded = True
                key = _key(name, inp)
                if seq is not None:
                    obs.seqs[key] = seq
                typed = parse_result(name, data)
                if blk.get("is_error"):
                    obs.errors[key] = err or "error"
                elif typed is not None:
                    obs.results[key] = typed
    obs.turns = sum(1 for m in messages if m.get("role") == "assistant")
    return obs


# ---------------------------------------------------------------------------------------------- features


def dla_frac(r: BaseModel | None, comp: str) -> float | None:
    """Direct logit attribution of ``comp`` as a fraction of the clean metric."""
    return r.frac(comp) if isinstance(r, DLAResult) else None


def attn_frac(r: BaseModel | None, role: str) -> float | None:
    """Fraction of attention from END on ``role`` in an ``attention`` result."""
    if not isinstance(r, AttentionResult):
        return None
    return next((v for k, v in r.summary.roles.items() if k.lower() == role.lower()), None)


def io_pref(r: BaseModel | None) -> float | None:
    """Attention on IO over the largest attention on another name (S1, S2): how selectively a head reads IO."""
    io = attn_frac(r, "IO")
    if io is None:
        return None
    others = [v for v in (attn_frac(r, "S1"), attn_frac(r, "S2")) if v is not None]
    return io / max(max(others, default=0.0), 1e-3)


def _profile(r: BaseModel | None, comp: str) -> HeadProfile | None:
    if not isinstance(r, HeadProfileResult):
        return None
    return r.scores.get(comp) or (next(iter(r.scores.values())) if len(r.scores) == 1 else None)


def head_score(r: BaseModel | None, comp: str, which: str) -> float | None:
    """One of the head scores (``induction``, ``previous token`` (with look-back), ``duplicate token``, ``copying``)."""
    p = _profile(r, comp)
    return p.score(which) if p is not None else None  # type: ignore[arg-type]


def score_text(r: BaseModel | None, comp: str, which: str) -> str:
    """The score a head-score rule fired on, named by what it is (``look-back score 0.38, attention 3 tokens
    back`` is not a ``previous-token score``).

    >>> p = HeadProfile(copying=0, prev_token=0.03, induction=0.7, induction_offset=3, induction_textbook=0.1,
    ...                 duplicate_token=0.45, lookback=0.38, lookback_offset=3)
    >>> r = HeadProfileResult(scores={"L0H0": p})
    >>> [score_text(r, "L0H0", w) for w in ("previous token", "induction", "duplicate token")]
    ['look-back score 0.38 (attention 3 tokens back; previous-token score 0.03)', 'induction score 0.70 (best key offset t-L+3)', 'duplicate-token score 0.45']
    """
    p = _profile(r, comp)
    if p is None:
        return ""
    if which == "induction":
        off = f" (best key offset t-L+{p.induction_offset})" if p.induction_offset not in (None, 1) else ""
        return f"induction score {p.induction:.2f}{off}"
    if which == "duplicate token":
        return f"duplicate-token score {p.duplicate_token:.2f}"
    if p.lookback is not None and p.lookback_offset not in (None, 1) and p.lookback > (p.prev_token or 0):
        return (f"look-back score {p.lookback:.2f} (attention {p.lookback_offset} tokens back; previous-token "
                f"score {p.prev_token:.2f})")
    return f"previous-token score {p.score('previous token'):.2f}"


def _ratio(v: float | None, t: float) -> float:
    return 0.0 if v is None else v / t


def _max(*vals: float | None) -> float | None:
    got = [v for v in vals if v is not None]
    return max(got) if got else None


def effect(r: BaseModel | None) -> float | None:
    """``effect_frac`` of an ablation / patching / path-patching result."""
    v = getattr(r, "effect_frac", None)
    return v if isinstance(v, float) else None


# ---------------------------------------------------------------------------------------------- rules


DIRECT_ROLES = ("name mover", "mover", "negative mover", "output MLP", "induction")


def concluded_roles(text: str) -> dict[str, str]:
    """``ALREADY CONCLUDED: L1H1 = name mover; ...`` → ``{"L1H1": "name mover"}``."""
    out = {}
    for part in text.split(";"):
        name, _, role = part.partition(" = ")
        if role:
            out[name.strip()] = role.strip()
    return out


def downstream(comp: str, concluded: str) -> list[str]:
    """Already-concluded direct writers in later layers (from the brief's ``ALREADY CONCLUDED`` line), ≤ 2.

    >>> downstream("L0H1", "L1H1 = name mover; MLP0 = indirect MLP; L1H0 = mover; L2H0 = induction")
    ['L1H1', 'L1H0']
    """
    c = Component.parse(comp)
    out = []
    for part in concluded.split(";"):
        name, _, role = part.partition(" = ")
        try:
            r = Component.parse(name.strip())
        except ValueError:
            continue
        if role.strip() in DIRECT_ROLES and r.layer > c.layer and r.kind in (Kind.HEAD, Kind.MLP):
            out.append(str(r))
    return out[:2]


def partner(brief: dict[str, str]) -> str | None:
    """The first head named on the brief's ``REDUNDANT WITH:`` line (set by localisation's redundancy check).

    >>> partner({"REDUNDANT WITH": "L0H1 (L0H0+L0H1 ablated together remove 0.48 of the gap)"})
    'L0H1'
    >>> partner({}) is None
    True
    """
    m = re.match(r"\s*(L\d+H\d+)", brief.get("REDUNDANT WITH", ""))
    return m.group(1) if m else None


def redundancy_note(comp: str, other: str | None, obs: Obs) -> str:
    """One sentence on the joint ablation with the redundant partner (main prompts), or ''."""
    j, a = effect(obs.results.get("ablate_joint:main")), effect(obs.results.get("ablate:main"))
    if other is None or j is None:
        return ""
    alone = "n/a" if a is None else f"{a:+.2f}"
    alone = alone if a is None else f"{alone} of the gap"
    return (f"Redundant with {other}: mean-ablating both removes {j:+.2f} of the gap, {comp} alone {alone} "
            "(a backup pair: either alone suffices).")


def propose(comp: str, roles: list[str], obs: Obs, receivers: list[str] | None = None,
            other: str | None = None) -> list[Hyp]:
    """The rules of the module docstring, applied to the battery's results (main prompts).

    ``receivers``: later direct writers; an indirect contributor's path into each (q/k/v for heads)
    is measured by path patching, to say which input its effect flows through. ``other``: the redundant
    partner from localisation; the joint ablation with it (``ablate_joint``) counts as the component's
    effect for relevance and R8 (a head of a redundant pair does nothing alone).
    """
    c = Component.parse(comp)
    head = c.kind is Kind.HEAD
    r = obs.results
    dla = dla_frac(r.get("logit_attribution:main"), comp)
    abl = effect(r.get("ablate:main"))
    pat = effect(r.get("patch:main"))
    att = r.get("attention:main")
    sc = r.get("head_scores:0")
    ev = [obs.seqs[k] for k in ("ablate:main", "ablate_zero:main", "ablate_joint:main", "patch:main",
                                "logit_attribution:main", "attention:main", "head_scores:0") if k in obs.seqs]
    joint = effect(r.get("ablate_joint:main")) if other else None
    out: list[Hyp] = []
    f = lambda v: "n/a" if v is None else f"{v:+.2f}"  # noqa: E731
    effects = f"mean-ablation effect {f(abl)} of the gap, patching effect {f(pat)} of the gap"
    if dla is not None and dla <= NEG_T:
        out.append(Hyp("R1", "negative mover", f"{comp} writes against the answer (direct logit attribution "
                       f"{f(dla)} of the clean metric)",
                       "held-out DLA <= -0.05 x clean", ["logit_attribution:heldout"], strength=dla / NEG_T))
    io = attn_frac(att, "IO") if head and "IO" in roles else None
    if dla is not None and io is not None and dla >= DLA_T and io >= ATTN_T and (io_pref(att) or 0) >= 2.0:
        out.append(Hyp("R2", "name mover", f"{comp} attends from END to IO (attention {io:.2f}) and writes the IO "
                       f"name into the answer logit (direct logit attribution {f(dla)} of the clean metric)",
                       "held-out DLA >= 0.10 x clean, attention on IO >= 0.15 and >= 2x that on S1/S2",
                       ["logit_attribution:heldout", "attention:heldout"],
                       strength=min(dla / DLA_T, io / ATTN_T, _ratio(io_pref(att), 2.0))))
    zab = effect(r.get("ablate_zero:main"))
    rel = max((abs(v) for v in (abl, pat, dla, zab, joint) if v is not None), default=0.0)
    if head and rel >= REL_T:
        for rule, which in (("R3", "induction"), ("R4", "previous token"), ("R5", "duplicate token")):
            s = head_score(sc, comp, which)
            if s is not None and s >= SCORE_T[which]:
                out.append(Hyp(rule, which, f"{comp} is {'an' if which[0] in 'aeiou' else 'a'} {which} head "
                               f"({score_text(sc, comp, which)})",
                               f"{SCORE_NAME[which]} >= {HELD_SCORE_T[which]:.2f} on fresh random sequences (seed 1)",
                               ["head_scores:1"], strength=s / SCORE_T[which]))
    s2 = attn_frac(att, "S2") if head and "S2" in roles else None
    eff = max((v for v in (abl, pat) if v is not None), default=None)
    if (s2 is not None and eff is not None and s2 >= S2_T and eff >= ABL_T
            and (dla is None or abs(dla) < 0.1)):
        out.append(Hyp("R6", "S-inhibition", f"{comp} attends END->S2 (attention {s2:.2f}) and matters ({effects}) "
                       "without a direct effect: it signals the repeated name downstream",
                       "held-out max(ablation, patching) effect >= 0.05 of gap and attention on S2 >= 0.20",
                       ["ablate:heldout", "patch:heldout", "attention:heldout"],
                       strength=min(s2 / S2_T, eff / ABL_T)))
    if dla is not None and dla >= DLA_T and not any(h.rule == "R2" for h in out):
        role = "mover" if head else "output MLP"
        out.append(Hyp("R7", role, f"{comp} writes the answer directly (direct logit attribution {f(dla)} of the "
                       "clean metric)", "held-out DLA >= 0.10 x clean", ["logit_attribution:heldout"],
                       strength=dla / DLA_T))
    big = max((v for v in (abl, pat, joint) if v is not None), default=None)
    if big is not None and big >= ABL_T and (dla is None or abs(dla) < 0.1) and not out:
        role = "indirect contributor" if head else "indirect MLP"
        also = f"; joint mean-ablation effect with {other} {f(joint)} of the gap" if joint is not None else ""
        out.append(Hyp("R8", role, f"{comp} matters ({effects}{also}) only through later components (small "
                       "direct effect)",
                       "held-out max(ablation, patching" + (", joint ablation" if joint is not None else "")
                       + ") effect >= 0.05 of gap",
                       ["ablate:heldout", "patch:heldout"] + (["ablate_joint:heldout"] if joint is not None else [])
                       + [f"path_patch:{rc}:{i}" for rc in receivers or []
                          for i in (("q", "k", "v") if Component.parse(rc).kind is Kind.HEAD else ("resid",))],
                       strength=big / ABL_T))
    out = sorted(out, key=lambda h: -h.strength)[:3]  # strongest evidence first (stable: rule order on ties)
    if not out:
        out.append(Hyp("R0", "no task effect", f"{comp} has no effect on this task ({effects}, direct logit "
                       f"attribution {f(dla)} of the clean metric)",
                       "held-out max |ablation|, |patching| effect < 0.10 of gap", ["ablate:heldout", "patch:heldout"]))
    for h in out:
        h.evidence = ev
    return out


def check(h: Hyp, comp: str, obs: Obs) -> tuple[bool, float]:
    """Test ``h``'s prediction on the held-out results: (supported, fraction of checks with margin)."""
    r = obs.results
    checks: list[tuple[float | None, float, str]] = []  # (value, threshold, direction)
    if h.rule == "R1":
        checks.append((dla_frac(r.get("logit_attribution:heldout"), comp), -0.05, "le"))
    elif h.rule == "R2":
        checks.append((dla_frac(r.get("logit_attribution:heldout"), comp), 0.10, "ge"))
        checks.append((attn_frac(r.get("attention:heldout"), "IO"), 0.15, "ge"))
        checks.append((io_pref(r.get("attention:heldout")), 2.0, "ge"))
    elif h.rule in ("R3", "R4", "R5"):
        checks.append((head_score(r.get("head_scores:1"), comp, h.role), HELD_SCORE_T[h.role], "ge"))
    elif h.rule == "R6":
        checks.append((_max(effect(r.get("ablate:heldout")), effect(r.get("patch:heldout"))), 0.05, "ge"))
        checks.append((attn_frac(r.get("attention:heldout"), "S2"), 0.20, "ge"))
    elif h.rule == "R7":
        checks.append((dla_frac(r.get("logit_attribution:heldout"), comp), 0.10, "ge"))
    elif h.rule == "R8":
        checks.append((_max(effect(r.get("ablate:heldout")), effect(r.get("patch:heldout")),
                            effect(r.get("ablate_joint:heldout"))), 0.05, "ge"))
    else:
        a, p = effect(r.get("ablate:heldout")), effect(r.get("patch:heldout"))
        checks.append((None if a is None or p is None else max(abs(a), abs(p)), 0.10, "lt"))
    ok = True
    margin = 0
    for v, t, d in checks:
        if v is None:
            ok = False
            continue
        passed = v >= t if d == "ge" else (v <= t if d == "le" else v < t)
        ok = ok and passed
        if passed and (abs(v) >= 1.5 * abs(t) if d != "lt" else abs(v) <= abs(t) / 1.5):
            margin += 1
    return ok, margin / max(1, len(checks))

