"""Run orchestration: start, resume and replay investigations; status from the log.

A run lives in ``<runs>/<run_id>/``: ``events.jsonl`` (the log, the source of truth),
``checkpoints.sqlite`` (LangGraph's ``SqliteSaver``: graph state after every node), ``workspace/``
(the sandbox's only writable directory), ``report.md``.

* :func:`start_run` frames the question (an error before anything is written if it cannot), starts
  the sandbox (setup cells load the model and the task's main and held-out prompts; see
  :mod:`agent.kernel`), logs ``run_started`` with the whole config (incl. the setup cells), and drives
  the graph.
* :func:`resume_run` reopens the log (a torn last line is cut), reads the last checkpoint, and
  continues the graph from it; events logged after that checkpoint are replayed by the
  :class:`~agent.state.Journal`, never logged twice. The fresh kernel re-runs (unlogged) the unfinished
  component's ``run_code`` cells so state the planner built exists again. A run still being written
  (its ``run.lock`` held, :mod:`agent.lock`) is refused; a finished run is left as is.
* :func:`replay_run` re-runs a logged run with the ``replay`` planner into a new run directory.
* :func:`run_status` is the run's :class:`~agent.view.RunView` status (the log only).

>>> RunConfig(question="q?").planner in ("offline", "claude")
True
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agent.actions import tool_specs
from agent.config import Planner, RunConfig
from agent.framing import Framing, frame_question
from agent.graph import build_graph
from agent.kernel import SandboxFactory, check_setup, default_sandbox_factory, setup_cells
from agent.lock import run_lock
from agent.log import RunLog, RunStartedEvent, collect_versions, new_run_id
from agent.paths import resolve_run, runs_dir
from agent.planners.prompts import SYSTEM_PROMPT
from agent.report import write_summary_report
from agent.state import Journal, RunContext
from agent.view import RunView
from tools.components import parse_components
from tools.errors import InterpAgentError

__all__ = ["RunConfig", "RunError", "RunOutcome", "make_backend", "replay_run", "resume_run", "run_status",
           "start_run", "warmup_cells"]

CHECKPOINTS = "checkpoints.sqlite"


class RunError(InterpAgentError):
    """A run that cannot start or resume as asked."""


def make_backend(cfg: RunConfig) -> Any:
    """The LLM backend named by ``cfg.planner``."""
    if cfg.planner == Planner.OFFLINE:
        from agent.planners.offline import OfflineBackend

        return OfflineBackend()
    if cfg.planner == Planner.CLAUDE:
        from agent.llm.claude import ClaudeBackend

        return ClaudeBackend(cfg.llm_model) if cfg.llm_model else ClaudeBackend()
    if not cfg.replay_from:
        raise RunError("the replay planner needs a run to replay", fix="pass --replay-from RUN_DIR")
    from agent.planners.replay import ReplayBackend

    return ReplayBackend(resolve_run(cfg.replay_from))


class RunOutcome(BaseModel):
    """What a finished (or stopped) run produced."""

    run_id: str
    run_dir: str
    status: str | None
    report: str | None
    conclusions: dict[str, dict[str, Any]] = {}
    clusters: list[dict[str, Any]] = []


def _graph_config(run_id: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": run_id}, "recursion_limit": 100_000}


def _drive(run_dir: Path, run_id: str, ctx: RunContext, inputs: dict[str, Any] | None) -> dict[str, Any]:
    from langgraph.checkpoint.sqlite import SqliteSaver

    with closing(sqlite3.connect(str(run_dir / CHECKPOINTS), check_same_thread=False)) as conn:
        graph = build_graph(SqliteSaver(conn))
        try:
            return graph.invoke(inputs, _graph_config(run_id), context=ctx, durability="sync")
        finally:
            ctx.close()


def _context(log: RunLog, cfg: RunConfig, setup: list[str], committed: int | None, factory: SandboxFactory,
             on_progress: Callable[[dict[str, Any]], None] | None, sandbox: Any = None,
             wall_base_s: float = 0.0, backend: Any = None, warmup: list[str] | None = None) -> RunContext:
    workspace = log.run_dir / "workspace"
    workspace.mkdir(parents=True, exist_ok=True)

    def start() -> Any:
        sb = factory(workspace, setup, cfg.kernel)
        for code in warmup or []:  # restore the kernel state the current component's own cells built
            sb.execute(code, timeout=cfg.cell_timeout_s)
        return sb

    ctx = RunContext(journal=Journal(log, committed), backend=backend or make_backend(cfg),
                     sandbox_factory=start, budget=cfg.budget, system_prompt=SYSTEM_PROMPT, tool_specs=tool_specs(),
                     threshold=cfg.threshold, max_components=cfg.max_components, cell_timeout_s=cfg.cell_timeout_s,
                     wall_base_s=wall_base_s, on_progress=on_progress)
    ctx._sandbox = sandbox
    return ctx


def start_run(cfg: RunConfig, *, sandbox_factory: SandboxFactory | None = None,
              on_progress: Callable[[dict[str, Any]], None] | None = None, run_id: str | None = None,
              on_started: Callable[[Path], None] | None = None) -> RunOutcome:
    """Frame, start the sandbox, log ``run_started``, run the graph to the end; return the outcome."""
    if cfg.circuit:
        cfg = cfg.model_copy(update={"circuit": [str(c) for c in parse_components(cfg.circuit)]})
    fr = frame_question(cfg.question, task=cfg.task, model=cfg.model)
    backend = make_backend(cfg)
    run_id = run_id or new_run_id()
    run_dir = runs_dir(cfg.out) / run_id
    if (run_dir / "events.jsonl").exists():
        raise RunError(f"run {run_id} already exists at {run_dir}", fix=f"resume it: interp-agent resume {run_dir}")
    setup = setup_cells(fr.model, fr.task, cfg.n_prompts, cfg.seed, threads=cfg.kernel_threads)
    try:
        with run_lock(run_dir):
            return _start_locked(cfg, fr, backend, run_id, run_dir, setup, sandbox_factory, on_progress, on_started)
    except BaseException:
        if not (run_dir / "events.jsonl").exists():  # nothing was logged: leave no empty run behind
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _start_locked(cfg: RunConfig, fr: Framing, backend: Any, run_id: str, run_dir: Path, setup: list[str],
                  sandbox_factory: SandboxFactory | None, on_progress: Any, on_started: Any) -> RunOutcome:
    factory = sandbox_factory or default_sandbox_factory
    workspace = run_dir / "workspace"
    workspace.mkdir(parents=True, exist_ok=True)
    sb = factory(workspace, setup, cfg.kernel.model_copy(update={"model": fr.model}))
    try:
        fingerprint = check_setup(sb, cfg.circuit)
        log = RunLog(run_dir)
        log.append(RunStartedEvent(
            run_id=run_id, question=cfg.question, task=fr.task, model=fr.model, model_fingerprint=fingerprint,
            planner=cfg.planner, llm_model=getattr(backend, "model", None) if cfg.planner == Planner.CLAUDE else None,
            seed=cfg.seed, circuit=cfg.circuit,
            config={"run": cfg.model_dump(mode="json"), "framing": fr.model_dump(), "setup_cells": setup,
                    "n_prompts": cfg.n_prompts},
            versions=collect_versions(), isolation=str(getattr(sb, "isolation", "unknown"))))
    except BaseException:
        sb.shutdown()
        raise
    if on_started is not None:
        on_started(run_dir)
    ctx = _context(log, cfg, setup, None, factory, on_progress, sandbox=sb, backend=backend)
    inputs = {"question": cfg.question, "task": fr.task, "model": fr.model, "circuit": cfg.circuit,
              "frame": fr.model_dump(), "log_seq": log.next_seq}
    state = _drive(run_dir, run_id, ctx, inputs)
    return _outcome(run_dir, run_id, state)


def _outcome(run_dir: Path, run_id: str, state: dict[str, Any]) -> RunOutcome:
    return RunOutcome(run_id=run_id, run_dir=str(run_dir), status=state.get("status"),
                      report=state.get("report_path"), conclusions=state.get("conclusions") or {},
                      clusters=state.get("clusters") or [])


def resume_run(run: str | Path, *, out: str | Path | None = None, sandbox_factory: SandboxFactory | None = None,
               on_progress: Callable[[dict[str, Any]], None] | None = None) -> RunOutcome:
    """Continue a run from its last checkpoint (no event lost or duplicated); a finished run is left as is."""
    run_dir = resolve_run(run, out)
    with run_lock(run_dir):
        return _resume_locked(run_dir, sandbox_factory, on_progress)


def _resume_locked(run_dir: Path, sandbox_factory: SandboxFactory | None, on_progress: Any) -> RunOutcome:
    from langgraph.checkpoint.sqlite import SqliteSaver

    log = RunLog.open_existing(run_dir)
    events = log.events()
    view = RunView.from_events(events, run_dir)
    started = view.started
    if started is None:
        raise RunError(f"{run_dir} has no run_started event", fix="start a new run with interp-agent investigate")
    if view.finished is not None:
        if not (run_dir / "report.md").exists():
            write_summary_report(run_dir)
        return RunOutcome(run_id=started.run_id, run_dir=str(run_dir), status=view.finished.status,
                          report=str(run_dir / "report.md"),
                          conclusions={c: e.model_dump() for c, e in view.conclusions.items()},
                          clusters=[e.model_dump() for e in view.clusters.values()])
    cfg = RunConfig(**started.config["run"]).model_copy(update={"model": started.model})
    setup = list(started.config.get("setup_cells") or [])
    with closing(sqlite3.connect(str(run_dir / CHECKPOINTS), check_same_thread=False)) as conn:
        snap = build_graph(SqliteSaver(conn)).get_state(_graph_config(started.run_id))
    values = dict(snap.values or {})
    has_checkpoint = bool(values) and bool(snap.next)
    committed = int(values.get("log_seq", 1)) if has_checkpoint else 1
    wall = float((values.get("usage") or {}).get("wall_s", 0.0)) if has_checkpoint else 0.0
    ctx = _context(log, cfg, setup, committed, sandbox_factory or default_sandbox_factory, on_progress,
                   wall_base_s=wall, warmup=warmup_cells(events))
    fr = started.config.get("framing") or {}
    inputs = None if has_checkpoint else {
        "question": started.question, "task": started.task, "model": started.model, "circuit": started.circuit,
        "frame": fr, "log_seq": 1}
    state = _drive(run_dir, started.run_id, ctx, inputs)
    return _outcome(run_dir, started.run_id, state)


def warmup_cells(events: list[Any]) -> list[str]:
    """``run_code`` cells of the unfinished component, in order: re-run (unlogged) in a resumed kernel so
    that variables the planner defined before the kill exist again. Typed experiment cells need none.

    >>> from agent.log import ToolCallEvent, ExecutionResultEvent
    >>> evs = [ToolCallEvent(call_id="a", name="run_code", input={}, component="L0H1"),
    ...        ExecutionResultEvent(call_id="a", code="x = 1", status="ok", component="L0H1")]
    >>> warmup_cells(evs)
    ['x = 1']
    """
    done = {e.component for e in events if e.kind == "conclusion"}
    current = next((e.component for e in reversed(events) if e.kind == "tool_call" and e.component), None)
    if current is None or current in done:
        return []
    names = {e.call_id: e.name for e in events if e.kind == "tool_call"}
    return [e.code for e in events if e.kind == "execution_result" and e.component == current
            and e.status == "ok" and names.get(e.call_id) == "run_code"]


def replay_run(run_dir: str | Path, out_dir: str | Path | None = None, *,
               sandbox_factory: SandboxFactory | None = None) -> Path:
    """Re-run ``run_dir``'s investigation with the ``replay`` planner (its logged LLM turns) into a new run.

    Returns the new run directory (under ``out_dir``, default beside the original).
    """
    run_dir = resolve_run(run_dir)
    started = RunView.from_run(run_dir).started
    if started is None:
        raise RunError(f"{run_dir} has no run_started event", fix="replay a run made by interp-agent investigate")
    cfg = RunConfig(**started.config["run"]).model_copy(update={
        "planner": Planner.REPLAY, "replay_from": str(run_dir), "out": str(out_dir or run_dir.parent),
        "task": started.task, "model": started.model})
    out = start_run(cfg, sandbox_factory=sandbox_factory)
    return Path(out.run_dir)


def run_status(run: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """A run's progress, derived from its log only (safe while the run is writing)."""
    return RunView.from_run(resolve_run(run, out)).status()
