"""Typed state of the research graph, its runtime context, and the idempotent log journal.

* :class:`ResearchState` is what LangGraph checkpoints after every node (plain JSON-able data).
* :class:`RunContext` carries what must NOT be checkpointed — the LLM backend, the sandbox, the log —
  into the nodes through LangGraph's runtime context.
* :class:`Journal` makes resume exact. Every node logs through it. The state remembers ``log_seq``,
  the number of events the log held when the state was checkpointed. On resume, the events logged
  after that checkpoint (by a node that died before its checkpoint was written) are *pending*: the
  re-run node asks the journal before each append, and gets the already-logged event back instead of
  a duplicate. LLM responses and execution results are taken from the pending events too, so a
  re-run node neither pays for a call twice nor re-executes a cell it already logged: the run goes on
  exactly as logged, and no event is lost or duplicated.

>>> import tempfile
>>> from agent.log import RunLog, ErrorEvent
>>> d = tempfile.mkdtemp()
>>> log = RunLog(d)
>>> j = Journal(log)
>>> j.emit(ErrorEvent(where="x", message="first")).seq
0
>>> j2 = Journal(RunLog.open_existing(d), committed=0)   # resume: event 0 was logged after the checkpoint
>>> j2.replaying, j2.emit(ErrorEvent(where="x", message="first")).seq, j2.replaying
(True, 0, False)
>>> len(j2.log)
1
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, TypedDict

from agent.budget import Budget
from agent.log import ErrorEvent, RunLog
from tools.errors import InterpAgentError

TRANSPARENT_KINDS = frozenset({"run_resumed"})
"""Events the runner (not a node) appends: a journal replaying a node's events passes over them."""


class RunPaused(InterpAgentError):
    """The run cannot go on now but can later (the LLM API failed after its retries): the node that met it
    logged an ``error`` event and raised this; the runner stops with status ``interrupted`` and ``resume``
    re-runs that node."""


def _merge(a: dict | None, b: dict | None) -> dict:
    """Reducer: later keys win (per component)."""
    return {**(a or {}), **(b or {})}


class ResearchState(TypedDict, total=False):
    """The graph's state (checkpointed after each node). Every field is JSON-able."""

    question: str
    """The researcher's question, verbatim."""
    task: str
    """Task spec name (see :mod:`agent.framing`)."""
    model: str
    """Zoo name, HF id or local path of the model under study."""
    circuit: list[str] | None
    """Components given by the user; None to localise."""
    frame: dict[str, Any]
    """What framing produced: task description, roles, metric, prompt counts (see :mod:`agent.framing`);
    ``design`` when the LLM planner designs the task (:mod:`agent.graph.design`)."""
    design: dict[str, Any]
    """The task design in progress: ``steps`` (planner turns), ``attempts`` (one dict per proposal, as in the
    ``framing`` event), ``reminded``."""
    components: list[str]
    """Components to investigate, in order."""
    localisation: dict[str, Any]
    """The localisation sweep's numbers (``effect_frac``: component → effect fraction, ``seq``) and the
    redundancy check's kept heads (``redundant``: head → partners, joint effect, why), when they ran."""
    index: int
    """Index into ``components`` of the component under investigation."""
    messages: list[dict[str, Any]]
    """The current component's conversation with the planner (Anthropic Messages format)."""
    usage: dict[str, Any]
    """:class:`agent.budget.BudgetUsage` as a dict (``steps`` counts the current component)."""
    concluded: bool
    """The current component got a conclusion (or the planner finished it)."""
    nudged: bool
    """The current component's planner was reminded once to conclude (it ended a turn without a tool call)."""
    limit_hit: str | None
    """A budget limit that stopped the current component (``component_steps``) or the run."""
    run_limit: str | None
    """A run-wide limit that was hit: every later component ends ``inconclusive: budget``."""
    conclusions: Annotated[dict[str, dict[str, Any]], _merge]
    """Component → {role, explanation, confidence, inconclusive_reason, seq}."""
    clusters: list[dict[str, Any]]
    """[{name, components, explanation}]."""
    hypotheses: Annotated[list[str], operator.add]
    """Statements of hypotheses recorded (for the progress view)."""
    log_seq: int
    """Events in the log when this state was checkpointed (the journal's commit point)."""
    failure: str | None
    """Why the run could not go on (e.g. the localisation sweep failed), if it could not."""
    report_path: str | None
    status: str | None
    """``completed`` | ``budget`` once the run finished."""


