"""Validation harness for the interchangeability score: does it prefer the clusterings it should?

``python -m evals.validate [TASK[=MODEL] ...]`` prints, for every task (default: the zoo's tasks,
:data:`DEFAULT_TASKS`) and each definition (``--definitions v1,v2``, old and new side by side):

- the AUC of the task's clustering — the ground truth (:data:`evals.zoo.planted.INTERCHANGE_TRUTH`)
  on a planted model, else the reference roles without distractors;
- the null distribution of ``--n-null`` random clusterings with the same cluster sizes (mean, 95th
  percentile, the clustering's percentile) and how many distinct clusterings of those sizes exist;
- the number of unordered pairs whose ``I_sym`` is undefined;
- the swap curve: the mean AUC after k = 1, 2, 3 swaps of members between clusters (``--draws`` each);
- the conventions: all-in-one cluster and all singletons score ½ (no across / no within pairs);
- the best clustering of the same sizes by the score, and the task clustering's rank among them;
- on planted models, ``I_sym`` of the known-answer pairs (:data:`evals.zoo.planted.KNOWN_ANSWERS`);
- the issue's acceptance checks, as ``ok`` / ``FAIL`` / ``n/a``.

``--out DIR`` also writes ``validation.md`` and ``validation.json``. Values are cached
(``evals.interchange.VariantStore``), so a rerun only recomputes what changed.

>>> [len(p) for p in enumerate_clusterings(["a", "b", "c"], [2, 1])]
[2, 2, 2]
"""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from pydantic import BaseModel, ConfigDict, Field

from evals.interchange import (
    DEFINITION,
    InterchangeOptions,
    SwapPoint,
    _auc_or_half,
    _labels,
    _pair_values,
    interchange_matrix,
    score_clustering,
    swap_curve,
)
from evals.scores import ScoreError
from tools.errors import InterpAgentError

DEFAULT_TASKS = ["toy-ioi", "toy-induction", "toy-greater-than", "toy-pronoun", "planted-ioi", "planted-induction",
                 "planted-twin-induction"]
MAX_ENUMERATED = 5000
"""Clusterings of the task's sizes are enumerated (best one, rank) only when there are at most this many."""
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "v1": ("v1", {}),
    "v1-min": ("v1", {"symmetric": "min"}),
    "v2": ("v2", {}),
    "v2-mean-floor": ("v2", {"controls": ("mean",)}),
    "v2-no-context": ("v2", {"context": False}),
    "v2-no-cap": ("v2", {"cap": False}),
    "v2-mean-sym": ("v2", {"symmetric": "mean"}),
    "v2-rel-0.1": ("v2", {"context_rel": 0.1}),
    "v2-rel-0.5": ("v2", {"context_rel": 0.5}),
}
"""Named definitions for ``--definitions``: the two versions, and v2 with one choice undone (to measure it)."""
HIGH, LOW = 0.8, 0.2
"""Known answers: substitutable and redundant pairs must score at least HIGH, different-subspace pairs at most LOW."""


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class KnownPair(_Data):
    """A planted pair whose interchangeability is known by construction."""

    kind: str
    """``substitutable``, ``redundant`` (expected high) or ``same label, different subspace`` (expected low)."""
    a: str
    b: str
    I_ab: float | None
    I_ba: float | None
    I_sym: float | None
    ok: bool


class DefinitionRow(_Data):
    """One task under one definition of the score."""

    definition: str
    auc: float
    defined: bool
    null_mean: float
    null_p95: float
    percentile: float
    n_distinct: int
    """Distinct clusterings with the task clustering's sizes."""
    n_undefined_pairs: int
    swaps: list[SwapPoint]
    all_in_one_auc: float = 0.5
    singleton_auc: float = 0.5
    best_auc: float | None = None
    """Highest AUC over all clusterings of the same sizes (None when there are too many to enumerate)."""
    best_clustering: list[list[str]] | None = None
    rank: int | None = None
    """1 + the number of clusterings of the same sizes that score strictly higher than the task's."""
    known: list[KnownPair] = Field(default_factory=list)
    checks: dict[str, bool | None] = Field(default_factory=dict)
    """Acceptance checks: True (pass), False (fail), None (does not apply)."""
    I_sym: list[list[float | None]] = Field(default_factory=list)
    n_variants: int = 0
    wall_s: float = 0.0


class TaskValidation(_Data):
    task: str
    model: str
    clustering: dict[str, list[str]]
    clustering_source: str
    """``ground truth`` (planted) or ``reference`` (trained toys and others)."""
    n_prompts: int
    seed: int
    rows: list[DefinitionRow]


