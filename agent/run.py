"""Run orchestration: start, resume and replay investigations; status from the log.

A run lives in ``<runs>/<run_id>/``: ``events.jsonl`` (the log, the source of truth),
``checkpoints.sqlite`` (LangGraph's ``SqliteSaver``: graph state after every node), ``workspace/``
(the sandbox's only writable directory), ``report.md``.

* :func:`start_run` frames the question (an error before anything is written if it cannot), starts
  the sandbox (setup cells load the model and the task's main and held-out prompts), logs
  ``run_started`` with the whole config (incl. the setup cells), and drives the graph.
* :func:`resume_run` reopens the log (a torn last line is cut), reads the last checkpoint, and
  continues the graph from it; events logged after that checkpoint are replayed by the
  :class:`~agent.state.Journal`, never logged twice. The fresh kernel re-runs (unlogged) the unfinished
  component's ``run_code`` cells so state the planner built exists again. A run still being written
  (its ``run.lock`` held) is refused; a finished run is left as is.
* :func:`replay_run` re-runs a logged run with the ``replay`` planner into a new run directory.
* :func:`run_status` derives a run's progress from its log only.

>>> RunConfig(question="q?").planner in ("offline", "claude")
True
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.budget import Budget
from agent.log import (
    RunLog,
    RunStartedEvent,
    collect_versions,
    latest_clusters,
    latest_conclusions,
    latest_hypotheses,
    llm_totals,
    new_run_id,
    read_events,
    run_finished,
    run_started,
)
from agent.paths import resolve_run, runs_dir
from tools.errors import InterpAgentError

CHECKPOINTS = "checkpoints.sqlite"
LOCK = "run.lock"


class RunError(InterpAgentError):
    """A run that cannot start or resume as asked."""


def default_planner() -> str:
    """``claude`` when ``ANTHROPIC_API_KEY`` is set, else ``offline``."""
    return "claude" if os.environ.get("ANTHROPIC_API_KEY") else "offline"


class RunConfig(BaseModel):
    """Everything that defines a run (logged in ``run_started.config["run"]``; resume rebuilds from it)."""

    model_config = ConfigDict(extra="forbid")

    question: str
    task: str | None = None
    """Task name or spec path; None to frame the question."""
    model: str | None = None
    """Zoo name, HF id or path; None for the task's default (a zoo model for toy tasks)."""
    circuit: list[str] | None = None
    planner: Literal["claude", "offline", "replay"] = Field(default_factory=default_planner)
    replay_from: str | None = None
    """Run directory whose LLM turns the ``replay`` planner feeds back."""
    llm_model: str | None = None
    """Claude model id (``claude`` planner); None for the backend's default."""
    budget: Budget = Field(default_factory=Budget)
    n_prompts: int = Field(32, ge=2)
    """Prompts in the main batch and in the held-out batch."""
    seed: int = 0
    sandbox: Literal["local", "docker"] = "local"
    unsafe_no_isolation: bool = False
    threshold: float = Field(0.1, ge=0)
    """Localisation keeps components whose |effect| ≥ threshold × the clean − corrupt gap."""
    max_components: int = Field(8, ge=1)
    cell_timeout_s: float = Field(120.0, gt=0)
    kernel_threads: int | None = Field(1, ge=1)
    """torch threads in the kernel (1 is fastest for small models on shared CPUs; None: torch default)."""
    out: str | None = None


# ---------------------------------------------------------------------------------------------- pieces


def make_backend(cfg: RunConfig) -> Any:
    """The LLM backend named by ``cfg.planner``."""
    if cfg.planner == "offline":
        from agent.planners.offline import OfflineBackend

        return OfflineBackend()
    if cfg.planner == "claude":
        from agent.llm.claude import ClaudeBackend

        return ClaudeBackend(cfg.llm_model) if cfg.llm_model else ClaudeBackend()
    if not cfg.replay_from:
        raise RunError("the replay planner needs a run to replay", fix="pass --replay-from RUN_DIR")
    from agent.llm.replay import ReplayBackend

    return ReplayBackend(resolve_run(cfg.replay_from))


