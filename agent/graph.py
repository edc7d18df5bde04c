"""The research loop as a LangGraph ``StateGraph``.

::

    START → frame → localise ─┬─→ start_component → step ⟲ → end_component ─┬─→ start_component ...
                              └───────────────(no components)───────────────┴─→ cluster → report → END

* **frame**: the question as a task (see :mod:`agent.framing`); done before the run starts by
  :mod:`agent.run`, so this node only fills it in when the graph is driven directly.
* **localise**: with ``--circuit`` the given components; otherwise an exact patching sweep over every
  head and MLP plus a zero-ablation of each (one logged code cell), and the components whose larger
  |effect| ≥ ``threshold`` (default 10%) of the clean − corrupt metric gap, largest first, at most
  ``max_components`` (default 8), ordered by layer from the last (then by |effect|). (Patching and mean ablation cannot see a feature that is the same
  on every prompt, e.g. a duplicate-token flag at a fixed position; zero ablation can.) When none
  passes, the 3 largest are kept (logged as an ``error`` event saying so). Then a **redundancy check**
  (a second logged cell, ``redundancy_check``): a head of a redundant pair does nothing alone, so each
  layer's heads not yet kept are mean-ablated together; where that joint effect is ≥ ``threshold`` and
  ≥ 2× the sum of the members' |single| effects, every pair inside is ablated (batched), and the members
  of pairs passing the same two tests are kept too (within ``max_components``), their partner and the
  numbers going into the component's brief (``REDUNDANT WITH:``) and the cell's result saying why.
* **step**: one planner turn for the current component: the system prompt, the conversation and the
  tool specs go to ``backend.complete``; each ``tool_use`` is validated (a malformed input goes back as
  a ``tool_result`` with ``is_error``, never a crash), executed (experiments as code cells in the
  sandbox) and logged (``tool_call`` + ``execution_result`` / ``hypothesis`` / ``conclusion``). The loop
  repeats until the component is concluded, the planner stops, or a budget limit is reached.
* **end_component**: a component without a conclusion gets one: ``inconclusive`` with the reason
  (``budget``, ``error``, ``no conclusion``); plus a ``budget`` event with the counters.
* **cluster**: components grouped by role label (the offline planner's labels come from evidence
  signatures); each cluster is named and explained.
* **report**: ``run_finished``, then ``report.md`` in the run dir, derived from the log only.

Nodes are small functions ``(state, runtime) -> partial state``; the backend, sandbox and log come in
through :class:`agent.state.RunContext` (LangGraph runtime context), never globals. Every event goes
through the :class:`agent.state.Journal`, so a node re-run after a kill re-uses what it had logged.

>>> g = build_graph()
>>> sorted(n for n in g.get_graph().nodes if not n.startswith("__"))
['cluster', 'end_component', 'frame', 'localise', 'report', 'start_component', 'step']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import ValidationError

from agent.actions import EXPERIMENT_TOOLS, TOOLS, AttributionSweep, RedundancyCheck, result_text
from agent.budget import BudgetUsage, exceeded, is_run_wide
from agent.llm.types import LLMResponse, tool_result
from agent.log import (
    BudgetEvent,
    ClusterEvent,
    ConclusionEvent,
    ErrorEvent,
    ExecutionResultEvent,
    HypothesisEvent,
    LLMRequestEvent,
    LLMResponseEvent,
    RunFinishedEvent,
    ToolCallEvent,
    sha256_text,
)
from agent.planners.prompts import SYSTEM_PROMPT, component_brief
from agent.state import ResearchState, RunContext
from tools.components import Component
from tools.errors import InterpAgentError

INCONCLUSIVE = "inconclusive"
NUDGE = ("You ended your turn without concluding. Call conclude_component for this component now (use role "
         "'unclear role' with a low confidence if the evidence is not enough), or run more experiments.")


# ---------------------------------------------------------------------------------------------- helpers


def _ctx(runtime: Runtime[RunContext]) -> RunContext:
    return runtime.context


def _usage(state: ResearchState, ctx: RunContext) -> BudgetUsage:
    u = BudgetUsage(**(state.get("usage") or {}))
    u.wall_s = ctx.wall_s()
    return u


def _rel_outputs(ctx: RunContext, outputs: list[Any]) -> list[str]:
    out = []
    for p in outputs or []:
        path = Path(str(p))
        try:
            out.append(str(path.resolve().relative_to(ctx.log.run_dir.resolve())) if path.is_absolute() else str(p))
        except ValueError:
            out.append(str(p))
    return out


def execute_cell(ctx: RunContext, call_id: str, code: str, component: str | None) -> ExecutionResultEvent:
    """Run ``code`` in the sandbox (or take its logged result when resuming) and log the result."""
    pending = ctx.journal.peek("execution_result")
    if pending is not None and pending.call_id == call_id:
        return ctx.journal.emit(pending)
    try:
        res = ctx.sandbox().execute(code, timeout=ctx.cell_timeout_s)
        raw = res.model_dump() if hasattr(res, "model_dump") else dict(vars(res))
        outs = [o.get("path") if isinstance(o, dict) else o for o in raw.get("outputs") or []]
        raw["outputs"] = _rel_outputs(ctx, [o for o in outs if o])
        tb = raw.get("traceback")
        if isinstance(tb, list):
            raw["traceback"] = "\n".join(map(str, tb)) or None
    except InterpAgentError as e:
        raw = {"status": "error", "error_name": type(e).__name__, "error_value": str(e)}
    except Exception as e:  # a sandbox failure of another family (SandboxError...) is data, not a crash
        raw = {"status": "died" if "died" in str(e).lower() else "error", "error_name": type(e).__name__,
               "error_value": str(e)}
    ev = ExecutionResultEvent.from_result(call_id, code, raw, component=component)
    return ctx.journal.emit(ev, same=lambda a, b: a.call_id == b.call_id)


def _tool_result_payload(ev: ExecutionResultEvent) -> tuple[str, bool]:
    if ev.status == "ok":
        body: dict[str, Any] = {"seq": ev.seq, "data": ev.data}
        if ev.data is None:
            body["result"] = ev.result
            if ev.stdout:
                body["stdout"] = ev.stdout[-2000:]
        return result_text(body), False
    err = f"seq {ev.seq}: cell {ev.status}: {ev.error_name or ''}: {ev.error_value or ''}".strip()
    if ev.traceback:
        err += "\n" + ev.traceback[-1500:]
    return err, True


# ---------------------------------------------------------------------------------------------- nodes


def frame(state: ResearchState, runtime: Runtime[RunContext]) -> dict:
    """Question → task (only when the runner has not framed it already)."""
    if state.get("frame"):
        return {}
    from agent.framing import frame_question

    fr = frame_question(state["question"], task=state.get("task"), model=state.get("model"))
    return {"frame": fr.model_dump(), "task": fr.task, "model": fr.model}


def localise(state: ResearchState, runtime: Runtime[RunContext]) -> dict:
    """The given circuit, or the components above the threshold in an exact patching sweep."""
    ctx = _ctx(runtime)
    base = {"index": 0, "usage": BudgetUsage().model_dump(), "conclusions": {}, "clusters": []}
    if state.get("circuit"):
        return {**base, "components": list(state["circuit"]), "log_seq": ctx.journal.position}
    tool = AttributionSweep(kind="all", method="exact", top_k=500, zero_ablation=True)
    call_id = "localise-sweep"
    ctx.progress(phase="localise")
    ctx.journal.emit(ToolCallEvent(call_id=call_id, name="attribution_sweep", input=tool.model_dump(mode="json")))
    ev = execute_cell(ctx, call_id, tool.to_code(), None)
    if ev.status != "ok" or not isinstance(ev.data, dict) or not ev.data.get("effect_frac"):
        ctx.journal.emit(ErrorEvent(where="localise", recoverable=False, message=(
            f"the localisation sweep failed ({ev.status}: {ev.error_name}: {ev.error_value}); "
            "pass the components with --circuit to skip it")))
        return {**base, "components": [], "failure": "localisation failed", "log_seq": ctx.journal.position}
    fracs = {k: float(v) for k, v in ev.data["effect_frac"].items() if v is not None}
    for k, v in (ev.data.get("ablation_frac") or {}).items():  # zero ablation sees constant features
        if v is not None and abs(float(v)) > abs(fracs.get(k, 0.0)):
            fracs[k] = float(v)
    ranked = sorted(fracs, key=lambda k: -abs(fracs[k]))
    keep = [c for c in ranked if abs(fracs[c]) >= ctx.threshold][: ctx.max_components]
    if not keep:
        keep = ranked[:3]
        ctx.journal.emit(ErrorEvent(where="localise", recoverable=True, message=(
            f"no component reaches |effect| >= {ctx.threshold:.0%} of the gap; investigating the 3 largest "
            f"({', '.join(keep)}); pass --circuit to choose")))
    redundant = _redundancy(ctx, keep)
    added = [c for c in sorted(redundant, key=lambda c: (-redundant[c]["joint"], c)) if c not in keep]
    room = max(0, ctx.max_components - len(keep))
    if len(added) > room:
        ctx.journal.emit(ErrorEvent(where="localise", recoverable=True, message=(
            f"redundant heads {', '.join(added[room:])} left out: max_components ({ctx.max_components}) reached; "
            "raise --max-components to investigate them")))
    keep += added[:room]
    redundant = {c: v for c, v in redundant.items() if c in keep}
    # work backwards from the logits: later layers first, so a component's downstream readers are
    # concluded before it is investigated (the offline planner path-patches into them)
    keep.sort(key=lambda c: (-Component.parse(c).layer, -abs(fracs.get(c, 0.0))))
    return {**base, "components": keep, "localisation": {"effect_frac": fracs, "seq": ev.seq, "redundant": redundant},
            "log_seq": ctx.journal.position}


def _redundancy(ctx: RunContext, keep: list[str]) -> dict[str, dict[str, Any]]:
    """The redundancy check after the single-component sweep (one logged cell, ``redundancy_check``).

    A head of a redundant pair has no effect alone, so the sweep misses it. Each layer's heads that were
    not kept are mean-ablated together; a group whose joint effect is ≥ the threshold and ≥ 2× the sum of
    its members' |single| effects has every pair inside tested, and the members of pairs passing the
    same two tests are returned: ``{head: {"partners", "joint", "why"}}`` (the why is in the logged cell's
    result). A failed cell is logged as a recoverable error and changes nothing.
    """
    tool = RedundancyCheck(exclude=keep, threshold=ctx.threshold)
    call_id = "localise-redundancy"
    ctx.journal.emit(ToolCallEvent(call_id=call_id, name="redundancy_check", input=tool.model_dump(mode="json")))
    ev = execute_cell(ctx, call_id, tool.to_code(), None)
    kept = ev.data.get("kept") if ev.status == "ok" and isinstance(ev.data, dict) else None
    if not isinstance(kept, dict):
        ctx.journal.emit(ErrorEvent(where="localise", recoverable=True, message=(
            f"the redundancy check failed ({ev.status}: {ev.error_name}: {ev.error_value}); going on with the "
            "components the sweep kept")))
        return {}
    return {str(c): {"partners": list(v.get("partners") or []), "joint": float(v.get("joint") or 0.0),
                     "why": str(v.get("why") or "")} for c, v in kept.items() if isinstance(v, dict)}


def start_component(state: ResearchState, runtime: Runtime[RunContext]) -> dict:
    """Open the sub-loop of the next component: a fresh conversation with its brief."""
    ctx = _ctx(runtime)
    comps = state["components"]
    comp = comps[state["index"]]
    fr = state.get("frame") or {}
    effect = (state.get("localisation") or {}).get("effect_frac", {}).get(comp)
    redundant = ((state.get("localisation") or {}).get("redundant") or {}).get(comp)
    concluded = {c: v["role"] for c, v in (state.get("conclusions") or {}).items()}
    brief = component_brief(comp, question=state["question"], task=state.get("task", ""),
                            description=fr.get("description", ""), roles=fr.get("roles", []),
                            metric=fr.get("metric", "logit_diff"), effect=effect,
                            others=[c for c in comps if c != comp], concluded=concluded, redundant=redundant)
    usage = BudgetUsage(**(state.get("usage") or {}))
    usage.steps = 0
    ctx.progress(phase="component", component=comp, index=state["index"], total=len(comps), components=list(comps))
    return {"messages": [{"role": "user", "content": brief}], "concluded": False, "limit_hit": None,
            "usage": usage.model_dump(), "log_seq": ctx.journal.position}


def _validate(name: str, raw: dict[str, Any]) -> tuple[Any | None, str | None]:
    model = TOOLS.get(name)
    if model is None:
        return None, f"unknown tool {name!r}; use one of: {', '.join(TOOLS)}"
    try:
        return model.model_validate(raw), None
    except ValidationError as e:
        msgs = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'input'}: {err['msg']}" for err in e.errors())
        return None, f"invalid input for {name}: {msgs}. Fix the arguments and call {name} again."


def _valid_evidence(ctx: RunContext, refs: list[int]) -> list[int]:
    pos = ctx.journal.position
    return [r for r in refs if 0 <= r < pos]


def _next_hypothesis_id(ctx: RunContext, component: str) -> str:
    n = sum(1 for e in ctx.log.events()[: ctx.journal.position]
            if e.kind == "hypothesis" and e.component == component and e.status == "proposed")
    return f"{component}.h{n + 1}"


def step(state: ResearchState, runtime: Runtime[RunContext]) -> dict:
    """One planner turn for the current component (LLM call, then every tool call it asked for)."""
    ctx = _ctx(runtime)
    comp = state["components"][state["index"]]
    usage = _usage(state, ctx)
    if state.get("run_limit"):
        return {"limit_hit": state["run_limit"], "usage": usage.model_dump(), "log_seq": ctx.journal.position}
    limit = exceeded(ctx.budget, usage)
    if limit is not None:
        return {"limit_hit": limit, "run_limit": limit if is_run_wide(limit) else None,
                "usage": usage.model_dump(), "log_seq": ctx.journal.position}

    messages = list(state["messages"])
    backend = ctx.backend
    specs = ctx.tool_specs
    ctx.journal.emit(LLMRequestEvent(
        backend=backend.name, model=backend.model, system_sha256=sha256_text(ctx.system_prompt or SYSTEM_PROMPT),
        n_messages=len(messages), messages=messages[-1:], tools=[s.name for s in specs], component=comp))
    pending = ctx.journal.peek("llm_response")
    if pending is not None:
        resp = LLMResponse(content=pending.content, stop_reason=pending.stop_reason, usage=pending.usage,
                           cost_usd=pending.cost_usd, model=pending.model, latency_s=pending.latency_s,
                           attempts=pending.attempts)
        ctx.journal.emit(pending)
    else:
        try:
            resp = backend.complete(system=ctx.system_prompt or SYSTEM_PROMPT, messages=messages, tools=specs)
        except InterpAgentError as e:
            ctx.journal.emit(ErrorEvent(where=f"llm.{backend.name}", message=str(e), recoverable=False,
                                        error_type=type(e).__name__, component=comp))
            return {"limit_hit": "error", "run_limit": "error", "usage": usage.model_dump(),
                    "log_seq": ctx.journal.position}
        ctx.journal.emit(LLMResponseEvent(
            backend=backend.name, model=resp.model or backend.model, content=resp.content,
            stop_reason=resp.stop_reason, usage=resp.usage, cost_usd=resp.cost_usd, latency_s=resp.latency_s,
            attempts=resp.attempts, component=comp))
    usage.steps += 1
    usage.input_tokens += resp.usage.total_input_tokens
    usage.output_tokens += resp.usage.output_tokens
    usage.usd += resp.cost_usd or 0.0
    messages.append(resp.assistant_message())

    results: list[dict[str, Any]] = []
    concluded = False
    finished = False
    conclusions: dict[str, dict[str, Any]] = {}
    hyps: list[str] = []
    for tu in resp.tool_uses:
        usage.tool_calls += 1
        ctx.journal.emit(ToolCallEvent(call_id=tu.id, name=tu.name, input=tu.input, component=comp),
                         same=lambda a, b: a.call_id == b.call_id)
        tool, err = _validate(tu.name, tu.input)
        if tool is None:
            ctx.journal.emit(ErrorEvent(where=f"tool.{tu.name}", message=err, recoverable=True, component=comp))
            results.append(tool_result(tu.id, err, is_error=True))
            continue
        if tu.name in EXPERIMENT_TOOLS:
            ev = execute_cell(ctx, tu.id, tool.to_code(), comp)
            text, is_err = _tool_result_payload(ev)
            results.append(tool_result(tu.id, text, is_error=is_err))
        elif tu.name == "record_hypothesis":
            hid = tool.hypothesis_id or _next_hypothesis_id(ctx, tool.component)
            ev = ctx.journal.emit(HypothesisEvent(
                component=tool.component, hypothesis_id=hid, statement=tool.statement, status=tool.status,
                evidence=_valid_evidence(ctx, tool.evidence), prediction=tool.prediction))
            hyps.append(f"{tool.component}: {tool.statement} [{tool.status}]")
            results.append(tool_result(tu.id, f"recorded hypothesis {hid} ({tool.status}) as seq {ev.seq}"))
        elif tu.name == "conclude_component":
            if tool.component != comp:
                msg = f"you are investigating {comp}; conclude {comp} (not {tool.component})"
                ctx.journal.emit(ErrorEvent(where="tool.conclude_component", message=msg, component=comp))
                results.append(tool_result(tu.id, msg, is_error=True))
                continue
            ev = ctx.journal.emit(ConclusionEvent(
                component=comp, role=tool.role, explanation=tool.explanation, confidence=tool.confidence,
                evidence=_valid_evidence(ctx, tool.evidence)))
            conclusions[comp] = {"role": tool.role, "explanation": tool.explanation,
                                 "confidence": tool.confidence, "inconclusive_reason": None, "seq": ev.seq}
            concluded = True
            results.append(tool_result(tu.id, f"concluded {comp} as {tool.role!r} (seq {ev.seq})"))
        elif tu.name == "finish":
            finished = True
            results.append(tool_result(tu.id, "finished"))
    if results:
        messages.append({"role": "user", "content": results})
    nudged = False
    if not resp.tool_uses and not concluded and not any(m.get("content") == NUDGE for m in messages):
        messages.append({"role": "user", "content": NUDGE})  # one reminder before giving up on the component
        nudged = True
    done = concluded or finished or (not resp.tool_uses and not nudged)
    usage.wall_s = ctx.wall_s()
    ctx.progress(phase="step", component=comp, steps=usage.steps, tool_calls=usage.tool_calls,
                 tokens=usage.tokens, usd=usage.usd, hypothesis=hyps[-1] if hyps else None)
    out: dict[str, Any] = {"messages": messages, "usage": usage.model_dump(), "concluded": concluded or done,
                           "conclusions": conclusions, "hypotheses": hyps, "log_seq": ctx.journal.position}
    if done and not concluded:
        out["limit_hit"] = "finished" if finished else "no_conclusion"
    return out


def route_step(state: ResearchState) -> str:
    if state.get("concluded") or state.get("limit_hit"):
        return "end_component"
    return "step"


def end_component(state: ResearchState, runtime: Runtime[RunContext]) -> dict:
    """Close the component: an ``inconclusive`` conclusion if it has none, and a ``budget`` event."""
    ctx = _ctx(runtime)
    comp = state["components"][state["index"]]
    usage = _usage(state, ctx)
    limit = state.get("limit_hit")
    conclusions: dict[str, dict[str, Any]] = {}
    budget_limit = limit if limit in ("component_steps", "tool_calls", "tokens", "usd", "wall_s") else None
    ctx.journal.emit(BudgetEvent(
        component=comp, steps=usage.steps, tool_calls=usage.tool_calls, input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens, usd=usage.usd, wall_s=usage.wall_s, limit_hit=budget_limit))
    if comp not in (state.get("conclusions") or {}):
        reason = {"error": "error", "finished": "planner finished without a conclusion",
                  "no_conclusion": "planner stopped without a conclusion"}.get(limit or "", "budget")
        if budget_limit:
            reason = "budget"
        expl = f"inconclusive: {reason}" + (f" ({budget_limit} limit reached)" if budget_limit else "")
        ev = ctx.journal.emit(ConclusionEvent(component=comp, role=INCONCLUSIVE, explanation=expl, confidence=0.0,
                                              inconclusive_reason=reason))
        conclusions[comp] = {"role": INCONCLUSIVE, "explanation": expl, "confidence": 0.0,
                             "inconclusive_reason": reason, "seq": ev.seq}
    ctx.progress(phase="component_done", component=comp, index=state["index"])
    return {"index": state["index"] + 1, "conclusions": conclusions, "usage": usage.model_dump(),
            "log_seq": ctx.journal.position}


def route_components(state: ResearchState) -> str:
    if state.get("index", 0) < len(state.get("components") or []):
        return "start_component"
    return "cluster"


def _norm_role(role: str) -> str:
    return " ".join(role.lower().replace("-", " ").replace("_", " ").split())


def cluster(state: ResearchState, runtime: Runtime[RunContext]) -> dict:
    """Group concluded components by role label; name and explain each group."""
    ctx = _ctx(runtime)
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
    from agent.run import write_summary_report

    ctx = _ctx(runtime)
    run_limit = state.get("run_limit")
    status = "error" if (run_limit == "error" or state.get("failure")) else ("budget" if run_limit else "completed")
    concl = state.get("conclusions") or {}
    parts = [f"{c}: {concl[c]['role']}" for c in state.get("components") or [] if c in concl]
    summary = (f"Investigated {len(parts)} component(s) of {state.get('model')} on {state.get('task')}: "
               + ("; ".join(parts) or "none") + f". {len(state.get('clusters') or [])} cluster(s).")
    if run_limit and run_limit != "error":
        summary += f" Stopped early: the {run_limit} budget was reached."
    usage = _usage(state, ctx)
    ctx.journal.emit(BudgetEvent(
        steps=sum(1 for e in ctx.log.events()[: ctx.journal.position] if e.kind == "llm_response"),
        tool_calls=usage.tool_calls, input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
        usd=usage.usd, wall_s=usage.wall_s, limit_hit=run_limit if run_limit in ("tool_calls", "tokens", "usd",
                                                                               "wall_s") else None))
    ctx.journal.emit(RunFinishedEvent(status=status, summary=summary))
    path = write_summary_report(ctx.log.run_dir)
    ctx.progress(phase="done", report=str(path), status=status)
    return {"status": status, "report_path": str(path), "log_seq": ctx.journal.position}


# ---------------------------------------------------------------------------------------------- graph


def build_graph(checkpointer: Any = None) -> Any:
    """The compiled research graph (``checkpointer``: e.g. a ``SqliteSaver``; None for none)."""
    g = StateGraph(ResearchState, context_schema=RunContext)
    for name, fn in [("frame", frame), ("localise", localise), ("start_component", start_component),
                     ("step", step), ("end_component", end_component), ("cluster", cluster), ("report", report)]:
        g.add_node(name, fn)
    g.add_edge(START, "frame")
    g.add_edge("frame", "localise")
    g.add_conditional_edges("localise", route_components, ["start_component", "cluster"])
    g.add_edge("start_component", "step")
    g.add_conditional_edges("step", route_step, ["step", "end_component"])
    g.add_conditional_edges("end_component", route_components, ["start_component", "cluster"])
    g.add_edge("cluster", "report")
    g.add_edge("report", END)
    return g.compile(checkpointer=checkpointer)
