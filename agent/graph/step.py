"""The ``step`` node: one planner turn for the current component, and the tool handler table.

The system prompt, the conversation and the tool specs go to ``backend.complete`` (through :func:`ask`);
each ``tool_use`` is validated against its input model and then against the run (:func:`check_call`: the
components it names exist in the model under study; hypotheses and conclusions are about the component
under investigation). A call that fails either goes back as a ``tool_result`` with ``is_error`` saying
why, never a crash; a valid one is dispatched through :data:`HANDLERS` (tool name → input model and
handler): experiment tools run as code cells in the sandbox, ``record_hypothesis`` /
``conclude_component`` / ``finish`` become log events. Everything is logged (``tool_call`` +
``execution_result`` / ``hypothesis`` / ``conclusion``).

What the model is told, always (nothing is dropped silently):

- every text the loop sends it is capped and stripped of host paths (:func:`agent.llm.text.for_model`);
- evidence seqs that are not in the log are named in the reply (the rest are recorded);
- a second ``conclude_component`` in one turn is refused (one conclusion per component);
- a conclusion that fails the grounding check (numbers no cited result gives, invalid citations, a role
  without a supported held-out test: :mod:`agent.graph.grounding`) is sent back once with each problem;
- a turn cut off by ``max_tokens`` (``stop_reason``) does not run its last tool call, whose input may be
  incomplete: the reply says so; a cut turn without a call gets a reminder saying it was cut;
- a turn without a tool call gets one reminder to conclude (an empty turn is not sent back: the Messages
  API refuses empty messages; the reminder joins the previous user message instead).

A backend failure that survives its retries logs an ``error`` event and raises :class:`agent.state.RunPaused`:
the run stops as ``interrupted`` and ``resume`` asks again (the failed request is not logged twice). When
the run's wall-clock budget runs out during the call (the backend gets what is left as ``timeout_s``), the
run stops on that budget instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from langgraph.runtime import Runtime
from pydantic import BaseModel

from agent.actions import EXPERIMENT_TOOLS, TOOLS, ConcludeComponent, RecordHypothesis
from agent.budget import BudgetUsage, Limit, exceeded
from agent.graph import grounding
from agent.graph.cells import execute_cell, tool_result_payload
from agent.llm.base import LLMDeadlineError, validate_tool_input
from agent.llm.text import cap, for_model
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
from agent.state import ResearchState, RunContext, RunPaused
from tools.components import Component
from tools.errors import InterpAgentError

NUDGE = ("You ended your turn without concluding. Call conclude_component for this component now (use role "
         "'unclear role' with a low confidence if the evidence is not enough), or run more experiments.")
CUT_NUDGE = ("Your last turn was cut off at the output limit ({max_tokens} tokens) before it called a tool. "
             "Think less and call a tool now: conclude_component for this component, or one more experiment.")
CUT_CALL = ("Your turn was cut off at the output limit ({max_tokens} tokens) while you were writing this call, so "
            "its input may be incomplete: it was NOT run. Call it again (think less before calling).")


class Stop(StrEnum):
    """Why a component's sub-loop ended without a budget limit (``limit_hit`` in the state)."""

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
    roots: dict[str, str] = field(default_factory=dict)
    """Host folders named by tag in the replies (:meth:`RunContext.text_roots`)."""
    results: list[dict[str, Any]] = field(default_factory=list)
    conclusions: dict[str, dict[str, Any]] = field(default_factory=dict)
    hypotheses: list[str] = field(default_factory=list)
    concluded: bool = False
    finished: bool = False

    def reply(self, tu: ToolUseBlock, text: str, is_error: bool = False) -> None:
        """Answer ``tu`` (a ``tool_result``): the text capped and stripped of host paths."""
        self.results.append(tool_result(tu.id, for_model(text, extra=self.roots), is_error=is_error))


Handler = Callable[[RunContext, Turn, ToolUseBlock, Any], None]
"""``handler(ctx, turn, tool_use, validated_input)``: logs what the call does and replies to the planner."""


def run_experiment(ctx: RunContext, turn: Turn, tu: ToolUseBlock, tool: Any) -> None:
    """An experiment tool: its cell runs in the sandbox; the planner gets the typed result's data and seq."""
    ev = execute_cell(ctx, tu.id, tool.to_code(), turn.component)
    text, is_err = tool_result_payload(ev)
    turn.reply(tu, text, is_err)


def _evidence(ctx: RunContext, refs: list[int]) -> tuple[list[int], str]:
    """``(the refs that are seqs of logged events, a note for the reply naming the others)``."""
    pos = ctx.journal.position
    ok = [r for r in refs if 0 <= r < pos]
    bad = [r for r in refs if r not in ok]
    note = (f"; evidence seq(s) {', '.join(map(str, bad))} are not in the log (its seqs are 0..{pos - 1}) and were "
            "left out: cite the seq numbers tool results give") if bad else ""
    return ok, note


