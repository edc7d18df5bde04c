"""One view of a run, derived from its log only: what ``status``, the reports, ``eval`` and the benchmark show.

:meth:`RunView.from_events` reads the events once: the run's question, task and model, its components
in order, the latest conclusion per component, hypotheses, clusters, every executed cell with its tool
call (and its typed result, through the tool's result model in :mod:`agent.actions`), resource usage
(one formula for steps, tool calls, tokens, USD and wall time) and evaluations. Nothing else derives
these from events, so the numbers a user sees in ``status``, a report and a benchmark table agree.

>>> import tempfile
>>> from agent.log import RunLog, RunStartedEvent, ConclusionEvent
>>> d = Path(tempfile.mkdtemp()) / "run1"
>>> log = RunLog(d)
>>> _ = log.append(RunStartedEvent(run_id="run1", question="q?", model="toy-ioi", planner="offline",
...                                circuit=["L1H0", "L0H1"]))
>>> _ = log.append(ConclusionEvent(component="L1H0", role="name mover", explanation="e", confidence=0.7))
>>> v = RunView.from_run(d)
>>> v.components, v.pending, v.state, v.current
(['L1H0', 'L0H1'], ['L0H1'], 'interrupted', None)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from agent.actions import parse_result, tool_function
from agent.budget import Budget
from agent.lock import is_running
from agent.log import (
    ClusterEvent,
    ComponentsEvent,
    ConclusionEvent,
    ErrorEvent,
    EvaluationEvent,
    FramingEvent,
    HypothesisEvent,
    LocalisationEvent,
    RunFinishedEvent,
    RunResumedEvent,
    RunStartedEvent,
    read_events,
)
from evals.grounding import Claim, GroundingReport, LoggedCell, LoggedHypothesis, RunRecord, ground_run
from tools.experiments import SweepResult

LOCALISE_SWEEP = "localise-sweep"
"""``call_id`` of the localisation sweep's cell (its result ranks the components)."""
LOCALISE_REDUNDANCY = "localise-redundancy"
"""``call_id`` of the localisation's redundancy check."""
LOCALISE_EXACT = "localise-exact-"
"""``call_id`` prefix of the localisation's exact chunks (``localise-exact-0``, ``-1``...), when it screened first."""


class CellRecord(BaseModel):
    """One executed code cell, as logged (an ``execution_result`` event and the tool call behind it)."""

    seq: int
    """``seq`` of the ``execution_result`` event."""
    call: str = "run_code"
    """Tool that produced the cell (``run_code``, ``ablate``, ``attention``...)."""
    call_id: str = ""
    component: str | None = None
    """Component under investigation when the cell ran, if any."""
    code: str
    input: dict[str, Any] = Field(default_factory=dict)
    """The tool call's input, as logged."""
    result: dict[str, Any] = Field(default_factory=dict)
    """The logged ``ExecutionResult`` as a dict (status, stdout, stderr, result, data, outputs...)."""

    def typed(self) -> BaseModel | None:
        """The cell's data as its tool's result model (None: failed cell, free-form or malformed data)."""
        if self.result.get("status") != "ok":
            return None
        return parse_result(self.call, self.result.get("data"))

    def logged(self) -> LoggedCell:
        """The cell as :mod:`evals.grounding` reads it (plain data)."""
        r = self.result
        err = f"{r.get('error_name') or ''}: {r.get('error_value') or ''}".strip(": ") or None
        return LoggedCell(seq=self.seq, tool=self.call, function=tool_function(self.call), component=self.component,
                          status=r.get("status") or "ok", data=r.get("data"), input=self.input, code=self.code,
                          error=err if r.get("status") != "ok" else None)


