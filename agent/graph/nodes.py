"""The research graph's other nodes: frame, start_component, end_component, cluster, report.

**Clustering.** With the ``claude`` planner (and when replaying a run that did so), the concluded components
go to the LLM in one request (system :data:`agent.planners.prompts.CLUSTER_SYSTEM_PROMPT`, the tool
``group_components``; two or more components), logged like every LLM turn, so the ``replay`` planner feeds the
grouping back: free-text
roles worded differently ("copies the IO name into the logits", "Copies IO name into logits.") end up in
one cluster. A grouping that leaves out a component, names an unknown one or puts one in two groups goes
back to the model with the problems (once); if it is still unusable, or the planner is offline, or a
run-wide budget is already spent, components are grouped by their normalised role label
(:func:`role_key`: case, punctuation, articles and plurals ignored), and an ``error`` event says why when
the LLM grouping was given up.
"""

from __future__ import annotations

import re
from typing import Any

from langgraph.runtime import Runtime

from agent.actions import CLUSTER_TOOL, GroupComponents, cluster_spec
from agent.budget import BudgetUsage, Limit, exceeded
from agent.graph.step import Stop, ask, remind, take_turn, usage_of
from agent.llm.base import validate_tool_input
from agent.llm.text import BRIEF_CHARS, ERROR_CHARS, for_model
from agent.llm.types import tool_result
from agent.log import BudgetEvent, ClusterEvent, ConclusionEvent, ErrorEvent, RunFinishedEvent
from agent.planners.prompts import CLUSTER_SYSTEM_PROMPT, cluster_brief, component_brief
from agent.report import write_summary_report
from agent.state import ResearchState, RunContext

INCONCLUSIVE = "inconclusive"


def frame(state: ResearchState, runtime: Runtime[RunContext]) -> dict:
    """Question → task (only when the runner has not framed it already)."""
    if state.get("frame"):
        return {}
    from agent.framing import frame_question

    fr = frame_question(state["question"], task=state.get("task"), model=state.get("model"))
    return {"frame": fr.model_dump(), "task": fr.task, "model": fr.model}


def start_component(state: ResearchState, runtime: Runtime[RunContext]) -> dict:
    """Open the sub-loop of the next component: a fresh conversation with its brief."""
    ctx = runtime.context
    comps = state["components"]
    comp = comps[state["index"]]
    fr = state.get("frame") or {}
    loc = state.get("localisation") or {}
    concluded = {c: v["role"] for c, v in (state.get("conclusions") or {}).items()}
    brief = component_brief(comp, question=state["question"], task=state.get("task", ""),
                            description=fr.get("description", ""), roles=fr.get("roles", []),
                            metric=fr.get("metric", "logit_diff"), effect=loc.get("effect_frac", {}).get(comp),
                            others=[c for c in comps if c != comp], concluded=concluded,
                            redundant=(loc.get("redundant") or {}).get(comp))
    usage = BudgetUsage(**(state.get("usage") or {}))
    usage.steps = 0
    ctx.progress(phase="component", component=comp, index=state["index"], total=len(comps), components=list(comps))
    return {"messages": [{"role": "user", "content": for_model(brief, BRIEF_CHARS, ctx.text_roots())}],
            "concluded": False, "nudged": False, "limit_hit": None, "usage": usage.model_dump(),
            "log_seq": ctx.journal.position}


def _budget_limit(limit: str | None) -> Limit | None:
    """The budget :class:`Limit` that stopped the component, if a budget did (not an error or the planner)."""
    return Limit(limit) if limit in {str(x) for x in Limit} - {Limit.STEPS} else None


INCONCLUSIVE_REASONS: dict[str, str] = {Stop.FINISHED: "planner finished without a conclusion",
                                         Stop.NO_CONCLUSION: "planner stopped without a conclusion"}


def end_component(state: ResearchState, runtime: Runtime[RunContext]) -> dict:
    """Close the component: an ``inconclusive`` conclusion if it has none, and a ``budget`` event."""
    ctx = runtime.context
    comp = state["components"][state["index"]]
    usage = usage_of(state, ctx)
    limit = state.get("limit_hit")
    budget_limit = _budget_limit(limit)
    conclusions: dict[str, dict[str, Any]] = {}
    ctx.journal.emit(BudgetEvent(
        component=comp, steps=usage.steps, tool_calls=usage.tool_calls, input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens, usd=usage.usd, wall_s=usage.wall_s, limit_hit=budget_limit))
    if comp not in (state.get("conclusions") or {}):
        reason = "budget" if budget_limit else INCONCLUSIVE_REASONS.get(limit or "", "budget")
        expl = f"inconclusive: {reason}" + (f" ({budget_limit} limit reached)" if budget_limit else "")
        ev = ctx.journal.emit(ConclusionEvent(component=comp, role=INCONCLUSIVE, explanation=expl, confidence=0.0,
                                              inconclusive_reason=reason))
        conclusions[comp] = {"role": INCONCLUSIVE, "explanation": expl, "confidence": 0.0,
                             "inconclusive_reason": reason, "seq": ev.seq}
    ctx.progress(phase="component_done", component=comp, index=state["index"])
    return {"index": state["index"] + 1, "conclusions": conclusions, "usage": usage.model_dump(),
            "log_seq": ctx.journal.position}


_ROLE_STOPWORDS = frozenset({"a", "an", "the", "of", "to", "into", "in", "on", "at", "for", "from", "with", "by",
                             "its", "it", "their", "this", "that"})


