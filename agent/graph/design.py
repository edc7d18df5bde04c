"""The framing sub-loop: the LLM planner designs the run's task (``--design-task``, or ``--planner claude`` on a
question no task's keywords match).

::

    frame → design_start → design ⟲ ─┬─→ localise → ...   (a proposal passed the check)
                                      └─→ END             (the framing budget ended first)

* **design_start**: one logged cell (``call_id`` ``design-facts``) reads the model's facts
  (:func:`evals.tasks.design.model_facts`: architecture, vocabulary size, the whole vocabulary when it is small,
  how the question's words tokenise); :func:`agent.planners.prompts.design_brief` opens the conversation.
* **design**: one planner turn (system :data:`agent.planners.prompts.DESIGN_SYSTEM_PROMPT`: the method, the
  generic kinds' rules and the check's rules; tools :data:`agent.actions.DESIGN_TOOLS`), its calls in order:

  - ``propose_task``: validated by its input model, then as an :class:`evals.tasks.TaskSpec` for the run's
    model; numbered (every call is an attempt). A malformed one goes back as an error result saying what
    to fix (and an ``error`` event); a valid one is summarised (roles, size).
  - ``check_task``: the check (:func:`evals.tasks.design.check_proposal`: ``tasks check``'s
    :func:`~evals.tasks.check.check_task` on 64 prompts drawn with the run's seed) runs as a logged cell in
    the sandbox; the planner gets the verdict and the table. The **first passing check accepts** that
    proposal: the turn's later calls are not run.
  - ``tokenize``: a logged cell (:func:`evals.tasks.design.tokenize`).

  A turn without a tool call gets a reminder. An LLM failure pauses the run (as in ``step``); ``resume``
  continues the design where it was (the journal hands back what was logged after the last checkpoint).
* **Accepted**: the spec is written to ``<run>/task.yaml``, a ``framing`` event logs it with every attempt and
  the kernel's new setup cells (the model and the spec embedded, :func:`agent.kernel.setup_cells`); the
  kernel restarts with them and the run goes on exactly as with ``--task task.yaml``.
* **Budget**: ``design_steps`` planner turns (``--design-steps``, default 8); the run-wide budgets (tool calls,
  tokens, USD, wall time) count too. When they end before a check passes: a ``framing`` event
  (``failed``, the reason, every attempt), a run-level ``budget`` event and ``run_finished`` (``error``), and
  the graph ends. Nothing is localised or investigated and no ``task.yaml`` or report is written; the run
  directory keeps its log, and the runner raises :class:`TaskDesignError` (one line, exit 2).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langgraph.graph import END
from langgraph.runtime import Runtime
from pydantic import ValidationError

from agent.actions import (
    DESIGN_TOOLS,
    MAX_SPEC_CHARS,
    CheckTask,
    ProposeTask,
    Tokenize,
    design_specs,
    facts_code,
    result_text,
)
from agent.budget import BudgetUsage, exceeded
from agent.graph.cells import execute_cell, tool_result_payload
from agent.graph.step import CUT_CALL, ask, remind, take_turn, usage_of
from agent.llm.base import validate_tool_input
from agent.llm.text import cap, for_model
from agent.llm.types import ToolUseBlock, tool_result
from agent.log import BudgetEvent, ErrorEvent, FramingEvent, RunFinishedEvent, ToolCallEvent
from agent.planners.prompts import DESIGN_REMINDER, DESIGN_SYSTEM_PROMPT, design_brief
from agent.state import ResearchState, RunContext
from evals.tasks.check import TaskCheck
from evals.tasks.design import ModelFacts, question_words
from evals.tasks.spec import TaskSpec
from tools.errors import InterpAgentError

DESIGN_FACTS = "design-facts"
"""``call_id`` of the cell that reads the model's facts for the designer."""
TASK_FILE = "task.yaml"
"""The accepted spec, in the run directory."""
DESIGN_BRIEF_CHARS = 16_000
"""The most characters of the design brief (it may list a small model's whole vocabulary)."""


class TaskDesignError(InterpAgentError):
    """The task design ended without a usable task (its framing budget ran out); the run directory keeps the log."""


