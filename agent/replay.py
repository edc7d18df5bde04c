"""Replay a logged investigation: re-execute its code and check every number (``--verify``), or re-run the
whole research loop on the logged LLM turns (``--planner-replay``).

``verify(run_dir)`` reads the run's log only. It takes the ``run_started`` event's model, task and seed,
builds the same setup cells (those logged in ``config["setup_cells"]`` when present, otherwise
:func:`agent.actions.setup_cells` with the logged model, task, prompt count and seed), starts a fresh
sandbox with them, and re-executes every ``execution_result`` event's code in log order. Each fresh
result is compared with the logged one under the rules of :mod:`agent.report.compare` (numbers within
``rtol=1e-4, atol=1e-6`` recursively through ``data``; text exactly after normalising memory addresses,
timestamps and durations). A run verifies when no cell differs.

Before anything runs, the log is checked: a line from another schema MAJOR, a corrupt line anywhere but
a torn last line, a missing ``run_started`` event, or a figure file a cell logged that is no longer in the
run directory stop the replay with :class:`ReplayError` naming the event and what to do.

>>> r = VerifyReport(run_id="r", cells=3, verify_s=2.0, original_wall_s=8.0)
>>> r.ok, r.ratio
(True, 0.25)
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from agent.report.compare import ATOL, RTOL, Mismatch, compare_results
from agent.report.model import CellRecord
from tools.errors import InterpAgentError

DEFAULT_N_PROMPTS = 32
"""Prompt count used to rebuild setup cells when the log's config does not record ``n_prompts``."""


class ReplayError(InterpAgentError):
    """A run that cannot be replayed as logged (bad log line, missing artifact, missing run_started...)."""


class VerifyReport(BaseModel):
    """Outcome of ``replay --verify``."""

    run_id: str
    cells: int = 0
    """Number of logged code cells re-executed."""
    mismatches: list[Mismatch] = Field(default_factory=list)
    verify_s: float = 0.0
    """Wall time of the verification: sandbox start + setup cells + every cell (seconds)."""
    setup_s: float = 0.0
    """Part of ``verify_s`` spent starting the sandbox and running the setup cells (seconds)."""
    original_wall_s: float | None = None
    """Wall time of the original run, from its log (seconds)."""
    rtol: float = RTOL
    atol: float = ATOL

    @property
    def ok(self) -> bool:
        return not self.mismatches

    @property
    def ratio(self) -> float | None:
        """``verify_s / original_wall_s`` (None when the run's wall time is unknown)."""
        if not self.original_wall_s:
            return None
        return self.verify_s / self.original_wall_s


# ------------------------------------------------------------------------------------------- loading


_LINE = re.compile(r"line (\d+)")


def load_events(run_dir: str | Path) -> list[Any]:
    """Read a run's log for replay; turn log errors into :class:`ReplayError` naming the event (seq).

    The events file numbers events from line 1 = seq 0, so a bad line N is event seq N-1.
    """
    from agent.log import EVENTS_FILE, LogError, LogSchemaError, read_events

    run_dir = Path(run_dir)
    if not (run_dir / EVENTS_FILE).is_file():
        raise ReplayError(f"no run log at {run_dir / EVENTS_FILE}",
                          fix="pass a run directory holding events.jsonl (see `interp-agent status`)")
    try:
        events = read_events(run_dir)
    except LogSchemaError as e:
        m = _LINE.search(e.what)
        where = f"event seq {int(m.group(1)) - 1} ({e.what})" if m else e.what
        raise ReplayError(f"cannot replay {run_dir.name}: {where}", fix=e.fix) from e
    except LogError as e:
        raise ReplayError(e.what, fix=e.fix) from e
    if not events or events[0].kind != "run_started":
        raise ReplayError(f"{run_dir / EVENTS_FILE} does not start with a run_started event",
                          fix="replay needs the run's model, task and seed from run_started; restore the "
                              "log's first line")
    return events


def check_artifacts(run_dir: Path, events: list[Any]) -> None:
    """Every file an ``execution_result`` logged (figures...) must still be in the run directory."""
    for e in events:
        if e.kind != "execution_result":
            continue
        for rel in e.outputs:
            p = Path(rel) if Path(rel).is_absolute() else run_dir / rel
            if not p.exists():
                raise ReplayError(
                    f"event seq {e.seq} (execution_result) logged the file {rel}, which is missing from {run_dir}",
                    fix="restore the run directory from a backup (figures/ and workspace/ travel with "
                        "events.jsonl); replay refuses an incomplete run")