class RunUsage(BaseModel):
    """Resources a run used, from its log (units in the field names).

    Counted from the events (LLM responses, tool calls), raised to the last run-level ``budget`` event's
    counters where those are larger (a run may log its budget without every call, e.g. a hand-made log).
    """

    steps: int = 0
    """Planner turns (LLM responses, offline and replay planners included)."""
    tool_calls: int = 0
    input_tokens: int = 0
    """Every input token, cached or not."""
    output_tokens: int = 0
    usd: float = 0.0
    """LLM spend (unknown prices count 0)."""
    wall_s: float | None = None
    """Active seconds: the last run-level ``budget`` event's ``wall_s``, else first → last timestamp."""

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class RunView(BaseModel):
    """A run as its log tells it (see the module docstring)."""

    run_id: str
    run_dir: str
    started: RunStartedEvent | None = None
    finished: RunFinishedEvent | None = None
    running: bool = False
    """Another process holds the run's lock (it is being written now)."""
    n_events: int = 0
    kinds: dict[int, str] = Field(default_factory=dict)
    """Every event's seq → its kind (what a cited seq is)."""
    cited: dict[int, list[int]] = Field(default_factory=dict)
    """Conclusion seq → the evidence its ``conclude_component`` call cited (the log keeps only existing seqs)."""
    components: list[str] = Field(default_factory=list)
    """The ``--circuit`` components or the localisation's (its ``components`` event), then every other
    component the log mentions, in order."""
    resumes: list[RunResumedEvent] = Field(default_factory=list)
    """Every ``run_resumed`` event (a budget changed by ``resume``), in order."""
    framing: FramingEvent | None = None
    """The task design's outcome (the LLM planner designed the task), when the run has one."""
    proposals: int = 0
    """``propose_task`` calls in the log (a task design's attempts so far)."""
    reason: str | None = None
    """Why an unfinished run stopped, when the log says: the LLM failure that paused it."""
    conclusions: dict[str, ConclusionEvent] = Field(default_factory=dict)
    """Component → its latest conclusion."""
    hypotheses: list[HypothesisEvent] = Field(default_factory=list)
    """Every hypothesis event, in log order (a hypothesis id recurs when its status changes)."""
    clusters: dict[str, ClusterEvent] = Field(default_factory=dict)
    """Cluster name → its latest event."""
    cells: list[CellRecord] = Field(default_factory=list)
    usage: RunUsage = Field(default_factory=RunUsage)
    evaluations: list[EvaluationEvent] = Field(default_factory=list)
    localised: LocalisationEvent | None = None
    """How localisation chose its components (screen, exact checks, agreement), when logged (schema 1.1)."""
    current: str | None = None
    """The component under investigation (the last one the log mentions without a conclusion), while unfinished."""

    @classmethod
    def from_run(cls, run_dir: str | Path) -> RunView:
        """Read ``run_dir/events.jsonl`` (safe while another process writes it)."""
        run_dir = Path(run_dir)
        return cls.from_events(read_events(run_dir), run_dir, running=is_running(run_dir))

    @classmethod
    def from_events(cls, events: list[Any], run_dir: str | Path, running: bool = False) -> RunView:
        started = next((e for e in events if isinstance(e, RunStartedEvent)), None)
        # a run reopened by `resume` (after a budget stop) clusters and finishes again: only what follows count
        reopened = next((e.seq for e in reversed(events) if isinstance(e, RunResumedEvent) and e.reopened), -1)
        finished = next((e for e in reversed(events) if isinstance(e, RunFinishedEvent) and e.seq > reopened), None)
        listed = next((e for e in reversed(events) if isinstance(e, ComponentsEvent)), None)
        comps = list(started.circuit or []) if started else []
        for c in (listed.components if listed else []):
            if c not in comps:
                comps.append(c)
        for e in events:
            c = getattr(e, "component", None)
            if c and c not in comps:
                comps.append(c)
        concl = {e.component: e for e in events if isinstance(e, ConclusionEvent)}
        current = None
        reason = None
        if finished is None:
            current = next((e.component for e in reversed(events) if getattr(e, "component", None)
                            and e.component not in concl), None)
            last = next((e for e in reversed(events) if e.kind not in ("llm_request", "run_resumed")), None)
            if isinstance(last, ErrorEvent) and last.where.startswith("llm."):
                reason = last.message
        return cls(run_id=started.run_id if started else Path(run_dir).name, run_dir=str(run_dir), started=started,
                   finished=finished, running=running, n_events=len(events), components=comps, conclusions=concl,
                   hypotheses=[e for e in events if isinstance(e, HypothesisEvent)],
                   clusters={e.name: e for e in events if isinstance(e, ClusterEvent) and e.seq > reopened},
                   cells=_cells(events), usage=_usage(events),
                   evaluations=[e for e in events if isinstance(e, EvaluationEvent)], current=current,
                   resumes=[e for e in events if isinstance(e, RunResumedEvent)], reason=reason,
                   kinds={e.seq: e.kind for e in events}, cited=_cited(events),
                   framing=next((e for e in reversed(events) if isinstance(e, FramingEvent)), None),
                   proposals=sum(1 for e in events if e.kind == "tool_call" and e.name == "propose_task"),
                   localised=next((e for e in events if isinstance(e, LocalisationEvent)), None))

    # ------------------------------------------------------------------------------------------ derived

    @property
    def state(self) -> str:
        """The logged final status (``completed``, ``budget``, ``error``...), else ``running`` / ``interrupted``."""
        if self.finished is not None:
            return self.finished.status
        return "running" if self.running else "interrupted"

    @property
    def task(self) -> str | None:
        """The run's task: the designed spec's name (a ``framing`` event accepted it), else ``run_started``'s."""
        if self.framing is not None and self.framing.status == "accepted":
            return self.framing.task
        return self.started.task if self.started else None

    @property
    def designed(self) -> bool:
        """The LLM planner designs (or designed) this run's task."""
        st = self.started
        return self.framing is not None or bool(st and ((st.config or {}).get("framing") or {}).get("design"))

    def task_spec(self) -> Any | None:
        """The designed task's :class:`evals.tasks.TaskSpec` (from the log's ``framing`` event), else None: a
        shipped task or a spec file is loaded by name or path (``evals.tasks.load_task(view.task)``)."""
        if self.framing is None or self.framing.spec is None:
            return None
        from evals.tasks import TaskSpec

        return TaskSpec.model_validate(self.framing.spec)

    def setup_cells(self) -> list[str]:
        """The kernel's setup cells in force at the end of the log: those a ``framing`` event switched to (the
        designed task embedded), else ``run_started``'s. Every logged cell re-runs under them (the designer's
        cells need only ``model``)."""
        if self.framing is not None and self.framing.setup_cells:
            return list(self.framing.setup_cells)
        return list((self.started.config or {}).get("setup_cells") or []) if self.started else []

    @property
    def pending(self) -> list[str]:
        return [c for c in self.components if c not in self.conclusions]

    def budget(self) -> Budget:
        """The run's budget now: ``run_started``'s, as changed by the last ``resume`` with budget options."""
        if self.resumes:
            return Budget(**self.resumes[-1].budget)
        raw = ((self.started.config or {}).get("run") or {}).get("budget") if self.started else None
        return Budget(**raw) if raw else Budget()

    def latest_hypotheses(self) -> dict[str, HypothesisEvent]:
        """Hypothesis id → its latest event, in order of first proposal."""
        out: dict[str, HypothesisEvent] = {}
        for h in self.hypotheses:
            out[h.hypothesis_id] = h
        return out

    def localisation(self) -> SweepResult | None:
        """The localisation's exact numbers as one typed sweep, when the run localised.

        Runs that screened first (an attribution sweep, then exact chunks ``localise-exact-<i>``): the exact
        chunks merged (the components checked exactly, with ``components`` listing them). Older runs: the one
        exact sweep.
        """
        chunks = [t for c in self.cells if c.call_id.startswith(LOCALISE_EXACT)
                  if isinstance(t := c.typed(), SweepResult)]
        if chunks:
            eff: dict[str, Any] = {}
            frac: dict[str, Any] = {}
            abl: dict[str, Any] = {}
            for t in chunks:
                eff.update(t.effects)
                frac.update(t.effect_frac)
                abl.update(t.ablation_frac or {})
            return SweepResult(**chunks[0].model_dump(include={"clean", "corrupt", "gap"}), kind="all",
                               method="exact", top_k=len(frac), zero_ablation=True, components=list(frac),
                               effects=eff, effect_frac=frac, ablation_frac=abl)
        cell = next((c for c in self.cells if c.call_id == LOCALISE_SWEEP), None)
        typed = cell.typed() if cell is not None else None
        return typed if isinstance(typed, SweepResult) else None

    def cited_cells(self, conclusion: ConclusionEvent) -> list[CellRecord]:
        """The cells a conclusion cites as evidence; without citations, every cell run on its component."""
        by_seq = {c.seq: c for c in self.cells}
        return [by_seq[q] for q in conclusion.evidence if q in by_seq] or [
            c for c in self.cells if c.component == conclusion.component]

    def record(self) -> RunRecord:
        """What :mod:`evals.grounding` reads: event kinds, cells, hypotheses, the latest conclusions (plain data)."""
        return RunRecord(
            kinds=self.kinds, cells=[c.logged() for c in self.cells],
            hypotheses=[LoggedHypothesis(seq=h.seq, hypothesis_id=h.hypothesis_id, component=h.component,
                                         statement=h.statement, status=h.status, evidence=list(h.evidence))
                        for h in self.hypotheses],
            conclusions=[claim(e, self.cited.get(e.seq)) for e in self.conclusions.values()])

    def grounding(self) -> GroundingReport:
        """Is every conclusion traced to logged evidence? (:func:`evals.grounding.ground_run`)"""
        return ground_run(self.record())

    def scores(self) -> dict[str, float | None]:
        """The evaluation scores (prefixed by the evaluator when several evaluators wrote events)."""
        out: dict[str, float | None] = {}
        evaluators = {e.evaluator for e in self.evaluations}
        for e in self.evaluations:
            prefix = f"{e.evaluator}." if len(evaluators) > 1 else ""
            out.update({f"{prefix}{k}": v for k, v in e.scores.items()})
        return out

    def status(self) -> dict[str, Any]:
        """What ``interp-agent status`` prints (its ``--json`` document)."""
        st = self.started
        last = self.hypotheses[-1] if self.hypotheses else None
        return {
            "run_id": self.run_id, "run_dir": self.run_dir,
            "question": st.question if st else None, "task": self.task,
            "model": st.model if st else None, "planner": st.planner if st else None,
            "state": self.state, "reason": self.reason, "events": self.n_events,
            "components": {c: (self.conclusions[c].role if c in self.conclusions else "pending")
                           for c in self.components},
            "done": len(self.components) - len(self.pending), "pending": self.pending, "current": self.current,
            "hypotheses": len(self.latest_hypotheses()),
            "last_hypothesis": f"{last.component}: {last.statement} [{last.status}]" if last else None,
            "tool_calls": self.usage.tool_calls, "llm_calls": self.usage.steps, "tokens": self.usage.tokens,
            "usd": round(self.usage.usd, 4),
            "clusters": {n: list(e.components) for n, e in self.clusters.items()},
            "summary": self.finished.summary if self.finished else None,
            "design": self._design_status(),
        }

    def _design_status(self) -> dict[str, Any] | None:
        """The task design in ``status``: its state, the proposals so far, the accepted task or why it failed."""
        if not self.designed:
            return None
        if self.framing is not None:
            return {"state": self.framing.status, "proposals": len(self.framing.attempts), "task": self.framing.task,
                    "file": self.framing.file, "reason": self.framing.reason or None}
        return {"state": "designing", "proposals": self.proposals, "task": None, "file": None, "reason": None}


