"""The offline planner: a deterministic, systematic researcher behind the LLM backend interface.

:class:`OfflineBackend` implements ``complete(system=, messages=, tools=)`` like the Claude backend,
but computes its turn from the conversation (the component brief and the tool results so far), so it
goes through the very same loop, is logged the same way and replays. It is the honest one-shot
workflow baseline: the same battery and rules for every component, three turns each.

Turn 1 — battery (on the main prompts): ``ablate`` (mean, and zero: mean ablation is blind to a
feature that is constant across the task's prompts), ``patch`` (clean → corrupt),
``logit_attribution`` (direct effect onto answer − wrong); for heads also ``attention`` (where END
attends, in task roles) and ``head_scores`` (OV copying, previous-token, induction, duplicate-token).

Turn 2 — hypotheses by these rules (every rule that fires is proposed, the 3 with the strongest evidence;
none → "no task effect"), each with a prediction tested on HELD-OUT prompts (a fresh seed). A rule's
**strength** is how far its evidence clears its bars: the smallest value ÷ threshold over its firing
conditions (R2: min(DLA/0.20, IO attention/0.20, IO preference/2); R3–R5: score/threshold; R6:
min(S2 attention/0.30, effect/0.10); R1, R7, R8: the one value over its threshold); ties keep the table's
order. So a duplicate-token score at 1.5× its bar beats a look-back score that barely passes its own:

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
                               attention t → t−k, best k in 1..4; at k = 1
                               it is the previous-token score)
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
component is concluded with the strongest supported role (none supported → "unclear role", low
confidence). Every number in a statement or conclusion is named by the score it is (``look-back score``
vs ``previous-token score``, ``direct logit attribution ... of the clean metric``, ``... of the gap``) and
comes from a result the conclusion cites, so the conclusion passes the loop's grounding check
(:mod:`evals.grounding`). Confidence = 0.5 + 0.4 × (fraction of the role's checks passed with margin ≥ 1.5×).
Components are then clustered by role label, i.e. by evidence signature.

>>> b = OfflineBackend()
>>> brief = "COMPONENT: MLP0\\nTASK: toy-ioi\\nROLES: IO, S1, S2, END\\nMETRIC: logit_diff\\n\\nInvestigate MLP0."
>>> r = b.complete(system="", messages=[{"role": "user", "content": brief}], tools=[])
>>> [t.name for t in r.tool_uses]
['ablate', 'ablate', 'patch', 'logit_attribution']
"""

from __future__ import annotations

from typing import Any

from agent.llm.types import LLMResponse, TextBlock, ToolUseBlock, Usage
from agent.planners.prompts import parse_brief
from agent.planners.rules import (
    Hyp,
    check,
    concluded_roles,
    downstream,
    effect,
    observe,
    partner,
    propose,
    redundancy_note,
)
from tools.components import Component, Kind


class OfflineBackend:
    """The deterministic systematic researcher, as an LLM backend (no API, no tokens, no cost)."""

    name = "offline"
    model = "offline-systematic-v1"

    def complete(self, *, system: str, messages: list[dict[str, Any]], tools: list[Any],
                 max_tokens: int | None = None, timeout_s: float | None = None) -> LLMResponse:
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
                done = concluded_roles(brief.get("ALREADY CONCLUDED", ""))
                if (paths[top] >= 0.05 and inp in ("q", "k") and done.get(recv) == "name mover"
                        and {"IO", "S2"} <= set(roles) and Component.parse(comp).kind is Kind.HEAD):
                    role = "S-inhibition"
                    expl += (f" Its effect reaches the name mover {recv} through its {inp} input (path patching "
                             f"{paths[top]:+.2f} of the gap): it steers which name the mover attends to "
                             f"(S-inhibition by {inp}-composition).")
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

