"""Build a :class:`~agent.report.model.RunSummary` from a run's :class:`~agent.view.RunView` (its log, nothing else).

Key numbers of a component come from the typed results (:mod:`tools.experiments`) of the experiments its
conclusion cites (or, when it cites none, of every cell run while it was under investigation):

================  =============================================================================
tool              key number shown
================  =============================================================================
``ablate``        ``ablation effect`` (clean − ablated metric) and ``ablation frac`` of the gap
                  (``joint ablation ...`` when several components are ablated together)
``patch``         ``patching effect`` and ``patching frac`` (fraction of the clean−corrupt gap)
``path_patch``    ``path patching effect (R in)`` and ``path patching frac (R in)`` of the cited path with the
                  largest |effect| (receiver ``R``, input ``in``): the path a path-patching claim rests on
``steer``         ``steering frac``
``attention``     ``top attention``: the role (or previous / first / self) the head attends to most
``logit_attr…``   ``DLA``: the component's direct logit attribution
``head_scores``   the largest of its copying / previous-token / induction / duplicate / look-back scores
``attr…_sweep``   ``sweep effect`` and ``sweep frac``
================  =============================================================================

>>> import tempfile
>>> from agent.log import RunLog, RunStartedEvent, ConclusionEvent
>>> d = Path(tempfile.mkdtemp()) / "run1"
>>> log = RunLog(d)
>>> _ = log.append(RunStartedEvent(run_id="run1", question="q?", model="toy-ioi", planner="offline"))
>>> _ = log.append(ConclusionEvent(component="L1H0", role="name mover", explanation="e", confidence=0.7))
>>> s = build_summary(d)
>>> s.model, [c.role for c in s.components], s.status
('toy-ioi', ['name mover'], 'running (no run_finished event)')
"""

from __future__ import annotations

import base64
from pathlib import Path

from pydantic import BaseModel

from agent.config import KernelOptions
from agent.report.figures import figures_from_data
from agent.report.interchange_figure import interchange_figure
from agent.report.model import (
    CellRecord,
    Cluster,
    ComponentRow,
    DesignRow,
    Figure,
    GroundingSummary,
    Hypothesis,
    HypothesisStep,
    RunSummary,
    TaskDesign,
)
from agent.view import RunView
from evals.grounding import marked
from tools import experiments as X

MAX_FIGURES = 12
"""At most this many figures per report (the first ones in log order)."""
MAX_FIGURE_BYTES = 16 * 2**20
"""Largest logged figure file embedded in a report (the files are the kernel's: read bounded, no links)."""

_EFFECT_LABELS: dict[type[BaseModel], str] = {X.AblationResult: "ablation", X.PatchingResult: "patching",
                                              X.PathPatchingResult: "path patching"}


def _of(table: dict, component: str) -> object:
    """``table[component]``, or the only value of a one-entry table (results of a single component)."""
    if component in table:
        return table[component]
    return next(iter(table.values())) if len(table) == 1 else None


def key_numbers(result: BaseModel | None, component: str) -> dict[str, float | str]:
    """The key numbers one typed result gives about ``component`` (see the module docstring).

    >>> key_numbers(X.AblationResult(components=["L1H0"], clean=3, gap=3, ablated=1.5, effect=1.5,
    ...                              effect_frac=0.5), "L1H0")
    {'ablation effect': 1.5, 'ablation frac': 0.5}
    >>> att = X.AttentionResult.model_validate({"head": "L1H0", "summary": {"head": "L1H0", "query": "END",
    ...     "roles": {"IO": 0.3, "S1": 0.1}, "previous": 0.1, "first": 0.4, "self": 0.05}})
    >>> key_numbers(att, "L1H0")
    {'top attention': 'first (0.40)'}
    """
    out: dict[str, float | str] = {}
    label = _EFFECT_LABELS.get(type(result))
    if label is not None:
        if isinstance(result, X.AblationResult) and len(result.components) > 1:
            label = "joint ablation"  # e.g. a head with its redundant partner
        for name, v in (("effect", result.effect), ("frac", result.effect_frac)):  # type: ignore[union-attr]
            if v is not None:
                out[f"{label} {name}"] = v
    elif isinstance(result, X.SteeringResult) and result.effect_frac is not None:
        out["steering frac"] = result.effect_frac
    elif isinstance(result, X.AttentionResult):
        s = result.summary
        flat = {**s.roles, "previous": s.previous, "first": s.first, "self": s.self_}
        top = max(flat, key=lambda k: flat[k])
        out["top attention"] = f"{top} ({flat[top]:.2f})"
    elif isinstance(result, X.DLAResult):
        v = _of(result.dla, component)
        if isinstance(v, float):
            out["DLA"] = v
    elif isinstance(result, X.HeadProfileResult):
        p = _of(result.scores, component)
        if isinstance(p, X.HeadProfile):
            flat = {k: v for k, v in p.model_dump().items() if "offset" not in k and isinstance(v, float)}
            if flat:
                top = max(flat, key=lambda k: flat[k])
                out[f"{top} score"] = flat[top]
    elif isinstance(result, X.SweepResult):
        for name, table in (("sweep effect", result.effects), ("sweep frac", result.effect_frac)):
            v = table.get(component)
            if v is not None:
                out[name] = v
    return out


