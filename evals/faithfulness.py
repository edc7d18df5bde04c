"""Faithfulness of a circuit (MIB-style): keep only the circuit, mean-ablate the rest.

With ``m0`` the clean metric, ``m_∅`` the metric with every component of the universe mean-ablated and
``m_C`` with everything outside the circuit ``C`` mean-ablated::

    faithfulness(C) = (m_C − m_∅) / (m0 − m_∅)

1 means the circuit alone recovers the clean behaviour; 0 means it does no better than nothing. The
universe defaults to every head and MLP (``EMB`` and attention biases are never ablated; ``ATTN{l}``
in a circuit stands for all heads of layer ``l``). Means are per position over the task batch (or a
reference batch).

:func:`faithfulness_curve` keeps the top-k components of a ranking for k = 0..n and reports the area
under the curve of faithfulness against k/n (trapezoid rule; a CPR-like number, so localisation quality
is a single value). All variants run batched, many per forward (:func:`evals.interchange.run_variants`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from evals.interchange import Metric, _metric_name, mean_outputs, run_variants
from evals.scores import ScoreError
from tools.batch import TaskBatch
from tools.components import Component, Kind


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class Faithfulness(_Data):
    """One circuit's faithfulness."""

    circuit: list[str]
    """The circuit's components as given (ATTN not expanded)."""
    m0: float
    """Clean metric."""
    m_empty: float
    """Metric with the whole universe mean-ablated."""
    m_circuit: float
    """Metric with everything outside the circuit mean-ablated."""
    fraction: float | None
    """(m_circuit − m_empty) / (m0 − m_empty); None when |m0 − m_empty| is below ``noise_floor``."""
    universe_size: int
    metric: str = "logit_diff"


class FaithfulnessCurve(_Data):
    """Faithfulness of the top-k components of a ranking, k = 0..n, and the area under it."""

    ranking: list[str]
    ks: list[int]
    fractions: list[float | None]
    area: float | None
    """Trapezoid area under fraction vs k/n on [0, 1]; None when the fractions are undefined."""
    m0: float
    m_empty: float
    universe_size: int
    metric: str = "logit_diff"


def _expand(model: Any, comps: Iterable[str | Component]) -> list[Component]:
    out: list[Component] = []
    for c in comps:
        c = model.check(c) if hasattr(model, "check") else Component.parse(c)
        if c.kind is Kind.ATTN:
            items = [Component.attn_head(c.layer, h) for h in range(model.n_heads)]
        elif c.kind in (Kind.HEAD, Kind.MLP):
            items = [c]
        elif c.kind is Kind.EMB:
            items = []  # the embedding is never ablated
        else:
            raise ScoreError(f"{c} is a residual-stream site, not a component a circuit can keep or drop",
                             fix="give circuits as heads, MLP{l}, ATTN{l} or EMB")
        out += [x for x in items if x not in out]
    return out


def _universe(model: Any, universe: Iterable[str | Component] | None, extra: Iterable[Component]) -> list[Component]:
    base = _expand(model, universe) if universe is not None else model.components("heads") + model.components("mlps")
    return base + [c for c in extra if c not in base]


def _setup(model: Any, batch: TaskBatch, circuits: Sequence[Iterable[str | Component]],
           universe: Iterable[str | Component] | None, reference: TaskBatch | None):
    expanded = [_expand(model, c) for c in circuits]
    uni = _universe(model, universe, [c for e in expanded for c in e])
    means = mean_outputs(model, batch, uni, reference)
    variants = [{}, {c: means[c] for c in uni}]
    variants += [{c: means[c] for c in uni if c not in set(e)} for e in expanded]
    return uni, variants


def _fraction(m: float, m0: float, m_empty: float, noise_floor: float) -> float | None:
    denom = m0 - m_empty
    return None if abs(denom) < noise_floor else (m - m_empty) / denom


def faithfulness(model: Any, batch: TaskBatch, circuit: Iterable[str | Component],
                 metric: str | Metric = "logit_diff", *, universe: Iterable[str | Component] | None = None,
                 reference: TaskBatch | None = None, noise_floor: float = 1e-6,
                 max_rows: int | None = None) -> Faithfulness:
    """Faithfulness of ``circuit``: the fraction of the clean metric it recovers on its own.

    >>> import tempfile, torch
    >>> from tools.model import load_model
    >>> from tools.tiny import make_tiny_model
    >>> from tools.batch import TaskBatch
    >>> m = load_model(make_tiny_model("gpt2", tempfile.mkdtemp()), device="cpu")
    >>> b = TaskBatch(clean_ids=torch.randint(4, 64, (4, 5)), answer_ids=torch.tensor([5, 6, 7, 8]),
    ...               wrong_ids=torch.tensor([9, 10, 11, 12]))
    >>> round(faithfulness(m, b, m.components("heads") + m.components("mlps")).fraction, 6)
    1.0
    """
    circuit = list(circuit)
    uni, variants = _setup(model, batch, [circuit], universe, reference)
    m0, m_empty, m_c = run_variants(model, batch, variants, metric, max_rows=max_rows)
    return Faithfulness(circuit=[str(Component.parse(c)) for c in circuit], m0=m0, m_empty=m_empty, m_circuit=m_c,
                        fraction=_fraction(m_c, m0, m_empty, noise_floor), universe_size=len(uni),
                        metric=_metric_name(metric))


def faithfulness_curve(model: Any, batch: TaskBatch, ranking: Sequence[str | Component],
                       metric: str | Metric = "logit_diff", *, universe: Iterable[str | Component] | None = None,
                       reference: TaskBatch | None = None, noise_floor: float = 1e-6,
                       max_rows: int | None = None) -> FaithfulnessCurve:
    """Faithfulness of the top-k of ``ranking`` (most important first) for k = 0..n, and its area.

    The area is a trapezoid over x = k/n, so a ranking that puts the whole effect first scores near 1
    and one that needs every component before recovering anything scores near 0.
    """
    ranking = [str(Component.parse(c)) for c in ranking]
    if len(set(ranking)) != len(ranking):
        raise ScoreError("the ranking lists a component twice", fix="rank each component once")
    n = len(ranking)
    uni, variants = _setup(model, batch, [ranking[:k] for k in range(n + 1)], universe, reference)
    vals = run_variants(model, batch, variants, metric, max_rows=max_rows)
    m0, m_empty, curve = vals[0], vals[1], vals[2:]
    fr = [_fraction(v, m0, m_empty, noise_floor) for v in curve]
    area = None
    if n > 0 and all(f is not None for f in fr):
        area = float(sum((fr[k] + fr[k + 1]) / 2 for k in range(n)) / n)
    return FaithfulnessCurve(ranking=ranking, ks=list(range(n + 1)), fractions=fr, area=area, m0=m0,
                             m_empty=m_empty, universe_size=len(uni), metric=_metric_name(metric))
