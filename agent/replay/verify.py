"""``replay --verify``: re-execute a logged run's code cells in a fresh sandbox and compare every number.

``verify(run_dir)`` reads the run's log only. It takes the ``run_started`` event's model, task and seed,
the setup cells logged in ``config["setup_cells"]`` (or :func:`agent.kernel.setup_cells` rebuilt from the
logged model, task, prompt count and seed; for a task the LLM planner designed, those of the ``framing``
event, with the accepted spec embedded: the designer's own cells need only the model), starts a fresh sandbox with them, and re-executes every
``execution_result`` event's code in log order. Each fresh result is compared with the logged one under
the rules of :mod:`agent.replay.compare`. A run verifies when no cell differs.

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

from agent.config import KernelOptions
from agent.kernel import HUGE_CELL_TIMEOUT_S, SandboxFactory, default_sandbox_factory, setup_cells
from agent.log import EVENTS_FILE, LogError, LogSchemaError, read_events
from agent.replay.compare import ATOL, RTOL, Mismatch, compare_results
from agent.view import CellRecord, RunView
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


_LINE = re.compile(r"line (\d+)")


def load_events(run_dir: str | Path) -> list[Any]:
    """Read a run's log for replay; turn log errors into :class:`ReplayError` naming the event (seq).

    The events file numbers events from line 1 = seq 0, so a bad line N is event seq N-1.
    """
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
    n = int(cfg.get("n_prompts") or cfg.get("prompts") or DEFAULT_N_PROMPTS)
    return setup_cells(started.model, started.task, n, started.seed)


def logged_cell_timeout(started: Any) -> float:
    """The per-cell timeout the run used: ``config["run"]["cell_timeout_s"]`` (where :class:`RunConfig` logs it),
    else the chosen ``config["resources"]["cell_timeout_s"]`` (runs whose limit came from the model's size), else
    a top-level ``cell_timeout_s``, else the largest default (:data:`agent.kernel.HUGE_CELL_TIMEOUT_S`: a
    generous limit changes no number).

    >>> from agent.log import RunStartedEvent
    >>> def started(config):
    ...     return RunStartedEvent(run_id="r", question="q", model="m", planner="offline", config=config)
    >>> logged_cell_timeout(started({"run": {"cell_timeout_s": 7}}))
    7.0
    >>> logged_cell_timeout(started({"run": {"cell_timeout_s": None}, "resources": {"cell_timeout_s": 300}}))
    300.0
    >>> logged_cell_timeout(started({}))
    600.0
    """
    cfg = started.config or {}
    value = ((cfg.get("run") or {}).get("cell_timeout_s") or (cfg.get("resources") or {}).get("cell_timeout_s")
             or cfg.get("cell_timeout_s"))
    return float(value or HUGE_CELL_TIMEOUT_S)


def logged_unsafe(started: Any) -> bool:
    """Whether the original run's kernel ran without isolation (then its replay may too)."""
    iso = (started.isolation or "").lower()
    return "unsafe" in iso or iso.startswith("none")


def verify(run_dir: str | Path, *, sandbox_factory: SandboxFactory | None = None,
           unsafe_no_isolation: bool | None = None, timeout_s: float | None = None,
           on_cell: Callable[[int, int, CellRecord], None] | None = None,
           rtol: float = RTOL, atol: float = ATOL, backend: str | None = None) -> VerifyReport:
    """Re-execute every logged code cell of ``run_dir`` in a fresh sandbox and compare (see module doc).

    ``unsafe_no_isolation`` defaults to what the original run used (its ``isolation`` field), ``backend``
    to the run's sandbox backend (``local`` / ``docker``: name the other to check that both compute the same
    numbers). ``on_cell`` is called as ``on_cell(i, n, cell)`` after each cell (for a progress bar).
    """
    run_dir = Path(run_dir)
    events = load_events(run_dir)
    check_artifacts(run_dir, events)
    view = RunView.from_events(events, run_dir)
    started = events[0]
    setup = view.setup_cells() or setup_cells_for(started)  # a designed task's, once a framing event set them
    unsafe = logged_unsafe(started) if unsafe_no_isolation is None else unsafe_no_isolation
    factory = sandbox_factory or default_sandbox_factory
    timeout = timeout_s or logged_cell_timeout(started)
    report = VerifyReport(run_id=started.run_id, cells=len(view.cells), original_wall_s=view.usage.wall_s,
                          rtol=rtol, atol=atol)
    workspace = Path(tempfile.mkdtemp(prefix=f"replay-{started.run_id}-"))
    t0 = time.perf_counter()
    sb = None
    try:
        sb = factory(workspace, setup, KernelOptions.logged(started, unsafe_no_isolation=unsafe, sandbox=backend))
        report.setup_s = time.perf_counter() - t0
        for i, cell in enumerate(view.cells):
            try:
                now = sb.execute(cell.code, timeout=timeout).model_dump(mode="json")
            except Exception as e:  # noqa: BLE001 - a failing sandbox is a mismatch of this cell, not a crash
                now = {"status": "error", "error_name": type(e).__name__, "error_value": str(e)[:2000]}
            report.mismatches.extend(compare_results(cell.seq, cell.call, cell.result, now, rtol, atol))
            if on_cell is not None:
                on_cell(i + 1, len(view.cells), cell)
    finally:
        if sb is not None:
            sb.shutdown()
        report.verify_s = time.perf_counter() - t0
        shutil.rmtree(workspace, ignore_errors=True)
    return report
