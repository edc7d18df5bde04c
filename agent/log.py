"""The run log: the single source of truth of a run.

A run directory holds ``events.jsonl``: append-only JSON lines, one pydantic-validated event per line,
flushed and ``os.fsync``'ed per event (figures and other files live beside it). Status, reports,
replay and evals read only this file, so replaying it reproduces them.

Every event has ``kind`` (the discriminator), ``schema_version`` (``"MAJOR.MINOR"``; a reader refuses
a newer MAJOR with :class:`LogSchemaError`), ``seq`` (0, 1, 2... contiguous, assigned by
:meth:`RunLog.append`), ``ts`` (UTC, assigned on append) and an optional ``component`` in the
component grammar (``L9H9``, ``MLP3``...; see :mod:`tools.components`).

A process killed mid-write leaves at most a torn last line: :func:`read_events` ignores it and
:meth:`RunLog.open_existing` cuts it off before appending again. A bad line anywhere else is an
error that names the line.

>>> import tempfile
>>> run_dir = Path(tempfile.mkdtemp()) / new_run_id()
>>> log = RunLog(run_dir)
>>> log.append(HypothesisEvent(hypothesis_id="h1", component="L1H0", statement="copies the IO name",
...                            status="proposed")).seq
0
>>> log.append(ConclusionEvent(component="L1H0", role="name mover", explanation="...", confidence=0.8,
...                            evidence=[0])).seq
1
>>> [e.kind for e in read_events(run_dir)]
['hypothesis', 'conclusion']
>>> latest_conclusions(log.events())["L1H0"].role
'name mover'
>>> RunLog.open_existing(run_dir).next_seq
2
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import secrets
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from agent.llm.types import ContentBlock, Usage
from tools.components import Component
from tools.errors import InterpAgentError

SCHEMA_VERSION = "1.0"
"""The version this code writes. Readers accept any ``1.x``; a newer minor's unknown fields are dropped."""
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


BudgetLimit = Literal["steps", "component_steps", "tool_calls", "tokens", "usd", "wall_s"]


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
    limit_hit: BudgetLimit | None = None
    """Which limit was reached, if any: ``steps`` | ``component_steps`` | ``tool_calls`` | ``tokens`` | ..."""


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


class RunFinishedEvent(_Event):
    """The last event of a run."""

    kind: Literal["run_finished"] = "run_finished"
    status: Literal["completed", "budget", "error", "interrupted"]
    """``completed``; ``budget`` (a run-level limit stopped it); ``error``; ``interrupted`` (Ctrl-C)."""
    summary: str = ""
    """A few sentences: what was found."""


EVENT_TYPES: tuple[type[_Event], ...] = (
    RunStartedEvent, LLMRequestEvent, LLMResponseEvent, ToolCallEvent, ExecutionResultEvent,
    HypothesisEvent, ConclusionEvent, ClusterEvent, BudgetEvent, ErrorEvent, EvaluationEvent,
    RunFinishedEvent,
)
Event = Annotated[
    RunStartedEvent | LLMRequestEvent | LLMResponseEvent | ToolCallEvent | ExecutionResultEvent
    | HypothesisEvent | ConclusionEvent | ClusterEvent | BudgetEvent | ErrorEvent | EvaluationEvent
    | RunFinishedEvent,
    Field(discriminator="kind"),
]
"""Any event; validate a dict with :data:`EVENT_ADAPTER`."""
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
KINDS: dict[str, type[_Event]] = {t.model_fields["kind"].default: t for t in EVENT_TYPES}
"""``kind`` string → event class."""


# ---------------------------------------------------------------------------------------------- reading


@dataclass
class _Scan:
    events: list[Any]
    good_bytes: int
    """Byte offset just past the last good line."""
    torn_tail: bool
    """True when a torn (partial, unparseable) last line was dropped."""
    needs_newline: bool
    """True when the last good line lacks its trailing newline."""


