"""Build a :class:`~agent.report.model.RunSummary` from a run's log (``events.jsonl``) and nothing else.

This is the one place that knows the event schema (:mod:`agent.log`); the renderers only see the
summary. Key numbers of a component come from the experiments its conclusion cites (or, when it cites
none, from every cell run while it was under investigation):

================  =============================================================================
tool              key number shown
================  =============================================================================
``ablate``        ``ablation effect`` (clean − ablated metric) and ``ablation frac`` of the gap
                  (``joint ablation ...`` when several components are ablated together)
``patch``         ``patching effect`` and ``patching frac`` (fraction of the clean−corrupt gap)
``attention``     ``top attention``: the role the head attends to most, with its weight
``logit_attr…``   ``DLA``: the component's direct logit attribution
``head_scores``   the largest of its copying / previous-token / induction / duplicate scores
================  =============================================================================

>>> import tempfile
>>> from agent.log import RunLog, RunStartedEvent, ConclusionEvent
>>> d = Path(tempfile.mkdtemp()) / "run1"
>>> log = RunLog(d)
>>> _ = log.append(RunStartedEvent(run_id="run1", question="q?", model="toy-ioi", planner="offline"))
>>> _ = log.append(ConclusionEvent(component="L1H0", role="name mover", explanation="e", confidence=0.7))
>>> s = summarise(d)
>>> s.model, [c.role for c in s.components], s.status
('toy-ioi', ['name mover'], 'running (no run_finished event)')
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from agent.report.figures import figures_from_data
from agent.report.model import (
    Budget,
    CellRecord,
    Cluster,
    ComponentRow,
    Figure,
    Hypothesis,
    HypothesisStep,
    RunSummary,
)

MAX_FIGURES = 12
"""At most this many figures per report (the first ones in log order)."""


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _lookup(d: Any, component: str) -> Any:
    """``d[component]`` for a dict keyed by component names (or the only value when there is one)."""
    if isinstance(d, dict):
        if component in d:
            return d[component]
        if len(d) == 1:
            return next(iter(d.values()))
    return None


def cell_numbers(cell: CellRecord, component: str) -> dict[str, float | str]:
    """The key numbers one logged cell gives about ``component`` (see the module docstring).

    >>> c = CellRecord(seq=3, call="ablate", code="", result={"data": {"effect": 1.5, "effect_frac": 0.5}})
    >>> cell_numbers(c, "L1H0")
    {'ablation effect': 1.5, 'ablation frac': 0.5}
    >>> c = CellRecord(seq=4, call="attention", code="", result={"data": {"summary": {"IO": 0.7, "S1": 0.1}}})
    >>> cell_numbers(c, "L1H0")
    {'top attention': 'IO (0.70)'}
    >>> c = CellRecord(seq=5, call="attention", code="",
    ...                result={"data": {"summary": {"roles": {"IO": 0.3}, "previous": 0.1, "self_": 0.05}}})
    >>> cell_numbers(c, "L1H0")
    {'top attention': 'IO (0.30)'}
    """
    data = cell.result.get("data")
    if not isinstance(data, dict):
        return {}
    out: dict[str, float | str] = {}
    call = cell.call
    if call in ("ablate", "patch", "path_patch", "steer"):
        label = {"ablate": "ablation", "patch": "patching", "path_patch": "path patching", "steer": "steering"}[call]
        if call == "ablate" and len(data.get("components") or []) > 1:
            label = "joint ablation"  # e.g. a head with its redundant partner
        for key, name in (("effect", "effect"), ("effect_frac", "frac")):
            v = _num(data.get(key))
            if v is not None:
                out[f"{label} {name}"] = v
    elif call == "attention":
        summ = data.get("summary")
        if isinstance(summ, dict):
            flat: dict[str, float | None] = {}
            for k, v in summ.items():  # task roles may be nested, e.g. {"roles": {"IO": ..}, "previous": ..}
                if isinstance(v, dict):
                    flat.update({kk: _num(x) for kk, x in v.items()})
                else:
                    flat[k.rstrip("_")] = _num(v)
            flat = {k: v for k, v in flat.items() if v is not None}
            if flat:
                top = max(flat, key=lambda k: flat[k])
                out["top attention"] = f"{top} ({flat[top]:.2f})"
    elif call == "logit_attribution":
        v = _num(_lookup(data.get("dla"), component))
        if v is not None:
            out["DLA"] = v
    elif call == "head_scores":
        scores = _lookup(data.get("scores"), component)
        if isinstance(scores, dict):
            flat = {k: _num(v) for k, v in scores.items() if _num(v) is not None and "offset" not in k}
            if flat:
                top = max(flat, key=lambda k: flat[k])
                out[f"{top} score"] = flat[top]  # type: ignore[assignment]
    elif call == "attribution_sweep":
        for key, name in (("effects", "sweep effect"), ("effect_frac", "sweep frac")):
            table = data.get(key)
            v = _num(table.get(component)) if isinstance(table, dict) else None
            if v is not None:
                out[name] = v
    return out


def _tool_calls(events: list[Any]) -> dict[str, Any]:
    return {e.call_id: e for e in events if e.kind == "tool_call"}


def cells_from_events(events: list[Any]) -> list[CellRecord]:
    """Every ``execution_result`` event as a :class:`CellRecord`, in log order, with its tool call's name."""
    calls = _tool_calls(events)
    out = []
    for e in events:
        if e.kind != "execution_result":
            continue
        call = calls.get(e.call_id)
        result = e.model_dump(mode="json", exclude={"kind", "seq", "ts", "schema_version", "call_id", "code",
                                                    "component"})
        out.append(CellRecord(seq=e.seq, call=call.name if call else "run_code",
                              component=e.component or (call.component if call else None), code=e.code,
                              result=result))
    return out