def _next_hypothesis_id(ctx: RunContext, component: str) -> str:
    n = sum(1 for e in ctx.log.events()[: ctx.journal.position]
            if e.kind == "hypothesis" and e.component == component and e.status == "proposed")
    return f"{component}.h{n + 1}"


def record_hypothesis(ctx: RunContext, turn: Turn, tu: ToolUseBlock, tool: RecordHypothesis) -> None:
    hid = tool.hypothesis_id or _next_hypothesis_id(ctx, tool.component)
    evidence, note = _evidence(ctx, tool.evidence)
    ev = ctx.journal.emit(HypothesisEvent(
        component=tool.component, hypothesis_id=hid, statement=tool.statement, status=tool.status,
        evidence=evidence, prediction=tool.prediction))
    turn.hypotheses.append(f"{tool.component}: {tool.statement} [{tool.status}]")
    turn.reply(tu, f"recorded hypothesis {hid} ({tool.status}) as seq {ev.seq}{note}")


def conclude_component(ctx: RunContext, turn: Turn, tu: ToolUseBlock, tool: ConcludeComponent) -> None:
    comp = turn.component
    if turn.concluded:
        prev = turn.conclusions[comp]
        msg = (f"{comp} is already concluded in this turn as {prev['role']!r} (seq {prev['seq']}); one conclusion "
               "per component: this second call was ignored")
        ctx.journal.emit(ErrorEvent(where="tool.conclude_component", message=msg, component=comp))
        turn.reply(tu, msg, is_error=True)
        return
    check = grounding.check_conclusion(ctx, comp, tool)
    if check.problems and ctx.grounding_check and not grounding.sent_back(ctx, comp):  # one chance to fix it
        msg = grounding.rejection(comp, check)
        ctx.journal.emit(ErrorEvent(where=grounding.WHERE, message=msg, component=comp,
                                    error_type="UngroundedConclusion"))
        turn.reply(tu, msg, is_error=True)
        return
    evidence, note = _evidence(ctx, tool.evidence)
    ev = ctx.journal.emit(ConclusionEvent(component=comp, role=tool.role, explanation=tool.explanation,
                                          confidence=tool.confidence, evidence=evidence))
    turn.conclusions[comp] = {"role": tool.role, "explanation": tool.explanation, "confidence": tool.confidence,
                              "inconclusive_reason": None, "seq": ev.seq}
    turn.concluded = True
    turn.reply(tu, f"concluded {comp} as {tool.role!r} (seq {ev.seq}){note}{grounding.note(check)}")


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


def check_call(ctx: RunContext, component: str, name: str, tool: Any) -> str | None:
    """What is wrong with a valid-looking call in this run, or None: a component the model does not have
    (``ctx.model_shape``), or a hypothesis / conclusion about another component than the one investigated."""
    if ctx.model_shape is not None:
        n_layers, n_heads = ctx.model_shape
        bad = []
        for c in tool.components_named():
            try:
                Component.parse(c).check_shape(n_layers, n_heads)
            except InterpAgentError as e:
                bad.append(str(e))
        if bad:
            return (f"Invalid input for tool {name!r}: the model has {n_layers} layers x {n_heads} heads (layers and "
                    f"heads count from 0): " + "; ".join(bad) + ". Fix the components and call the tool again.")
    if isinstance(tool, RecordHypothesis | ConcludeComponent) and tool.component != component:
        verb = "record hypotheses about" if isinstance(tool, RecordHypothesis) else "conclude"
        return f"you are investigating {component}; {verb} {component} (not {tool.component})"
    return None


def ask(ctx: RunContext, component: str | None, messages: list[dict[str, Any]], *, system: str | None = None,
        specs: list[Any] | None = None) -> LLMResponse | None:
    """The planner's next turn (the logged one when resuming), logged as ``llm_request`` + ``llm_response``.

    None when the run's wall-clock budget ran out during the call (an ``error`` event says so). Any other
    backend failure is logged and raised as :class:`RunPaused`.
    """
    backend = ctx.backend
    specs = ctx.tool_specs if specs is None else specs
    system = system or ctx.system_prompt or SYSTEM_PROMPT
    ctx.journal.emit(LLMRequestEvent(
        backend=backend.name, model=backend.model, system_sha256=sha256_text(system), n_messages=len(messages),
        messages=messages[-1:], tools=[s.name for s in specs], max_tokens=getattr(backend, "max_tokens", None),
        component=component))
    pending = ctx.journal.peek("llm_response")
    if pending is not None:
        ctx.journal.emit(pending)
        return LLMResponse(content=pending.content, stop_reason=pending.stop_reason, usage=pending.usage,
                           cost_usd=pending.cost_usd, model=pending.model, latency_s=pending.latency_s,
                           attempts=pending.attempts)
    # resumed after a pause: the failure that paused the run is logged already; ask again
    ctx.journal.skip("error", lambda e: e.where == f"llm.{backend.name}")
    try:
        resp = backend.complete(system=system, messages=messages, tools=specs, timeout_s=ctx.wall_left())
    except LLMDeadlineError as e:
        ctx.journal.emit(ErrorEvent(where=f"llm.{backend.name}", message=str(e), recoverable=True,
                                    error_type=type(e).__name__, component=component))
        return None
    except InterpAgentError as e:
        ctx.journal.emit(ErrorEvent(where=f"llm.{backend.name}", message=str(e), recoverable=True,
                                    error_type=type(e).__name__, component=component))
        raise RunPaused(f"the {backend.name} planner failed: {e.what}", fix=e.fix) from e
    ctx.journal.emit(LLMResponseEvent(
        backend=backend.name, model=resp.model or backend.model, content=resp.content, stop_reason=resp.stop_reason,
        usage=resp.usage, cost_usd=resp.cost_usd, latency_s=resp.latency_s, attempts=resp.attempts,
        component=component))
    return resp


