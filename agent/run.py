"""Run orchestration: start, resume and replay investigations; status from the log.

A run lives in ``<runs>/<run_id>/``: ``events.jsonl`` (the log, the source of truth),
``checkpoints.sqlite`` (LangGraph's ``SqliteSaver``: graph state after every node), ``workspace/``
(the sandbox's only writable directory), ``report.md``.

* :func:`start_run` frames the question (an error before anything is written if it cannot), starts
  the sandbox (setup cells load the model and the task's main and held-out prompts; see
  :mod:`agent.kernel`), logs ``run_started`` with the whole config (incl. the setup cells), and drives
  the graph.
* With the ``claude`` planner, one free request checks the API key and the model id before any work
  (:meth:`agent.llm.claude.ClaudeBackend.check`), at start and at resume.
* An LLM failure that survives the backend's retries **pauses** the run: the node logs an ``error`` event
  and raises :class:`~agent.state.RunPaused`; the outcome is ``interrupted`` with the reason, nothing is
  marked inconclusive, and ``resume`` continues from that node.
* :func:`resume_run` reopens the log (a torn last line is cut), reads the last checkpoint, and
  continues the graph from it; events logged after that checkpoint are replayed by the
  :class:`~agent.state.Journal`, never logged twice. The fresh kernel re-runs (unlogged) the unfinished
  component's ``run_code`` cells so state the planner built exists again. A run still being written
  (its ``run.lock`` held, :mod:`agent.lock`) is refused; a completed run is left as is. ``budget=`` (the
  CLI's budget options) changes the run's budget from now on (a ``run_resumed`` event records it); a run
  that *finished* on a run-wide budget limit is reopened with the larger budget: the graph forks from the
  checkpoint where the limit stopped the first component, that component's conversation goes on, the
  components after it are investigated, and the run clusters and reports again.
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

from agent.actions import CLUSTER_TOOL, tool_specs
from agent.budget import Budget, BudgetUsage, exceeded
from agent.config import Planner, RunConfig, logged_config
from agent.framing import Framing, NoMatchingTask, design_framing, frame_question
from agent.graph import build_graph
from agent.graph.design import TaskDesignError
from agent.kernel import (
    Resources,
    SandboxFactory,
    default_sandbox_factory,
    model_check,
    model_params,
    resolve_resources,
    setup_cells,
)
from agent.lock import run_lock
from agent.log import RunLog, RunResumedEvent, RunStartedEvent, collect_versions, new_run_id, read_events
from agent.paths import resolve_run, runs_dir
from agent.planners.prompts import SYSTEM_PROMPT
from agent.report import write_summary_report
from agent.state import Journal, RunContext, RunPaused
from agent.view import RunView
from tools.components import parse_components
from tools.errors import InterpAgentError

__all__ = ["RunConfig", "RunError", "RunOutcome", "TaskDesignError", "frame", "make_backend", "replay_run", "resume_run", "run_status",
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
        from agent.llm.claude import DEFAULT_MODEL, ClaudeBackend

        return ClaudeBackend(cfg.llm_model or DEFAULT_MODEL, max_tokens=cfg.llm_max_tokens, stream=cfg.llm_stream)
    if not cfg.replay_from:
        raise RunError("the replay planner needs a run to replay", fix="pass --replay-from RUN_DIR")
    from agent.planners.replay import ReplayBackend

    return ReplayBackend(resolve_run(cfg.replay_from))


def check_backend(backend: Any) -> None:
    """The backend's start-up check, when it has one (Claude: one free request proving the key and model)."""
    check = getattr(backend, "check", None)
    if callable(check):
        check()


def cluster_with_llm(cfg: RunConfig) -> bool:
    """Whether the run asks its planner to cluster: ``claude``, or a replay of a run whose log has that call."""
    if cfg.planner == Planner.CLAUDE:
        return True
    if cfg.planner == Planner.REPLAY and cfg.replay_from:
        return any(e.kind == "llm_request" and e.component is None and CLUSTER_TOOL in e.tools
                   for e in read_events(resolve_run(cfg.replay_from)))
    return False


