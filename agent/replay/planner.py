"""``replay --planner-replay``: re-run the research loop on a run's logged LLM turns and compare.

>>> from agent.log import ToolCallEvent, ConclusionEvent
>>> a = [ToolCallEvent(call_id="1", name="ablate", input={"components": ["L1H0"]}),
...      ConclusionEvent(component="L1H0", role="name mover", explanation="", confidence=1)]
>>> b = [ToolCallEvent(call_id="9", name="ablate", input={"components": ["L1H1"]}),
...      ConclusionEvent(component="L1H0", role="inhibition", explanation="", confidence=1)]
>>> for line in compare_runs(a, b): print(line)
tool call 1: logged ablate {"components": ["L1H0"]} vs now ablate {"components": ["L1H1"]}
conclusion L1H0: logged 'name mover' vs now 'inhibition'
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from agent.log import read_events
from agent.replay.verify import check_artifacts, load_events
from agent.view import RunView

LOCALISE_PREFIX = "localise"
"""``call_id`` prefix of localisation's cells (:data:`agent.view.LOCALISE_SWEEP`, ``LOCALISE_EXACT``...)."""


class ToolCallRecord(BaseModel):
    """A tool call in comparable form."""

    name: str
    input: dict[str, Any] = Field(default_factory=dict)


class PlannerReplayReport(BaseModel):
    """Outcome of ``replay --planner-replay``: the new run vs the logged one."""

    run_id: str
    new_run_dir: str
    calls_logged: int = 0
    calls_now: int = 0
    differences: list[str] = Field(default_factory=list)
    """One line per difference (a tool call that differs, a conclusion whose role differs...)."""
    replay_s: float = 0.0
    original_wall_s: float | None = None

    @property
    def ok(self) -> bool:
        return not self.differences

    @property
    def ratio(self) -> float | None:
        return self.replay_s / self.original_wall_s if self.original_wall_s else None


def tool_calls(events: list[Any]) -> list[ToolCallRecord]:
    """The planner's tool calls (name + input), in order: localisation's own cells (``localise-*``: how they are
    chunked depends on the machine's speed) are compared through the components they chose instead."""
    return [ToolCallRecord(name=e.name, input=e.input) for e in events
            if e.kind == "tool_call" and not e.call_id.startswith(LOCALISE_PREFIX)]


def compare_runs(logged: list[Any], now: list[Any]) -> list[str]:
    """Differences in the components investigated (in order), the planner's tool calls (names + inputs, in
    order), the task design's outcome and accepted spec (when the planner designed the task) and conclusions
    (component → role)."""
    out: list[str] = []
    va, vb = RunView.from_events(logged, "logged"), RunView.from_events(now, "now")
    if va.components != vb.components:
        out.append(f"components investigated: logged {va.components} vs now {vb.components}")
    ta, tb = tool_calls(logged), tool_calls(now)
    for i, (x, y) in enumerate(zip(ta, tb, strict=False)):
        if x != y:
            out.append(f"tool call {i + 1}: logged {x.name} {json.dumps(x.input, sort_keys=True)} vs now "
                       f"{y.name} {json.dumps(y.input, sort_keys=True)}")
    if len(ta) != len(tb):
        out.append(f"number of tool calls: logged {len(ta)} vs now {len(tb)}")
    design = [(f.status, f.task, f.spec) if f is not None else (None, None, None) for f in (va.framing, vb.framing)]
    if design[0] != design[1]:  # a designed task: the same outcome and the same accepted spec
        (sa, ta, _), (sb, tb, _) = design
        out.append(f"task design: logged {sa} {ta!r} vs now {sb} {tb!r}"
                   + (" (the accepted specs differ)" if ta == tb else ""))
    ca = {c: e.role for c, e in va.conclusions.items()}
    cb = {c: e.role for c, e in vb.conclusions.items()}
    for comp in list(ca) + [c for c in cb if c not in ca]:
        if ca.get(comp) != cb.get(comp):
            out.append(f"conclusion {comp}: logged {ca.get(comp)!r} vs now {cb.get(comp)!r}")
    return out


def planner_replay(run_dir: str | Path, out_dir: str | Path | None = None,
                   runner: Callable[..., Path] | None = None) -> PlannerReplayReport:
    """Re-run the research loop with the ``replay`` planner fed from ``run_dir``'s logged LLM turns, into a
    new run directory, and compare tool calls and conclusions with the logged run.

    ``runner(run_dir=..., out_dir=...) -> new_run_dir`` does the re-run; the default is
    :func:`agent.run.replay_run`.
    """
    run_dir = Path(run_dir)
    events = load_events(run_dir)
    check_artifacts(run_dir, events)
    out_dir = Path(out_dir) if out_dir else run_dir.parent
    if runner is None:
        from agent.run import replay_run as runner  # type: ignore[no-redef]
    t0 = time.perf_counter()
    new_dir = Path(runner(run_dir=run_dir, out_dir=out_dir))
    took = time.perf_counter() - t0
    now = read_events(new_dir)
    return PlannerReplayReport(run_id=events[0].run_id, new_run_dir=str(new_dir),
                               calls_logged=len(tool_calls(events)), calls_now=len(tool_calls(now)),
                               differences=compare_runs(events, now), replay_s=took,
                               original_wall_s=RunView.from_events(events, run_dir).usage.wall_s)