def enumerate_clusterings(components: Sequence[str], sizes: Sequence[int]) -> Iterator[list[list[str]]]:
    """Every clustering of ``components`` into unlabelled clusters of ``sizes`` (each exactly once)."""
    left = Counter(sizes)

    def rec(items: list[str]) -> Iterator[list[list[str]]]:
        if not items:
            yield []
            return
        first, rest = items[0], items[1:]
        for s in sorted(k for k, v in left.items() if v > 0):
            for others in itertools.combinations(rest, s - 1):
                remaining = [x for x in rest if x not in others]
                left[s] -= 1
                for p in rec(remaining):
                    yield [[first, *others], *p]
                left[s] += 1

    if sum(sizes) != len(components):
        raise ScoreError(f"cluster sizes {list(sizes)} do not add up to {len(components)} components",
                         fix="give sizes that sum to the number of components")
    yield from rec(list(components))


def task_clustering(task: Any, model_ref: str) -> tuple[dict[str, list[str]], str]:
    """The clustering the score should prefer: planted ground truth, else the reference without distractors."""
    from evals.zoo.planted import INTERCHANGE_TRUTH

    if model_ref in INTERCHANGE_TRUTH and task.name == model_ref:
        return {k: list(v) for k, v in INTERCHANGE_TRUTH[model_ref].items()}, "ground truth"
    out: dict[str, list[str]] = {}
    for e in task.reference:
        if e.role.lower() != "distractor":
            out.setdefault(e.role, []).append(e.component)
    if not out:
        raise ScoreError(f"task {task.name!r} has no reference clustering to validate the score on",
                         fix="pick a task with a reference circuit (interp-agent tasks list)")
    return out, "reference"


def _load(model_ref: str) -> Any:
    from transformers.utils import logging as hf_logging

    from evals.zoo import load_any_model

    hf_logging.disable_progress_bar()
    return load_any_model(model_ref, device="cpu")


def _known_pairs(result: Any, model_ref: str) -> list[KnownPair]:
    from evals.zoo.planted import KNOWN_ANSWERS

    out = []
    for kind, pairs in KNOWN_ANSWERS.get(model_ref, {}).items():
        for a, b in pairs:
            if a not in result.components or b not in result.components:
                continue
            i, j = result.components.index(a), result.components.index(b)
            s = result.sym()[i, j]
            s = None if np.isnan(s) else float(s)
            ok = s is not None and (s <= LOW if kind == "same label, different subspace" else s >= HIGH)
            out.append(KnownPair(kind=kind, a=a, b=b, I_ab=result.I(a, b), I_ba=result.I(b, a), I_sym=s, ok=ok))
    return out


def validate_row(result: Any, clustering: dict[str, list[str]], *, source: str, model_ref: str,
                 n_null: int = 200, draws: int = 20, seed: int = 0, name: str | None = None) -> DefinitionRow:
    """Every number of one (task, definition) row, from a computed interchange result."""
    sym = result.sym()
    s = score_clustering(result, clustering, n_null=n_null, seed=seed)
    swaps = swap_curve(sym, result.components, clustering, ks=(1, 2, 3), draws=draws, seed=seed)
    row = DefinitionRow(definition=name or result.version, auc=s.auc, defined=s.defined, null_mean=s.null_mean,
                        null_p95=s.null_p95, percentile=s.percentile, n_distinct=s.n_distinct,
                        n_undefined_pairs=s.n_undefined_pairs, swaps=swaps,
                        I_sym=[[None if np.isnan(x) else float(x) for x in r] for r in sym.tolist()],
                        n_variants=result.n_computed)
    sizes = sorted((len(v) for v in clustering.values()), reverse=True)
    members = [c for v in clustering.values() for c in v]
    if s.n_distinct <= MAX_ENUMERATED:
        idx, _, _ = _labels(result.components, {str(i): [c] for i, c in enumerate(members)})
        best, better = (-1.0, None), 0
        for part in enumerate_clusterings(members, sizes):
            lab = np.empty(len(members), dtype=int)
            for k, cl in enumerate(part):
                for c in cl:
                    lab[members.index(c)] = k
            a = _auc_or_half(*_pair_values(sym, idx, lab))
            better += a > s.auc + 1e-12
            if a > best[0]:
                best = (a, part)
        row.best_auc, row.best_clustering, row.rank = best[0], best[1], better + 1
    row.known = _known_pairs(result, model_ref)
    curve = [s.auc] + [p.mean for p in swaps if p.mean is not None]
    row.checks["swap curve falls"] = all(x > y for x, y in itertools.pairwise(curve)) if len(curve) > 1 else None
    percentile_applies = s.n_distinct >= 20
    row.checks[">= null p95"] = (s.auc >= s.null_p95) if percentile_applies else None
    if source == "ground truth":
        row.checks["AUC >= 0.95, 0 undefined"] = s.auc >= 0.95 and s.n_undefined_pairs == 0
    row.checks["known answers"] = all(k.ok for k in row.known) if row.known else None
    return row