def role_key(role: str) -> str:
    """A role label normalised for grouping: lower case, punctuation and articles / prepositions dropped, a
    plural ``s`` dropped (so paraphrases that differ only in those group together).

    >>> role_key("Copies IO name into logits.") == role_key("copies the IO name into the logits")
    True
    >>> role_key("Name movers"), role_key("S-inhibition"), role_key("negative name mover")
    ('name mover', 's inhibition', 'negative name mover')
    """
    words = [w for w in re.findall(r"[a-z0-9]+", role.lower()) if w not in _ROLE_STOPWORDS]
    return " ".join(w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words)


def label_groups(members: list[str], concl: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Components grouped by :func:`role_key` of their role; each group named by its first member's label."""
    groups: dict[str, list[str]] = {}
    label: dict[str, str] = {}
    for comp in members:
        key = role_key(concl[comp]["role"]) or concl[comp]["role"]
        groups.setdefault(key, []).append(comp)
        label.setdefault(key, concl[comp]["role"])
    out = []
    for key, comps in groups.items():
        expl = "; ".join(f"{m}: {concl[m]['explanation'].split('. ')[0].rstrip('.')}" for m in comps)
        out.append({"name": label[key], "components": comps,
                    "explanation": (f"{len(comps)} component(s) concluded as '{label[key]}'. " + expl)[:2000]})
    return out


CLUSTER_REMINDER = "Call group_components now, with every component in exactly one group."


def llm_groups(state: ResearchState, ctx: RunContext, members: list[str], concl: dict[str, dict[str, Any]],
               usage: BudgetUsage) -> list[dict[str, Any]] | None:
    """The LLM's grouping of ``members`` (two turns at most), or None to fall back to labels (logged why)."""
    roots = ctx.text_roots()
    brief = cluster_brief(state.get("question", ""), state.get("task", ""), {m: concl[m] for m in members})
    messages: list[dict[str, Any]] = [{"role": "user", "content": for_model(brief, BRIEF_CHARS, roots)}]
    problem = "it did not call group_components"
    for attempt in range(2):
        resp = ask(ctx, None, messages, system=CLUSTER_SYSTEM_PROMPT, specs=[cluster_spec()])
        if resp is None:
            return None  # the wall-clock budget ran out (logged)
        take_turn(usage, resp, messages)
        results = []
        for k, tu in enumerate(resp.tool_uses):
            plan, err = validate_tool_input(GroupComponents, tu.input, name=CLUSTER_TOOL) \
                if tu.name == CLUSTER_TOOL and k == 0 else (None, f"call {CLUSTER_TOOL} once, and nothing else")
            if plan is not None and resp.stop_reason != "max_tokens":
                issues = plan.problems(members)
                if not issues:
                    return [cl.model_dump() for cl in plan.clusters]
                err = "This grouping is not usable: " + "; ".join(issues) + ". Call group_components again."
            elif plan is not None:
                err = "Your turn was cut off at the output limit: call group_components again."
            problem = err
            results.append(tool_result(tu.id, for_model(err, ERROR_CHARS, roots), is_error=True))
        if attempt == 0:
            if results:
                messages.append({"role": "user", "content": results})
            else:
                remind(messages, CLUSTER_REMINDER)
    ctx.journal.emit(ErrorEvent(where="cluster", recoverable=True, message=for_model(
        f"the planner's grouping was not usable ({problem}); clustered by normalised role labels instead",
        ERROR_CHARS)))
    return None


def cluster(state: ResearchState, runtime: Runtime[RunContext]) -> dict:
    """Group the concluded components by function (the LLM, or normalised labels); name and explain each group."""
    ctx = runtime.context
    concl = state.get("conclusions") or {}
    members = [c for c in state.get("components") or [] if c in concl and concl[c]["role"] != INCONCLUSIVE]
    usage = usage_of(state, ctx)
    limit = exceeded(ctx.budget, usage)
    groups = None
    if len(members) > 1 and ctx.cluster_with_llm and not state.get("run_limit") and not (limit and limit.run_wide):
        groups = llm_groups(state, ctx, members, concl, usage)
    if groups is None:
        groups = label_groups(members, concl)
    for g in groups:
        ctx.journal.emit(ClusterEvent(name=g["name"], components=g["components"], explanation=g["explanation"]),
                         same=lambda a, b: a.name == b.name)
    ctx.progress(phase="cluster", clusters=len(groups))
    usage.wall_s = ctx.wall_s()
    return {"clusters": groups, "usage": usage.model_dump(), "log_seq": ctx.journal.position}


def report(state: ResearchState, runtime: Runtime[RunContext]) -> dict:
    """``run_finished``, then ``report.md`` (derived from the log only)."""
    ctx = runtime.context
    run_limit = state.get("run_limit")
    status = "error" if state.get("failure") else ("budget" if run_limit else "completed")
    concl = state.get("conclusions") or {}
    parts = [f"{c}: {concl[c]['role']}" for c in state.get("components") or [] if c in concl]
    summary = (f"Investigated {len(parts)} component(s) of {state.get('model')} on {state.get('task')}: "
               + ("; ".join(parts) or "none") + f". {len(state.get('clusters') or [])} cluster(s).")
    if run_limit:
        summary += f" Stopped early: the {run_limit} budget was reached."
    usage = usage_of(state, ctx)
    ctx.journal.emit(BudgetEvent(
        steps=sum(1 for e in ctx.log.events()[: ctx.journal.position] if e.kind == "llm_response"),
        tool_calls=usage.tool_calls, input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
        usd=usage.usd, wall_s=usage.wall_s, limit_hit=Limit(run_limit) if run_limit in (
            Limit.TOOL_CALLS, Limit.TOKENS, Limit.USD, Limit.WALL_S) else None))
    ctx.journal.emit(RunFinishedEvent(status=status, summary=summary))
    path = write_summary_report(ctx.log.run_dir)
    ctx.progress(phase="done", report=str(path), status=status)
    return {"status": status, "report_path": str(path), "log_seq": ctx.journal.position}