class Journal:
    """Appends events to a :class:`~agent.log.RunLog`, replaying those logged after the last checkpoint.

    ``committed`` is the ``log_seq`` of the checkpoint a resumed graph continues from: events from
    there on are pending and are handed back, in order, to the nodes that re-run. If a re-run asks for
    a different kind of event than the pending one (the run diverged, e.g. a wall-clock budget now
    fires), the journal stops replaying, logs an ``error`` event saying so, and appends from then on.
    """

    def __init__(self, log: RunLog, committed: int | None = None) -> None:
        self.log = log
        events = log.events()
        self._pending = [e for e in events[committed:] if e.kind not in TRANSPARENT_KINDS] \
            if committed is not None else []
        self.diverged = False

    @property
    def replaying(self) -> bool:
        """True while logged-but-uncommitted events remain to be handed back."""
        return bool(self._pending)

    @property
    def position(self) -> int:
        """The seq the journal is at (events handed out or appended so far)."""
        return self._pending[0].seq if self._pending else len(self.log)

    def peek(self, kind: str) -> Any | None:
        """The next pending event if it is of ``kind`` (to reuse an LLM response or a cell's result)."""
        if self._pending and self._pending[0].kind == kind:
            return self._pending[0]
        return None

    def skip(self, kind: str, where: Callable[[Any], bool] = lambda e: True) -> Any | None:
        """Pass over the next pending event if it is of ``kind`` and ``where(event)`` (e.g. the API failure that
        paused the run, when the resumed node asks again); return it, else None."""
        nxt = self.peek(kind)
        if nxt is not None and where(nxt):
            return self._pending.pop(0)
        return None

    def emit(self, event: Any, same: Callable[[Any, Any], bool] | None = None) -> Any:
        """Log ``event`` (or hand back its pending twin); return the stored event with its ``seq``.

        ``same(pending, event)`` can tighten the match (default: same ``kind`` and ``component``).
        """
        if self._pending:
            nxt = self._pending[0]
            ok = nxt.kind == event.kind and getattr(nxt, "component", None) == getattr(event, "component", None)
            if ok and same is not None:
                ok = same(nxt, event)
            if ok:
                return self._pending.pop(0)
            skipped = len(self._pending)
            self._pending = []
            self.diverged = True
            self.log.append(ErrorEvent(
                where="resume", recoverable=True,
                message=f"resumed run diverged from its log at seq {nxt.seq} ({nxt.kind} logged, {event.kind} "
                        f"now); the {skipped} event(s) logged after the checkpoint stay, new events follow"))
        return self.log.append(event)


@dataclass
class RunContext:
    """What the graph's nodes need besides the state (passed as LangGraph runtime context)."""

    journal: Journal
    backend: Any
    """An LLM backend: ``complete(system=, messages=, tools=, max_tokens=) -> LLMResponse``."""
    sandbox_factory: Callable[[], Any]
    """Builds and starts the sandbox on first use (replayed steps need none)."""
    budget: Budget = field(default_factory=Budget)
    system_prompt: str = ""
    tool_specs: list[Any] = field(default_factory=list)
    """:class:`agent.llm.ToolSpec` list offered to the planner (see :func:`agent.actions.tool_specs`)."""
    threshold: float = 0.1
    """Localisation keeps components with |patching effect| ≥ ``threshold`` × the clean − corrupt gap."""
    max_components: int = 8
    """Localisation keeps at most this many components (largest effects first)."""
    cell_timeout_s: float = 120.0
    model_shape: tuple[int, int] | None = None
    """``(n_layers, n_heads)`` of the model under study (tool inputs naming other components are refused);
    None when unknown (a run logged before the shape was recorded)."""
    cluster_with_llm: bool = False
    """Ask the planner to group the concluded components (``claude``, or a replay of a run that did)."""
    setup: list[str] = field(default_factory=list)
    """The kernel's setup cells in force: ``sandbox_factory`` starts kernels with them (see :meth:`use_setup`)."""
    seed: int = 0
    """The run's seed (the task designer's checks draw their prompts with it)."""
    design_steps: int = 8
    """Planner turns the task design may take (:mod:`agent.graph.design`)."""
    setup_for: Callable[[str], list[str]] | None = None
    """``setup_for(spec_json)``: the kernel's setup cells for a designed task (the model and the spec embedded)."""
    wall_base_s: float = 0.0
    """Active seconds spent before this process (re)started the run."""
    grounding_check: bool = True
    """Send a conclusion failing the grounding check back once (``RunConfig.grounding_check``)."""
    t0: float = field(default_factory=time.monotonic)
    on_progress: Callable[[dict[str, Any]], None] | None = None
    """Called with a small dict after each step (the CLI's live view)."""
    _sandbox: Any = None

    @property
    def log(self) -> RunLog:
        return self.journal.log

    def wall_s(self) -> float:
        """Active seconds of the run so far (pauses between a kill and its resume excluded)."""
        return self.wall_base_s + (time.monotonic() - self.t0)

    def wall_left(self) -> float | None:
        """Seconds left of the run's ``max_wall_s`` budget (None: no wall budget)."""
        if self.budget.max_wall_s is None:
            return None
        return max(0.0, self.budget.max_wall_s - self.wall_s())

    def text_roots(self) -> dict[str, str]:
        """Host folders the model is told about by tag (see :func:`agent.llm.text.scrub_paths`)."""
        return {str(self.log.run_dir.resolve()): "<run>", str(self.log.run_dir): "<run>"}

    def sandbox(self) -> Any:
        """The sandbox, started on first use."""
        if self._sandbox is None:
            self._sandbox = self.sandbox_factory()
        return self._sandbox

    def use_setup(self, cells: list[str]) -> None:
        """Start kernels with ``cells`` from now on (a designed task was accepted): a running sandbox with other
        setup cells is shut down, and the next cell starts a fresh one. The same cells change nothing."""
        if list(cells) == self.setup:
            return
        self.close()
        self.setup = list(cells)

    def close(self) -> None:
        """Shut the sandbox down if it was started."""
        if self._sandbox is not None:
            try:
                self._sandbox.shutdown()
            finally:
                self._sandbox = None

    def progress(self, **info: Any) -> None:
        if self.on_progress is not None:
            self.on_progress(info)