def design_start(state: ResearchState, runtime: Runtime[RunContext]) -> dict:
    """Read the model's facts in the sandbox and open the design conversation with the brief."""
    ctx = runtime.context
    ctx.progress(phase="design", steps=0)
    words = question_words(state["question"])
    ctx.journal.emit(ToolCallEvent(call_id=DESIGN_FACTS, name="model_facts", input={"words": words}),
                     same=lambda a, b: a.call_id == b.call_id)
    ev = execute_cell(ctx, DESIGN_FACTS, facts_code(words), None)
    facts, problem = None, None
    try:
        facts = ModelFacts.model_validate(ev.data).model_dump() if ev.status == "ok" else None
    except ValidationError:
        pass
    if facts is None:
        problem = f"{ev.status}: {ev.error_name or ''} {ev.error_value or ''}".strip()
    brief = design_brief(state["question"], state["model"], facts, ctx.design_steps, problem=problem)
    usage = usage_of(state, ctx)
    usage.steps = 0
    return {"messages": [{"role": "user", "content": for_model(brief, DESIGN_BRIEF_CHARS, ctx.text_roots())}],
            "design": {"steps": 0, "attempts": []}, "usage": usage.model_dump(), "log_seq": ctx.journal.position}


@dataclass
class _Turn:
    """What one design turn's tool calls did."""

    model: str
    attempts: list[dict[str, Any]]
    roots: dict[str, str]
    results: list[dict[str, Any]] = field(default_factory=list)
    accepted: int | None = None
    """The proposal whose check passed in this turn."""

    def reply(self, tu: ToolUseBlock, text: str, is_error: bool = False) -> None:
        self.results.append(tool_result(tu.id, for_model(text, extra=self.roots), is_error=is_error))


def _refuse(ctx: RunContext, turn: _Turn, tu: ToolUseBlock, err: str) -> None:
    ctx.journal.emit(ErrorEvent(where=f"tool.{tu.name}", message=cap(err, 20_000), recoverable=True))
    turn.reply(tu, err, is_error=True)


def _spec_problems(raw: dict[str, Any]) -> tuple[TaskSpec | None, str]:
    """The proposal as a :class:`TaskSpec`, or the problems in the words :func:`validate_tool_input` uses."""
    try:
        spec = TaskSpec.model_validate(raw)
    except ValidationError as e:
        lines = [f"Invalid task spec: {len(e.errors())} problem(s)."]
        lines += [f"- {'.'.join(str(p) for p in err['loc']) or '(spec)'}: {err['msg']}" for err in e.errors()]
        return None, "\n".join(lines + ["Fix the spec and call propose_task again."])
    if len(spec.model_dump_json()) > MAX_SPEC_CHARS:
        return None, f"The spec is over {MAX_SPEC_CHARS} characters as JSON: make it smaller and propose it again."
    return spec, ""


def propose(ctx: RunContext, turn: _Turn, tu: ToolUseBlock, tool: ProposeTask | None, err: str) -> None:
    """Number the proposal, validate it as a task spec, and say so (an invalid one is an attempt too)."""
    k = len(turn.attempts) + 1
    spec = None
    if tool is not None:
        spec, err = _spec_problems(tool.spec(turn.model))
    attempt: dict[str, Any] = {"proposal": k, "call_id": tu.id, "valid": spec is not None}
    if spec is None:
        attempt["error"] = err
        turn.attempts.append(attempt)
        _refuse(ctx, turn, tu, f"Proposal {k} is not a valid task spec. {err}")
        return
    attempt["spec"] = spec.model_dump(mode="json")
    turn.attempts.append(attempt)
    gen = spec.generator
    size = (f"{len(gen.templates)} template(s), slots {', '.join(gen.slots)}" if gen.kind == "template"
            else f"{len(gen.items)} item(s)")
    turn.reply(tu, f"Proposal {k} ({spec.name!r}) is a valid {gen.kind} spec: {size}; roles {', '.join(spec.roles)}. "
                   f"Call check_task to run it on the model.")