def validate_task(task_name: str, model_ref: str | None = None, *, definitions: Sequence[str] = ("v1", "v2"),
                  n_prompts: int = 64, seed: int = 0, n_null: int = 200, draws: int = 20, cache: bool = True,
                  model: Any = None) -> TaskValidation:
    """Validate the score on one task: one :class:`DefinitionRow` per definition."""
    from evals.tasks import load_task

    task = load_task(task_name)
    model_ref = model_ref or task.model
    if not model_ref:
        raise ScoreError(f"task {task_name!r} names no model", fix=f"give one: {task_name}=MODEL")
    clustering, source = task_clustering(task, model_ref)
    model = model if model is not None else _load(model_ref)
    batch = task.make_batch(model.tokenizer, n_prompts, seed)
    metric = task.metric_fn(model.tokenizer)
    comps = list(dict.fromkeys(c for v in clustering.values() for c in v))
    rows = []
    for name in definitions:
        if name not in VARIANTS:
            raise ScoreError(f"unknown definition {name!r}", fix=f"use one of {', '.join(VARIANTS)}")
        version, choices = VARIANTS[name]
        t0 = time.perf_counter()
        if version == "v1":
            res = interchange_matrix(model, batch, comps, metric, definition="v1", task=task.name, seed=seed,
                                     cache=cache).model_copy(update=choices)
        else:
            res = interchange_matrix(model, batch, comps, metric, definition="v2", options=InterchangeOptions(**choices),
                                     task=task.name, seed=seed, cache=cache)
        row = validate_row(res, clustering, source=source, model_ref=model_ref, n_null=n_null, draws=draws, seed=seed,
                           name=name)
        row.wall_s = time.perf_counter() - t0
        rows.append(row)
    return TaskValidation(task=task.name, model=model_ref, clustering=clustering, clustering_source=source,
                          n_prompts=n_prompts, seed=seed, rows=rows)


# ---------------------------------------------------------------------------------------------
# rendering


def _f(x: float | None, d: int = 2) -> str:
    return "—" if x is None else f"{x:.{d}f}"


def _check(v: bool | None) -> str:
    return "n/a" if v is None else ("ok" if v else "FAIL")


