"""The ``localise`` node: which components the run investigates.

With ``--circuit`` the given components. Otherwise, in logged cells that each fit the cell limit:

1. **Screen** (one cell, :data:`agent.view.LOCALISE_SWEEP`): attribution patching of every head and MLP
   (clean → corrupt: two forwards and a backward) and the gradient estimate of zero-ablating each on the
   clean prompts (one more backward). A component's screen score is the larger |fraction of the gap|.
2. **Exact check** of the screen's top candidates (:func:`candidate_count`: ``max(16, 3 × max_components)``,
   so every component of a zoo-sized model): exact batched patching and zero-ablation, in chunks
   (``localise-exact-<i>``) sized from the measured cost so each takes at most :data:`CHUNK_FILL` of the cell
   limit. A chunk past the limit is split in halves and retried; what finished is kept, what never
   finishes is logged (``failed``).
3. **Agreement**: the Spearman correlation of screen and exact |fractions| on the checked set. Where they
   disagree the exact sweep takes over: below :data:`MIN_RANK_CORRELATION` every remaining component is
   checked exactly; and while a component the exact check keeps (step 4) sits in the lower half of the
   candidates checked (the screen under-rates what matters), the next candidates are checked too.
4. **Keep**: the checked components whose larger |effect| (patching or zero ablation) ≥ ``threshold``
   (default 10%) of the clean − corrupt gap, largest first, at most ``max_components`` (default 8),
   ordered by layer from the last. (Patching and mean ablation cannot see a feature that is the same on
   every prompt, e.g. a duplicate-token flag at a fixed position; zero ablation can.) When none passes,
   the 3 largest are kept (an ``error`` event says so). A ``localisation`` event records the candidates,
   the agreement, any fallback and the kept set.
5. **Redundancy check** (:data:`agent.view.LOCALISE_REDUNDANCY`, :func:`tools.experiments.redundancy`): a
   head of a redundant pair does nothing alone, so each layer's heads not yet kept are mean-ablated
   together; a group is flagged when that joint effect is ≥ ``threshold`` and ≥ 2× the sum of the members'
   |single| effects, and pairs inside flagged groups are ablated. Zoo-sized models: one cell, every pair.
   Larger ones: one cell for the layers' joint effects, then one cell per group reaching the threshold
   (``localise-redundancy-L<l>``, largest first, at most :data:`MAX_REDUNDANCY_GROUPS`), where each head's
   restoration (the group ablated but for it) picks :data:`MAX_PAIR_CANDIDATES` candidates and only their
   pairs are ablated. Members of pairs passing the same two tests are kept too (within ``max_components``),
   their partner and the numbers going into the component's brief (``REDUNDANT WITH:``) and the cell's
   result saying why.

The final list is logged as a ``components`` event, so ``status`` of a run stopped early lists the components
still pending.
"""

from __future__ import annotations

import math
from typing import Any

from langgraph.runtime import Runtime

from agent.actions import AttributionSweep, RedundancyCheck, parse_result
from agent.budget import BudgetUsage
from agent.graph.cells import execute_cell
from agent.log import ComponentsEvent, ErrorEvent, ExecutionResultEvent, LocalisationEvent, ToolCallEvent
from agent.state import ResearchState, RunContext
from agent.view import LOCALISE_EXACT, LOCALISE_REDUNDANCY, LOCALISE_SWEEP
from tools.components import Component, Kind
from tools.experiments import RedundancyResult, SweepResult

MIN_CANDIDATES = 16
"""The exact check covers at least this many of the screen's top components (every one of a zoo model)."""
CANDIDATES_PER_COMPONENT = 3
"""... and at least this many per component localisation may keep (``max_components``)."""
MIN_RANK_CORRELATION = 0.5
"""Below this Spearman correlation between screen and exact, every component is checked exactly."""
CHUNK_FILL = 0.4
"""An exact chunk (or the redundancy check) is sized to take at most this fraction of the cell limit."""
SCREEN_VARIANTS = 6.0
"""The screen costs about this many single-variant forwards (two forwards and two backwards; measured on
the GPT-2-small-shaped model: see benchmarks/investigation_bench.py), to size the first exact chunk."""
FIRST_CHUNK = 8
"""Components in the first exact chunk when the screen failed (no measured cost yet)."""
MAX_PAIR_CANDIDATES = 4
"""Pairs are tested among at most this many heads of a flagged group (every pair of a smaller group)."""
MAX_REDUNDANCY_GROUPS = 4
"""Models beyond the zoo: the redundancy check examines at most this many layers' groups (largest joint first)."""


