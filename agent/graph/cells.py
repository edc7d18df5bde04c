"""Running a tool's cell in the sandbox and logging it; turning its result into the planner's ``tool_result``."""

from __future__ import annotations

from typing import Any

from agent.actions import result_text
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
    """``(text, is_error)`` of the ``tool_result`` block for a logged cell: its data and seq, or the error."""
    if ev.status == "ok":
        body: dict[str, Any] = {"seq": ev.seq, "data": ev.data}
        if ev.data is None:
            body["result"] = ev.result
            if ev.stdout:
                body["stdout"] = ev.stdout[-2000:]
        return result_text(body), False
    err = f"seq {ev.seq}: cell {ev.status}: {(ev.error_name or '')[:200]}: {(ev.error_value or '')[:2000]}".strip()
    if ev.traceback:
        err += "\n" + ev.traceback[-1500:]
    return err, True