def render_markdown(results: Sequence[TaskValidation]) -> str:
    """The validation tables (main table, known answers, preferred clusterings) as Markdown."""
    out = ["| task | clustering | def | AUC | null mean | null p95 | pct | #clusterings | undefined pairs "
           "| swap k=1 | k=2 | k=3 | all-in-one | singletons | checks |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        sizes = "+".join(str(len(v)) for v in r.clustering.values())
        for row in r.rows:
            sw = {p.k: p for p in row.swaps}
            sw_s = [f"{_f(sw[k].mean)}" + (f" (n={sw[k].n})" if sw[k].n and sw[k].n < 20 else "") if k in sw else "—"
                    for k in (1, 2, 3)]
            checks = ", ".join(f"{k}: {_check(v)}" for k, v in row.checks.items() if v is not None) or "—"
            out.append(f"| {r.task} | {r.clustering_source} ({sizes}) | {row.definition} | {_f(row.auc, 3)} "
                       f"| {_f(row.null_mean)} | {_f(row.null_p95)} | {row.percentile:.0f} | {row.n_distinct} "
                       f"| {row.n_undefined_pairs} | {' | '.join(sw_s)} | {_f(row.all_in_one_auc)} "
                       f"| {_f(row.singleton_auc)} | {checks} |")
    known = [(r, row, k) for r in results for row in r.rows for k in row.known]
    if known:
        defs = list(dict.fromkeys(row.definition for _, row, _ in known))
        out += ["", "Known answers (planted): I_sym of pairs whose interchangeability is known by construction "
                f"(expected: substitutable and redundant ≥ {HIGH}, same label / different subspace ≤ {LOW}).", "",
                "| model | kind | pair | " + " | ".join(f"{d} I(a,b) / I(b,a) → I_sym" for d in defs) + " |",
                "|---|---|---|" + "---|" * len(defs)]
        seen: dict[tuple[str, str, str, str], dict[str, KnownPair]] = {}
        for r, row, k in known:
            seen.setdefault((r.model, k.kind, k.a, k.b), {})[row.definition] = k
        for (model, kind, a, b), by_def in seen.items():
            cells = []
            for d in defs:
                k = by_def.get(d)
                cells.append("—" if k is None else f"{_f(k.I_ab)} / {_f(k.I_ba)} → **{_f(k.I_sym)}** "
                                                   f"{'ok' if k.ok else 'FAIL'}")
            out.append(f"| {model} | {kind} | {a}–{b} | " + " | ".join(cells) + " |")
    out += ["", "Preferred clusterings: the task clustering's rank among every clustering of the same sizes, "
            "and the best one.", "", "| task | def | rank | of | best AUC | best clustering |", "|---|---|---|---|---|---|"]
    for r in results:
        for row in r.rows:
            best = " · ".join("{" + ", ".join(c) + "}" for c in row.best_clustering) if row.best_clustering else "—"
            out.append(f"| {r.task} | {row.definition} | {row.rank or '—'} | {row.n_distinct} | {_f(row.best_auc, 3)} "
                       f"| {best} |")
    return "\n".join(out) + "\n"


def _parse_targets(targets: Sequence[str]) -> list[tuple[str, str | None]]:
    out = []
    for t in targets:
        task, _, model = t.partition("=")
        if not task:
            raise ScoreError(f"cannot read {t!r} as TASK or TASK=MODEL", fix="e.g. toy-ioi or toy-ioi=path/to/model")
        out.append((task, model or None))
    return out


def _app() -> typer.Typer:
    from rich.console import Console

    app = typer.Typer(add_completion=False, help="Validate the interchangeability score on known answers.")

    @app.command()
    def run(
        targets: Annotated[list[str] | None, typer.Argument(
            help="TASK or TASK=MODEL (zoo name, path or HF id); default: the zoo tasks and planted-twin-induction.")
        ] = None,
        definitions: Annotated[str, typer.Option(
            "--definitions", help=f"Comma-separated, from: {', '.join(VARIANTS)}.")] = f"v1,{DEFINITION}",
        n_prompts: Annotated[int, typer.Option("--n-prompts", min=2, help="Prompts per task batch.")] = 64,
        seed: Annotated[int, typer.Option("--seed", help="Prompt seed (also seeds the null and the swaps).")] = 0,
        n_null: Annotated[int, typer.Option("--n-null", min=1, help="Random clusterings in the null.")] = 200,
        draws: Annotated[int, typer.Option("--draws", min=1, help="Swap draws per k.")] = 20,
        out: Annotated[Path | None, typer.Option("--out", help="Also write validation.md and .json here.")] = None,
        no_cache: Annotated[bool, typer.Option("--no-cache", help="Recompute every value.")] = False,
    ) -> None:
        """Print the validation table (and write it with --out)."""
        from rich.progress import Progress

        console = Console(stderr=True)
        try:
            pairs = _parse_targets(targets or DEFAULT_TASKS)
            defs = [d.strip() for d in definitions.split(",") if d.strip()]
            bad = [d for d in defs if d not in VARIANTS]
            if bad:
                raise ScoreError(f"unknown definition(s) {bad}", fix=f"use some of {', '.join(VARIANTS)}")
            results = []
            with Progress(console=console, transient=True) as progress:
                bar = progress.add_task("validating", total=len(pairs))
                for task, model in pairs:
                    progress.update(bar, description=f"validating {task}")
                    results.append(validate_task(task, model, definitions=defs, n_prompts=n_prompts, seed=seed,
                                                 n_null=n_null, draws=draws, cache=not no_cache))
                    progress.advance(bar)
        except InterpAgentError as e:
            console.print(f"[red]error:[/] {e}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        md = render_markdown(results)
        print(md, end="")
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            (out / "validation.md").write_text(md)
            (out / "validation.json").write_text(json.dumps([r.model_dump() for r in results], indent=1) + "\n")
        failed = [(r.task, row.definition, k) for r in results for row in r.rows if row.definition == DEFINITION
                  for k, v in row.checks.items() if v is False]
        for task, d, k in failed:
            console.print(f"[yellow]check failed:[/] {task} ({d}): {k}", highlight=False, soft_wrap=True)

    return app


if __name__ == "__main__":
    _app()()


__all__ = ["DefinitionRow", "KnownPair", "TaskValidation", "enumerate_clusterings", "render_markdown",
           "task_clustering", "validate_row", "validate_task", "InterchangeOptions"]
