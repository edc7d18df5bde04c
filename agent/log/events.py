"""The run log's schema: one pydantic model per event kind, with a ``kind`` discriminator.

Every event has ``kind``, ``schema_version`` (``"MAJOR.MINOR"``; a reader refuses a newer MAJOR), ``seq``
(contiguous, assigned on append), ``ts`` (UTC, assigned on append) and an optional ``component`` in the
component grammar (see :mod:`tools.components`). Reading and writing live in :mod:`agent.log.store`.
"""

from __future__ import annotations

import hashlib
import platform
import secrets
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from agent.budget import Limit
from agent.llm.types import ContentBlock, Usage
from tools.components import Component
from tools.errors import InterpAgentError

SCHEMA_VERSION = "1.3"
"""The version this code writes. Readers accept any ``1.x``; a newer minor's unknown fields are dropped.

1.1 added the ``components`` and ``run_resumed`` event kinds (a 1.0 log has neither and reads as before).
1.2 added the ``framing`` event kind (a task designed by the LLM planner; older logs have none).
1.3 added the ``localisation`` event kind (how localisation chose the components; older logs have none)."""
SCHEMA_MAJOR = int(SCHEMA_VERSION.split(".")[0])
EVENTS_FILE = "events.jsonl"


class LogSchemaError(InterpAgentError):
    """A run log that cannot be read: a corrupt line, a gap in ``seq``, or a newer schema version."""


class LogError(InterpAgentError):
    """A run log used wrongly: appending to a log that exists without opening it for resume, etc."""


def _now() -> datetime:
    return datetime.now(UTC)


def _check_component(v: str | None) -> str | None:
    if v is None:
        return None
    return str(Component.parse(v))  # canonical form; ComponentError (a ValueError) → ValidationError


