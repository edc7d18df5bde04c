"""The research graph's other nodes: frame, start_component, end_component, cluster, report."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from agent.budget import BudgetUsage, Limit
from agent.graph.step import Stop, usage_of
from agent.log import BudgetEvent, ClusterEvent, ConclusionEvent, RunFinishedEvent
from agent.planners.prompts import component_brief
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
    return {"messages": [{"role": "user", "content": brief}], "concluded": False, "limit_hit": None,
            "usage": usage.model_dump(), "log_seq": ctx.journal.position}


def _budget_limit(limit: str | None) -> Limit | None:
    """The budget :class:`Limit` that stopped the component, if a budget did (not an error or the planner)."""
    return Limit(limit) if limit in {str(x) for x in Limit} - {Limit.STEPS} else None


INCONCLUSIVE_REASONS: dict[str, str] = {Stop.ERROR: "error", Stop.FINISHED: "planner finished without a conclusion",
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


def _norm_role(role: str) -> str:
    return " ".join(role.lower().replace("-", " ").replace("_", " ").split())


def cluster(state: ResearchState, runtime: Runtime[RunContext]) -> dict:
    """Group concluded components by role label; name and explain each group."""
    ctx = runtime.context
    groups: dict[str, list[str]] = {}
    label: dict[str, str] = {}
    concl = state.get("conclusions") or {}
    for comp in state.get("components") or []:
        c = concl.get(comp)
        if not c or c["role"] == INCONCLUSIVE:
            continue
        key = _norm_role(c["role"])
        groups.setdefault(key, []).append(comp)
        label.setdefault(key, c["role"])
    clusters = []
    for key, members in groups.items():
        expl = "; ".join(f"{m}: {concl[m]['explanation'].split('. ')[0].rstrip('.')}" for m in members)
        name = label[key]
        text = (f"{len(members)} component(s) concluded as '{name}'. " + expl)[:2000]
        ctx.journal.emit(ClusterEvent(name=name, components=members, explanation=text),
                         same=lambda a, b: a.name == b.name)
        clusters.append({"name": name, "components": members, "explanation": text})
    ctx.progress(phase="cluster", clusters=len(clusters))
    return {"clusters": clusters, "log_seq": ctx.journal.position}


def report(state: ResearchState, runtime: Runtime[RunContext]) -> dict:
    """``run_finished``, then ``report.md`` (derived from the log only)."""
    ctx = runtime.context
    run_limit = state.get("run_limit")
    status = "error" if (run_limit == Stop.ERROR or state.get("failure")) else ("budget" if run_limit else "completed")
    concl = state.get("conclusions") or {}
    parts = [f"{c}: {concl[c]['role']}" for c in state.get("components") or [] if c in concl]
    summary = (f"Investigated {len(parts)} component(s) of {state.get('model')} on {state.get('task')}: "
               + ("; ".join(parts) or "none") + f". {len(state.get('clusters') or [])} cluster(s).")
    if run_limit and run_limit != Stop.ERROR:
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