SandboxFactory = Callable[[Path, list[str], RunConfig], Any]
"""``factory(workspace, setup_cells, cfg) -> started sandbox`` (tests pass an in-process fake)."""


def model_read_paths(model: str | None) -> list[str]:
    """Host paths the kernel must read to load ``model``: its folder (a local path) and the HF cache."""
    paths = []
    if model and Path(model).expanduser().exists():
        paths.append(str(Path(model).expanduser().resolve()))
    hf = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    if model and not paths and hf.exists():
        paths.append(str(hf.resolve()))
    return paths


def check_model_readable(model: str | None) -> None:
    """Refuse early, with the fix, when the kernel's (unprivileged) user could not read the model's files.

    ``save_pretrained`` writes weights with mode 0600; the isolated kernel runs as another user.
    """
    if not model:
        return
    d = Path(model).expanduser()
    if not d.is_dir():
        try:
            from evals.zoo import list_zoo, zoo_path

            if model in {e.name for e in list_zoo()}:
                d = zoo_path(model)
        except (ImportError, InterpAgentError):
            return
    if not d.is_dir():
        return
    bad = [p.name for p in sorted(d.iterdir()) if p.is_file() and not p.stat().st_mode & 0o004]
    if bad:
        raise RunError(f"the sandbox cannot read the model files {', '.join(bad)} in {d} (not world-readable; "
                       "save_pretrained writes weights as 0600)", fix=f"chmod -R a+rX {d}")


def default_sandbox_factory(workspace: Path, setup: list[str], cfg: RunConfig) -> Any:
    from sandbox import make_sandbox

    if cfg.sandbox == "local" and not cfg.unsafe_no_isolation:
        check_model_readable(cfg.model)

    opts: dict[str, Any] = {}
    ro = model_read_paths(cfg.model)
    if ro and cfg.sandbox == "local":
        opts["read_only_paths"] = ro
    sb = make_sandbox(backend=cfg.sandbox, workspace=workspace, setup_code=setup,
                      unsafe_no_isolation=cfg.unsafe_no_isolation, **opts)
    sb.start()
    return sb


def _check_setup(sb: Any, circuit: list[str] | None = None) -> str | None:
    """Run a probe cell: the model's fingerprint, and that every ``--circuit`` component exists in it."""
    res = sb.execute("_result = {'fingerprint': model.fingerprint()}", timeout=120)
    status = getattr(res, "status", "ok")
    if status != "ok":
        raise RunError(f"the sandbox could not load the model and task ({getattr(res, 'error_name', '')}: "
                       f"{getattr(res, 'error_value', '')})",
                       fix="check --model / --task (interp-agent zoo list, interp-agent tasks list)")
    data = getattr(res, "data", None) or {}
    if circuit:
        chk = sb.execute("_bad = []\n"
                         f"for _c in {circuit!r}:\n"
                         "    try:\n"
                         "        model.check(Component.parse(_c))\n"
                         "    except Exception as _e:\n"
                         "        _bad.append(f'{_c}: {_e}')\n"
                         "_result = {'bad': _bad, 'n_layers': model.n_layers, 'n_heads': model.n_heads}", timeout=60)
        info = getattr(chk, "data", None) or {}
        if getattr(chk, "status", "ok") == "ok" and info.get("bad"):
            raise RunError(f"--circuit names components this model lacks: {'; '.join(info['bad'])}",
                           fix=f"the model has {info.get('n_layers')} layers x {info.get('n_heads')} heads "
                               "(layers and heads count from 0)")
    return data.get("fingerprint") if isinstance(data, dict) else None


# ---------------------------------------------------------------------------------------------- locking


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/run.lock`` (an advisory ``flock``) while a process writes the run.

    The kernel releases it when the process dies, even by ``kill -9``, so ``resume`` can tell a run that
    is still being written (refused) from one that was interrupted.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    f = open(run_dir / LOCK, "a+")  # noqa: SIM115 - closed in finally
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid = f.read().strip() or "?"
            raise RunError(f"run {run_dir.name} is being written by another process (pid {pid})",
                           fix="wait for it to finish (interp-agent status RUN), or stop it and then resume") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield
    finally:
        f.close()


