"""The run log: the single source of truth of a run.

A run directory holds ``events.jsonl``: append-only JSON lines, one pydantic-validated event per line,
flushed and ``os.fsync``'ed per event (figures and other files live beside it). Status, reports,
replay and evals read only this file (through :class:`agent.view.RunView`, the one view derived from
it), so replaying it reproduces them.

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
>>> log.events()[1].role
'name mover'
>>> RunLog.open_existing(run_dir).next_seq
2
"""

from __future__ import annotations

from pathlib import Path  # noqa: F401 - used by the doctest above

from agent.log.events import (
    EVENT_ADAPTER,
    EVENT_TYPES,
    EVENTS_FILE,
    KINDS,
    SCHEMA_MAJOR,
    SCHEMA_VERSION,
    BudgetEvent,
    ClusterEvent,
    ComponentsEvent,
    ConclusionEvent,
    DesignAttempt,
    ErrorEvent,
    EvaluationEvent,
    Event,
    ExecutionResultEvent,
    FramingEvent,
    HypothesisEvent,
    HypothesisStatus,
    LLMRequestEvent,
    LLMResponseEvent,
    LocalisationEvent,
    LogError,
    LogSchemaError,
    RunFinishedEvent,
    RunResumedEvent,
    RunStartedEvent,
    ToolCallEvent,
    collect_versions,
    new_run_id,
    sha256_text,
)
from agent.log.store import RunLog, read_events

__all__ = [
    "EVENTS_FILE", "EVENT_ADAPTER", "EVENT_TYPES", "KINDS", "SCHEMA_MAJOR", "SCHEMA_VERSION", "BudgetEvent",
    "ClusterEvent", "ComponentsEvent", "ConclusionEvent", "DesignAttempt", "ErrorEvent", "EvaluationEvent", "Event",
    "ExecutionResultEvent", "FramingEvent", "HypothesisEvent", "HypothesisStatus", "LLMRequestEvent",
    "LLMResponseEvent", "LocalisationEvent", "LogError", "LogSchemaError", "RunFinishedEvent", "RunLog",
    "RunResumedEvent", "RunStartedEvent", "ToolCallEvent", "collect_versions", "new_run_id",
    "read_events", "sha256_text",
]