def summarise(run_dir: str | Path, events: list[Any] | None = None, figures: bool = True) -> RunSummary:
    """Read ``run_dir/events.jsonl`` (unless ``events`` are given) and derive the report's content."""
    from agent.log import (
        latest_clusters,
        latest_conclusions,
        llm_totals,
        read_events,
        run_finished,
        run_started,
    )

    run_dir = Path(run_dir)
    events = read_events(run_dir) if events is None else events
    start = run_started(events)
    finish = run_finished(events)
    s = RunSummary(run_id=start.run_id if start else run_dir.name, run_dir=str(run_dir))
    if start is not None:
        s.question = start.question
        s.task = start.task
        s.model = start.model
        s.model_fingerprint = start.model_fingerprint
        s.seed = start.seed
        s.planner = start.planner
        s.started = start.ts.isoformat(timespec="seconds") if start.ts else None
        s.circuit = list(start.circuit or [])
        s.setup_cells = list(start.config.get("setup_cells") or [])
    else:
        s.notes.append("The log has no run_started event: question, model and seed are unknown.")
    s.status = finish.status if finish else "running (no run_finished event)"
    if s.task:
        try:
            from evals.tasks import load_task

            s.task_description = load_task(s.task).description
        except Exception:  # noqa: BLE001 - the task library is optional for a report
            pass

    s.cells = cells_from_events(events)
    by_seq = {c.seq: c for c in s.cells}

    for comp, ev in latest_conclusions(events).items():
        cited = [by_seq[q] for q in ev.evidence if q in by_seq] or [c for c in s.cells if c.component == comp]
        numbers: dict[str, float | str] = {}
        for cell in cited:
            for k, v in cell_numbers(cell, comp).items():
                numbers.setdefault(k, v)
        role = ev.role if not ev.inconclusive_reason else f"{ev.role} ({ev.inconclusive_reason})"
        s.components.append(ComponentRow(component=comp, role=role, explanation=ev.explanation,
                                         confidence=ev.confidence, numbers=numbers, evidence=list(ev.evidence),
                                         seq=ev.seq))
    if not s.circuit:
        s.circuit = [c.component for c in s.components]
    order = {c: i for i, c in enumerate(s.circuit)}
    s.components.sort(key=lambda r: order.get(r.component, len(order)))

    s.clusters = [Cluster(name=c.name, members=list(c.components), explanation=c.explanation)
                  for c in latest_clusters(events).values()]

    hyps: dict[str, Hypothesis] = {}
    for e in events:
        if e.kind != "hypothesis":
            continue
        h = hyps.setdefault(e.hypothesis_id, Hypothesis(id=e.hypothesis_id, component=e.component,
                                                       statement=e.statement))
        h.statement = e.statement
        h.steps.append(HypothesisStep(status=e.status, seq=e.seq, evidence=list(e.evidence),
                                      note=e.prediction or ""))
    s.hypotheses = list(hyps.values())

    run_budgets = [e for e in events if e.kind == "budget" and e.component is None] or [
        e for e in events if e.kind == "budget"]
    tot = llm_totals(events)
    b = Budget(input_tokens=int(tot["input_tokens"] + tot["cache_read_input_tokens"]
                                + tot["cache_creation_input_tokens"]),
               output_tokens=int(tot["output_tokens"]), usd=float(tot["usd"]),
               tool_calls=sum(1 for e in events if e.kind == "tool_call"))
    if run_budgets:
        last = run_budgets[-1]
        b.steps = last.steps
        b.tool_calls = max(b.tool_calls, last.tool_calls)
        b.input_tokens = max(b.input_tokens, last.input_tokens)
        b.output_tokens = max(b.output_tokens, last.output_tokens)
        b.usd = max(b.usd, last.usd)
        b.wall_s = last.wall_s or None
    if start is not None and start.ts and events[-1].ts:
        b.wall_s = max(b.wall_s or 0.0, (events[-1].ts - start.ts).total_seconds())
    s.budget = b

    evals = [e for e in events if e.kind == "evaluation"]
    if evals:
        s.evaluation = {}
        for e in evals:
            prefix = f"{e.evaluator}." if len(evals) > 1 else ""
            s.evaluation.update({f"{prefix}{k}": v for k, v in e.scores.items()})

    if figures:
        s.figures, notes = collect_figures(run_dir, s.cells)
        s.notes.extend(notes)
    return s