def setup_cells_for(started: Any) -> list[str]:
    """The setup cells of a run: logged in ``config["setup_cells"]``, else rebuilt from the logged config."""
    cfg = started.config or {}
    cells = cfg.get("setup_cells")
    if cells:
        return list(cells)
    if not started.task:
        raise ReplayError(f"run_started (seq {started.seq}) names no task and logs no setup cells",
                          fix="replay needs either config.setup_cells or a task name in the run_started event")
    from agent.actions import setup_cells

    n = int(cfg.get("n_prompts") or cfg.get("prompts") or DEFAULT_N_PROMPTS)
    return setup_cells(started.model, started.task, n, started.seed)


def original_wall_s(events: list[Any]) -> float | None:
    """The run's wall time: the last ``budget`` event's ``wall_s``, else first → last event timestamps."""
    budgets = [e.wall_s for e in events if e.kind == "budget" and e.component is None and e.wall_s]
    span = (events[-1].ts - events[0].ts).total_seconds() if events and events[0].ts and events[-1].ts else None
    cands = [x for x in (*budgets[-1:], span) if x]
    return max(cands) if cands else None


def logged_cells(events: list[Any]) -> list[CellRecord]:
    """The ``execution_result`` events as cells (tool-call name attached), in log order."""
    from agent.report.summary import cells_from_events

    return cells_from_events(events)


# ------------------------------------------------------------------------------------------- verify


SandboxFactory = Callable[[Path, list[str], bool], Any]
"""``factory(workspace, setup_code, unsafe_no_isolation) -> Sandbox`` (a context manager)."""


def default_sandbox(workspace: Path, setup_code: list[str], unsafe_no_isolation: bool,
                    model: str | None = None) -> Any:
    """A fresh local sandbox (the backend the CLI uses) that can read ``model``'s folder, as the run's could."""
    from sandbox import make_sandbox

    opts: dict[str, Any] = {}
    if model and not unsafe_no_isolation:
        try:
            from agent.run import model_read_paths

            ro = model_read_paths(model)
        except ImportError:  # the research loop is optional for replay
            ro = []
        if ro:
            opts["read_only_paths"] = ro
    return make_sandbox(backend="local", workspace=workspace, setup_code=setup_code,
                        unsafe_no_isolation=unsafe_no_isolation, **opts)


def _dump(result: Any) -> dict[str, Any]:
    if isinstance(result, dict):
        return result
    return result.model_dump(mode="json")


def verify(run_dir: str | Path, *, sandbox_factory: SandboxFactory | None = None,
           unsafe_no_isolation: bool | None = None, timeout_s: float | None = None,
           on_cell: Callable[[int, int, CellRecord], None] | None = None,
           rtol: float = RTOL, atol: float = ATOL) -> VerifyReport:
    """Re-execute every logged code cell of ``run_dir`` in a fresh sandbox and compare (see module doc).

    ``unsafe_no_isolation`` defaults to what the original run used (its ``isolation`` field). ``on_cell``
    is called as ``on_cell(i, n, cell)`` after each cell (for a progress bar).
    """
    run_dir = Path(run_dir)
    events = load_events(run_dir)
    check_artifacts(run_dir, events)
    started = events[0]
    setup = setup_cells_for(started)
    cells = logged_cells(events)
    if unsafe_no_isolation is None:
        iso = (started.isolation or "").lower()
        unsafe_no_isolation = "unsafe" in iso or iso.startswith("none")
    factory = sandbox_factory or (lambda ws, setup, unsafe: default_sandbox(ws, setup, unsafe, started.model))
    timeout = timeout_s or float((started.config or {}).get("cell_timeout_s") or 600.0)
    report = VerifyReport(run_id=started.run_id, cells=len(cells), original_wall_s=original_wall_s(events),
                          rtol=rtol, atol=atol)
    workspace = Path(tempfile.mkdtemp(prefix=f"replay-{started.run_id}-"))
    t0 = time.perf_counter()
    try:
        with factory(workspace, setup, unsafe_no_isolation) as sb:
            report.setup_s = time.perf_counter() - t0
            for i, cell in enumerate(cells):
                now = _dump(sb.execute(cell.code, timeout=timeout))
                report.mismatches.extend(compare_results(cell.seq, cell.call, cell.result, now, rtol, atol))
                if on_cell is not None:
                    on_cell(i + 1, len(cells), cell)
    finally:
        report.verify_s = time.perf_counter() - t0
        shutil.rmtree(workspace, ignore_errors=True)
    return report


