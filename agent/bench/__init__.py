"""Scoring runs and benchmarking planners: ``interp-agent eval RUN`` and ``interp-agent bench``.

- :mod:`agent.bench.evaluate`: one run's scores from its log (:func:`evaluate_run`, appends an
  ``evaluation`` event);
- :mod:`agent.bench.grid`: the task × planner × seed (× head-permuted) grid (:func:`run_bench`), resumable;
- :mod:`agent.bench.executors`: in-process or Ray;
- :mod:`agent.bench.tables`: ``results.jsonl`` and the mean ± std tables (CSV, Markdown);
- :mod:`agent.bench.models`: the grid's data types.

It lives on the agent side (it drives investigations and calls ``evals``' scores) so imports stay one-way.

>>> BenchConfig(tasks=["toy-ioi"], out="/tmp/b").cells()[0].key
'toy-ioi|offline|0|orig'
"""

from agent.bench.evaluate import (
    EVALUATOR,
    PERMUTATION_FILE,
    BenchError,
    RunData,
    default_judge,
    evaluate_run,
    load_eval_model,
    read_run,
    score_run,
)
from agent.bench.executors import CellFn, Executor, inline_executor, ray_executor
from agent.bench.grid import permuted_model_dir, planner_available, run_bench, run_cell
from agent.bench.models import BenchConfig, BenchOutcome, Cell, CellResult
from agent.bench.tables import (
    TABLE_COLUMNS,
    aggregate,
    markdown_table,
    memorization_gaps,
    read_results,
    write_tables,
)

__all__ = ["EVALUATOR", "PERMUTATION_FILE", "TABLE_COLUMNS", "BenchConfig", "BenchError", "BenchOutcome", "Cell",
           "CellFn", "CellResult", "Executor", "RunData", "aggregate", "default_judge", "evaluate_run",
           "inline_executor", "load_eval_model", "markdown_table", "memorization_gaps", "permuted_model_dir",
           "planner_available", "ray_executor", "read_results", "read_run", "run_bench", "run_cell", "score_run",
           "write_tables"]