def check(ctx: RunContext, turn: _Turn, tu: ToolUseBlock, tool: CheckTask) -> None:
    """Run the check cell of a proposal; a passing check accepts it."""
    valid = [a for a in turn.attempts if a["valid"]]
    k = tool.proposal or (valid[-1]["proposal"] if valid else None)
    attempt = turn.attempts[k - 1] if k is not None and k <= len(turn.attempts) else None
    if attempt is None or not attempt["valid"]:
        why = ("there is no valid proposal yet: call propose_task first" if k is None else
               f"proposal {k} {'is not valid' if attempt is not None else 'does not exist'}; the valid ones are "
               f"{', '.join(str(a['proposal']) for a in valid) or 'none'}")
        _refuse(ctx, turn, tu, f"Cannot check: {why}.")
        return
    spec_json = TaskSpec.model_validate(attempt["spec"]).model_dump_json()
    ev = execute_cell(ctx, tu.id, CheckTask.code(spec_json, k, ctx.seed), None)
    res = None
    if ev.status == "ok":
        try:
            res = TaskCheck.model_validate(ev.data)
        except ValidationError:
            res = None
    attempt["check_seq"] = ev.seq
    if res is None:
        text, _ = tool_result_payload(ev)
        attempt.update(usable=None, reasons=[f"the check cell failed ({ev.status}: {ev.error_name or 'no result'})"])
        turn.reply(tu, f"The check of proposal {k} did not run to the end: {text}", is_error=True)
        return
    attempt.update(usable=res.usable, reasons=list(res.reasons), gap=res.gap, accuracy=res.accuracy, flips=res.flips)
    table = result_text({"seq": ev.seq, "check": res.model_dump(mode="json")})
    if res.usable:
        turn.accepted = k
        turn.reply(tu, f"The check PASSED: proposal {k} is the run's task; the investigation goes on with it. {table}")
    else:
        turn.reply(tu, f"The check FAILED: proposal {k} is unusable on this model: {'; '.join(res.reasons)}. Revise "
                       f"the spec and propose it again. {table}")


def tokenize(ctx: RunContext, turn: _Turn, tu: ToolUseBlock, tool: Tokenize) -> None:
    ev = execute_cell(ctx, tu.id, tool.to_code(), None)
    text, is_err = tool_result_payload(ev)
    turn.reply(tu, text, is_err)


def design(state: ResearchState, runtime: Runtime[RunContext]) -> dict:
    """One planner turn of the task design (or its end: accepted, or out of budget)."""
    ctx = runtime.context
    info = dict(state.get("design") or {})
    attempts = [dict(a) for a in info.get("attempts") or []]
    steps = int(info.get("steps", 0))
    usage = usage_of(state, ctx)
    limit = exceeded(ctx.budget, usage)
    if limit is not None and limit.run_wide:
        return _fail(state, ctx, attempts, steps, usage, f"the run's {limit} budget ran out")
    if steps >= ctx.design_steps:
        return _fail(state, ctx, attempts, steps, usage, f"no proposal passed the check within {steps} planner turns "
                                                          "(--design-steps)")
    messages = list(state["messages"])
    resp = ask(ctx, None, messages, system=DESIGN_SYSTEM_PROMPT, specs=design_specs())
    if resp is None:  # the wall-clock budget ran out during the call
        return _fail(state, ctx, attempts, steps, usage_of(state, ctx), "the run's wall_s budget ran out")
    steps += 1
    take_turn(usage, resp, messages)
    turn = _Turn(model=state["model"], attempts=attempts, roots=ctx.text_roots())
    uses = resp.tool_uses
    for k, tu in enumerate(uses):
        if turn.accepted is not None:
            break  # the task is accepted: the turn's later calls are not run
        usage.tool_calls += 1
        ctx.journal.emit(ToolCallEvent(call_id=tu.id, name=tu.name, input=tu.input if isinstance(tu.input, dict)
                                       else {"value": tu.input}), same=lambda a, b: a.call_id == b.call_id)
        model = DESIGN_TOOLS.get(tu.name)
        if model is None:
            _refuse(ctx, turn, tu, f"unknown tool {tu.name!r} while designing the task; use one of: "
                                   f"{', '.join(DESIGN_TOOLS)}")
            continue
        tool, err = validate_tool_input(model, tu.input, name=tu.name)
        if resp.stop_reason == "max_tokens" and k == len(uses) - 1:
            tool, err = None, CUT_CALL.format(max_tokens=getattr(ctx.backend, "max_tokens", None) or "?")
        if tu.name == "propose_task":
            propose(ctx, turn, tu, tool, err)  # an invalid proposal is an attempt too
        elif tool is None:
            _refuse(ctx, turn, tu, err)
        elif isinstance(tool, CheckTask):
            check(ctx, turn, tu, tool)
        else:
            tokenize(ctx, turn, tu, tool)
    usage.wall_s = ctx.wall_s()
    ctx.progress(phase="design", steps=steps, tool_calls=usage.tool_calls, tokens=usage.tokens, usd=usage.usd,
                 proposals=len(attempts))
    if turn.accepted is not None:
        return _accept(state, ctx, attempts, steps, usage, turn.accepted)
    if turn.results:
        messages.append({"role": "user", "content": turn.results})
    if not uses:
        remind(messages, DESIGN_REMINDER)
    return {"messages": messages, "usage": usage.model_dump(), "design": {"steps": steps, "attempts": attempts},
            "log_seq": ctx.journal.position}