def _parse_line(raw: bytes, lineno: int, path: Path) -> Any:
    """Validate one line; raise LogSchemaError naming the line. ValueError for undecodable JSON."""
    obj = json.loads(raw.decode("utf-8"))  # ValueError on a torn or corrupt line
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    version = str(obj.get("schema_version", ""))
    try:
        major, minor = (int(x) for x in version.split("."))
    except ValueError:
        raise LogSchemaError(f"{path} line {lineno}: bad schema_version {version!r}",
                             fix="this is not an interp-agent run log, or it was edited by hand") from None
    if major > SCHEMA_MAJOR:
        raise LogSchemaError(
            f"{path} line {lineno}: schema_version {version} was written by a newer interp-agent "
            f"(this one reads {SCHEMA_MAJOR}.x)",
            fix="upgrade interp-agent (pip install -U interp-agent) to read this run")
    if major < SCHEMA_MAJOR:
        raise LogSchemaError(f"{path} line {lineno}: schema_version {version} is older than {SCHEMA_MAJOR}.x",
                             fix="read it with the interp-agent version that wrote it")
    kind = obj.get("kind")
    cls = KINDS.get(kind)  # type: ignore[arg-type]
    newer_minor = minor > int(SCHEMA_VERSION.split(".")[1])
    if cls is None:
        if newer_minor:
            raise LogSchemaError(f"{path} line {lineno}: event kind {kind!r} comes from schema {version}, newer "
                                 f"than this interp-agent's {SCHEMA_VERSION}",
                                 fix="upgrade interp-agent (pip install -U interp-agent) to read this run")
        raise LogSchemaError(f"{path} line {lineno}: unknown event kind {kind!r}",
                             fix=f"known kinds: {', '.join(KINDS)}; the log was corrupted or edited by hand")
    if newer_minor:  # a newer minor may add fields: drop the unknown ones
        obj = {k: v for k, v in obj.items() if k in cls.model_fields}
    try:
        ev = cls.model_validate(obj)
    except ValidationError as e:
        raise LogSchemaError(f"{path} line {lineno}: invalid {kind} event: {e.errors()[0]['msg']} "
                             f"at {'.'.join(str(p) for p in e.errors()[0]['loc'])}",
                             fix="the log was corrupted or edited; restore it or truncate it before this line") from e
    if ev.seq != lineno - 1 or ev.ts is None:
        raise LogSchemaError(f"{path} line {lineno}: seq {ev.seq} where {lineno - 1} was expected (events lost "
                             "or duplicated)", fix="the log was edited or two writers appended to it; restore it")
    return ev


def _scan(path: Path) -> _Scan:
    data = path.read_bytes() if path.exists() else b""
    lines = data.split(b"\n")
    # data ending in "\n" gives a last empty chunk; otherwise the last chunk lacks its newline.
    events: list[Any] = []
    offset = 0
    n = len(lines)
    for i, raw in enumerate(lines):
        is_last = i == n - 1
        if is_last and raw == b"":
            break
        lineno = i + 1
        try:
            ev = _parse_line(raw, lineno, path)
        except ValueError as e:  # JSON-level corruption (LogSchemaError is not a ValueError)
            if is_last:  # no newline after it: a write cut short by a kill
                return _Scan(events, offset, torn_tail=True, needs_newline=False)
            raise LogSchemaError(f"{path} line {lineno}: corrupt line ({e})",
                                 fix="only a torn LAST line is repaired automatically; restore the log "
                                     "from a backup, or truncate it before this line") from None
        events.append(ev)
        offset += len(raw) + (0 if is_last else 1)
        if is_last:
            return _Scan(events, offset, torn_tail=False, needs_newline=True)
    return _Scan(events, offset, torn_tail=False, needs_newline=False)


def _events_path(path: str | Path) -> Path:
    p = Path(path)
    return p / EVENTS_FILE if p.is_dir() else p


def read_events(path: str | Path) -> list[Event]:
    """Read every event of a run log (a run directory or its ``events.jsonl``), validated.

    A torn last line (a write killed midway) is ignored; any other bad line, a gap or duplicate in
    ``seq``, or a newer schema MAJOR raises :class:`LogSchemaError` naming the file and line.
    Read-only: safe on a log another process is writing.
    """
    p = _events_path(path)
    if not p.exists():
        raise LogError(f"no run log at {p}", fix="pass a run directory (with events.jsonl) or the file itself")
    return _scan(p).events


# ---------------------------------------------------------------------------------------------- writing