class _Event(BaseModel):
    """Fields common to every event."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    schema_version: str = Field(SCHEMA_VERSION, pattern=r"^\d+\.\d+$")
    """Log schema version ``MAJOR.MINOR`` this event was written with."""
    seq: int = Field(-1, ge=-1)
    """Position in the log: 0, 1, 2... contiguous. -1 until :meth:`RunLog.append` assigns it."""
    ts: datetime | None = None
    """When the event was appended (UTC, ISO 8601). None until :meth:`RunLog.append` assigns it."""
    component: str | None = None
    """The component this event is about, in the component grammar (``L9H9``, ``MLP3``...), if any."""

    @field_validator("component")
    @classmethod
    def _norm_component(cls, v: str | None) -> str | None:
        return _check_component(v)


class RunStartedEvent(_Event):
    """The first event of a run: what was asked, on which model, with which configuration."""

    kind: Literal["run_started"] = "run_started"
    run_id: str
    """The run's id (also its directory name), see :func:`new_run_id`."""
    question: str
    """The researcher's question, verbatim."""
    task: str | None = None
    """The task spec name (or path) the question was framed as; None before framing."""
    model: str
    """The model investigated: a zoo name, a Hugging Face id or a local path."""
    model_fingerprint: str | None = None
    """sha256 of the model's weights (``tools.Model.fingerprint()``), to detect a changed model."""
    planner: str
    """Which planner drives the run: ``claude`` | ``offline`` | ``replay``."""
    llm_model: str | None = None
    """The LLM model id for the ``claude`` planner (None for offline)."""
    seed: int = 0
    """The run's random seed (prompt sampling, resampling ablations)."""
    circuit: list[str] | None = None
    """Components given by the user (``--circuit``), in the component grammar; None to localise."""
    config: dict[str, Any] = Field(default_factory=dict)
    """The full run configuration (budgets, thresholds, flags) as JSON."""
    versions: dict[str, str] = Field(default_factory=dict)
    """Versions of python, torch, transformers, interp-agent... (see :func:`collect_versions`)."""
    isolation: str = ""
    """How the sandbox was isolated, e.g. ``bwrap+rlimits``, ``docker``, ``none (unsafe)``."""

    @field_validator("circuit")
    @classmethod
    def _norm_circuit(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [str(Component.parse(c)) for c in v]


class ComponentsEvent(_Event):
    """The components the run will investigate, in order (``--circuit``, or what localisation kept): so a
    run interrupted early still says which components are pending."""

    kind: Literal["components"] = "components"
    components: list[str]
    """The components, in the order they are investigated (component grammar)."""
    source: Literal["circuit", "localisation"] = "localisation"
    """Where the list came from: the user's ``--circuit`` or the localisation sweep."""

    @field_validator("components")
    @classmethod
    def _norm_components(cls, v: list[str]) -> list[str]:
        return [str(Component.parse(c)) for c in v]


class RunResumedEvent(_Event):
    """``resume`` continued the run with a new budget (appended by the runner, not by a graph node)."""

    kind: Literal["run_resumed"] = "run_resumed"
    budget: dict[str, Any] = Field(default_factory=dict)
    """The budget from now on (:class:`agent.budget.Budget` as JSON); it replaces ``run_started``'s."""
    reopened: bool = False
    """True when the run had finished on a budget limit and goes on with the larger one: the components
    that limit stopped are investigated again, then the run clusters and reports again (later ``conclusion``,
    ``cluster`` and ``run_finished`` events supersede the earlier ones)."""
    reason: str = ""
    """What the resume changed, in words."""


class DesignAttempt(BaseModel):
    """One task the LLM designer proposed, and what became of it (inside a :class:`FramingEvent`)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    proposal: int = Field(ge=1)
    """The proposal's number (1, 2, ...), as the designer was told."""
    call_id: str
    """The ``propose_task`` tool call (its ``tool_call`` event holds the input as sent)."""
    valid: bool
    """The input validated as a task spec."""
    error: str | None = None
    """Why it did not validate."""
    spec: dict[str, Any] | None = None
    """The validated spec (:class:`evals.tasks.TaskSpec` as JSON)."""
    check_seq: int | None = None
    """``seq`` of the ``execution_result`` of its ``check_task`` cell (the last one, when checked twice)."""
    usable: bool | None = None
    """The check's verdict (None: not checked, or the check cell failed)."""
    reasons: list[str] = Field(default_factory=list)
    """Why the check found it unusable (or why the check cell failed)."""
    gap: float | None = None
    """Clean − corrupt metric (mean over the checked prompts)."""
    accuracy: float | None = None
    """Fraction of prompts on which the model prefers the answer."""
    flips: float | None = None
    """Fraction of corrupt prompts whose preference flips."""


class FramingEvent(_Event):
    """The LLM planner's task design ended: the spec it accepted (the first proposal whose check passed),
    or why none was, with every attempt. Written once, before localisation (1.2)."""

    kind: Literal["framing"] = "framing"
    status: Literal["accepted", "failed"]
    """``accepted``: the run goes on with :attr:`spec`; ``failed``: the framing budget ended first."""
    task: str | None = None
    """The accepted spec's name."""
    spec: dict[str, Any] | None = None
    """The accepted spec (:class:`evals.tasks.TaskSpec` as JSON): what resume, replay, report and eval use."""
    file: str | None = None
    """Where the spec was written, relative to the run directory (``task.yaml``)."""
    setup_cells: list[str] = Field(default_factory=list)
    """The kernel's setup cells from here on (the model and the accepted task, embedded)."""
    attempts: list[DesignAttempt] = Field(default_factory=list)
    """Every proposal, in order."""
    steps: int = Field(0, ge=0)
    """Planner turns the design took."""
    reason: str = ""
    """Why the design failed (empty when accepted)."""


class LLMRequestEvent(_Event):
    """A call to an LLM backend (logged before the call)."""

    kind: Literal["llm_request"] = "llm_request"
    backend: str
    """The backend's name: ``claude`` | ``offline`` | ``replay``."""
    model: str
    """The model id asked."""
    system_sha256: str
    """sha256 of the system prompt (the prompt itself is in the config or code, not repeated per call)."""
    n_messages: int = Field(ge=0)
    """Number of messages in the request (the whole conversation so far)."""
    messages: list[dict[str, Any]] = Field(default_factory=list)
    """The messages added since the previous request (Anthropic Messages format)."""
    tools: list[str] = Field(default_factory=list)
    """Names of the tools offered."""
    max_tokens: int | None = None
    """Output token limit of the call (tokens)."""


class LLMResponseEvent(_Event):
    """The answer to the preceding :class:`LLMRequestEvent`."""

    kind: Literal["llm_response"] = "llm_response"
    backend: str
    """The backend's name."""
    model: str
    """The model id that answered."""
    content: list[ContentBlock] = Field(default_factory=list)
    """The assistant turn's blocks: ``text`` and ``tool_use{id, name, input}``."""
    stop_reason: str | None = None
    """``end_turn`` | ``tool_use`` | ``max_tokens`` | ... (None if the backend does not say)."""
    usage: Usage = Field(default_factory=Usage)
    """Token counts (input, output, cache read, cache write)."""
    cost_usd: float | None = None
    """Price of the call (US dollars); None when the model is not in the price table."""
    latency_s: float = Field(0.0, ge=0)
    """Wall time of the call including retries (seconds)."""
    attempts: int = Field(1, ge=1)
    """HTTP attempts made (1 = no retry)."""


class ToolCallEvent(_Event):
    """A planner tool call (``run_code``, ``ablate``, ``record_hypothesis``...) about to be executed."""

    kind: Literal["tool_call"] = "tool_call"
    call_id: str
    """The id tying the call to its result (the LLM's ``tool_use`` id, or a generated one)."""
    name: str
    """The tool's name."""
    input: dict[str, Any] = Field(default_factory=dict)
    """The tool's arguments as given."""


class ExecutionResultEvent(_Event):
    """The outcome of running a code cell in the sandbox for a :class:`ToolCallEvent`."""

    kind: Literal["execution_result"] = "execution_result"
    call_id: str
    """The :class:`ToolCallEvent` this answers."""
    code: str
    """The exact code cell executed (so every experiment is reproducible code)."""
    status: Literal["ok", "error", "timeout", "died"]
    """``ok``; ``error`` (an exception in the cell); ``timeout`` (interrupted); ``died`` (kernel lost)."""
    stdout: str = ""
    """Captured standard output (possibly truncated)."""
    stderr: str = ""
    """Captured standard error (possibly truncated)."""
    result: str | None = None
    """Text repr of the cell's last expression, if any."""
    data: Any = None
    """JSON value the cell put in ``_result`` (numbers the planner reads), if any."""
    outputs: list[str] = Field(default_factory=list)
    """Files the cell wrote (figures...), as paths relative to the run directory."""
    error_name: str | None = None
    """Exception class name when ``status`` is ``error``."""
    error_value: str | None = None
    """Exception message when ``status`` is ``error``."""
    traceback: str | None = None
    """Traceback text when ``status`` is ``error``."""
    duration_s: float = Field(0.0, ge=0)
    """Wall time of the cell (seconds)."""

    @classmethod
    def from_result(cls, call_id: str, code: str, result: Any, *, run_dir: str | Path | None = None,
                    **extra: Any) -> ExecutionResultEvent:
        """Build from a ``sandbox.ExecutionResult`` (or its ``model_dump()``, or any object/dict with those names).

        ``traceback`` may be a list of lines (joined); ``outputs`` may hold ``OutputFile`` objects or dicts
        with a ``path``, or paths: each becomes a path relative to ``run_dir`` when it lies inside it.

        >>> ExecutionResultEvent.from_result("c1", "1+1", {"status": "ok", "result": "2", "traceback": []}).result
        '2'
        >>> ExecutionResultEvent.from_result("c2", "plot()", {"status": "error", "traceback": ["a", "b"],
        ...     "outputs": [{"path": "/runs/r1/figures/f.png", "mime": "image/png"}]}, run_dir="/runs/r1").outputs
        ['figures/f.png']
        """
        raw = result if isinstance(result, dict) else (
            result.model_dump() if hasattr(result, "model_dump") else dict(vars(result)))
        fields = set(cls.model_fields) - {"kind", "call_id", "code", "seq", "ts", "schema_version"}
        kw = {k: v for k, v in raw.items() if k in fields and v is not None}
        if isinstance(kw.get("traceback"), list | tuple):
            kw["traceback"] = "\n".join(str(x) for x in kw["traceback"]) or None
        if "outputs" in kw:
            kw["outputs"] = [_output_path(o, run_dir) for o in kw["outputs"]]
        kw.update(extra)
        return cls(call_id=call_id, code=code, **kw)


def _output_path(o: Any, run_dir: str | Path | None) -> str:
    """An output entry (OutputFile, dict with ``path``, or a path) as a path string, relative to ``run_dir``."""
    p = o.get("path", o) if isinstance(o, dict) else getattr(o, "path", o)
    path = Path(str(p))
    if run_dir is not None and path.is_absolute():
        try:
            return path.relative_to(Path(run_dir)).as_posix()
        except ValueError:
            try:
                return path.resolve().relative_to(Path(run_dir).resolve()).as_posix()
            except ValueError:
                pass
    return path.as_posix()


HypothesisStatus = Literal["proposed", "supported", "refuted", "inconclusive"]


class HypothesisEvent(_Event):
    """A hypothesis about one component, or a change of its status (same ``hypothesis_id``)."""

    kind: Literal["hypothesis"] = "hypothesis"
    component: str
    """The component the hypothesis is about (component grammar)."""
    hypothesis_id: str
    """Stable id; later events with the same id update its status."""
    statement: str
    """The claim, in task terms (e.g. "moves the IO name to the END position")."""
    status: HypothesisStatus
    """``proposed`` | ``supported`` | ``refuted`` | ``inconclusive``."""
    evidence: list[int] = Field(default_factory=list)
    """``seq`` numbers of earlier events (execution results...) that support the status."""
    prediction: str | None = None
    """A falsifiable prediction tested on held-out prompts, if any."""


class ConclusionEvent(_Event):
    """The role concluded for one component (the latest one per component wins)."""

    kind: Literal["conclusion"] = "conclusion"
    component: str
    """The component concluded about (component grammar)."""
    role: str
    """A short role label (e.g. ``name mover``, ``induction``, ``previous token``, ``inconclusive``)."""
    explanation: str
    """What the component does and why we believe it, in a few sentences."""
    confidence: float = Field(ge=0.0, le=1.0)
    """Subjective confidence in the role, 0 to 1."""
    evidence: list[int] = Field(default_factory=list)
    """``seq`` numbers of earlier events the conclusion rests on."""
    inconclusive_reason: str | None = None
    """Why no role could be concluded (e.g. ``budget``), else None."""


class ClusterEvent(_Event):
    """A group of components that share a function."""

    kind: Literal["cluster"] = "cluster"
    name: str
    """The cluster's name (e.g. ``name movers``)."""
    components: list[str]
    """Member components (component grammar)."""
    explanation: str = ""
    """What the members have in common, and the evidence."""

    @field_validator("components")
    @classmethod
    def _norm_components(cls, v: list[str]) -> list[str]:
        return [str(Component.parse(c)) for c in v]


class BudgetEvent(_Event):
    """Budget counters so far; with ``limit_hit`` set when a limit stopped a component or the run."""

    kind: Literal["budget"] = "budget"
    steps: int = Field(0, ge=0)
    """Planner steps taken (for ``component``'s sub-loop when ``component`` is set, else the run)."""
    tool_calls: int = Field(0, ge=0)
    """Tool calls executed in the run."""
    input_tokens: int = Field(0, ge=0)
    """LLM input tokens in the run, cached or not (tokens)."""
    output_tokens: int = Field(0, ge=0)
    """LLM output tokens in the run (tokens)."""
    usd: float = Field(0.0, ge=0)
    """LLM spend in the run (US dollars)."""
    wall_s: float = Field(0.0, ge=0)
    """Wall time since the run started (seconds)."""
    limit_hit: Limit | None = None
    """Which limit was reached, if any (:class:`agent.budget.Limit`: ``component_steps``, ``tool_calls``...)."""


class ErrorEvent(_Event):
    """Something went wrong (a bad tool input, an API failure, a dead kernel...)."""

    kind: Literal["error"] = "error"
    where: str
    """Where: a graph node, tool or backend name (e.g. ``llm.claude``, ``tool.ablate``)."""
    message: str
    """What went wrong, and how to fix it if known."""
    recoverable: bool = True
    """True when the run went on after it."""
    error_type: str | None = None
    """The exception class name, if any."""


class EvaluationEvent(_Event):
    """Scores of the run against references or intrinsic measures."""

    kind: Literal["evaluation"] = "evaluation"
    evaluator: str
    """Which evaluator produced the scores (e.g. ``reference``, ``interchangeability``)."""
    scores: dict[str, float | None] = Field(default_factory=dict)
    """Score name → value (None when undefined, e.g. under the noise floor)."""
    details: dict[str, Any] = Field(default_factory=dict)
    """Anything else the evaluator reports, as JSON."""


class LocalisationEvent(_Event):
    """How localisation chose the components (1.3): the gradient screen, the exact checks, their agreement.

    Every number here is derived from the logged cells it names (the screen and the exact chunks), so it
    re-computes from them.
    """

    kind: Literal["localisation"] = "localisation"
    screened: int
    """Components the attribution screen scored (every head and MLP)."""
    candidates: list[str]
    """The components checked exactly, in the screen's order (all of them when ``exact_all``)."""
    verified: list[str] = Field(default_factory=list)
    """Candidates whose exact numbers came back (a chunk past the cell limit leaves its components out)."""
    failed: list[str] = Field(default_factory=list)
    """Candidates whose exact check did not finish (cell limit or error), even split in halves."""
    rank_correlation: float | None = None
    """Spearman correlation of the screen's and the exact |fraction of the gap| on ``verified`` (None when
    fewer than 3 components or a constant side)."""
    fallback: str | None = None
    """Why more than the screen's top candidates were checked exactly (None: the screen was trusted)."""
    exact_all: bool = False
    """Every component was checked exactly (small models, or the fallback)."""
    chunks: int = 0
    """Exact cells run."""
    kept: list[str] = Field(default_factory=list)
    """The components localisation kept (before the redundancy check adds any)."""
    call_ids: list[str] = Field(default_factory=list)
    """``call_id`` of the screen and of each exact chunk cell, in order."""


class RunFinishedEvent(_Event):
    """The last event of a run."""

    kind: Literal["run_finished"] = "run_finished"
    status: Literal["completed", "budget", "error", "interrupted"]
    """``completed``; ``budget`` (a run-level limit stopped it); ``error`` (it could not go on, e.g. the
    localisation failed); ``interrupted`` (accepted in logs; a paused run logs no ``run_finished``)."""
    summary: str = ""
    """A few sentences: what was found."""


EVENT_TYPES: tuple[type[_Event], ...] = (
    RunStartedEvent, ComponentsEvent, RunResumedEvent, FramingEvent, LLMRequestEvent, LLMResponseEvent,
    ToolCallEvent, ExecutionResultEvent, HypothesisEvent, ConclusionEvent, ClusterEvent, BudgetEvent, ErrorEvent,
    EvaluationEvent, LocalisationEvent, RunFinishedEvent,
)
Event = Annotated[
    RunStartedEvent | ComponentsEvent | RunResumedEvent | FramingEvent | LLMRequestEvent | LLMResponseEvent
    | ToolCallEvent | ExecutionResultEvent | HypothesisEvent | ConclusionEvent | ClusterEvent | BudgetEvent | ErrorEvent
    | EvaluationEvent | LocalisationEvent | RunFinishedEvent,
    Field(discriminator="kind"),
]
"""Any event; validate a dict with :data:`EVENT_ADAPTER`."""
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
KINDS: dict[str, type[_Event]] = {t.model_fields["kind"].default: t for t in EVENT_TYPES}
"""``kind`` string → event class."""


def new_run_id() -> str:
    """A sortable, unique run id: UTC timestamp + 6 random hex digits, e.g. ``20261121-235412-3f9a1c``.

    >>> a = new_run_id(); len(a), a[8], a[15]
    (22, '-', '-')
    """
    return _now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def sha256_text(text: str) -> str:
    """Hex sha256 of a string (for ``system_sha256``).

    >>> sha256_text("")[:12]
    'e3b0c44298fc'
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def collect_versions() -> dict[str, str]:
    """Versions of python and the key packages (from package metadata; imports nothing heavy).

    >>> sorted(collect_versions())[:3]
    ['anthropic', 'interp-agent', 'langgraph']
    """
    out = {"python": platform.python_version()}
    for pkg in ("interp-agent", "torch", "transformers", "anthropic", "langgraph", "pydantic"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
