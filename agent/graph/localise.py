"""The ``localise`` node: which components the run investigates.

With ``--circuit`` the given components; otherwise an exact patching sweep over every head and MLP plus a
zero-ablation of each (one logged cell, :class:`agent.actions.AttributionSweep`), and the components whose
larger |effect| ≥ ``threshold`` (default 10%) of the clean − corrupt metric gap, largest first, at most
``max_components`` (default 8), ordered by layer from the last (then by |effect|). (Patching and mean
ablation cannot see a feature that is the same on every prompt, e.g. a duplicate-token flag at a fixed
position; zero ablation can.) When none passes, the 3 largest are kept (logged as an ``error`` event
saying so). Then a **redundancy check** (a second logged cell, :func:`tools.experiments.redundancy`): a
head of a redundant pair does nothing alone, so each layer's heads not yet kept are mean-ablated
together; where that joint effect is ≥ ``threshold`` and ≥ 2× the sum of the members' |single| effects,
every pair inside is ablated (batched), and the members of pairs passing the same two tests are kept too
(within ``max_components``), their partner and the numbers going into the component's brief
(``REDUNDANT WITH:``) and the cell's result saying why. The list is logged as a ``components`` event, so
``status`` of a run stopped early lists the components still pending.
"""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from agent.actions import AttributionSweep, RedundancyCheck, parse_result
from agent.budget import BudgetUsage
from agent.graph.cells import execute_cell
from agent.log import ComponentsEvent, ErrorEvent, ToolCallEvent
from agent.state import ResearchState, RunContext
from agent.view import LOCALISE_REDUNDANCY, LOCALISE_SWEEP
from tools.components import Component
from tools.experiments import RedundancyResult, SweepResult


def localise(state: ResearchState, runtime: Runtime[RunContext]) -> dict:
    """The given circuit, or the components above the threshold in an exact patching sweep."""
    ctx = runtime.context
    # what a task design spent before counts toward the run-wide budgets; steps count per component
    usage = BudgetUsage(**{**(state.get("usage") or {}), "steps": 0})
    base = {"index": 0, "usage": usage.model_dump(), "conclusions": {}, "clusters": []}
    if state.get("circuit"):
        return {**base, "components": list(state["circuit"]), "log_seq": ctx.journal.position}
    tool = AttributionSweep(kind="all", method="exact", top_k=500, zero_ablation=True)
    ctx.progress(phase="localise")
    ctx.journal.emit(ToolCallEvent(call_id=LOCALISE_SWEEP, name="attribution_sweep",
                                   input=tool.model_dump(mode="json")))
    ev = execute_cell(ctx, LOCALISE_SWEEP, tool.to_code(), None)
    sweep = parse_result("attribution_sweep", ev.data) if ev.status == "ok" else None
    fracs = sweep.ranked() if isinstance(sweep, SweepResult) else {}
    if not fracs:
        ctx.journal.emit(ErrorEvent(where="localise", recoverable=False, message=(
            f"the localisation sweep failed ({ev.status}: {ev.error_name}: {ev.error_value}); "
            "pass the components with --circuit to skip it")))
        return {**base, "components": [], "failure": "localisation failed", "log_seq": ctx.journal.position}
    ranked = list(fracs)
    keep = [c for c in ranked if abs(fracs[c]) >= ctx.threshold][: ctx.max_components]
    if not keep:
        keep = ranked[:3]
        ctx.journal.emit(ErrorEvent(where="localise", recoverable=True, message=(
            f"no component reaches |effect| >= {ctx.threshold:.0%} of the gap; investigating the 3 largest "
            f"({', '.join(keep)}); pass --circuit to choose")))
    redundant = _redundancy(ctx, keep)
    added = [c for c in sorted(redundant, key=lambda c: (-redundant[c]["joint"], c)) if c not in keep]
    room = max(0, ctx.max_components - len(keep))
    if len(added) > room:
        ctx.journal.emit(ErrorEvent(where="localise", recoverable=True, message=(
            f"redundant heads {', '.join(added[room:])} left out: max_components ({ctx.max_components}) reached; "
            "raise --max-components to investigate them")))
    keep += added[:room]
    redundant = {c: v for c, v in redundant.items() if c in keep}
    # work backwards from the logits: later layers first, so a component's downstream readers are
    # concluded before it is investigated (the offline planner path-patches into them)
    keep.sort(key=lambda c: (-Component.parse(c).layer, -abs(fracs.get(c, 0.0))))
    ctx.journal.emit(ComponentsEvent(components=keep, source="localisation"))
    return {**base, "components": keep, "localisation": {"effect_frac": fracs, "seq": ev.seq, "redundant": redundant},
            "log_seq": ctx.journal.position}


def _redundancy(ctx: RunContext, keep: list[str]) -> dict[str, dict[str, Any]]:
    """The redundancy check after the single-component sweep: ``{head: {"partners", "joint", "why"}}`` of the
    heads kept by :func:`tools.experiments.redundancy`. A failed cell is logged as a recoverable error and
    changes nothing."""
    tool = RedundancyCheck(exclude=keep, threshold=ctx.threshold)
    ctx.journal.emit(ToolCallEvent(call_id=LOCALISE_REDUNDANCY, name="redundancy_check",
                                   input=tool.model_dump(mode="json")))
    ev = execute_cell(ctx, LOCALISE_REDUNDANCY, tool.to_code(), None)
    res = parse_result("redundancy_check", ev.data) if ev.status == "ok" else None
    if not isinstance(res, RedundancyResult):
        ctx.journal.emit(ErrorEvent(where="localise", recoverable=True, message=(
            f"the redundancy check failed ({ev.status}: {ev.error_name}: {ev.error_value}); going on with the "
            "components the sweep kept")))
        return {}
    return {c: {"partners": list(v.partners), "joint": float(v.joint or 0.0), "why": v.why} for c, v in res.kept.items()}
