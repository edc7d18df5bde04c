"""The ``step`` node: one planner turn for the current component, and the tool handler table.

The system prompt, the conversation and the tool specs go to ``backend.complete``; each ``tool_use`` is
validated against its input model (a malformed input goes back as a ``tool_result`` with ``is_error``,
never a crash) and dispatched through :data:`HANDLERS` (tool name → input model and handler): experiment
tools run as code cells in the sandbox, ``record_hypothesis`` / ``conclude_component`` / ``finish`` become
log events. Everything is logged (``tool_call`` + ``execution_result`` / ``hypothesis`` / ``conclusion``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from langgraph.runtime import Runtime
from pydantic import BaseModel

from agent.actions import EXPERIMENT_TOOLS, TOOLS, ConcludeComponent, RecordHypothesis
from agent.budget import BudgetUsage, exceeded
from agent.graph.cells import execute_cell, tool_result_payload
from agent.llm.base import validate_tool_input
from agent.llm.types import LLMResponse, ToolUseBlock, tool_result
from agent.log import (
    ConclusionEvent,
    ErrorEvent,
    HypothesisEvent,
    LLMRequestEvent,
    LLMResponseEvent,
    ToolCallEvent,
    sha256_text,
)
from agent.planners.prompts import SYSTEM_PROMPT
from agent.state import ResearchState, RunContext
from tools.errors import InterpAgentError

NUDGE = ("You ended your turn without concluding. Call conclude_component for this component now (use role "
         "'unclear role' with a low confidence if the evidence is not enough), or run more experiments.")


class Stop(StrEnum):
    """Why a component's sub-loop ended without a budget limit (``limit_hit`` in the state)."""

    ERROR = "error"
    """The LLM backend failed for good."""
    FINISHED = "finished"
    """The planner called ``finish`` without concluding."""
    NO_CONCLUSION = "no_conclusion"
    """The planner stopped calling tools, even after the reminder."""


def usage_of(state: ResearchState, ctx: RunContext) -> BudgetUsage:
    """The budget counters of ``state``, with the wall time brought up to date."""
    u = BudgetUsage(**(state.get("usage") or {}))
    u.wall_s = ctx.wall_s()
    return u


@dataclass
class Turn:
    """What one planner turn's tool calls did (filled by the handlers)."""

    component: str
    results: list[dict[str, Any]] = field(default_factory=list)
    conclusions: dict[str, dict[str, Any]] = field(default_factory=dict)
    hypotheses: list[str] = field(default_factory=list)
    concluded: bool = False
    finished: bool = False

    def reply(self, tu: ToolUseBlock, text: str, is_error: bool = False) -> None:
        self.results.append(tool_result(tu.id, text, is_error=is_error))


Handler = Callable[[RunContext, Turn, ToolUseBlock, Any], None]
"""``handler(ctx, turn, tool_use, validated_input)``: logs what the call does and replies to the planner."""


def run_experiment(ctx: RunContext, turn: Turn, tu: ToolUseBlock, tool: Any) -> None:
    """An experiment tool: its cell runs in the sandbox; the planner gets the typed result's data and seq."""
    ev = execute_cell(ctx, tu.id, tool.to_code(), turn.component)
    text, is_err = tool_result_payload(ev)
    turn.reply(tu, text, is_err)


def _valid_evidence(ctx: RunContext, refs: list[int]) -> list[int]:
    pos = ctx.journal.position
    return [r for r in refs if 0 <= r < pos]


def _next_hypothesis_id(ctx: RunContext, component: str) -> str:
    n = sum(1 for e in ctx.log.events()[: ctx.journal.position]
            if e.kind == "hypothesis" and e.component == component and e.status == "proposed")
    return f"{component}.h{n + 1}"


def record_hypothesis(ctx: RunContext, turn: Turn, tu: ToolUseBlock, tool: RecordHypothesis) -> None:
    hid = tool.hypothesis_id or _next_hypothesis_id(ctx, tool.component)
    ev = ctx.journal.emit(HypothesisEvent(
        component=tool.component, hypothesis_id=hid, statement=tool.statement, status=tool.status,
        evidence=_valid_evidence(ctx, tool.evidence), prediction=tool.prediction))
    turn.hypotheses.append(f"{tool.component}: {tool.statement} [{tool.status}]")
    turn.reply(tu, f"recorded hypothesis {hid} ({tool.status}) as seq {ev.seq}")


def conclude_component(ctx: RunContext, turn: Turn, tu: ToolUseBlock, tool: ConcludeComponent) -> None:
    comp = turn.component
    if tool.component != comp:
        msg = f"you are investigating {comp}; conclude {comp} (not {tool.component})"
        ctx.journal.emit(ErrorEvent(where="tool.conclude_component", message=msg, component=comp))
        turn.reply(tu, msg, is_error=True)
        return
    ev = ctx.journal.emit(ConclusionEvent(component=comp, role=tool.role, explanation=tool.explanation,
                                          confidence=tool.confidence, evidence=_valid_evidence(ctx, tool.evidence)))
    turn.conclusions[comp] = {"role": tool.role, "explanation": tool.explanation, "confidence": tool.confidence,
                              "inconclusive_reason": None, "seq": ev.seq}
    turn.concluded = True
    turn.reply(tu, f"concluded {comp} as {tool.role!r} (seq {ev.seq})")


def finish(ctx: RunContext, turn: Turn, tu: ToolUseBlock, tool: Any) -> None:
    turn.finished = True
    turn.reply(tu, "finished")