def is_running(run_dir: Path) -> bool:
    """True while another process holds the run's lock."""
    p = run_dir / LOCK
    if not p.exists():
        return False
    with open(p) as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


# ---------------------------------------------------------------------------------------------- running


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


def _drive(run_dir: Path, run_id: str, ctx: Any, inputs: dict[str, Any] | None) -> dict[str, Any]:
    from langgraph.checkpoint.sqlite import SqliteSaver

    from agent.graph import build_graph

    with closing(sqlite3.connect(str(run_dir / CHECKPOINTS), check_same_thread=False)) as conn:
        graph = build_graph(SqliteSaver(conn))
        try:
            return graph.invoke(inputs, _graph_config(run_id), context=ctx, durability="sync")
        finally:
            ctx.close()


def _context(log: RunLog, cfg: RunConfig, setup: list[str], committed: int | None, factory: SandboxFactory,
             on_progress: Callable[[dict[str, Any]], None] | None, sandbox: Any = None,
             wall_base_s: float = 0.0, backend: Any = None, warmup: list[str] | None = None) -> Any:
    from agent.actions import tool_specs
    from agent.planners.prompts import SYSTEM_PROMPT
    from agent.state import Journal, RunContext

    workspace = log.run_dir / "workspace"
    workspace.mkdir(parents=True, exist_ok=True)
    def start() -> Any:
        sb = factory(workspace, setup, cfg)
        for code in warmup or []:  # restore the kernel state the current component's own cells built
            sb.execute(code, timeout=cfg.cell_timeout_s)
        return sb

    ctx = RunContext(journal=Journal(log, committed), backend=backend or make_backend(cfg),
                     sandbox_factory=start, budget=cfg.budget,
                     system_prompt=SYSTEM_PROMPT, tool_specs=tool_specs(), threshold=cfg.threshold,
                     max_components=cfg.max_components, cell_timeout_s=cfg.cell_timeout_s,
                     wall_base_s=wall_base_s, on_progress=on_progress)
    ctx._sandbox = sandbox
    return ctx


def start_run(cfg: RunConfig, *, sandbox_factory: SandboxFactory | None = None,
              on_progress: Callable[[dict[str, Any]], None] | None = None, run_id: str | None = None,
              on_started: Callable[[Path], None] | None = None) -> RunOutcome:
    """Frame, start the sandbox, log ``run_started``, run the graph to the end; return the outcome."""
    from agent.actions import setup_cells
    from agent.framing import frame_question

    if cfg.circuit:
        from tools.components import parse_components

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


