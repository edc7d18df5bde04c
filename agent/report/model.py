"""What a report shows, as plain data: :class:`RunSummary`, derived from a run's log and nothing else.

Every renderer (Markdown, HTML, notebook) takes a :class:`RunSummary`; :func:`agent.report.build_summary`
builds it from the run's :class:`agent.view.RunView`. Keeping the two apart means a renderer never parses events and a schema
change touches one function.

>>> s = RunSummary(run_id="r1", question="which heads move names?")
>>> s.components == [] and s.usage.steps == 0
True
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from agent.config import KernelOptions
from agent.view import CellRecord, RunUsage


class ComponentRow(BaseModel):
    """One row of the component table."""

    component: str
    role: str = "—"
    explanation: str = ""
    confidence: float | None = None
    """0..1 as concluded by the planner."""
    numbers: dict[str, float | str] = Field(default_factory=dict)
    """Key numbers: ablation effect, patching effect, top attention role..."""
    evidence: list[int] = Field(default_factory=list)
    """Event seqs of the experiments cited."""
    seq: int | None = None
    """``seq`` of the conclusion event."""
    parts: list[tuple[str, bool]] = Field(default_factory=list)
    """The explanation cut into pieces, ``True`` marking a number no cited result gives (empty: unchecked)."""
    grounding: list[str] | None = None
    """The conclusion's grounding problems (``[]``: grounded; None: not checked, e.g. the loop's inconclusive)."""

    def pieces(self) -> list[tuple[str, bool]]:
        """:attr:`parts`, or the whole explanation unmarked."""
        return self.parts or [(self.explanation, False)]


class GroundingSummary(BaseModel):
    """The run's grounding (:mod:`evals.grounding`), as the report shows it."""

    claims: int = 0
    grounded: int = 0
    numbers: int = 0
    ungrounded_numbers: int = 0
    bad_citations: int = 0
    untested: int = 0
    undecided: list[str] = Field(default_factory=list)
    """Hypothesis ids never decided."""


class HypothesisStep(BaseModel):
    status: str
    """``proposed`` | ``supported`` | ``refuted`` | other planner statuses."""
    seq: int
    """Event that recorded this status."""
    evidence: list[int] = Field(default_factory=list)
    """Experiments (event seqs) that decided it."""
    note: str = ""


class Hypothesis(BaseModel):
    """A hypothesis and its fate over time."""

    id: str
    component: str | None = None
    statement: str
    steps: list[HypothesisStep] = Field(default_factory=list)

    @property
    def final(self) -> str:
        return self.steps[-1].status if self.steps else "proposed"


class Cluster(BaseModel):
    name: str
    members: list[str]
    explanation: str = ""


class Figure(BaseModel):
    """A rendered figure: PNG bytes (base64) plus where its data came from."""

    title: str
    png_b64: str
    source_seq: int | None = None
    """Event whose logged data the figure was computed from."""
    kind: str = "figure"
    """``attention`` | ``patching`` | ``logged`` (a figure file the run wrote)."""


class DesignRow(BaseModel):
    """One proposal of a task design and its check."""

    proposal: int
    valid: bool
    usable: bool | None = None
    gap: float | None = None
    accuracy: float | None = None
    flips: float | None = None
    note: str = ""
    """Why it was unusable or invalid."""


class TaskDesign(BaseModel):
    """How the LLM planner designed the run's task (from the ``framing`` event)."""

    status: str
    """``accepted`` | ``failed``."""
    task: str | None = None
    file: str | None = None
    """The accepted spec's file in the run directory (``task.yaml``)."""
    steps: int = 0
    reason: str = ""
    attempts: list[DesignRow] = Field(default_factory=list)


class RunSummary(BaseModel):
    """Everything a report shows, derived from the log."""

    run_id: str
    run_dir: str | None = None
    question: str = ""
    task: str | None = None
    task_description: str = ""
    design: TaskDesign | None = None
    """The task design, when the LLM planner designed the task."""
    model: str | None = None
    model_fingerprint: str | None = None
    seed: int | None = None
    planner: str | None = None
    status: str = "unknown"
    """``finished``, ``running`` (no run_finished event) or the logged final status."""
    started: str | None = None
    circuit: list[str] = Field(default_factory=list)
    setup_cells: list[str] = Field(default_factory=list)
    kernel: KernelOptions = Field(default_factory=KernelOptions)
    """The run's kernel options (model, sandbox backend, GPUs): figures re-computed for the report use them."""
    cells: list[CellRecord] = Field(default_factory=list)
    components: list[ComponentRow] = Field(default_factory=list)
    clusters: list[Cluster] = Field(default_factory=list)
    hypotheses: list[Hypothesis] = Field(default_factory=list)
    usage: RunUsage = Field(default_factory=RunUsage)
    """Resources used (steps, tool calls, tokens, USD, wall time)."""
    grounding: GroundingSummary | None = None
    """Is every conclusion traced to logged evidence? (None: no conclusion)"""
    evaluation: dict[str, Any] | None = None
    """Scores from an ``evaluation`` event, when present."""
    figures: list[Figure] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    """Things the report could not show and why (missing data, skipped figures)."""