class RunOutcome(BaseModel):
    """What a finished (or stopped) run produced."""

    run_id: str
    run_dir: str
    status: str | None
    """``completed`` | ``budget`` | ``error`` | ``interrupted`` (paused: ``resume`` continues it)."""
    reason: str | None = None
    """Why the run did not complete (the API failure that paused it, the limit that stopped it...)."""
    report: str | None
    conclusions: dict[str, dict[str, Any]] = {}
    clusters: list[dict[str, Any]] = []


def _graph_config(run_id: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": run_id}, "recursion_limit": 100_000}


def _drive(run_dir: Path, run_id: str, ctx: RunContext, inputs: dict[str, Any] | None,
           config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the graph to its end, or until a node pauses the run (then ``status: interrupted`` and ``reason``)."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    with closing(sqlite3.connect(str(run_dir / CHECKPOINTS), check_same_thread=False)) as conn:
        graph = build_graph(SqliteSaver(conn))
        try:
            return graph.invoke(inputs, config or _graph_config(run_id), context=ctx, durability="sync")
        except RunPaused as e:
            values = dict(graph.get_state(_graph_config(run_id)).values or {})
            return {**values, "status": "interrupted", "reason": e.what, "report_path": None}
        finally:
            ctx.close()


def _context(log: RunLog, cfg: RunConfig, setup: list[str], committed: int | None, factory: SandboxFactory,
             on_progress: Callable[[dict[str, Any]], None] | None, sandbox: Any = None,
             wall_base_s: float = 0.0, backend: Any = None, warmup: list[str] | None = None,
             model_shape: tuple[int, int] | None = None) -> RunContext:
    workspace = log.run_dir / "workspace"
    workspace.mkdir(parents=True, exist_ok=True)

    timeout = cfg.cell_timeout_s or resolve_resources(model_params(cfg.model)).cell_timeout_s
    ctx = RunContext(journal=Journal(log, committed), backend=backend or make_backend(cfg),
                     sandbox_factory=lambda: None, budget=cfg.budget, system_prompt=SYSTEM_PROMPT,
                     tool_specs=tool_specs(), threshold=cfg.threshold, max_components=cfg.max_components,
                     cell_timeout_s=timeout, model_shape=model_shape, cluster_with_llm=cluster_with_llm(cfg),
                     wall_base_s=wall_base_s, grounding_check=cfg.grounding_check, on_progress=on_progress,
                     setup=list(setup), seed=cfg.seed,
                     design_steps=cfg.design_steps, setup_for=lambda spec_json: setup_cells(
                         cfg.model or "", None, cfg.n_prompts, cfg.seed, threads=cfg.kernel_threads,
                         spec_json=spec_json, device=cfg.device, dtype=str(cfg.dtype)))

    def start() -> Any:
        sb = factory(workspace, ctx.setup, cfg.kernel)
        for code in warmup or []:  # restore the kernel state the current component's own cells built
            sb.execute(code, timeout=timeout)
        return sb

    ctx.sandbox_factory = start
    ctx._sandbox = sandbox
    return ctx


def start_run(cfg: RunConfig, *, sandbox_factory: SandboxFactory | None = None,
              on_progress: Callable[[dict[str, Any]], None] | None = None, run_id: str | None = None,
              on_started: Callable[[Path], None] | None = None) -> RunOutcome:
    """Frame, start the sandbox, log ``run_started``, run the graph to the end; return the outcome."""
    if cfg.circuit:
        cfg = cfg.model_copy(update={"circuit": [str(c) for c in parse_components(cfg.circuit)]})
    fr = frame(cfg)
    # local checks first (a bad --device is the user's to fix, whatever the API says)
    res = resolve_resources(model_params(fr.model), threads=cfg.kernel_threads, cell_timeout_s=cfg.cell_timeout_s,
                            device=cfg.device)
    backend = make_backend(cfg)
    check_backend(backend)  # a wrong key or model id fails here, before the sandbox starts
    run_id = run_id or new_run_id()
    run_dir = runs_dir(cfg.out) / run_id
    if (run_dir / "events.jsonl").exists():
        raise RunError(f"run {run_id} already exists at {run_dir}", fix=f"resume it: interp-agent resume {run_dir}")
    cfg = cfg.model_copy(update={"kernel_threads": res.threads, "cell_timeout_s": res.cell_timeout_s,
                                 "device": res.device})
    if on_progress is not None:
        on_progress({"phase": "starting", "detail": res.why})
    setup = setup_cells(fr.model, fr.task or None, cfg.n_prompts, cfg.seed, threads=cfg.kernel_threads, device=cfg.device,
                        dtype=str(cfg.dtype))
    try:
        with run_lock(run_dir):
            return _start_locked(cfg, fr, backend, run_id, run_dir, setup, sandbox_factory, on_progress, on_started,
                                 res)
    except BaseException:
        if not (run_dir / "events.jsonl").exists():  # nothing was logged: leave no empty run behind
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def frame(cfg: RunConfig) -> Framing:
    """The run's framing: keywords or ``--task`` (:func:`agent.framing.frame_question`), or a task the LLM planner
    designs (``--design-task``; the ``claude`` planner on a question no task matches; the ``replay`` planner
    replaying a run that designed its task; see :mod:`agent.graph.design`). One-line errors for what cannot
    work: design with the offline planner, with ``--task``, or without a model."""
    designers = (Planner.CLAUDE, Planner.REPLAY)
    if cfg.design_task:
        if cfg.task is not None:
            raise RunError("--design-task and --task both say where the task comes from",
                           fix="give one: --task NAME_OR_FILE, or --design-task to let Claude design it")
        if cfg.planner not in designers:
            raise RunError(f"the {cfg.planner} planner cannot design a task (it frames by keywords)",
                           fix="use --planner claude (needs ANTHROPIC_API_KEY), or pass a task file with --task FILE")
        try:
            matched = frame_question(cfg.question, model=cfg.model)
        except NoMatchingTask:
            matched = None
        return design_framing(cfg.question, cfg.model, matched)
    try:
        return frame_question(cfg.question, task=cfg.task, model=cfg.model)
    except NoMatchingTask:
        replays_design = cfg.planner == Planner.REPLAY and bool(cfg.replay_from) and \
            RunView.from_run(resolve_run(cfg.replay_from)).designed
        if cfg.task is not None or not (cfg.planner == Planner.CLAUDE or replays_design):
            raise
        return design_framing(cfg.question, cfg.model)


def _start_locked(cfg: RunConfig, fr: Framing, backend: Any, run_id: str, run_dir: Path, setup: list[str],
                  sandbox_factory: SandboxFactory | None, on_progress: Any, on_started: Any,
                  res: Resources) -> RunOutcome:
    factory = sandbox_factory or default_sandbox_factory
    workspace = run_dir / "workspace"
    workspace.mkdir(parents=True, exist_ok=True)
    sb = factory(workspace, setup, cfg.kernel.model_copy(update={"model": fr.model}))
    try:
        info = model_check(sb, cfg.circuit, timeout_s=max(120.0, cfg.cell_timeout_s or 0.0))
        log = RunLog(run_dir)
        log.append(RunStartedEvent(
            run_id=run_id, question=cfg.question, task=fr.task or None, model=fr.model, model_fingerprint=info.fingerprint,
            planner=cfg.planner, llm_model=getattr(backend, "model", None) if cfg.planner == Planner.CLAUDE else None,
            seed=cfg.seed, circuit=cfg.circuit,
            config={"run": cfg.model_dump(mode="json"), "framing": fr.model_dump(), "setup_cells": setup,
                    "n_prompts": cfg.n_prompts, "model_shape": [info.n_layers, info.n_heads],
                    "resources": res.model_dump()},
            versions=collect_versions(), isolation=str(getattr(sb, "isolation", "unknown"))))
    except BaseException:
        sb.shutdown()
        raise
    if on_started is not None:
        on_started(run_dir)
    ctx = _context(log, cfg.model_copy(update={"model": fr.model}), setup, None, factory, on_progress, sandbox=sb,
                   backend=backend, model_shape=(info.n_layers, info.n_heads))
    inputs = {"question": cfg.question, "task": fr.task or None, "model": fr.model, "circuit": cfg.circuit,
              "frame": fr.model_dump(), "log_seq": log.next_seq}
    state = _drive(run_dir, run_id, ctx, inputs)
    return _outcome(run_dir, run_id, state)


def _design_failed(run_dir: Path, reason: str) -> TaskDesignError:
    return TaskDesignError(f"task design failed: {reason}", fix=f"every proposal and its check are in the run's log (interp-agent status {run_dir}); "
                               "rephrase the question, give more turns with --design-steps, or pass --task FILE")


def _outcome(run_dir: Path, run_id: str, state: dict[str, Any]) -> RunOutcome:
    """The run's outcome; a task design that failed raises :class:`TaskDesignError` (the log is kept)."""
    failed = (state.get("design") or {}).get("failed")
    if failed:
        raise _design_failed(run_dir, str(failed))
    status = state.get("status")
    reason = state.get("reason") or state.get("failure")
    if status == "budget" and not reason:
        reason = f"the {state.get('run_limit')} budget was reached"
    return RunOutcome(run_id=run_id, run_dir=str(run_dir), status=status, reason=reason,
                      report=state.get("report_path"), conclusions=state.get("conclusions") or {},
                      clusters=state.get("clusters") or [])


def resume_run(run: str | Path, *, out: str | Path | None = None, sandbox_factory: SandboxFactory | None = None,
               on_progress: Callable[[dict[str, Any]], None] | None = None,
               budget: dict[str, Any] | None = None) -> RunOutcome:
    """Continue a run from its last checkpoint (no event lost or duplicated); a completed run is left as is.

    ``budget``: budget fields to change (``{"max_usd": 5.0}``...): the run goes on under the new budget, and a
    run that finished on a run-wide budget limit is reopened (see the module docstring).
    """
    run_dir = resolve_run(run, out)
    with run_lock(run_dir):
        return _resume_locked(run_dir, sandbox_factory, on_progress, budget or {})


class _Resume(BaseModel):
    """How a resume continues: from the last checkpoint, or from a fork of it (a reopened budget stop)."""

    committed: int
    wall_s: float
    inputs: dict[str, Any] | None = None
    config: dict[str, Any] | None = None


def _resume_locked(run_dir: Path, sandbox_factory: SandboxFactory | None, on_progress: Any,
                   budget_update: dict[str, Any]) -> RunOutcome:
    from langgraph.checkpoint.sqlite import SqliteSaver

    log = RunLog.open_existing(run_dir)
    events = log.events()
    view = RunView.from_events(events, run_dir)
    started = view.started
    if started is None:
        raise RunError(f"{run_dir} has no run_started event", fix="start a new run with interp-agent investigate")
    old_budget = view.budget()
    new_budget = Budget(**{**old_budget.model_dump(), **budget_update})
    reopen = view.finished is not None and view.finished.status == "budget" and new_budget != old_budget
    if view.framing is not None and view.framing.status == "failed":
        raise _design_failed(run_dir, view.framing.reason)
    if view.finished is not None and not reopen:
        if not (run_dir / "report.md").exists():
            write_summary_report(run_dir)
        reason = None
        if view.finished.status == "budget":
            hit = next((e.limit_hit for e in reversed(events) if e.kind == "budget" and e.component is None
                        and e.limit_hit), None)
            reason = f"the {hit or 'run-wide'} budget was reached"
        return RunOutcome(run_id=started.run_id, run_dir=str(run_dir), status=view.finished.status, reason=reason,
                          report=str(run_dir / "report.md"),
                          conclusions={c: e.model_dump() for c, e in view.conclusions.items()},
                          clusters=[e.model_dump() for e in view.clusters.values()])
    cfg = RunConfig(**logged_config(started.config["run"])).model_copy(update={"model": started.model,
                                                                             "budget": new_budget})
    if reopen:
        spent = exceeded(new_budget, BudgetUsage(tool_calls=view.usage.tool_calls, input_tokens=view.usage.input_tokens,
                                                 output_tokens=view.usage.output_tokens, usd=view.usage.usd,
                                                 wall_s=view.usage.wall_s or 0.0))
        if spent is not None and spent.run_wide:
            raise RunError(f"the run has already used its new {spent} budget ({_used(view, spent)})",
                           fix="give a larger limit than what the run used (interp-agent status RUN shows it)")
    backend = make_backend(cfg)
    check_backend(backend)
    setup = view.setup_cells()
    with closing(sqlite3.connect(str(run_dir / CHECKPOINTS), check_same_thread=False)) as conn:
        graph = build_graph(SqliteSaver(conn))
        how = _reopen(graph, started.run_id, len(events) + 1) if reopen else _continue(graph, started, view)
    shape = started.config.get("model_shape")
    ctx = _context(log, cfg, setup, how.committed, sandbox_factory or default_sandbox_factory, on_progress,
                   wall_base_s=how.wall_s, backend=backend, warmup=[] if reopen else warmup_cells(events),
                   model_shape=tuple(shape) if shape else None)
    if new_budget != old_budget:
        changed = {k: v for k, v in new_budget.model_dump().items() if v != getattr(old_budget, k)}
        log.append(RunResumedEvent(budget=new_budget.model_dump(mode="json"), reopened=reopen, reason=(
            ("reopened after its budget stop; " if reopen else "") + "new budget: " +
            ", ".join(f"{k}={v}" for k, v in changed.items()))))
    state = _drive(run_dir, started.run_id, ctx, how.inputs, how.config)
    return _outcome(run_dir, started.run_id, state)


def _continue(graph: Any, started: RunStartedEvent, view: RunView) -> _Resume:
    """Resume from the last checkpoint (or from the start when the run died before the first one)."""
    snap = graph.get_state(_graph_config(started.run_id))
    values = dict(snap.values or {})
    if values and snap.next:
        return _Resume(committed=int(values.get("log_seq", 1)),
                       wall_s=float((values.get("usage") or {}).get("wall_s", 0.0)))
    fr = started.config.get("framing") or {}
    return _Resume(committed=1, wall_s=0.0, inputs={
        "question": started.question, "task": started.task, "model": started.model, "circuit": started.circuit,
        "frame": fr, "log_seq": 1})


def _reopen(graph: Any, run_id: str, committed: int) -> _Resume:
    """Fork the graph at the checkpoint where a run-wide limit first ended a component, limit cleared, so
    that component's conversation goes on and the components after it are investigated again.
    ``committed``: the log's length once the ``run_resumed`` event is appended (everything logged stays)."""
    config = _graph_config(run_id)
    stopped = None
    for snap in graph.get_state_history(config):  # newest first: keep the oldest match
        if tuple(snap.next) == ("end_component",) and (snap.values or {}).get("run_limit"):
            stopped = snap
    final = graph.get_state(config)
    if stopped is None or not final.values:
        raise RunError("cannot find the checkpoint where the budget stopped this run (checkpoints.sqlite is "
                       "missing or from another version)", fix="start a new run with the larger budget")
    wall = float((final.values.get("usage") or {}).get("wall_s", 0.0))
    fork = graph.update_state(stopped.config, {"run_limit": None, "limit_hit": None, "concluded": False,
                                               "log_seq": committed}, as_node="step")
    return _Resume(committed=committed, wall_s=wall, config={**fork, "recursion_limit": config["recursion_limit"]})


def _used(view: RunView, limit: Any) -> str:
    u = view.usage
    return {"tool_calls": f"{u.tool_calls} tool calls", "tokens": f"{u.tokens} tokens", "usd": f"${u.usd:.4f}",
            "wall_s": f"{u.wall_s or 0:.0f} s"}.get(str(limit), str(limit))


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
    view = RunView.from_run(run_dir)
    started = view.started
    if started is None:
        raise RunError(f"{run_dir} has no run_started event", fix="replay a run made by interp-agent investigate")
    designed = bool((started.config.get("framing") or {}).get("design"))
    cfg = RunConfig(**logged_config(started.config["run"])).model_copy(update={
        "planner": Planner.REPLAY, "replay_from": str(run_dir), "out": str(out_dir or run_dir.parent),
        "task": None if designed else started.task, "model": started.model, "budget": view.budget(),
        "design_task": designed})
    out = start_run(cfg, sandbox_factory=sandbox_factory)
    return Path(out.run_dir)


def run_status(run: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """A run's progress, derived from its log only (safe while the run is writing)."""
    return RunView.from_run(resolve_run(run, out)).status()