def assistant_message(resp: LLMResponse) -> dict[str, Any] | None:
    """The turn as the ``assistant`` message to send back, or None when it has nothing to send.

    The Messages API refuses empty messages and whitespace-only text blocks: those blocks are left out, and
    a turn with no text and no tool call is not sent back (its thinking blocks are only needed beside a
    tool call).
    """
    blocks = [b for b in resp.content if not (b.type == "text" and not b.text.strip())]
    if not any(b.type in ("text", "tool_use") for b in blocks):
        return None
    return {"role": "assistant", "content": [b.model_dump() for b in blocks]}


def take_turn(usage: BudgetUsage, resp: LLMResponse, messages: list[dict[str, Any]]) -> None:
    """Count the turn's tokens and cost in ``usage`` and append it to ``messages`` (unless it is empty)."""
    usage.input_tokens += resp.usage.total_input_tokens
    usage.output_tokens += resp.usage.output_tokens
    usage.usd += resp.cost_usd or 0.0
    reply = assistant_message(resp)
    if reply is not None:
        messages.append(reply)


def remind(messages: list[dict[str, Any]], text: str) -> None:
    """Add a reminder as a user message; after an empty turn (the last message is the user's), join it to
    that message, as the roles must alternate."""
    if messages and messages[-1]["role"] == "user":
        last = dict(messages[-1])
        content = last["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
        last["content"] = [*blocks, {"type": "text", "text": text}]
        messages[-1] = last
    else:
        messages.append({"role": "user", "content": text})


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
    resp = ask(ctx, comp, messages)
    if resp is None:  # the wall-clock budget ran out during the call
        usage.wall_s = ctx.wall_s()
        return {"limit_hit": str(Limit.WALL_S), "run_limit": str(Limit.WALL_S), "usage": usage.model_dump(),
                "log_seq": ctx.journal.position}
    usage.steps += 1
    take_turn(usage, resp, messages)

    turn = Turn(component=comp, roots=ctx.text_roots())
    cut = resp.stop_reason == "max_tokens"
    max_tokens = getattr(ctx.backend, "max_tokens", None) or "?"
    uses = resp.tool_uses
    for k, tu in enumerate(uses):
        usage.tool_calls += 1
        ctx.journal.emit(ToolCallEvent(call_id=tu.id, name=tu.name, input=tu.input if isinstance(tu.input, dict)
                                       else {"value": tu.input}, component=comp),
                         same=lambda a, b: a.call_id == b.call_id)
        tool, err = (None, CUT_CALL.format(max_tokens=max_tokens)) if cut and k == len(uses) - 1 else \
            validate(tu.name, tu.input)
        if tool is not None:
            err = check_call(ctx, comp, tu.name, tool) or ""
        if err:
            ctx.journal.emit(ErrorEvent(where=f"tool.{tu.name}", message=cap(err, 20_000), recoverable=True,
                                        component=comp))
            turn.reply(tu, err, is_error=True)
            continue
        HANDLERS[tu.name].run(ctx, turn, tu, tool)
    if turn.results:
        messages.append({"role": "user", "content": turn.results})
    nudged = bool(state.get("nudged"))
    reminded = False
    if not uses and not turn.concluded and not nudged:  # one reminder before giving up on the component
        remind(messages, CUT_NUDGE.format(max_tokens=max_tokens) if cut else NUDGE)
        nudged = reminded = True
    done = turn.concluded or turn.finished or (not uses and not reminded)
    usage.wall_s = ctx.wall_s()
    ctx.progress(phase="step", component=comp, steps=usage.steps, tool_calls=usage.tool_calls,
                 tokens=usage.tokens, usd=usage.usd, hypothesis=turn.hypotheses[-1] if turn.hypotheses else None)
    out: dict[str, Any] = {"messages": messages, "usage": usage.model_dump(), "concluded": done, "nudged": nudged,
                           "conclusions": turn.conclusions, "hypotheses": turn.hypotheses,
                           "log_seq": ctx.journal.position}
    if done and not turn.concluded:
        out["limit_hit"] = str(Stop.FINISHED if turn.finished else Stop.NO_CONCLUSION)
    return out