def _accept(state: ResearchState, ctx: RunContext, attempts: list[dict[str, Any]], steps: int, usage: BudgetUsage,
            k: int) -> dict:
    spec = TaskSpec.model_validate(attempts[k - 1]["spec"])
    setup = ctx.setup_for(spec.model_dump_json()) if ctx.setup_for is not None else list(ctx.setup)
    ev = ctx.journal.emit(FramingEvent(status="accepted", task=spec.name, spec=spec.model_dump(mode="json"),
                                       file=TASK_FILE, setup_cells=setup, attempts=attempts, steps=steps))
    write_task_file(ctx.log.run_dir, spec, state["question"], k)
    ctx.use_setup(ev.setup_cells)  # the logged setup (the journal hands it back on resume)
    fr = {**(state.get("frame") or {}), "task": spec.name, "description": spec.description, "metric": spec.metric,
          "roles": list(spec.roles), "design": True}
    usage.steps = 0
    return {"task": spec.name, "frame": fr, "messages": [], "usage": usage.model_dump(),
            "design": {"steps": steps, "attempts": attempts, "accepted": k}, "log_seq": ctx.journal.position}


def _fail(state: ResearchState, ctx: RunContext, attempts: list[dict[str, Any]], steps: int, usage: BudgetUsage,
          why: str) -> dict:
    last = next((a for a in reversed(attempts) if a.get("reasons") or a.get("error")), None)
    detail = ""
    if last is not None:
        detail = "; ".join(last.get("reasons") or []) or str(last.get("error") or "").splitlines()[0]
        detail = f" (proposal {last['proposal']}: {cap(detail, 300)})"
    reason = f"{why}; {len(attempts)} proposal(s){detail}"
    ctx.journal.emit(FramingEvent(status="failed", attempts=attempts, steps=steps, reason=reason))
    ctx.journal.emit(BudgetEvent(steps=steps, tool_calls=usage.tool_calls, input_tokens=usage.input_tokens,
                                 output_tokens=usage.output_tokens, usd=usage.usd, wall_s=ctx.wall_s()))
    ctx.journal.emit(RunFinishedEvent(status="error", summary=f"Task design failed: {reason}. No task was accepted, "
                                                              "so nothing was investigated."))
    ctx.progress(phase="done", report=None, status="error")
    return {"status": "error", "failure": f"task design failed: {reason}", "report_path": None,
            "usage": usage.model_dump(), "design": {"steps": steps, "attempts": attempts, "failed": reason},
            "log_seq": ctx.journal.position}


def write_task_file(run_dir: Path, spec: TaskSpec, question: str, proposal: int) -> Path:
    """``<run_dir>/task.yaml``: the accepted spec (readable by ``--task``), written atomically."""
    head = (f"# Designed by the LLM planner for the question {json.dumps(question)[:300]}\n"
            f"# (proposal {proposal}; its check passed). The run log's framing event holds the same spec: replay,\n"
            "# report and eval read it from there. Reuse it with: interp-agent investigate \"...\" --task task.yaml\n")
    path = run_dir / TASK_FILE
    tmp = run_dir / (TASK_FILE + ".tmp")
    tmp.write_text(head + spec.to_yaml())
    os.replace(tmp, path)
    return path


def route_frame(state: ResearchState) -> str:
    """After ``frame``: design the task (no task yet and the framing says so), else localise."""
    return "design_start" if (state.get("frame") or {}).get("design") and not state.get("task") else "localise"


def route_design(state: ResearchState) -> str:
    """After a design turn: localise once a task is accepted, end when the design failed, else another turn."""
    if state.get("status") == "error":
        return END
    return "localise" if state.get("task") else "design"