def _start_locked(cfg: RunConfig, fr: Any, backend: Any, run_id: str, run_dir: Path, setup: list[str],
                  sandbox_factory: SandboxFactory | None, on_progress: Any, on_started: Any) -> RunOutcome:
    factory = sandbox_factory or default_sandbox_factory
    workspace = run_dir / "workspace"
    workspace.mkdir(parents=True, exist_ok=True)
    sb = factory(workspace, setup, cfg)
    try:
        fingerprint = _check_setup(sb, cfg.circuit)
        log = RunLog(run_dir)
        log.append(RunStartedEvent(
            run_id=run_id, question=cfg.question, task=fr.task, model=fr.model, model_fingerprint=fingerprint,
            planner=cfg.planner, llm_model=getattr(backend, "model", None) if cfg.planner == "claude" else None,
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

    from agent.graph import build_graph

    log = RunLog.open_existing(run_dir)
    events = log.events()
    started = run_started(events)
    if started is None:
        raise RunError(f"{run_dir} has no run_started event", fix="start a new run with interp-agent investigate")
    fin = run_finished(events)
    if fin is not None:
        if not (run_dir / "report.md").exists():
            write_summary_report(run_dir)
        return RunOutcome(run_id=started.run_id, run_dir=str(run_dir), status=fin.status,
                          report=str(run_dir / "report.md"),
                          conclusions={c: e.model_dump() for c, e in latest_conclusions(events).items()},
                          clusters=[e.model_dump() for e in latest_clusters(events).values()])
    cfg = RunConfig(**started.config["run"])
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
    started = run_started(read_events(run_dir))
    if started is None:
        raise RunError(f"{run_dir} has no run_started event", fix="replay a run made by interp-agent investigate")
    cfg = RunConfig(**started.config["run"]).model_copy(update={
        "planner": "replay", "replay_from": str(run_dir), "out": str(out_dir or run_dir.parent),
        "task": started.task, "model": started.model})
    out = start_run(cfg, sandbox_factory=sandbox_factory)
    return Path(out.run_dir)


# ---------------------------------------------------------------------------------------------- views


def run_status(run: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """A run's progress, derived from its log only (safe while the run is writing)."""
    run_dir = resolve_run(run, out)
    events = read_events(run_dir)
    started = run_started(events)
    fin = run_finished(events)
    concl = latest_conclusions(events)
    hyps = latest_hypotheses(events)
    tot = llm_totals(events)
    comps: list[str] = list(started.circuit or []) if started and started.circuit else []
    for e in events:
        c = getattr(e, "component", None)
        if c and c not in comps:
            comps.append(c)
    current = None
    last_h = None
    for e in reversed(events):
        if current is None and getattr(e, "component", None) and e.component not in concl:
            current = e.component
        if last_h is None and e.kind == "hypothesis":
            last_h = f"{e.component}: {e.statement} [{e.status}]"
    return {
        "run_id": started.run_id if started else run_dir.name,
        "run_dir": str(run_dir),
        "question": started.question if started else None,
        "task": started.task if started else None,
        "model": started.model if started else None,
        "planner": started.planner if started else None,
        "state": fin.status if fin else ("running" if is_running(run_dir) else "interrupted"),
        "events": len(events),
        "components": {c: (concl[c].role if c in concl else "pending") for c in comps},
        "done": sum(1 for c in comps if c in concl),
        "pending": [c for c in comps if c not in concl],
        "current": current if fin is None else None,
        "hypotheses": sum(len(v) for v in hyps.values()),
        "last_hypothesis": last_h,
        "tool_calls": sum(1 for e in events if e.kind == "tool_call"),
        "llm_calls": int(tot["calls"]),
        "tokens": int(tot["input_tokens"] + tot["output_tokens"] + tot["cache_read_input_tokens"]
                      + tot["cache_creation_input_tokens"]),
        "usd": round(float(tot["usd"]), 4),
        "clusters": {n: e.components for n, e in latest_clusters(events).items()},
        "summary": fin.summary if fin else None,
    }


def write_summary_report(run_dir: str | Path) -> Path:
    """Write ``report.md`` for a run from its log (the report package's renderer; a plain fallback)."""
    run_dir = Path(run_dir)
    try:
        from agent.report import write_reports

        paths = write_reports(run_dir, md=True)
        md = [p for p in paths if Path(p).name == "report.md"]
        if md:
            return Path(md[0])
    except Exception as e:  # noqa: BLE001 - the plain summary below still says what the run found
        fallback_note = f"(the full renderer failed: {type(e).__name__}: {e})"
    else:
        fallback_note = ""
    return _plain_report(run_dir, fallback_note)


def _plain_report(run_dir: Path, note: str = "") -> Path:
    events = read_events(run_dir)
    st = run_started(events)
    fin = run_finished(events)
    concl = latest_conclusions(events)
    lines = [f"# Investigation {st.run_id if st else run_dir.name}", ""]
    if st:
        lines += [f"**Question:** {st.question}  ", f"**Task:** {st.task} · **Model:** {st.model} · "
                  f"**Planner:** {st.planner}", ""]
    lines += ["| component | role | confidence | explanation |", "|---|---|---|---|"]
    for c, e in concl.items():
        lines.append(f"| {c} | {e.role} | {e.confidence:.2f} | {e.explanation.replace('|', '/')} |")
    lines += ["", "## Clusters", ""]
    for n, e in latest_clusters(events).items():
        lines.append(f"- **{n}**: {', '.join(e.components)} — {e.explanation}")
    if fin:
        lines += ["", f"**Status:** {fin.status}. {fin.summary}"]
    if note:
        lines += ["", note]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
