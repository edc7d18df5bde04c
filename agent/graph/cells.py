"""Running a tool's cell in the sandbox and logging it; turning its result into the planner's ``tool_result``."""

from __future__ import annotations

from typing import Any

from agent.actions import result_text
from agent.llm.text import ERROR_CHARS, cap
from agent.log import ExecutionResultEvent
from agent.state import RunContext
from sandbox.errors import SandboxError
from tools.errors import InterpAgentError


def execute_cell(ctx: RunContext, call_id: str, code: str, component: str | None) -> ExecutionResultEvent:
    """Run ``code`` in the sandbox (or take its logged result when resuming) and log the result.

    A sandbox that fails as a whole (its kernel died and could not be restarted: a :class:`SandboxError`)
    gives status ``died``; another project error gives ``error``. Either is data for the planner, not a crash.
    """
    pending = ctx.journal.peek("execution_result")
    if pending is not None and pending.call_id == call_id:
        return ctx.journal.emit(pending)
    try:
        res = ctx.sandbox().execute(code, timeout=ctx.cell_timeout_s)
        ev = ExecutionResultEvent.from_result(call_id, code, res, run_dir=ctx.log.run_dir, component=component)
    except SandboxError as e:
        ev = ExecutionResultEvent(call_id=call_id, code=code, status="died", error_name=type(e).__name__,
                                  error_value=str(e), component=component)
    except InterpAgentError as e:
        ev = ExecutionResultEvent(call_id=call_id, code=code, status="error", error_name=type(e).__name__,
                                  error_value=str(e), component=component)
    return ctx.journal.emit(ev, same=lambda a, b: a.call_id == b.call_id)


def tool_result_payload(ev: ExecutionResultEvent) -> tuple[str, bool]:
    """``(text, is_error)`` of the ``tool_result`` block for a logged cell: its data and seq, or the error.

    A cell that returned no data says why when the sandbox said why (a ``_result`` over the size cap or not
    JSON comes back as no data, with the reason on stderr). The error's message and traceback are cut to
    bounded sizes (the log keeps them whole); the handler's reply caps the whole and strips host paths.
    """
    if ev.status == "ok":
        body: dict[str, Any] = {"seq": ev.seq, "data": ev.data}
        if ev.data is None:
            if ev.stderr:  # first: the sandbox's reason for no data is there
                body["stderr"] = ev.stderr[-1000:]
            body["result"] = cap(ev.result, 800) if ev.result is not None else None
            if ev.stdout:
                body["stdout"] = ev.stdout[-2000:]
        return result_text(body), False
    err = f"seq {ev.seq}: cell {ev.status}: {cap(ev.error_name or '', 200)}: {cap(ev.error_value or '', 1500)}".strip()
    if ev.traceback:
        tb = ev.traceback
        err += "\n" + (tb if len(tb) <= 1200 else f"[… {len(tb) - 1200} chars of traceback cut]\n" + tb[-1200:])
    return cap(err, ERROR_CHARS), True