def claim(e: ConclusionEvent, cited: list[int] | None = None) -> Claim:
    """A conclusion event as :mod:`evals.grounding` reads it (``cited``: the evidence its call cited)."""
    return Claim(seq=e.seq, component=e.component, role=e.role, explanation=e.explanation,
                 evidence=list(e.evidence if cited is None else cited), inconclusive_reason=e.inconclusive_reason)


def _cited(events: list[Any]) -> dict[int, list[int]]:
    """Conclusion seq → the ``evidence`` of the ``conclude_component`` call it answers (its last one before it)."""
    out: dict[int, list[int]] = {}
    last: dict[str, list[int]] = {}
    for e in events:
        if e.kind == "tool_call" and e.name == "conclude_component" and e.component:
            ev = e.input.get("evidence")
            if isinstance(ev, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in ev):
                last[e.component] = list(ev)
            else:
                last.pop(e.component, None)
        elif e.kind == "conclusion" and e.component in last:
            out[e.seq] = last.pop(e.component)
    return out


def _cells(events: list[Any]) -> list[CellRecord]:
    calls = {e.call_id: e for e in events if e.kind == "tool_call"}
    out = []
    for e in events:
        if e.kind != "execution_result":
            continue
        call = calls.get(e.call_id)
        result = e.model_dump(mode="json", exclude={"kind", "seq", "ts", "schema_version", "call_id", "code",
                                                    "component"})
        out.append(CellRecord(seq=e.seq, call=call.name if call else "run_code", call_id=e.call_id,
                              component=e.component or (call.component if call else None), code=e.code,
                              input=dict(call.input) if call else {}, result=result))
    return out


def _usage(events: list[Any]) -> RunUsage:
    u = RunUsage(tool_calls=sum(1 for e in events if e.kind == "tool_call"))
    for e in events:
        if e.kind == "llm_response":
            u.steps += 1
            u.input_tokens += e.usage.total_input_tokens
            u.output_tokens += e.usage.output_tokens
            u.usd += e.cost_usd or 0.0
    last = next((e for e in reversed(events) if e.kind == "budget" and e.component is None), None)
    if last is not None:
        u.steps, u.tool_calls = max(u.steps, last.steps), max(u.tool_calls, last.tool_calls)
        u.input_tokens, u.output_tokens = max(u.input_tokens, last.input_tokens), max(u.output_tokens, last.output_tokens)
        u.usd = max(u.usd, last.usd)
        u.wall_s = last.wall_s or None
    if u.wall_s is None and events and events[0].ts and events[-1].ts:
        u.wall_s = (events[-1].ts - events[0].ts).total_seconds()
    return u
