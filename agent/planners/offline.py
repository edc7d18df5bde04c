"""The offline planner: a deterministic, systematic researcher behind the LLM backend interface.

:class:`OfflineBackend` implements ``complete(system=, messages=, tools=)`` like the Claude backend,
but computes its turn from the conversation (the component brief and the tool results so far), so it
goes through the very same loop, is logged the same way and replays. It is the honest one-shot
workflow baseline: the same battery and rules for every component, three turns each.

Turn 1 — battery (on the main prompts): ``ablate`` (mean, and zero: mean ablation is blind to a
feature that is constant across the task's prompts), ``patch`` (clean → corrupt),
``logit_attribution`` (direct effect onto answer − wrong); for heads also ``attention`` (where END
attends, in task roles) and ``head_scores`` (OV copying, previous-token, induction, duplicate-token).

Turn 2 — hypotheses by these rules, in priority order (every rule that fires is proposed, at most 3;
none → "no task effect"), each with a prediction tested on HELD-OUT prompts (a fresh seed):

=====  ======================  ==============================================  ===============================================
rule   role                    fires when (main prompts)                       prediction tested on held-out prompts
=====  ======================  ==============================================  ===============================================
R1     negative mover          DLA ≤ −0.10 × clean metric                      held-out DLA ≤ −0.05 × clean
R2     name mover              head; task has IO; DLA ≥ 0.20 × clean;          held-out DLA ≥ 0.10 × clean, attention on IO
                               attention END→IO ≥ 0.20 and ≥ 2× its attention  ≥ 0.15 and ≥ 2× on S1/S2
                               on the other names (S1, S2)
R3     induction               head; relevant; induction score ≥ 0.15 (best    score ≥ 0.10 on fresh random sequences (seed 1)
                               key offset; chance is ≈ 0.05)
R4     previous token          head; relevant; look-back score ≥ 0.20 (mean    score ≥ 0.15 on fresh random sequences (seed 1)
                               attention t → t−k, best k in 1..4)
R5     duplicate token         head; relevant; duplicate-token score ≥ 0.40    score ≥ 0.30 on fresh random sequences (seed 1)
R6     S-inhibition            head; task has S2; attention END→S2 ≥ 0.30,     held-out max(ablation, patching) effect ≥ 0.05
                               max(ablation, patching) effect ≥ 0.10 of the    of the gap and attention on S2 ≥ 0.20
                               gap, |DLA| < 0.10 × clean
R7     mover / direct writer   DLA ≥ 0.20 × clean (heads: "mover"; MLPs:       held-out DLA ≥ 0.10 × clean
                               "output MLP")
R8     indirect contributor    ablation or patching effect ≥ 0.10 of the gap,  held-out max(ablation, patching) effect ≥ 0.05
                               |DLA| < 0.10 × clean (MLPs: "indirect MLP");    (+ path patching into the later direct writers
                               label "indirect contributor: q-composition"     already concluded, q/k/v: says which input
                               etc. when one path carries ≥ 0.05 of the gap    carries the effect)
R0     no task effect          no rule fires                                   held-out max |ablation|, |patching| < 0.10
=====  ======================  ==============================================  ===============================================

R8 refinement: in a task with IO and S2 roles, a head whose largest path goes into the query or key of
an already-concluded name mover is concluded "S-inhibition": it steers which name the mover attends to.

(DLA = direct logit attribution onto answer − wrong; "clean" = the clean metric; "gap" = clean −
corrupt metric; scores as returned by ``tools.head_scores``; "relevant" = max(|mean-ablation|,
|zero-ablation|, |patching| effect as a fraction of the gap, |DLA| / clean, |joint ablation|) ≥ 0.005:
an attention pattern alone — e.g. a distractor head that attends to the previous token but whose
output nothing reads — is not a role. The bar is low on purpose: one head of a redundant pair has a
small effect alone (≈1% of the gap on planted-induction), while a head nothing reads has none.)

Redundant pairs: a head that localisation kept through its redundancy check (a pair whose joint
mean-ablation removes ≥ 10% of the gap and ≥ 2× the sum of the members' single effects; see
``agent.graph.localise``) comes with a ``REDUNDANT WITH: <partner> (why)`` brief line. Its battery
then also mean-ablates it together with the partner (``ablate_joint``); that joint effect counts for
"relevant" above and for R8 ("ablation or patching" reads "ablation, patching or joint ablation", and
R8's held-out test includes the joint ablation on held-out prompts). The role label stays the rule's
(e.g. "previous token", so both members of the pair cluster together); the conclusion's explanation
adds "Redundant with <partner>: mean-ablating both removes X of the gap, <component> alone Y".

Turn 3 — each hypothesis is marked ``supported`` or ``refuted`` by its held-out result, and the
component is concluded with the highest-priority supported role (none supported → "unclear role",
low confidence). Confidence = 0.5 + 0.4 × (fraction of the role's checks passed with margin ≥ 1.5×).
Components are then clustered by role label, i.e. by evidence signature.

>>> b = OfflineBackend()
>>> brief = "COMPONENT: MLP0\\nTASK: toy-ioi\\nROLES: IO, S1, S2, END\\nMETRIC: logit_diff\\n\\nInvestigate MLP0."
>>> r = b.complete(system="", messages=[{"role": "user", "content": brief}], tools=[])
>>> [t.name for t in r.tool_uses]
['ablate', 'ablate', 'patch', 'logit_attribution']
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from agent.llm.types import LLMResponse, TextBlock, ToolUseBlock, Usage
from agent.planners.prompts import parse_brief
from tools.components import Component, Kind

DLA_T = 0.20
NEG_T = -0.10
ABL_T = 0.10
SCORE_T = {"induction": 0.15, "previous token": 0.20, "duplicate token": 0.40}
HELD_SCORE_T = {"induction": 0.10, "previous token": 0.15, "duplicate token": 0.30}
ATTN_T = 0.20
S2_T = 0.30
REL_T = 0.005
SCORE_KEYS = {
    "induction": ("induction",),
    "previous token": ("previous", "prev", "lookback"),
    "duplicate token": ("duplicate", "dup"),
    "copying": ("copy",),
}


@dataclass
class Hyp:
    """One rule that fired: its id, role, statement, prediction and the held-out test it needs."""

    rule: str
    role: str
    statement: str
    prediction: str
    tests: list[str]
    evidence: list[int] = field(default_factory=list)


@dataclass
class Obs:
    """What the conversation so far tells about the component: tool results keyed by test name."""

    results: dict[str, Any] = field(default_factory=dict)
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
    """Collect the tool results of the conversation by test key (``ablate:main``, ``head_scores:1``...)."""
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
                if blk.get("is_error"):
                    obs.errors[key] = err or "error"
                elif data is not None:
                    obs.results[key] = data
    obs.turns = sum(1 for m in messages if m.get("role") == "assistant")
    return obs


# ---------------------------------------------------------------------------------------------- features


def _num(x: Any) -> float | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, int | float):
        return float(x)
    if isinstance(x, list) and x and all(isinstance(v, int | float) for v in x):
        return sum(x) / len(x)
    return None


def _find(d: Any, comp: str) -> Any:
    """The entry for ``comp`` in a dict keyed by component (or ``d`` itself)."""
    if isinstance(d, dict) and comp in d:
        return d[comp]
    if isinstance(d, dict) and len(d) == 1:
        return next(iter(d.values()))
    return d


def dla_frac(data: Any, comp: str) -> float | None:
    """Direct logit attribution of ``comp`` as a fraction of the clean metric."""
    if not isinstance(data, dict):
        return None
    v = _num(_find(data.get("dla"), comp))
    if v is None and isinstance(_find(data.get("dla"), comp), dict):
        inner = _find(data.get("dla"), comp)
        v = next((_num(inner[k]) for k in ("mean", "value", "dla", "logit_diff") if k in inner), None)
    clean = _num(data.get("clean"))
    if v is None or not clean:
        return None
    return v / abs(clean)


def attn_frac(data: Any, role: str) -> float | None:
    """Fraction of attention from END on ``role`` in an ``attention`` result."""
    if not isinstance(data, dict):
        return None
    s = data.get("summary", data)
    if isinstance(s, dict):
        for sub in ("fractions", "roles", "to", "attention"):
            if isinstance(s.get(sub), dict):
                s = s[sub]
                break
        for k, v in s.items():
            if k.lower() == role.lower():
                return _num(v)
    return None


def io_pref(data: Any) -> float | None:
    """Attention on IO over the largest attention on another name (S1, S2): how selectively a head reads IO."""
    io = attn_frac(data, "IO")
    if io is None:
        return None
    others = [v for v in (attn_frac(data, "S1"), attn_frac(data, "S2")) if v is not None]
    return io / max(max(others, default=0.0), 1e-3)


def head_score(data: Any, comp: str, which: str) -> float | None:
    """One of the head scores (``induction``, ``previous token``, ``duplicate token``, ``copying``)."""
    if not isinstance(data, dict):
        return None
    s = _find(data.get("scores", data), comp)
    if not isinstance(s, dict):
        return None
    vals = [_num(v) for k, v in s.items()
            if any(k.lower().startswith(p) for p in SCORE_KEYS[which])
            and "offset" not in k.lower() and "textbook" not in k.lower()]
    vals = [v for v in vals if v is not None]
    return max(vals) if vals else None


def _how(data: Any, comp: str, which: str) -> str:
    s = _find((data or {}).get("scores", data), comp) if isinstance(data, dict) else None
    if not isinstance(s, dict):
        return ""
    if which == "induction" and s.get("induction_offset") not in (None, 1):
        return f", best key offset t-L+{s['induction_offset']}"
    if which == "previous token" and s.get("lookback_offset") not in (None, 1) and \
            (s.get("lookback") or 0) > (s.get("prev_token") or 0):
        return f", attends {s['lookback_offset']} tokens back"
    return ""


def _max(*vals: float | None) -> float | None:
    got = [v for v in vals if v is not None]
    return max(got) if got else None


def effect(data: Any) -> float | None:
    return _num(data.get("effect_frac")) if isinstance(data, dict) else None


# ---------------------------------------------------------------------------------------------- rules


DIRECT_ROLES = ("name mover", "mover", "negative mover", "output MLP", "induction")


def _concluded(text: str) -> dict[str, str]:
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
    if dla is not None and dla <= NEG_T:
        out.append(Hyp("R1", "negative mover", f"{comp} writes against the answer (DLA {f(dla)} of clean)",
                       "held-out DLA <= -0.05 x clean", ["logit_attribution:heldout"]))
    io = attn_frac(att, "IO") if head and "IO" in roles else None
    if dla is not None and io is not None and dla >= DLA_T and io >= ATTN_T and (io_pref(att) or 0) >= 2.0:
        out.append(Hyp("R2", "name mover", f"{comp} attends from END to IO ({io:.2f}) and writes the IO name "
                       f"into the answer logit (DLA {f(dla)} of clean)",
                       "held-out DLA >= 0.10 x clean, attention on IO >= 0.15 and >= 2x that on S1/S2",
                       ["logit_attribution:heldout", "attention:heldout"]))
    zab = effect(r.get("ablate_zero:main"))
    rel = max((abs(v) for v in (abl, pat, dla, zab, joint) if v is not None), default=0.0)
    if head and rel >= REL_T:
        for rule, which in (("R3", "induction"), ("R4", "previous token"), ("R5", "duplicate token")):
            s = head_score(sc, comp, which)
            if s is not None and s >= SCORE_T[which]:
                how = _how(sc, comp, which)
                out.append(Hyp(rule, which, f"{comp} is {'an' if which[0] in 'aeiou' else 'a'} {which} head ({which} score {s:.2f}{how})",
                               f"{which} score >= {HELD_SCORE_T[which]:.2f} on fresh random sequences (seed 1)",
                               ["head_scores:1"]))
    s2 = attn_frac(att, "S2") if head and "S2" in roles else None
    eff = max((v for v in (abl, pat) if v is not None), default=None)
    if (s2 is not None and eff is not None and s2 >= S2_T and eff >= ABL_T
            and (dla is None or abs(dla) < 0.1)):
        out.append(Hyp("R6", "S-inhibition", f"{comp} attends END->S2 ({s2:.2f}) and matters (ablation "
                       f"{f(abl)}, patching {f(pat)} of gap) without a direct effect: it signals the repeated "
                       "name downstream",
                       "held-out max(ablation, patching) effect >= 0.05 of gap and attention on S2 >= 0.20",
                       ["ablate:heldout", "patch:heldout", "attention:heldout"]))
    if dla is not None and dla >= DLA_T and not any(h.rule == "R2" for h in out):
        role = "mover" if head else "output MLP"
        out.append(Hyp("R7", role, f"{comp} writes the answer directly (DLA {f(dla)} of clean)",
                       "held-out DLA >= 0.10 x clean", ["logit_attribution:heldout"]))
    big = max((v for v in (abl, pat, joint) if v is not None), default=None)
    if big is not None and big >= ABL_T and (dla is None or abs(dla) < 0.1) and not out:
        role = "indirect contributor" if head else "indirect MLP"
        also = f", jointly with {other} {f(joint)}" if joint is not None else ""
        out.append(Hyp("R8", role, f"{comp} matters (ablation {f(abl)}, patching {f(pat)} of gap{also}) only "
                       "through later components (small direct effect)",
                       "held-out max(ablation, patching" + (", joint ablation" if joint is not None else "")
                       + ") effect >= 0.05 of gap",
                       ["ablate:heldout", "patch:heldout"] + (["ablate_joint:heldout"] if joint is not None else [])
                       + [f"path_patch:{rc}:{i}" for rc in receivers or []
                          for i in (("q", "k", "v") if Component.parse(rc).kind is Kind.HEAD else ("resid",))]))
    out = out[:3]
    if not out:
        out.append(Hyp("R0", "no task effect", f"{comp} has no effect on this task (ablation {f(abl)} of gap, "
                       f"patching {f(pat)} of gap, DLA {f(dla)} of clean)",
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


# ---------------------------------------------------------------------------------------------- backend


class OfflineBackend:
    """The deterministic systematic researcher, as an LLM backend (no API, no tokens, no cost)."""

    name = "offline"
    model = "offline-systematic-v1"

    def complete(self, *, system: str, messages: list[dict[str, Any]], tools: list[Any],
                 max_tokens: int = 4096) -> LLMResponse:
        brief = parse_brief(messages[0]["content"] if isinstance(messages[0]["content"], str) else "")
        comp = brief.get("COMPONENT")
        if not comp:
            return self._text("I need a component brief (a COMPONENT: line) to plan experiments.")
        roles = [r.strip() for r in brief.get("ROLES", "").split(",") if r.strip()]
        obs = observe(messages)
        if obs.concluded:
            return self._text(f"{comp} is concluded.")
        turn = obs.turns
        other = partner(brief)
        if turn == 0:
            return self._tools(comp, turn, self._battery(comp, other))
        hyps = propose(comp, roles, obs, downstream(comp, brief.get("ALREADY CONCLUDED", "")), other)
        if turn == 1:
            calls: list[tuple[str, dict[str, Any]]] = []
            for i, h in enumerate(hyps, 1):
                calls.append(("record_hypothesis", {
                    "component": comp, "hypothesis_id": f"{comp}.{h.rule}", "statement": h.statement,
                    "status": "proposed", "prediction": h.prediction, "evidence": h.evidence}))
                del i
            tests: list[str] = []
            for h in hyps:
                tests += [t for t in h.tests if t not in tests]
            calls += [self._test_call(comp, t, other) for t in tests]
            return self._tools(comp, turn, calls)
        # turn >= 2: mark hypotheses, conclude
        calls = []
        best: tuple[Hyp, float] | None = None
        for h in hyps:
            ok, margin = check(h, comp, obs)
            ev = h.evidence + [obs.seqs[t] for t in h.tests if t in obs.seqs]
            calls.append(("record_hypothesis", {
                "component": comp, "hypothesis_id": f"{comp}.{h.rule}", "statement": h.statement,
                "status": "supported" if ok else "refuted", "prediction": h.prediction, "evidence": ev}))
            if ok and best is None:
                best = (h, margin)
        if best is None:
            role, conf = "unclear role", 0.3
            expl = (f"No hypothesis survived the held-out test ({'; '.join(h.statement for h in hyps)}); "
                    "the systematic battery found no clear role.")
            ev = sorted({s for h in hyps for s in h.evidence})
        else:
            h, margin = best
            role = h.role
            conf = round(0.5 + 0.4 * margin, 2)
            expl = (f"{h.statement}. Prediction on held-out prompts ({h.prediction}) held. "
                    f"Rule {h.rule} of the offline planner.")
            ev = h.evidence + [obs.seqs[t] for t in h.tests if t in obs.seqs]
            paths = {t: effect(obs.results.get(t)) for t in h.tests if t.startswith("path_patch:")}
            paths = {t: v for t, v in paths.items() if v is not None}
            if paths:
                top = max(paths, key=lambda t: paths[t])
                _, recv, inp = top.split(":")
                done = _concluded(brief.get("ALREADY CONCLUDED", ""))
                if (paths[top] >= 0.05 and inp in ("q", "k") and done.get(recv) == "name mover"
                        and {"IO", "S2"} <= set(roles) and Component.parse(comp).kind is Kind.HEAD):
                    role = "S-inhibition"
                    expl += (f" Its effect reaches the name mover {recv} through its {inp} input: it steers which "
                             "name the mover attends to (S-inhibition by " + f"{inp}-composition).")
                elif paths[top] >= 0.05:
                    role = f"{h.role}: {inp}-composition" if inp != "resid" else role
                    expl += (f" Path patching: its effect flows mostly through {recv}'s {inp} input "
                             f"({paths[top]:+.2f} of the gap; " + ", ".join(
                                 f"{t.split(':', 1)[1]} {v:+.2f}" for t, v in paths.items()) + ").")
                else:
                    expl += f" Path patching into {', '.join(sorted({t.split(':')[1] for t in paths}))} shows " \
                            "no single input carrying its effect (all < 0.05 of the gap)."
        note = redundancy_note(comp, other, obs)  # its joint-ablation seq is already in the evidence
        if note:
            expl += " " + note
        calls.append(("conclude_component", {"component": comp, "role": role, "explanation": expl,
                                             "confidence": conf, "evidence": ev}))
        return self._tools(comp, turn, calls)

    # helpers ---------------------------------------------------------------------------------------

    @staticmethod
    def _battery(comp: str, other: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        calls: list[tuple[str, dict[str, Any]]] = [
            ("ablate", {"components": [comp], "method": "mean", "prompts": "main"}),
            ("ablate", {"components": [comp], "method": "zero", "prompts": "main"}),
            ("patch", {"components": [comp], "direction": "clean_to_corrupt", "prompts": "main"}),
            ("logit_attribution", {"components": [comp], "prompts": "main"}),
        ]
        if other:
            calls.insert(2, ("ablate", {"components": [comp, other], "method": "mean", "prompts": "main"}))
        if Component.parse(comp).kind is Kind.HEAD:
            calls += [("attention", {"head": comp, "prompts": "main"}),
                      ("head_scores", {"heads": [comp], "seed": 0})]
        return calls

    @staticmethod
    def _test_call(comp: str, test: str, other: str | None = None) -> tuple[str, dict[str, Any]]:
        name, _, arg = test.partition(":")
        if name == "ablate_joint":
            return "ablate", {"components": [comp, other], "method": "mean", "prompts": arg}
        if name == "head_scores":
            return name, {"heads": [comp], "seed": int(arg)}
        if name == "ablate":
            return name, {"components": [comp], "method": "mean", "prompts": arg}
        if name == "attention":
            return name, {"head": comp, "prompts": arg}
        if name == "path_patch":
            recv, _, inp = arg.partition(":")
            return name, {"sender": comp, "receivers": [recv], "receiver_input": inp}
        return name, {"components": [comp], "prompts": arg}

    def _tools(self, comp: str, turn: int, calls: list[tuple[str, dict[str, Any]]]) -> LLMResponse:
        blocks: list[Any] = [TextBlock(text=f"[offline planner] {comp}, turn {turn + 1}: "
                                       + ", ".join(n for n, _ in calls))]
        blocks += [ToolUseBlock(id=f"off-{comp}-{turn}-{i}", name=n, input=inp) for i, (n, inp) in enumerate(calls)]
        return LLMResponse(content=blocks, stop_reason="tool_use", usage=Usage(), cost_usd=0.0, model=self.model)

    def _text(self, text: str) -> LLMResponse:
        return LLMResponse(content=[TextBlock(text=text)], stop_reason="end_turn", usage=Usage(), cost_usd=0.0,
                           model=self.model)