def candidate_count(n: int, max_components: int) -> int:
    """How many of the screen's top components the exact check covers first.

    >>> candidate_count(14, 8), candidate_count(54, 8), candidate_count(156, 8), candidate_count(156, 12)
    (14, 24, 24, 36)
    """
    return min(n, max(MIN_CANDIDATES, CANDIDATES_PER_COMPONENT * max_components))


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman rank correlation (average ranks for ties); None with fewer than 3 values or a constant side.

    >>> spearman([1, 2, 3, 4], [10, 20, 30, 40]), spearman([1, 2, 3], [3, 2, 1]), spearman([1, 1, 1], [1, 2, 3])
    (1.0, -1.0, None)
    """
    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    from scipy.stats import spearmanr

    r = float(spearmanr(a, b).statistic)
    return None if math.isnan(r) else round(r, 6)


def localise(state: ResearchState, runtime: Runtime[RunContext]) -> dict:
    """The given circuit, or the components a screened, chunked exact sweep keeps (see the module docstring)."""
    ctx = runtime.context
    # what a task design spent before counts toward the run-wide budgets; steps count per component
    usage = BudgetUsage(**{**(state.get("usage") or {}), "steps": 0})
    base = {"index": 0, "usage": usage.model_dump(), "conclusions": {}, "clusters": []}
    if state.get("circuit"):
        return {**base, "components": list(state["circuit"]), "log_seq": ctx.journal.position}
    sw = _Sweeper(ctx)
    ctx.progress(phase="localise", detail="attribution screen")
    screen, screen_ev = sw.run(LOCALISE_SWEEP, AttributionSweep(
        kind="all", method="attribution", top_k=500, zero_ablation=True, ablation_method="attribution"))
    order = _screen_order(screen) if screen is not None else _model_order(ctx.model_shape)
    if not order:
        return _fail(ctx, base, screen_ev)
    fallback = None
    if screen is None:
        fallback = (f"the attribution screen failed ({screen_ev.status}: {screen_ev.error_name}: "
                    f"{screen_ev.error_value}): every component checked exactly")
        ctx.journal.emit(ErrorEvent(where="localise", recoverable=True, message=fallback))
        sw.check(order)
    else:
        sw.per_variant_s = max(screen_ev.duration_s / SCREEN_VARIANTS, 1e-3)
        n_cand = candidate_count(len(order), ctx.max_components)
        sw.check(order[:n_cand])
        rho = _agreement(screen, sw.exact)
        if len(sw.checked) < len(order) and rho is not None and rho < MIN_RANK_CORRELATION:
            fallback = (f"screen and exact ranks disagree (Spearman {rho:.2f} < {MIN_RANK_CORRELATION}): "
                        "every component checked exactly")
            sw.check(order)
        while len(sw.checked) < len(order) and _underrated(order, sw, ctx.threshold, ctx.max_components):
            fallback = fallback or ("a component the exact check keeps sat in the lower half of the screen's "
                                    "candidates: the next candidates were checked too")
            sw.check(order[: len(sw.checked) + n_cand])
    fracs = sw.ranked()
    rho = _agreement(screen, sw.exact) if screen is not None else None
    if not fracs:
        return _fail(ctx, base, sw.last_ev or screen_ev)
    ranked = list(fracs)
    keep = [c for c in ranked if abs(fracs[c]) >= ctx.threshold][: ctx.max_components]
    if not keep:
        keep = ranked[:3]
        ctx.journal.emit(ErrorEvent(where="localise", recoverable=True, message=(
            f"no component reaches |effect| >= {ctx.threshold:.0%} of the gap; investigating the 3 largest "
            f"({', '.join(keep)}); pass --circuit to choose")))
    if sw.failed:
        ctx.journal.emit(ErrorEvent(where="localise", recoverable=True, message=(
            f"the exact check of {', '.join(sw.failed)} did not finish within the cell limit "
            f"({ctx.cell_timeout_s:g}s) even in halves; going on without them (raise --cell-timeout to include "
            "them)")))
    ctx.journal.emit(LocalisationEvent(
        screened=len(order) if screen is not None else 0, candidates=[c for c in order if c in sw.asked],
        verified=[c for c in order if c in sw.exact], failed=sw.failed, rank_correlation=rho,
        fallback=fallback, exact_all=len(sw.checked) >= len(order), chunks=sw.chunks, kept=list(keep),
        call_ids=[LOCALISE_SWEEP] * (screen is not None) + sw.call_ids))
    n_heads = max([(c.head or 0) + 1 for c in map(Component.parse, order) if c.kind is Kind.HEAD] or [0])
    redundant = _redundancy(ctx, keep, n_heads, small=len(order) <= candidate_count(len(order), ctx.max_components))
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
    ctx.progress(phase="localise", detail=f"kept {len(keep)}")
    return {**base, "components": keep, "localisation": {
        "effect_frac": fracs, "seq": (sw.last_ev or screen_ev).seq, "redundant": redundant,
        "rank_correlation": rho, "exact_checked": len(sw.exact), "screened": len(order)},
        "log_seq": ctx.journal.position}


def _fail(ctx: RunContext, base: dict, ev: ExecutionResultEvent) -> dict:
    ctx.journal.emit(ErrorEvent(where="localise", recoverable=False, message=(
        f"the localisation sweep failed ({ev.status}: {ev.error_name}: {ev.error_value}); "
        "pass the components with --circuit to skip it")))
    return {**base, "components": [], "failure": "localisation failed", "log_seq": ctx.journal.position}


def _model_order(shape: tuple[int, int] | None) -> list[str]:
    """Every head and MLP of a model of this shape (``(n_layers, n_heads)``, None: unknown), in the model's order.

    >>> _model_order((2, 2))
    ['L0H0', 'L0H1', 'L1H0', 'L1H1', 'MLP0', 'MLP1']
    """
    layers, heads = (range(shape[0]), range(shape[1])) if shape else (range(0), range(0))
    return [f"L{la}H{h}" for la in layers for h in heads] + [f"MLP{la}" for la in layers]


def _screen_order(screen: SweepResult) -> list[str]:
    """Every component the screen scored, largest screen score first (name order breaks ties)."""
    comps = set(screen.effect_frac) | set(screen.ablation_frac or {})
    sc = screen.ranked()
    return sorted(comps, key=lambda c: (-abs(sc.get(c, 0.0)), c))


def _agreement(screen: SweepResult | None, exact: dict[str, float]) -> float | None:
    if screen is None:
        return None
    sc = screen.ranked()
    keys = sorted(exact)
    return spearman([abs(sc.get(c, 0.0)) for c in keys], [abs(exact[c]) for c in keys])


def _underrated(order: list[str], sw: _Sweeper, threshold: float, max_components: int) -> bool:
    """A component the exact check keeps (|effect| ≥ threshold, among the ``max_components`` largest) sits in the
    lower half of the candidates checked, in the screen's order."""
    checked = [c for c in order if c in sw.checked]
    kept = [c for c, v in sw.ranked().items() if abs(v) >= threshold][:max_components]
    return any(c in kept for c in checked[len(checked) // 2:])


class _Sweeper:
    """Runs sweep cells (the screen, exact chunks) and collects the exact numbers."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.exact: dict[str, float] = {}
        """Component → larger |fraction| (signed) of exact patching and zero ablation."""
        self.checked: set[str] = set()
        """Components an exact cell was run for (finished or not)."""
        self.asked: set[str] = set()
        self.failed: list[str] = []
        self.call_ids: list[str] = []
        self.chunks = 0
        self.per_variant_s: float | None = None
        """Measured seconds per stacked variant (one forward of the batch), from the last cell."""
        self.last_ev: ExecutionResultEvent | None = None

    def next_id(self) -> str:
        return f"{LOCALISE_EXACT}{self.chunks}"

    def run(self, call_id: str, tool: AttributionSweep) -> tuple[SweepResult | None, ExecutionResultEvent]:
        self.ctx.journal.emit(ToolCallEvent(call_id=call_id, name="attribution_sweep",
                                            input=tool.model_dump(mode="json")))
        ev = execute_cell(self.ctx, call_id, tool.to_code(), None)
        if call_id != LOCALISE_SWEEP:
            self.chunks += 1
            self.call_ids.append(call_id)
            self.last_ev = ev
        res = parse_result("attribution_sweep", ev.data) if ev.status == "ok" else None
        return (res if isinstance(res, SweepResult) else None), ev

    def add(self, res: SweepResult) -> None:
        for c, v in res.ranked().items():
            self.exact[c] = v

    def chunk_size(self) -> int:
        """Components per exact cell: two variants each (patching, zero ablation) in CHUNK_FILL of the limit
        (:data:`FIRST_CHUNK` before any cost was measured)."""
        if self.per_variant_s is None:
            return FIRST_CHUNK
        return max(1, int(CHUNK_FILL * self.ctx.cell_timeout_s / (2 * self.per_variant_s)))

    def check(self, comps: list[str]) -> None:
        """Exact-check the components of ``comps`` not yet checked, in chunks; halve a chunk past the limit."""
        todo = [c for c in comps if c not in self.checked]
        self.asked.update(todo)
        queue: list[tuple[list[str], bool]] = []  # (chunk, already a retry)
        while todo or queue:
            if not queue:
                k = self.chunk_size()
                queue.append((todo[:k], False))
                todo = todo[k:]
            chunk, retry = queue.pop(0)
            self.checked.update(chunk)
            self.ctx.progress(phase="localise", detail=f"exact check {len(self.exact)}/{len(self.asked)}")
            res, ev = self.run(self.next_id(), AttributionSweep(kind="all", method="exact", top_k=500,
                                                                zero_ablation=True, components=chunk))
            if res is not None:
                self.add(res)
                self.per_variant_s = max(ev.duration_s / (2 * len(chunk)), 1e-3)
            elif len(chunk) > 1 and not retry or len(chunk) > 1 and ev.status == "timeout":
                half = len(chunk) // 2
                queue[:0] = [(chunk[:half], True), (chunk[half:], True)]
                if ev.status == "timeout" and self.per_variant_s is not None:
                    self.per_variant_s = max(self.per_variant_s, ev.duration_s / (2 * len(chunk)) * 2)
            else:
                self.failed += chunk

    def ranked(self) -> dict[str, float]:
        return dict(sorted(self.exact.items(), key=lambda kv: (-abs(kv[1]), kv[0])))


def _redundancy(ctx: RunContext, keep: list[str], n_heads: int, small: bool) -> dict[str, dict[str, Any]]:
    """The redundancy check after the single-component sweep: ``{head: {"partners", "joint", "why"}}`` of the
    heads kept by :func:`tools.experiments.redundancy`. A failed cell is logged as a recoverable error and
    changes nothing.

    Zoo-sized models: one cell, every group and every pair of a flagged group. Larger ones: a first cell
    ablates each layer's group (one variant per layer), then one cell per group whose joint effect reaches the
    threshold (largest first, at most :data:`MAX_REDUNDANCY_GROUPS`), with pairs among
    :data:`MAX_PAIR_CANDIDATES` heads: each cell at most ``2 × n_heads + 6`` ablations."""
    if n_heads < 2:
        return {}
    if small:
        res = _redundancy_cell(ctx, LOCALISE_REDUNDANCY, RedundancyCheck(exclude=keep, threshold=ctx.threshold))
        return _kept(res)
    ctx.progress(phase="localise", detail="redundancy: layer groups")
    res = _redundancy_cell(ctx, LOCALISE_REDUNDANCY, RedundancyCheck(exclude=keep, threshold=ctx.threshold,
                                                                      max_groups=0))
    if res is None:
        return {}
    big = sorted((g for g in res.groups.values() if (g.joint or 0.0) >= ctx.threshold),
                 key=lambda g: -(g.joint or 0.0))
    if len(big) > MAX_REDUNDANCY_GROUPS:
        names = ", ".join(f"L{Component.parse(g.heads[0]).layer}" for g in big[MAX_REDUNDANCY_GROUPS:])
        ctx.journal.emit(ErrorEvent(where="localise", recoverable=True, message=(
            f"the redundancy check examined the {MAX_REDUNDANCY_GROUPS} layers whose heads matter most together; "
            f"not {names} (pass the components with --circuit to investigate others)")))
    out: dict[str, dict[str, Any]] = {}
    for i, g in enumerate(big[:MAX_REDUNDANCY_GROUPS]):
        layer = Component.parse(g.heads[0]).layer
        ctx.progress(phase="localise", detail=f"redundancy: layer {layer} ({i + 1}/{min(len(big), MAX_REDUNDANCY_GROUPS)})")
        r = _redundancy_cell(ctx, f"{LOCALISE_REDUNDANCY}-L{layer}", RedundancyCheck(
            exclude=keep, threshold=ctx.threshold, max_candidates=MAX_PAIR_CANDIDATES, layers=[layer]))
        for c, v in _kept(r).items():
            if c not in out or v["joint"] > out[c]["joint"]:
                out[c] = v
    return out


def _kept(res: RedundancyResult | None) -> dict[str, dict[str, Any]]:
    if res is None:
        return {}
    return {c: {"partners": list(v.partners), "joint": float(v.joint or 0.0), "why": v.why} for c, v in res.kept.items()}


def _redundancy_cell(ctx: RunContext, call_id: str, tool: RedundancyCheck) -> RedundancyResult | None:
    ctx.journal.emit(ToolCallEvent(call_id=call_id, name="redundancy_check", input=tool.model_dump(mode="json")))
    ev = execute_cell(ctx, call_id, tool.to_code(), None)
    res = parse_result("redundancy_check", ev.data) if ev.status == "ok" else None
    if not isinstance(res, RedundancyResult):
        ctx.journal.emit(ErrorEvent(where="localise", recoverable=True, message=(
            f"the redundancy check ({call_id}) failed ({ev.status}: {ev.error_name}: {ev.error_value}); going on "
            "with the components the sweep kept")))
        return None
    return res