def cited_numbers(results: list[BaseModel | None], component: str) -> dict[str, float | str]:
    """The key numbers of a conclusion from its cited results, in citation order (the first of each kind),
    except path patching: the cited path with the largest |effect|, named by receiver and input.

    >>> pp = lambda inp, e: X.PathPatchingResult(sender="L0H1", receivers=["L1H1"], receiver_input=inp, clean=2,
    ...                                          gap=2, patched=2 - e, effect=e, effect_frac=e / 2)
    >>> cited_numbers([pp("q", 0.002), pp("k", 0.7), pp("v", -0.1)], "L0H1")
    {'path patching effect (L1H1 k)': 0.7, 'path patching frac (L1H1 k)': 0.35}
    """
    numbers: dict[str, float | str] = {}
    paths = [r for r in results if isinstance(r, X.PathPatchingResult) and r.effect is not None]
    for r in results:
        if isinstance(r, X.PathPatchingResult):
            continue
        for k, val in key_numbers(r, component).items():
            numbers.setdefault(k, val)
    if paths:
        top = max(paths, key=lambda r: abs(r.effect or 0.0))
        where = f"({','.join(top.receivers)} {top.receiver_input})"
        for k, val in key_numbers(top, component).items():
            numbers[f"{k} {where}"] = val
    return numbers


def _design(v: RunView) -> TaskDesign:
    """The task design as a report shows it: every proposal with its check."""
    fr = v.framing
    assert fr is not None
    rows = [DesignRow(proposal=a.proposal, valid=a.valid, usable=a.usable, gap=a.gap, accuracy=a.accuracy,
                      flips=a.flips, note="; ".join(a.reasons) or (a.error or "").split("\n")[0])
            for a in fr.attempts]
    return TaskDesign(status=fr.status, task=fr.task, file=fr.file, steps=fr.steps, reason=fr.reason, attempts=rows)