# ------------------------------------------------------------------------------------------- planner replay


class ToolCallRecord(BaseModel):
    """A tool call in comparable form."""

    name: str
    input: dict[str, Any] = Field(default_factory=dict)


class PlannerReplayReport(BaseModel):
    """Outcome of ``replay --planner-replay``: the new run vs the logged one."""

    run_id: str
    new_run_dir: str
    calls_logged: int = 0
    calls_now: int = 0
    differences: list[str] = Field(default_factory=list)
    """One line per difference (a tool call that differs, a conclusion whose role differs...)."""
    replay_s: float = 0.0
    original_wall_s: float | None = None

    @property
    def ok(self) -> bool:
        return not self.differences

    @property
    def ratio(self) -> float | None:
        return self.replay_s / self.original_wall_s if self.original_wall_s else None


def tool_calls(events: list[Any]) -> list[ToolCallRecord]:
    """The run's tool calls (name + input), in order."""
    return [ToolCallRecord(name=e.name, input=e.input) for e in events if e.kind == "tool_call"]


def conclusions(events: list[Any]) -> dict[str, str]:
    """Component → concluded role (latest conclusion per component)."""
    from agent.log import latest_conclusions

    return {c: e.role for c, e in latest_conclusions(events).items()}


def compare_runs(logged: list[Any], now: list[Any]) -> list[str]:
    """Differences in tool calls (names + inputs, in order) and conclusions (component → role).

    >>> from agent.log import ToolCallEvent, ConclusionEvent
    >>> a = [ToolCallEvent(call_id="1", name="ablate", input={"components": ["L1H0"]}),
    ...      ConclusionEvent(component="L1H0", role="name mover", explanation="", confidence=1)]
    >>> b = [ToolCallEvent(call_id="9", name="ablate", input={"components": ["L1H1"]}),
    ...      ConclusionEvent(component="L1H0", role="inhibition", explanation="", confidence=1)]
    >>> for line in compare_runs(a, b): print(line)
    tool call 1: logged ablate {"components": ["L1H0"]} vs now ablate {"components": ["L1H1"]}
    conclusion L1H0: logged 'name mover' vs now 'inhibition'
    """
    import json

    out: list[str] = []
    ta, tb = tool_calls(logged), tool_calls(now)
    for i, (x, y) in enumerate(zip(ta, tb, strict=False)):
        if x != y:
            out.append(f"tool call {i + 1}: logged {x.name} {json.dumps(x.input, sort_keys=True)} vs now "
                       f"{y.name} {json.dumps(y.input, sort_keys=True)}")
    if len(ta) != len(tb):
        out.append(f"number of tool calls: logged {len(ta)} vs now {len(tb)}")
    ca, cb = conclusions(logged), conclusions(now)
    for comp in list(ca) + [c for c in cb if c not in ca]:
        if ca.get(comp) != cb.get(comp):
            out.append(f"conclusion {comp}: logged {ca.get(comp)!r} vs now {cb.get(comp)!r}")
    return out


def planner_replay(run_dir: str | Path, out_dir: str | Path | None = None,
                   runner: Callable[..., Path] | None = None) -> PlannerReplayReport:
    """Re-run the research loop with the ``replay`` planner fed from ``run_dir``'s logged LLM turns, into a
    new run directory, and compare tool calls and conclusions with the logged run.

    ``runner(run_dir=..., out_dir=...) -> new_run_dir`` does the re-run; the default is the research
    loop's own replay entry point (:func:`agent.run.replay_run`).
    """
    run_dir = Path(run_dir)
    events = load_events(run_dir)
    check_artifacts(run_dir, events)
    out_dir = Path(out_dir) if out_dir else run_dir.parent
    if runner is None:
        try:
            from agent.run import replay_run as runner  # type: ignore[no-redef]
        except ImportError as e:
            raise ReplayError("the research loop (agent.run.replay_run) is not available in this install",
                              fix="update interp-agent; --verify works without it") from e
    t0 = time.perf_counter()
    new_dir = Path(runner(run_dir=run_dir, out_dir=out_dir))
    took = time.perf_counter() - t0
    from agent.log import read_events

    now = read_events(new_dir)
    return PlannerReplayReport(run_id=events[0].run_id, new_run_dir=str(new_dir),
                               calls_logged=len(tool_calls(events)), calls_now=len(tool_calls(now)),
                               differences=compare_runs(events, now), replay_s=took,
                               original_wall_s=original_wall_s(events))