def collect_figures(run_dir: Path, cells: list[CellRecord]) -> tuple[list[Figure], list[str]]:
    """Figures from logged data and logged figure files; notes say what was skipped and why."""
    figs: list[Figure] = []
    notes: list[str] = []
    for cell in cells:
        for rel in cell.result.get("outputs") or []:
            if not str(rel).lower().endswith(".png"):
                continue
            p = run_dir / rel
            if p.is_file():
                figs.append(Figure(title=f"{rel} — written by {cell.call} (event {cell.seq})", kind="logged",
                                   source_seq=cell.seq, png_b64=base64.b64encode(p.read_bytes()).decode("ascii")))
            else:
                notes.append(f"figure {rel} of event {cell.seq} is missing from the run directory; skipped.")
        if cell.result.get("status") == "ok":
            try:
                figs.extend(figures_from_data(cell.result.get("data"), cell.seq, cell.call))
            except Exception as e:  # noqa: BLE001 - a figure must never break a report
                notes.append(f"could not draw a figure from event {cell.seq}: {type(e).__name__}: {e}")
    if len(figs) > MAX_FIGURES:
        notes.append(f"{len(figs) - MAX_FIGURES} more figures were left out (the report keeps {MAX_FIGURES}).")
        figs = figs[:MAX_FIGURES]
    if not any(f.kind == "attention" for f in figs):
        notes.append("No attention pattern was logged (only summaries); `interp-agent report RUN --attention` "
                     "re-computes the concluded heads' patterns in a sandbox and draws them.")
    if not any(f.kind == "patching" for f in figs):
        notes.append("No patching sweep was logged, so there is no patching heat map.")
    return figs, notes


ATTENTION_CELL = """import torch
with torch.no_grad():
    _att = model.hf(batch.clean_ids[:1], output_attentions=True).attentions
_toks = model.tokenizer.convert_ids_to_tokens(batch.clean_ids[0].tolist())
_result = {{h: {{"attn_pattern": _att[l][0, k].tolist(), "tokens": _toks}} for h, l, k in {heads!r}}}
"""
"""The small cell ``--attention`` runs after the run's setup cells: the heads' patterns on the first prompt."""


def recompute_attention(s: RunSummary, max_heads: int = 4, sandbox_factory: Any = None) -> list[Figure]:
    """Re-run the run's setup cells plus :data:`ATTENTION_CELL` in a fresh sandbox; draw each concluded
    head's attention pattern on the first prompt. Adds the figures to ``s`` (and a note when it fails)."""
    import shutil
    import tempfile

    from tools.components import Component, Kind

    heads = [Component.parse(r.component) for r in s.components]
    heads = [(str(c), c.layer, c.head) for c in heads if c.kind is Kind.HEAD][:max_heads]
    if not heads or not s.setup_cells:
        s.notes.append("attention patterns not re-computed: " + ("no concluded head" if not heads else
                                                                   "the log records no setup cells"))
        return []
    if sandbox_factory is None:
        from agent.replay import default_sandbox

        def sandbox_factory(ws, setup, unsafe):
            return default_sandbox(ws, setup, unsafe, s.model)
    ws = Path(tempfile.mkdtemp(prefix="report-attn-"))
    try:
        with sandbox_factory(ws, s.setup_cells, False) as sb:
            res = sb.execute(ATTENTION_CELL.format(heads=heads), timeout=300)
    finally:
        shutil.rmtree(ws, ignore_errors=True)
    res = res if isinstance(res, dict) else res.model_dump(mode="json")
    if res.get("status") != "ok" or not isinstance(res.get("data"), dict):
        s.notes.append(f"attention patterns could not be re-computed: {res.get('error_name')}: "
                       f"{res.get('error_value')}")
        return []
    figs = []
    for name, data in res["data"].items():
        figs.extend(f.model_copy(update={"title": f"Attention pattern of {name} on the first prompt "
                                                  "(re-computed from the run's setup cells)"})
                    for f in figures_from_data({"attn_pattern": data["attn_pattern"], "tokens": data["tokens"]},
                                               None, name))
    s.figures = figs + s.figures
    s.notes = [n for n in s.notes if not n.startswith("No attention pattern was logged")]
    return figs