class RunLog:
    """An append-only run log in ``run_dir/events.jsonl``.

    ``RunLog(run_dir)`` starts a new log (refusing one that already has events, so two runs never mix);
    :meth:`open_existing` continues one for resume. Appends are serialised by a lock, and each is
    written, flushed and fsync'ed before :meth:`append` returns.
    """

    def __init__(self, run_dir: str | Path, *, _events: list[Any] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / EVENTS_FILE
        self._lock = threading.Lock()
        if _events is None:
            if self.path.exists() and self.path.stat().st_size > 0:
                raise LogError(f"{self.path} already holds events",
                               fix="use RunLog.open_existing(run_dir) to continue it (resume), or a new run dir")
            self.run_dir.mkdir(parents=True, exist_ok=True)
            new = not self.path.exists()
            self.path.touch()
            if new:
                _fsync_dir(self.run_dir)
            _events = []
        self._events: list[Any] = _events

    @classmethod
    def open_existing(cls, run_dir: str | Path) -> RunLog:
        """Open a run's log to append more (resume): cuts a torn last line off, continues ``seq``."""
        path = Path(run_dir) / EVENTS_FILE
        if not path.exists():
            raise LogError(f"no run log at {path}", fix="check the run id/directory (interp-agent status RUN)")
        scan = _scan(path)
        if scan.torn_tail or scan.needs_newline:
            with open(path, "r+b") as f:
                f.truncate(scan.good_bytes)
                if scan.needs_newline:
                    f.seek(scan.good_bytes)
                    f.write(b"\n")
                f.flush()
                os.fsync(f.fileno())
        return cls(run_dir, _events=list(scan.events))

    @property
    def next_seq(self) -> int:
        """The ``seq`` the next appended event will get."""
        return len(self._events)

    @property
    def figures_dir(self) -> Path:
        """``run_dir/figures`` (created on first use)."""
        d = self.run_dir / "figures"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def append(self, event: _Event) -> Event:
        """Validate, number, timestamp and durably write ``event``; return the stored copy.

        ``evidence`` seqs must name earlier events (else :class:`LogError`).
        """
        if not isinstance(event, EVENT_TYPES):
            raise LogError(f"cannot log a {type(event).__name__}", fix="log one of the event classes in agent.log")
        with self._lock:
            seq = len(self._events)
            for ref in getattr(event, "evidence", ()) or ():
                if not 0 <= ref < seq:
                    raise LogError(f"{event.kind} cites evidence seq {ref}, but the log has events 0..{seq - 1}",
                                   fix="cite the seq of an event already appended (the value append() returned)")
            stored = event.model_copy(update={"seq": seq, "ts": _now(), "schema_version": SCHEMA_VERSION})
            stored = type(event).model_validate(stored.model_dump())  # re-validate (model_copy does not)
            line = stored.model_dump_json() + "\n"
            with open(self.path, "ab") as f:
                f.write(line.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
            self._events.append(stored)
            return stored

    def extend(self, events: Iterable[_Event]) -> list[Event]:
        """Append several events in order; returns the stored copies."""
        return [self.append(e) for e in events]

    def events(self) -> list[Event]:
        """All events so far (in memory; equal to what :func:`read_events` returns)."""
        return list(self._events)

    def __len__(self) -> int:
        return len(self._events)

    def __repr__(self) -> str:
        return f"RunLog({str(self.run_dir)!r}, events={len(self._events)})"


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------- derived views


def latest_conclusions(events: Sequence[Any]) -> dict[str, ConclusionEvent]:
    """Component → its latest :class:`ConclusionEvent` (derived from the log, never stored)."""
    out: dict[str, ConclusionEvent] = {}
    for e in events:
        if isinstance(e, ConclusionEvent):
            out[e.component] = e
    return out


def latest_hypotheses(events: Sequence[Any]) -> dict[str, dict[str, HypothesisEvent]]:
    """Component → {hypothesis_id → its latest :class:`HypothesisEvent`}, in order of first proposal.

    >>> evs = [HypothesisEvent(component="L0H1", hypothesis_id="h", statement="s", status="proposed"),
    ...        HypothesisEvent(component="L0H1", hypothesis_id="h", statement="s", status="refuted")]
    >>> latest_hypotheses(evs)["L0H1"]["h"].status
    'refuted'
    """
    out: dict[str, dict[str, HypothesisEvent]] = {}
    for e in events:
        if isinstance(e, HypothesisEvent):
            out.setdefault(e.component, {})[e.hypothesis_id] = e
    return out


def latest_clusters(events: Sequence[Any]) -> dict[str, ClusterEvent]:
    """Cluster name → its latest :class:`ClusterEvent`."""
    return {e.name: e for e in events if isinstance(e, ClusterEvent)}


def run_started(events: Sequence[Any]) -> RunStartedEvent | None:
    """The run's :class:`RunStartedEvent` (the first one), or None."""
    return next((e for e in events if isinstance(e, RunStartedEvent)), None)


def run_finished(events: Sequence[Any]) -> RunFinishedEvent | None:
    """The last :class:`RunFinishedEvent`, or None while the run is unfinished."""
    return next((e for e in reversed(events) if isinstance(e, RunFinishedEvent)), None)


def llm_totals(events: Sequence[Any]) -> dict[str, float]:
    """Summed LLM usage over the log: calls, input/output/cache tokens and ``usd`` (unknown prices count 0).

    >>> llm_totals([LLMResponseEvent(backend="b", model="m", usage=Usage(input_tokens=5, output_tokens=2),
    ...                              cost_usd=0.01)])["output_tokens"]
    2
    """
    tot: dict[str, float] = {"calls": 0, "input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0,
                             "cache_creation_input_tokens": 0, "usd": 0.0}
    for e in events:
        if isinstance(e, LLMResponseEvent):
            tot["calls"] += 1
            for k in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
                tot[k] += getattr(e.usage, k)
            tot["usd"] += e.cost_usd or 0.0
    return tot


# ---------------------------------------------------------------------------------------------- helpers


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
