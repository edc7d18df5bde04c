"""The benchmark grid: ``interp-agent bench`` (:func:`run_bench`).

:func:`run_bench` runs a grid of investigations (task × planner × seed, and × permuted with
``permute_heads``) as Ray tasks (or in-process, for tests), scores each (:func:`agent.bench.evaluate_run`),
and appends one line per finished cell to ``results.jsonl`` keyed by ``(task, planner, seed, permuted)``:
an interrupted benchmark resumes without redoing finished cells. The table (mean ± std over seeds per
task, planner and permutation) is written as CSV and Markdown. Progress is a rich progress bar.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agent.bench.evaluate import PERMUTATION_FILE, default_judge, evaluate_run, load_eval_model
from agent.bench.executors import CellFn, Executor, inline_executor, ray_executor
from agent.bench.models import BenchConfig, BenchOutcome, Cell, CellResult, ExecutorKind
from agent.bench.tables import append_result, read_results, write_tables


def planner_available(planner: str) -> str | None:
    """None when ``planner`` can run here, else a note saying why not and how to fix it.

    >>> planner_available("offline") is None
    True
    """
    if planner == "offline":
        return None
    if planner == "claude":
        return None if os.environ.get("ANTHROPIC_API_KEY") else (
            "claude planner skipped: ANTHROPIC_API_KEY is not set (export it to include claude)")
    return f"planner {planner!r} cannot run in a benchmark (use offline or claude)"


def _question(task: Any) -> str:
    desc = " ".join(str(task.description).split())
    return f"Which components implement the {task.name} task, and what does each do? {desc}"


def permuted_model_dir(model_ref: str, seed: int, out: str | Path) -> Path:
    """Save a head-permuted copy of ``model_ref`` under ``out/models/`` (once) with its mapping."""
    safe = model_ref.strip("/").replace("/", "_")
    path = Path(out) / "models" / f"{safe}-perm{seed}"
    if (path / PERMUTATION_FILE).is_file():
        return path
    from tools import permute_heads

    model = load_eval_model(model_ref)
    pm, mapping = permute_heads(model, seed)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{time.monotonic_ns()}")  # unique per worker
    tmp.mkdir(parents=True, exist_ok=True)
    pm.hf.save_pretrained(tmp)
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(tmp)
    (tmp / PERMUTATION_FILE).write_text(json.dumps(
        {"seed": seed, "source": model_ref, "mapping": {str(k): str(v) for k, v in mapping.items()}}))
    for f in tmp.iterdir():  # save_pretrained writes 0600 files: the sandbox's user must read them
        f.chmod(0o644)
    try:
        tmp.rename(path)
    except OSError:  # another worker won the race: its copy is the same permutation
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def run_cell(cell: Cell, cfg: BenchConfig, home: str | None = None) -> CellResult:
    """Investigate one cell with the agent, score it, and return the result (never raises)."""
    if home:
        os.environ["INTERP_AGENT_HOME"] = home
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    t0 = time.monotonic()
    base = dict(key=cell.key, task=cell.task, planner=cell.planner, seed=cell.seed, permuted=cell.permuted)
    run_dir = None
    try:
        from agent.run import RunConfig, start_run  # the research loop, only in a worker that runs one
        from evals.tasks import load_task

        task = load_task(cell.task)
        model_ref = task.model
        if cell.permuted:
            model_ref = str(permuted_model_dir(model_ref, int(cfg.permute_heads or 0), cfg.out))
        kwargs: dict[str, Any] = {}
        if cfg.max_steps is not None:
            from agent.budget import Budget

            kwargs["budget"] = Budget(max_steps=cfg.max_steps)
        rc = RunConfig(question=_question(task), task=cell.task, model=model_ref, planner=cell.planner,
                       seed=cell.seed, n_prompts=cfg.n_prompts, out=str(Path(cfg.out) / "runs"),
                       sandbox=cfg.sandbox, unsafe_no_isolation=cfg.unsafe_no_isolation, **kwargs)
        outcome = start_run(rc)
        run_dir = outcome.run_dir
        if outcome.status == "interrupted":  # the LLM API failed for good: not a result (a rerun redoes the cell)
            return CellResult(**base, status="error", note=f"paused: {outcome.reason}"[:500], run_dir=run_dir,
                              wall_s=time.monotonic() - t0)
        ev = evaluate_run(run_dir, n_null=cfg.n_null, judge=default_judge(cfg.judge))
        return CellResult(**base, status="ok", run_dir=run_dir, scores=ev["scores"], wall_s=time.monotonic() - t0)
    except Exception as e:  # noqa: BLE001 - a failed cell is a result, not a crashed benchmark
        return CellResult(**base, status="error", note=f"{type(e).__name__}: {e}"[:500], run_dir=run_dir,
                          wall_s=time.monotonic() - t0)


def run_bench(cfg: BenchConfig, *, executor: Executor | None = None, cell_fn: CellFn = run_cell,
              progress: bool = True) -> BenchOutcome:
    """Run the grid; results are appended as each cell finishes, finished cells are never rerun."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    skipped = []
    planners = []
    for p in cfg.planners:
        note = planner_available(p)
        if note:
            skipped.append(note)
        else:
            planners.append(p)
    cells = cfg.model_copy(update={"planners": planners}).cells()
    done = {k: r for k, r in read_results(out).items() if r.status == "ok"}
    todo = [c for c in cells if c.key not in done]
    reused = [c.key for c in cells if c.key in done]
    if executor is None:
        executor = ray_executor if cfg.executor == ExecutorKind.RAY else inline_executor
    home = os.environ.get("INTERP_AGENT_HOME")
    ran, errors = [], []
    with Progress(TextColumn("bench"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=Console(stderr=True),
                  disable=not (progress and todo)) as bar:
        task = bar.add_task("", total=len(todo))
        for r in (executor(cell_fn, todo, cfg, home) if todo else []):
            append_result(out, r)
            ran.append(r.key)
            if r.status != "ok":
                errors.append(f"{r.key}: {r.note}")
            bar.update(task, advance=1, description=f"{r.key} {r.status}")
    results = read_results(out)
    keys = {c.key for c in cells}
    _, _, md = write_tables(out, {k: r for k, r in results.items() if k in keys})
    return BenchOutcome(out=str(out), ran=ran, reused=reused, skipped=skipped, errors=errors, markdown=md)