def build_summary(run_dir: str | Path, view: RunView | None = None, figures: bool = True) -> RunSummary:
    """What a report shows, from ``run_dir``'s log (or an already built ``view`` of it)."""
    run_dir = Path(run_dir)
    v = view if view is not None else RunView.from_run(run_dir)
    start = v.started
    s = RunSummary(run_id=v.run_id, run_dir=str(run_dir), cells=v.cells, usage=v.usage)
    if start is not None:
        s.question, s.task, s.model, s.model_fingerprint = start.question, v.task, start.model, \
            start.model_fingerprint
        s.seed, s.planner = start.seed, start.planner
        s.started = start.ts.isoformat(timespec="seconds") if start.ts else None
        s.circuit = list(start.circuit or [])
        s.setup_cells = v.setup_cells()
        s.kernel = KernelOptions.logged(start)
    else:
        s.notes.append("The log has no run_started event: question, model and seed are unknown.")
    s.status = v.finished.status if v.finished else "running (no run_finished event)"
    if v.framing is not None:
        s.design = _design(v)
        s.task_description = (v.framing.spec or {}).get("description") or None
    elif s.task:
        try:
            from evals.tasks import load_task

            s.task_description = load_task(s.task).description
        except Exception:  # noqa: BLE001 - the task library is optional for a report
            pass

    grounding = v.grounding() if v.conclusions else None
    checks = {c.component: c for c in grounding.claims} if grounding else {}
    for comp, ev in v.conclusions.items():
        numbers = cited_numbers([c.typed() for c in v.cited_cells(ev)], comp)
        role = ev.role if not ev.inconclusive_reason else f"{ev.role} ({ev.inconclusive_reason})"
        check = checks.get(comp)
        checked = check is not None and not check.automatic
        s.components.append(ComponentRow(
            component=comp, role=role, explanation=ev.explanation, confidence=ev.confidence, numbers=numbers,
            evidence=list(ev.evidence), seq=ev.seq,
            parts=marked(ev.explanation, check.numbers) if checked else [],
            grounding=list(check.problems) if checked else None))
    if grounding is not None:
        sc = grounding.scores()
        s.grounding = GroundingSummary(
            claims=int(sc["ground_claims"] or 0), grounded=sum(c.grounded for c in grounding.claims if not c.automatic),
            numbers=int(sc["ground_numbers"] or 0), ungrounded_numbers=int(sc["ground_ungrounded_numbers"] or 0),
            bad_citations=int(sc["ground_bad_citations"] or 0), untested=int(sc["ground_untested"] or 0),
            undecided=list(grounding.undecided))
    if not s.circuit:
        s.circuit = [c.component for c in s.components]
    order = {c: i for i, c in enumerate(s.circuit)}
    s.components.sort(key=lambda r: order.get(r.component, len(order)))
    s.clusters = [Cluster(name=c.name, members=list(c.components), explanation=c.explanation)
                  for c in v.clusters.values()]

    hyps: dict[str, Hypothesis] = {}
    for e in v.hypotheses:
        h = hyps.setdefault(e.hypothesis_id, Hypothesis(id=e.hypothesis_id, component=e.component,
                                                       statement=e.statement))
        h.statement = e.statement
        h.steps.append(HypothesisStep(status=e.status, seq=e.seq, evidence=list(e.evidence), note=e.prediction or ""))
    s.hypotheses = list(hyps.values())
    s.evaluation = v.scores() or None
    if figures:
        s.figures, notes = collect_figures(run_dir, s.cells)
        s.notes.extend(notes)
        for e in v.evaluations[-1:]:  # the latest evaluation's interchangeability heat map
            try:
                fig = interchange_figure(e.details, e.seq)
            except Exception as err:  # noqa: BLE001 - a figure must never break a report
                s.notes.append(f"could not draw the interchangeability heat map: {type(err).__name__}: {err}")
                continue
            if fig is not None:
                s.figures.append(fig)
    return s


def read_run_file(run_dir: Path | None, rel: object, max_bytes: int = MAX_FIGURE_BYTES) -> tuple[bytes | None, str]:
    """The bytes of a file the run logged (``rel`` under ``run_dir``), or ``(None, why)``.

    The sandboxed kernel could write there: no link is followed at any level, only a regular file of at
    most ``max_bytes`` is read (:func:`sandbox.hostio.read_beneath`).
    """
    from sandbox.hostio import UnsafePath, read_beneath

    if run_dir is None:
        return None, "no run directory"
    try:
        return read_beneath(run_dir, str(rel), max_bytes), ""
    except UnsafePath as e:
        return None, ("it is missing from the run directory" if "No such file" in str(e) else str(e))


def collect_figures(run_dir: Path, cells: list[CellRecord]) -> tuple[list[Figure], list[str]]:
    """Figures from logged data and logged figure files; notes say what was skipped and why."""
    figs: list[Figure] = []
    notes: list[str] = []
    for cell in cells:
        for rel in cell.result.get("outputs") or []:
            if not str(rel).lower().endswith(".png"):
                continue
            png, why = read_run_file(run_dir, rel)
            if png is not None:
                figs.append(Figure(title=f"{rel} — written by {cell.call} (event {cell.seq})", kind="logged",
                                   source_seq=cell.seq, png_b64=base64.b64encode(png).decode("ascii")))
            else:
                notes.append(f"figure {rel} of event {cell.seq} was skipped: {why}.")
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
