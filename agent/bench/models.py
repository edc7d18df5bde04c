"""The benchmark's data: a grid :class:`Cell`, the :class:`BenchConfig`, a finished :class:`CellResult` (one line
of ``results.jsonl``) and the :class:`BenchOutcome` of a call.

>>> BenchConfig(tasks=["toy-ioi"], out="/tmp/b").cells()[0].key
'toy-ioi|offline|0|orig'
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.config import SandboxKind


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class ExecutorKind(StrEnum):
    """Where a benchmark's investigations run."""

    RAY = "ray"
    """One Ray task per investigation (a local Ray, or ``--ray-address``)."""
    INLINE = "inline"
    """One after another, in this process."""


class Cell(_Data):
    """One investigation of the benchmark grid."""

    task: str
    planner: str
    seed: int
    permuted: bool = False

    @property
    def key(self) -> str:
        """``task|planner|seed|orig`` or ``...|perm``: the results file's key."""
        return f"{self.task}|{self.planner}|{self.seed}|{'perm' if self.permuted else 'orig'}"


class BenchConfig(_Data):
    """A benchmark: the grid, where results go, and how investigations run."""

    tasks: list[str]
    planners: list[str] = Field(default_factory=lambda: ["offline"])
    seeds: int = Field(1, ge=1)
    """Seeds 0..seeds-1 per (task, planner)."""
    permute_heads: int | None = None
    """Also run every cell on a head-permuted model (this permutation seed) and report the difference."""
    out: str
    """Directory for results.jsonl / results.csv / results.md, runs/ and permuted models."""
    ray_address: str | None = None
    """An existing Ray cluster (``ray.init(address=...)``); None starts Ray on this machine. On a
    cluster, ``out`` must be on a file system every node sees (workers write runs and permuted models
    there; the driver writes the results files)."""
    executor: ExecutorKind = ExecutorKind.RAY
    """``ray`` (one Ray task per investigation) or ``inline`` (sequential, in this process)."""
    num_cpus: float = 1.0
    """CPUs per investigation (Ray resource request)."""
    gpus_per_run: float | None = None
    """GPUs per investigation; None: 0 for zoo models, 1 for other models when CUDA is available."""
    n_prompts: int = Field(32, ge=2)
    n_null: int = Field(200, ge=0)
    judge: bool | None = None
    """Judge role labels with Claude too: None = when ANTHROPIC_API_KEY is set."""
    max_steps: int | None = None
    """Planner steps per component (the run budget's max_steps; None: the default budget)."""
    sandbox: SandboxKind = SandboxKind.LOCAL
    unsafe_no_isolation: bool = False

    def cells(self) -> list[Cell]:
        perms = [False, True] if self.permute_heads is not None else [False]
        return [Cell(task=t, planner=p, seed=s, permuted=q)
                for t in self.tasks for p in self.planners for s in range(self.seeds) for q in perms]


class CellResult(_Data):
    """One finished cell (a line of ``results.jsonl``)."""

    key: str
    task: str
    planner: str
    seed: int
    permuted: bool
    status: Literal["ok", "error"]
    note: str = ""
    run_dir: str | None = None
    scores: dict[str, float | None] = Field(default_factory=dict)
    wall_s: float = 0.0
    """Wall time of the whole cell: investigation + scoring (seconds)."""



class BenchOutcome(_Data):
    """What :func:`run_bench` did."""

    out: str
    ran: list[str]
    """Keys of cells run in this call."""
    reused: list[str]
    """Keys already finished in results.jsonl (not rerun)."""
    skipped: list[str]
    """Notes for planners that could not run here."""
    errors: list[str]
    markdown: str