@dataclass(frozen=True)
class ToolHandler:
    """A tool the planner can call: its input model and what the loop does with a valid call."""

    input: type[BaseModel]
    run: Handler


HANDLERS: dict[str, ToolHandler] = {
    **{name: ToolHandler(TOOLS[name], run_experiment) for name in TOOLS if name in EXPERIMENT_TOOLS},
    "record_hypothesis": ToolHandler(RecordHypothesis, record_hypothesis),
    "conclude_component": ToolHandler(ConcludeComponent, conclude_component),
    "finish": ToolHandler(TOOLS["finish"], finish),
}
"""Tool name → (input model, handler). Every name in :data:`agent.actions.TOOLS` has one (tested)."""


def validate(name: str, raw: Any) -> tuple[Any | None, str]:
    """``(validated input, "")`` or ``(None, the error text for the planner)``."""
    h = HANDLERS.get(name)
    if h is None:
        return None, f"unknown tool {name!r}; use one of: {', '.join(HANDLERS)}"
    return validate_tool_input(h.input, raw, name=name)


def _ask(ctx: RunContext, comp: str, messages: list[dict[str, Any]], usage: BudgetUsage) -> LLMResponse | None:
    """The planner's next turn (the logged one when resuming); None after logging a backend failure."""
    backend, specs = ctx.backend, ctx.tool_specs
    system = ctx.system_prompt or SYSTEM_PROMPT
    ctx.journal.emit(LLMRequestEvent(
        backend=backend.name, model=backend.model, system_sha256=sha256_text(system), n_messages=len(messages),
        messages=messages[-1:], tools=[s.name for s in specs], component=comp))
    pending = ctx.journal.peek("llm_response")
    if pending is not None:
        ctx.journal.emit(pending)
        return LLMResponse(content=pending.content, stop_reason=pending.stop_reason, usage=pending.usage,
                           cost_usd=pending.cost_usd, model=pending.model, latency_s=pending.latency_s,
                           attempts=pending.attempts)
    try:
        resp = backend.complete(system=system, messages=messages, tools=specs)
    except InterpAgentError as e:
        ctx.journal.emit(ErrorEvent(where=f"llm.{backend.name}", message=str(e), recoverable=False,
                                    error_type=type(e).__name__, component=comp))
        return None
    ctx.journal.emit(LLMResponseEvent(
        backend=backend.name, model=resp.model or backend.model, content=resp.content, stop_reason=resp.stop_reason,
        usage=resp.usage, cost_usd=resp.cost_usd, latency_s=resp.latency_s, attempts=resp.attempts, component=comp))
    return resp


def step(state: ResearchState, runtime: Runtime[RunContext]) -> dict:
    """One planner turn for the current component (LLM call, then every tool call it asked for)."""
    ctx = runtime.context
    comp = state["components"][state["index"]]
    usage = usage_of(state, ctx)
    if state.get("run_limit"):
        return {"limit_hit": state["run_limit"], "usage": usage.model_dump(), "log_seq": ctx.journal.position}
    limit = exceeded(ctx.budget, usage)
    if limit is not None:
        return {"limit_hit": str(limit), "run_limit": str(limit) if limit.run_wide else None,
                "usage": usage.model_dump(), "log_seq": ctx.journal.position}

    messages = list(state["messages"])
    resp = _ask(ctx, comp, messages, usage)
    if resp is None:
        return {"limit_hit": str(Stop.ERROR), "run_limit": str(Stop.ERROR), "usage": usage.model_dump(),
                "log_seq": ctx.journal.position}
    usage.steps += 1
    usage.input_tokens += resp.usage.total_input_tokens
    usage.output_tokens += resp.usage.output_tokens
    usage.usd += resp.cost_usd or 0.0
    messages.append(resp.assistant_message())

    turn = Turn(component=comp)
    for tu in resp.tool_uses:
        usage.tool_calls += 1
        ctx.journal.emit(ToolCallEvent(call_id=tu.id, name=tu.name, input=tu.input if isinstance(tu.input, dict)
                                       else {"value": tu.input}, component=comp),
                         same=lambda a, b: a.call_id == b.call_id)
        tool, err = validate(tu.name, tu.input)
        if tool is None:
            ctx.journal.emit(ErrorEvent(where=f"tool.{tu.name}", message=err, recoverable=True, component=comp))
            turn.reply(tu, err, is_error=True)
            continue
        HANDLERS[tu.name].run(ctx, turn, tu, tool)
    if turn.results:
        messages.append({"role": "user", "content": turn.results})
    nudged = False
    if not resp.tool_uses and not turn.concluded and not any(m.get("content") == NUDGE for m in messages):
        messages.append({"role": "user", "content": NUDGE})  # one reminder before giving up on the component
        nudged = True
    done = turn.concluded or turn.finished or (not resp.tool_uses and not nudged)
    usage.wall_s = ctx.wall_s()
    ctx.progress(phase="step", component=comp, steps=usage.steps, tool_calls=usage.tool_calls,
                 tokens=usage.tokens, usd=usage.usd, hypothesis=turn.hypotheses[-1] if turn.hypotheses else None)
    out: dict[str, Any] = {"messages": messages, "usage": usage.model_dump(), "concluded": done,
                           "conclusions": turn.conclusions, "hypotheses": turn.hypotheses,
                           "log_seq": ctx.journal.position}
    if done and not turn.concluded:
        out["limit_hit"] = str(Stop.FINISHED if turn.finished else Stop.NO_CONCLUSION)
    return out
