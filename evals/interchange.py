"""Interchangeability: an intrinsic, reference-free evaluation of a clustering of circuit components.

Two components are *interchangeable* when either one's output, put in the other's place, does the
other's job. The definition in force is **v2** (:data:`DEFINITION`); docs/EVALUATION.md gives it with
each choice, its rationale and the validation table (``python -m evals.validate``) that settled it.
For components *a*, *b* writing into the residual stream, on the task's prompts *x* with the task
metric *m* (per prompt):

1. **Context** ``R(a)``: the redundancy group of *a* minus *a*, grown greedily among the matrix's
   components: add the *b* whose ablation most increases *a*'s ablation damage, while that increase
   is at least the noise floor and at least ``context_rel`` (¼) of the damage so far. Empty for a
   component that works alone; ``{partner}`` for one of a redundant pair (ablating either alone
   moves nothing). Ablations use the per-position mean (``mean``), or zero (``zero``) for a component
   whose mean ablation never moves the metric (a feature that is constant over the prompts).
2. **Base** ``m̃0(x)``: the metric with ``R(a)`` ablated and *a* intact.
3. **Controls**: *a* replaced by its mean, by zero, and by its own output on another prompt
   (``resample``), ``R(a)`` ablated. The **floor** ``f(a)`` is the least harmful of the controls that
   lower the metric by at least the noise floor; none does: ``I(a, ·)`` is undefined.
4. ``m_{a←b}(x)``: *a*'s output replaced by *b*'s clean output, ``R(a)`` ablated (if *b* ∈ ``R(a)``,
   *b*'s own slot stays ablated: *b* is moved, not copied).
5. Every replacement is **capped per prompt** at the base, ``m̂ = mean_x min(m(x), m̃0(x))``, so a
   surplus on some prompts cannot pay for a deficit on others.
6. ``I(a, b) = clip((m̂_{a←b} − m̂_f) / (mean m̃0 − m̂_f), 0, 1)``; ``I_sym(a, b) = min(I(a, b), I(b, a))``
   over the directions that are defined (undefined when neither is): a one-way restoration does not count.

**v1** (the first definition, kept for comparison: ``definition="v1"``): ``m_a`` = *a* mean-ablated,
``I(a, b) = clip((m_{a←b} − m_a) / (m0 − m_a), 0, 1)`` on batch means, undefined when
``|m0 − m_a|`` is below the noise floor, ``I_sym`` the mean of the defined directions.

A clustering is scored by the AUC that a within-cluster pair has a higher ``I_sym`` than an
across-cluster pair (ties ½; pairs with undefined ``I_sym`` left out), beside a null distribution of
random clusterings with the same cluster sizes (:func:`score_clustering`) and the swap curve
(:func:`swap_curve`).

Every number behind the matrix is the metric under one *variant* (a set of output replacements), run
batched (:func:`run_variants`: the prompts repeated along the batch, one variant per chunk) and cached
per prompt on disk under ``$INTERP_AGENT_HOME/cache/interchange/``, keyed by the model fingerprint,
the prompts, the metric and the definition's version, so a later call computes only what is missing
and values of another definition are never mixed in.

>>> import numpy as np
>>> sym = np.array([[np.nan, 0.9, 0.1], [0.9, np.nan, 0.2], [0.1, 0.2, np.nan]])
>>> clustering_auc(sym, ["L0H0", "L0H1", "MLP0"], {"a": ["L0H0", "L0H1"], "b": ["MLP0"]}).auc
1.0
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from evals.scores import ScoreError, _membership, _names
from tools.batch import TaskBatch
from tools.components import Component, Kind

Metric = Callable[[torch.Tensor, TaskBatch], torch.Tensor]
"""``metric(logits [B,T,V], batch) -> scalar tensor`` (mean over the batch), as in ``tools``."""

Variant = Mapping[Component, torch.Tensor]
"""One forward's replacements: component → its new output ``[B, T, d_model]`` for the task batch."""

Definition = Literal["v1", "v2"]
DEFINITION: Definition = "v2"
"""The definition in force (docs/EVALUATION.md). A change of definition bumps this version."""

DEFAULT_REL_NOISE_FLOOR = 0.02
"""Default noise floor as a fraction of ``|m0|`` (with an absolute minimum of 1e-6)."""

CONTROLS = ("mean", "zero", "resample")
"""The control replacements of a component: its mean, zero, its own output on another prompt."""


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


# ---------------------------------------------------------------------------------------------
# the batched multi-variant primitive


def resolve_metric(metric: str | Metric) -> Metric:
    """A metric by name from ``tools`` (``"logit_diff"``, ``"prob_correct"``, ``"accuracy"``) or as given."""
    if callable(metric):
        return metric
    from tools.metrics import get_metric

    return get_metric(metric)


def _check_writer(model: Any, c: Component) -> Component:
    c = model.check(c) if hasattr(model, "check") else Component.parse(c)
    if c.kind not in (Kind.HEAD, Kind.MLP, Kind.ATTN, Kind.EMB):
        raise ScoreError(f"{c} does not write into the residual stream, so it has no output to interchange",
                         fix="use heads (L{l}H{h}), MLP{l}, ATTN{l} or EMB")
    return c


def component_outputs(model: Any, ids: torch.Tensor, components: Iterable[Component]) -> dict[Component, torch.Tensor]:
    """Clean outputs ``[B, T, d_model]`` of ``components`` in one forward (``tools.run_with_cache``)."""
    from tools.interventions import run_with_cache

    comps = list(components)
    if not comps:
        return {}
    _, cache = run_with_cache(model, ids, comps)
    return {Component.parse(c): v for c, v in cache.items()}


def _rows_budget(batch: TaskBatch, model: Any, max_rows: int | None) -> int:
    if max_rows is not None:
        return max(batch.size, int(max_rows))
    vocab = int(getattr(model, "d_vocab", 50_000))
    # keep one forward's logits under ~256 MB of float32; on CPU, forwards of ~256 rows are fastest per
    # row (measured: 256 rows 0.67x a loop of single forwards, 4096 rows 1.31x; benchmarks/evals_bench.py)
    rows = int(256e6 / (4 * max(1, batch.seq_len) * max(1, vocab)))
    device = getattr(model, "device", None)
    cap = 4096 if device is not None and torch.device(device).type == "cuda" else 256
    return max(batch.size, min(cap, rows))


def _row_edit(model: Any, c: Component, value: torch.Tensor, rows: slice):
    """A ``tools.hooks.Edit`` setting ``c``'s residual-space output to ``value`` on batch rows ``rows``.

    Heads are edited in residual space (the difference to ``z_h @ W_O[h]`` is added to the attention
    output), so a head can take another component's output, which its own ``z`` could not express.
    """
    from tools.hooks import Edit

    fn = (lambda v: (lambda cur: v.to(device=cur.device, dtype=cur.dtype)))(value)
    if c.kind is Kind.HEAD:
        dh = model.d_head
        return Edit("attn_out", c.layer, fn, cols=slice(c.head * dh, (c.head + 1) * dh), rows=rows,
                    head_w=model.W_O(c.layer)[c.head].detach())
    site = {Kind.ATTN: "attn_out", Kind.MLP: "mlp_out", Kind.EMB: "emb"}[c.kind]
    return Edit(site, c.layer, fn, rows=rows)


def _merged_edits(model: Any, chunk: Sequence[Variant], B: int) -> list:
    """One edit per run of consecutive chunks that give a component the same tensor (e.g. a mean).

    A top-k faithfulness curve ablates each component in a contiguous run of chunks with one mean
    tensor, so it needs one edit per component instead of one per (component, chunk).
    """
    runs: dict[Component, list[list]] = {}
    for k, v in enumerate(chunk):
        for c, val in v.items():
            comp = Component.parse(c)
            lst = runs.setdefault(comp, [])
            if lst and lst[-1][1] is val and lst[-1][0] + lst[-1][2] == k:
                lst[-1][2] += 1
            else:
                lst.append([k, val, 1])
    edits = []
    for comp, lst in runs.items():
        comp = _check_writer(model, comp)
        for k0, val, n in lst:
            edits.append(_row_edit(model, comp, val if n == 1 else val.repeat(n, *([1] * (val.dim() - 1))),
                                   slice(k0 * B, (k0 + n) * B)))
    return edits


def run_variants(model: Any, batch: TaskBatch, variants: Sequence[Variant], metric: str | Metric,
                 max_rows: int | None = None, per_prompt: bool = False) -> list[Any]:
    """The metric under each variant (a set of output replacements), many variants per forward.

    The clean prompts are repeated ``K`` times along the batch dimension (``K·B ≤ max_rows``); chunk
    ``k`` gets variant ``k``'s replacements (hooks restricted to its rows, so the cost of the edits
    does not grow with ``K``) and is scored with ``metric(logits_k, batch)``. An empty variant is the
    clean run. Equals one :func:`tools.interventions.run_with_interventions` call per variant (tested).

    ``per_prompt=True`` returns, per variant, an array ``[B]`` of the metric on each prompt alone
    (``metric(logits[i:i+1], batch[i:i+1])``); their mean must equal the batch metric (checked on the
    first variant: a metric that is not a mean over prompts raises :class:`ScoreError`).
    """
    from tools.hooks import hooked

    fn = resolve_metric(metric)
    B = batch.size
    per_forward = max(1, _rows_budget(batch, model, max_rows) // B)
    ids_all = batch.clean_ids.to(model.device)
    rows = [batch[i:i + 1] for i in range(B)] if per_prompt else []
    out: list[Any] = []
    for start in range(0, len(variants), per_forward):
        chunk = variants[start:start + per_forward]
        edits = _merged_edits(model, chunk, B)
        with hooked(model, edits=edits), torch.no_grad():
            logits = model.hf(input_ids=ids_all.repeat(len(chunk), 1), use_cache=False).logits
        for k in range(len(chunk)):
            lg = logits[k * B:(k + 1) * B]
            if not per_prompt:
                out.append(float(fn(lg, batch)))
                continue
            vals = np.array([float(fn(lg[i:i + 1], rows[i])) for i in range(B)])
            if start == 0 and k == 0:
                whole = float(fn(lg, batch))
                if not math.isclose(float(vals.mean()), whole, rel_tol=1e-4, abs_tol=1e-5):
                    raise ScoreError(f"the metric is not a mean over prompts (batch {whole:.6g}, mean of "
                                     f"prompts {vals.mean():.6g}), so it cannot be capped per prompt",
                                     fix="use a metric that averages a per-prompt value (logit_diff, prob_diff)")
            out.append(vals)
    return out


def mean_outputs(model: Any, batch: TaskBatch, components: Iterable[Component],
                 reference: TaskBatch | None = None) -> dict[Component, torch.Tensor]:
    """Per-position mean output of each component over ``reference`` (default: ``batch``), ``[B,T,d]``."""
    ref = reference if reference is not None else batch
    if ref.seq_len != batch.seq_len:
        raise ScoreError(f"reference prompts have length {ref.seq_len}, the task's {batch.seq_len}",
                         fix="draw the reference batch from the same task (same template length)")
    outs = component_outputs(model, ref.clean_ids, components)
    return {c: o.mean(0, keepdim=True).expand(batch.size, -1, -1) for c, o in outs.items()}


# ---------------------------------------------------------------------------------------------
# variants by name, with a per-prompt disk cache

Fill = str
"""What goes into a component's slot: ``mean``, ``zero``, ``resample`` or ``<B`` (component B's clean output)."""


def variant_key(variant: Mapping[str, Fill]) -> str:
    """A variant's canonical name: ``slot=fill`` pairs in component order, ``;``-separated ('' = clean).

    >>> variant_key({"L1H0": "<L0H3", "L0H1": "mean"})
    'L0H1=mean;L1H0=<L0H3'
    """
    items = sorted(((Component.parse(a), f) for a, f in variant.items()), key=lambda kv: kv[0])
    return ";".join(f"{a}={f}" for a, f in items)


def _batch_digest(batch: TaskBatch, reference: TaskBatch | None) -> str:
    h = hashlib.sha256()
    for b in (batch, reference):
        if b is None:
            h.update(b"none")
            continue
        for t in (b.clean_ids, b.answer_ids, b.wrong_ids):
            h.update(b"-" if t is None else t.detach().cpu().numpy().tobytes())
        for k in sorted(b.positions):
            h.update(k.encode())
            h.update(b.positions[k].detach().cpu().numpy().tobytes())
    return h.hexdigest()


def cache_dir() -> Path:
    """``$INTERP_AGENT_HOME/cache/interchange`` (created on use)."""
    home = Path(os.environ.get("INTERP_AGENT_HOME") or Path.home() / ".interp-agent").expanduser()
    path = home / "cache" / "interchange"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _slug(task: str | None) -> str:
    """A task name safe in a file name (a spec path becomes its stem).

    >>> _slug("/x/y/toy-ioi.yaml"), _slug(None), _slug("a b/c")
    ('toy-ioi', 'batch', 'a_b_c')
    """
    if not task:
        return "batch"
    p = Path(task)
    name = p.stem if p.suffix in (".yaml", ".yml", ".json") else task
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "task"


def _metric_name(metric: str | Metric) -> str:
    return metric if isinstance(metric, str) else getattr(metric, "__name__", "metric")


class VariantStore:
    """Per-prompt metric values of named variants on one batch, computed on demand and cached on disk.

    ``values(variants)`` returns one array ``[B]`` per variant, running only the missing ones (all in
    one batched :func:`run_variants` call). The cache file is keyed by the model fingerprint, the
    prompts (and the mean's reference prompts), the metric and ``version``.
    """

    def __init__(self, model: Any, batch: TaskBatch, metric: str | Metric, *, version: str,
                 reference: TaskBatch | None = None, task: str | None = None, seed: int | None = None,
                 cache: bool = True, max_rows: int | None = None) -> None:
        self.model, self.batch, self.metric, self.reference = model, batch, metric, reference
        self.max_rows = max_rows
        self.metric_name = _metric_name(metric)
        self.fingerprint = model.fingerprint() if hasattr(model, "fingerprint") else "unknown"
        key = hashlib.sha256(f"{self.fingerprint}|{_batch_digest(batch, reference)}|{self.metric_name}|"
                             f"interchange-{version}".encode()).hexdigest()[:16]
        self.path = (cache_dir() / f"{_slug(task)}-s{seed if seed is not None else 'x'}-{version}-{key}.json"
                     if cache else None)
        self._header = {"version": version, "metric": self.metric_name, "task": task, "seed": seed,
                        "model_fingerprint": self.fingerprint, "n_prompts": batch.size}
        self._values: dict[str, np.ndarray] = {}
        if self.path is not None and self.path.exists():
            try:
                stored = json.loads(self.path.read_text())
                if stored.get("version") == version and stored.get("n_prompts") == batch.size:
                    self._values = {k: np.asarray(v, dtype=float) for k, v in stored.get("values", {}).items()}
            except (OSError, json.JSONDecodeError, TypeError, ValueError):
                self._values = {}  # a corrupt cache file is recomputed
        self._clean: dict[Component, torch.Tensor] = {}
        self._fills: dict[tuple[Component, str], torch.Tensor] = {}
        self.n_computed = 0

    def _tensor(self, slot: Component, fill: Fill) -> torch.Tensor:
        key = (slot, fill)
        if key not in self._fills:
            if fill.startswith("<"):
                t = self._clean[Component.parse(fill[1:])]
            elif fill == "mean":
                t = mean_outputs(self.model, self.batch, [slot], self.reference)[slot]
            elif fill == "zero":
                t = torch.zeros_like(self._clean[slot])
            elif fill == "resample":  # the same position of the next prompt (a derangement for B >= 2)
                t = self._clean[slot].roll(1, 0)
            else:
                raise ScoreError(f"unknown fill {fill!r}", fix="use mean, zero, resample or <COMPONENT")
            self._fills[key] = t
        return self._fills[key]

    def values(self, variants: Sequence[Mapping[str, Fill]]) -> list[np.ndarray]:
        """The per-prompt metric ``[B]`` under each variant (computed once, then read from the cache)."""
        keys = [variant_key(v) for v in variants]
        missing = {k: v for k, v in zip(keys, variants, strict=True) if k not in self._values}
        if missing:
            need = {Component.parse(a) for v in missing.values() for a in v}
            need |= {Component.parse(f[1:]) for v in missing.values() for f in v.values() if f.startswith("<")}
            need = {_check_writer(self.model, c) for c in need} - set(self._clean)
            self._clean.update(component_outputs(self.model, self.batch.clean_ids, sorted(need)))
            means = {Component.parse(a) for v in missing.values() for a, f in v.items() if f == "mean"}
            means = sorted(c for c in means if (c, "mean") not in self._fills)
            for c, t in mean_outputs(self.model, self.batch, means, self.reference).items() if means else ():
                self._fills[(c, "mean")] = t
            tensors = [{Component.parse(a): self._tensor(Component.parse(a), f) for a, f in v.items()}
                       for v in missing.values()]
            vals = run_variants(self.model, self.batch, tensors, self.metric, max_rows=self.max_rows,
                                per_prompt=True)
            self._values.update(zip(missing, vals, strict=True))
            self.n_computed += len(vals)
            self._save()
        return [self._values[k] for k in keys]

    def mean(self, variant: Mapping[str, Fill]) -> float:
        return float(self.values([variant])[0].mean())

    def _save(self) -> None:
        if self.path is None:
            return
        data = {**self._header, "values": {k: [float(f"{x:.7g}") for x in v] for k, v in self._values.items()}}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.path)


# ---------------------------------------------------------------------------------------------
# the matrix: common interface


class _Matrix(_Data):
    components: list[str]
    """Components in matrix order."""
    m0: float
    """Clean metric (mean over the prompts)."""
    noise_floor: float
    """An ablation must move the metric by at least this to count."""
    metric: str = "logit_diff"
    n_prompts: int = 0
    task: str | None = None
    seed: int | None = None
    model_fingerprint: str | None = None
    cache_path: str | None = None
    n_computed: int = 0
    """Variants evaluated in this call (0 when everything came from the cache)."""

    def I(self, a: str, b: str) -> float | None:  # noqa: E743 - the paper's name
        raise NotImplementedError

    def defined(self, a: str) -> bool:
        raise NotImplementedError

    def matrix(self) -> np.ndarray:
        """``I`` as an ``[n, n]`` array (rows a, columns b), NaN where undefined."""
        n = len(self.components)
        out = np.full((n, n), np.nan)
        for i, a in enumerate(self.components):
            for j, b in enumerate(self.components):
                v = self.I(a, b)
                if v is not None:
                    out[i, j] = v
        return out

    @property
    def undefined_components(self) -> list[str]:
        """Components whose row ``I(a, ·)`` is undefined."""
        return [a for a in self.components if not self.defined(a)]

    @property
    def n_undefined(self) -> int:
        """Ordered pairs (a ≠ b) with I(a, b) undefined."""
        return len(self.undefined_components) * (len(self.components) - 1)

    @property
    def n_undefined_sym(self) -> int:
        """Unordered pairs with I_sym undefined (both directions undefined)."""
        u = len(self.undefined_components)
        return u * (u - 1) // 2


def _sym(m: np.ndarray, how: Literal["min", "mean"]) -> np.ndarray:
    both = np.stack([m, m.T])
    count = (~np.isnan(both)).sum(axis=0)
    filled_min = np.where(np.isnan(both), np.inf, both).min(axis=0)
    with np.errstate(invalid="ignore"):
        mean = np.nansum(both, axis=0) / np.maximum(count, 1)
    return np.where(count > 0, filled_min if how == "min" else mean, np.nan)


class InterchangeResultV1(_Matrix):
    """The first definition (``v1``): mean ablation, batch means, ``I_sym`` the mean of both directions."""

    version: Literal["v1"] = "v1"
    m_ablated: dict[str, float]
    """``m_a``: metric with component a mean-ablated."""
    m_swap: dict[str, dict[str, float]]
    """``m_swap[a][b] = m_{a←b}``: metric with a's output replaced by b's clean output."""
    ablation: str = "mean"
    symmetric: Literal["min", "mean"] = "mean"
    """How I(a, b) and I(b, a) combine (v1: the mean; ``min`` only to measure that choice alone)."""

    def defined(self, a: str) -> bool:
        return abs(self.m0 - self.m_ablated[str(Component.parse(a))]) >= self.noise_floor

    def I(self, a: str, b: str) -> float | None:  # noqa: E743
        """``I(a, b)`` or None when undefined (diagonal included)."""
        a, b = str(Component.parse(a)), str(Component.parse(b))
        if a == b or not self.defined(a):
            return None
        denom = self.m0 - self.m_ablated[a]
        return float(min(1.0, max(0.0, (self.m_swap[a][b] - self.m_ablated[a]) / denom)))

    def sym(self) -> np.ndarray:
        """``I_sym`` ``[n, n]``: mean of the defined ones of I(a,b), I(b,a); NaN when neither is."""
        return _sym(self.matrix(), self.symmetric)


class InterchangeOptions(_Data):
    """The choices of definition v2 (the defaults are the definition; others exist to measure ablations)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    controls: tuple[str, ...] = CONTROLS
    """Control replacements whose least harmful one (among those that move the metric) is the floor."""
    context: bool = True
    """Measure a component with the rest of its redundancy group ablated (greedy, see the module docstring)."""
    context_rel: float = 0.25
    """A partner joins the group when ablating it raises a's damage by at least this fraction of it."""
    max_context: int = 8
    """Largest redundancy group (partners) considered."""
    cap: bool = True
    """Cap every replacement per prompt at the base (no surplus on one prompt pays for another's deficit)."""
    symmetric: Literal["min", "mean"] = "min"
    """How I(a, b) and I(b, a) combine into I_sym."""


class ComponentRecord(_Data):
    """How one component's row ``I(a, ·)`` was measured (v2)."""

    context: list[str] = Field(default_factory=list)
    """``R(a)``: the rest of a's redundancy group, ablated throughout a's row."""
    ablation: Literal["mean", "zero"] = "mean"
    """How a and its context are ablated to measure a's damage."""
    base: float
    """Mean metric with the context ablated and a intact (``m̃0``)."""
    damage: float
    """``base`` minus the metric with a ablated too (the redundancy search's criterion)."""
    controls: dict[str, float] = Field(default_factory=dict)
    """Capped mean metric with a replaced by each control."""
    floor: str | None = None
    """The control that sets the floor (least harmful of those moving the metric); None: row undefined."""
    swaps: dict[str, float] = Field(default_factory=dict)
    """``m̂_{a←b}``: capped mean metric with a's output replaced by b's clean output."""


class InterchangeResult(_Matrix):
    """Definition v2: raw measurements per component and the derived ``I`` / ``I_sym``."""

    version: Literal["v2"] = "v2"
    options: InterchangeOptions = Field(default_factory=InterchangeOptions)
    records: dict[str, ComponentRecord]
    """Per component: its context, controls, floor and swaps."""

    def defined(self, a: str) -> bool:
        return self.records[str(Component.parse(a))].floor is not None

    def I(self, a: str, b: str) -> float | None:  # noqa: E743
        """``I(a, b)`` or None when undefined (diagonal included)."""
        a, b = str(Component.parse(a)), str(Component.parse(b))
        r = self.records[a]
        if a == b or r.floor is None:
            return None
        f = r.controls[r.floor]
        return float(min(1.0, max(0.0, (r.swaps[b] - f) / (r.base - f))))

    def sym(self) -> np.ndarray:
        """``I_sym`` ``[n, n]``: the minimum (default) of the defined ones of I(a,b), I(b,a)."""
        return _sym(self.matrix(), self.options.symmetric)

    def subset(self, components: Iterable[str | Component]) -> InterchangeResult:
        """The same result restricted to ``components`` (contexts stay as measured on the full set)."""
        names = _names(components)
        missing = [c for c in names if c not in self.records]
        if missing:
            raise ScoreError(f"the interchange matrix lacks {missing}", fix="compute it with these components")
        recs = {c: self.records[c].model_copy(update={"swaps": {b: v for b, v in self.records[c].swaps.items()
                                                                if b in names}}) for c in names}
        return self.model_copy(update={"components": names, "records": recs})


# ---------------------------------------------------------------------------------------------
# computing the matrix


def _ablate(members: Iterable[str], kind: str) -> dict[str, Fill]:
    return {m: kind for m in members}


def _contexts(store: VariantStore, comps: list[str], opts: InterchangeOptions, nf: float
              ) -> dict[str, tuple[str, list[str], float]]:
    """``{a: (kind, R(a), damage)}``: the greedy redundancy search, all components in lock-step."""
    out: dict[str, tuple[str, list[str], float]] = {}
    todo = list(comps)
    for kind in ("mean", "zero"):
        state = {a: [] for a in todo}  # a -> R
        growing = list(todo)
        dmg: dict[str, float] = {}
        while growing:
            plan: list[dict[str, Fill]] = []
            for a in growing:
                R = state[a]
                plan += [_ablate(R, kind), _ablate(R + [a], kind)]
                if opts.context and len(R) < opts.max_context:
                    for b in comps:
                        if b != a and b not in R:
                            plan += [_ablate(R + [b], kind), _ablate(R + [b, a], kind)]
            vals = {variant_key(v): float(x.mean()) for v, x in zip(plan, store.values(plan), strict=True)}

            def v(xs: list[str], vals: dict[str, float] = vals, kind: str = kind) -> float:
                return vals[variant_key(_ablate(xs, kind))]

            nxt = []
            for a in growing:
                R = state[a]
                dmg[a] = v(R) - v(R + [a])
                if not opts.context or len(R) >= opts.max_context:
                    continue
                best, gain = None, -math.inf
                for b in comps:
                    if b != a and b not in R:
                        g = v(R + [b]) - v(R + [b, a]) - dmg[a]
                        if g > gain:
                            best, gain = b, g
                if best is not None and gain >= max(nf, opts.context_rel * max(dmg[a], 0.0)):
                    R.append(best)
                    nxt.append(a)
            growing = nxt
        for a in todo:
            if dmg[a] >= nf:
                out[a] = (kind, state[a], dmg[a])
        todo = [a for a in todo if a not in out]
        if not todo:
            break
    for a in todo:  # never moves the metric: keep the mean-ablation damage for the record
        out[a] = ("mean", [], store.mean({}) - store.mean({a: "mean"}))
    return out


def _compute_v2(store: VariantStore, comps: list[str], opts: InterchangeOptions, nf: float
                ) -> dict[str, ComponentRecord]:
    ctx = _contexts(store, comps, opts, nf)
    plan: list[dict[str, Fill]] = []
    for a in comps:
        kind, R, _ = ctx[a]
        base = _ablate(R, kind)
        plan.append(base)
        plan += [{**base, a: c} for c in opts.controls]
        plan += [{**base, a: f"<{b}"} for b in comps if b != a]
    got = dict(zip((variant_key(v) for v in plan), store.values(plan), strict=True))
    records: dict[str, ComponentRecord] = {}
    for a in comps:
        kind, R, damage = ctx[a]
        base = _ablate(R, kind)
        b0 = got[variant_key(base)]
        base_mean = float(b0.mean())

        def capped(v: dict[str, Fill], b0: np.ndarray = b0) -> float:
            x = got[variant_key(v)]
            return float(np.minimum(x, b0).mean() if opts.cap else x.mean())

        controls = {c: capped({**base, a: c}) for c in opts.controls}
        movers = {c: v for c, v in controls.items() if base_mean - v >= nf}
        floor = max(movers, key=lambda c: movers[c]) if movers and damage >= nf else None
        records[a] = ComponentRecord(context=R, ablation=kind, base=base_mean, damage=damage, controls=controls,
                                     floor=floor, swaps={b: capped({**base, a: f"<{b}"}) for b in comps if b != a})
    return records


def interchange_matrix(model: Any, batch: TaskBatch, components: Iterable[str | Component] | None = None,
                       metric: str | Metric = "logit_diff", *, definition: Definition = DEFINITION,
                       options: InterchangeOptions | None = None, reference: TaskBatch | None = None,
                       noise_floor: float | None = None, task: str | None = None, seed: int | None = None,
                       cache: bool = True, max_rows: int | None = None
                       ) -> InterchangeResult | InterchangeResultV1:
    """Compute (or load from the cache) the interchangeability data for ``components`` on ``batch``.

    ``components`` default to every head and MLP of the model; redundancy groups (v2) are searched
    among them. ``noise_floor`` defaults to ``max(1e-6, 0.02·|m0|)``. Cost (v2): per component, its
    redundancy search (two ablations per candidate per step), three controls and ``n − 1`` swaps,
    packed ``max_rows // batch.size`` variants per forward; v1: ``n`` ablations and ``n(n−1)`` swaps.
    With ``cache=True`` per-prompt values are stored under :func:`cache_dir` (the file name carries
    the definition's version) and only missing ones are computed on the next call.
    """
    if definition not in ("v1", "v2"):
        raise ScoreError(f"unknown interchangeability definition {definition!r}", fix="use v1 or v2")
    comps = [_check_writer(model, Component.parse(c)) for c in
             (components if components is not None else model.components("heads") + model.components("mlps"))]
    names = [str(c) for c in dict.fromkeys(comps)]
    opts = options or InterchangeOptions()
    store = VariantStore(model, batch, metric, version=definition, reference=reference, task=task, seed=seed,
                         cache=cache, max_rows=max_rows)
    m0 = store.mean({})
    floor = noise_floor if noise_floor is not None else max(1e-6, DEFAULT_REL_NOISE_FLOOR * abs(m0))
    common = dict(components=names, m0=m0, noise_floor=floor, metric=store.metric_name, n_prompts=batch.size,
                  task=task, seed=seed, model_fingerprint=store.fingerprint,
                  cache_path=str(store.path) if store.path else None)
    if definition == "v1":
        plan = [{a: "mean"} for a in names] + [{a: f"<{b}"} for a in names for b in names if b != a]
        vals = iter(float(v.mean()) for v in store.values(plan))
        m_abl = {a: next(vals) for a in names}
        m_swap = {a: {b: next(vals) for b in names if b != a} for a in names}
        return InterchangeResultV1(**common, m_ablated=m_abl, m_swap=m_swap, n_computed=store.n_computed)
    records = _compute_v2(store, names, opts, floor)
    return InterchangeResult(**common, options=opts, records=records, n_computed=store.n_computed)


# ---------------------------------------------------------------------------------------------
# scoring a clustering


class AUCResult(_Data):
    """AUC of within- vs across-cluster I_sym values."""

    auc: float
    """P(within > across) + ½ P(tie); 0.5 when there are no within or no across pairs (see ``defined``)."""
    defined: bool
    """False when the clustering has no within-cluster pair or no across-cluster pair."""
    n_within: int
    n_across: int


def _pair_values(sym: np.ndarray, idx: list[int], labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sub = sym[np.ix_(idx, idx)]
    iu = np.triu_indices(len(idx), k=1)
    vals = sub[iu]
    same = labels[iu[0]] == labels[iu[1]]
    ok = ~np.isnan(vals)
    return vals[ok & same], vals[ok & ~same]


def _auc(within: np.ndarray, across: np.ndarray) -> float:
    """Mann-Whitney AUC with ties ½, from average ranks (``scipy.stats.rankdata``).

    Equals ``sklearn.metrics.roc_auc_score`` (tested) at a fraction of its per-call cost, which
    matters here: a validation row scores hundreds of null and enumerated clusterings.
    """
    from scipy.stats import rankdata

    nw, na = len(within), len(across)
    ranks = rankdata(np.concatenate([within, across]))
    return float((ranks[:nw].sum() - nw * (nw + 1) / 2) / (nw * na))


def _auc_or_half(within: np.ndarray, across: np.ndarray) -> float:
    return _auc(within, across) if len(within) and len(across) else 0.5


def _labels(components: Sequence[str], clusters: Mapping[str, Iterable[str | Component]]
            ) -> tuple[list[int], np.ndarray, list[str]]:
    member = _membership(clusters)
    order = {c: i for i, c in enumerate(components)}
    missing = [c for c in member if c not in order]
    if missing:
        raise ScoreError(f"clustered components {missing} are not in the interchange matrix",
                         fix="compute the matrix over every component the clustering names")
    names = sorted(set(member.values()))
    idx = [order[c] for c in member]
    return idx, np.array([names.index(member[c]) for c in member]), list(member)


def clustering_auc(sym: np.ndarray, components: Sequence[str], clusters: Mapping[str, Iterable[str | Component]]
                   ) -> AUCResult:
    """AUC that a within-cluster pair has higher ``I_sym`` than an across-cluster pair (ties ½).

    Only components named in ``clusters`` take part; pairs with undefined ``I_sym`` (NaN) are dropped.

    >>> import numpy as np
    >>> sym = np.array([[np.nan, .5, .5], [.5, np.nan, .5], [.5, .5, np.nan]])
    >>> clustering_auc(sym, ["L0H0", "L0H1", "L0H2"], {"a": ["L0H0", "L0H1"], "b": ["L0H2"]}).auc
    0.5
    """
    components = _names(components)
    idx, labels, _ = _labels(components, clusters)
    within, across = _pair_values(sym, idx, labels)
    if len(within) == 0 or len(across) == 0:
        return AUCResult(auc=0.5, defined=False, n_within=len(within), n_across=len(across))
    return AUCResult(auc=_auc(within, across), defined=True, n_within=len(within), n_across=len(across))


def n_clusterings(sizes: Sequence[int]) -> int:
    """Distinct clusterings of ``sum(sizes)`` components into unlabelled clusters of these sizes.

    >>> n_clusterings([2, 1]), n_clusterings([4, 4]), n_clusterings([2, 2, 1, 1, 1])
    (3, 35, 105)
    """
    n = math.factorial(sum(sizes))
    for s in sizes:
        n //= math.factorial(s)
    for m in Counter(sizes).values():
        n //= math.factorial(m)
    return n


class ClusteringScore(_Data):
    """A clustering's interchangeability AUC beside its null distribution and the baselines."""

    auc: float
    defined: bool
    n_within: int
    n_across: int
    n_components: int
    null_mean: float
    """Mean AUC of random clusterings with the same cluster sizes over the same components."""
    null_std: float
    null_p95: float = 0.5
    """95th percentile of the null AUCs."""
    null_aucs: list[float] = Field(default_factory=list)
    percentile: float
    """100 × P(null AUC < AUC) (+ ½ ties): where the clustering sits in the null distribution."""
    n_distinct: int = 0
    """How many distinct clusterings of these sizes exist (the null draws from them; with fewer than
    ~20 a percentile means little)."""
    singleton_auc: float = 0.5
    """The singleton clustering (every component alone) has no within pairs: AUC ½ by convention."""
    all_in_one_auc: float = 0.5
    """One cluster holding every component has no across pairs: AUC ½ by convention."""
    n_undefined_pairs: int
    """Unordered pairs among these components whose I_sym is undefined (left out of the AUC)."""


def score_clustering(result: _Matrix | np.ndarray, clusters: Mapping[str, Iterable[str | Component]],
                     n_null: int = 200, seed: int = 0, components: Sequence[str] | None = None
                     ) -> ClusteringScore:
    """Score ``clusters`` on an interchange result (or an ``I_sym`` array with ``components``).

    The null draws ``n_null`` random clusterings with the same cluster sizes over the same components
    (a random permutation of the labels).
    """
    if isinstance(result, np.ndarray):
        if components is None:
            raise ScoreError("an I_sym array needs its components", fix="pass components=[...]")
        sym, comps = result, _names(components)
    else:
        sym, comps = result.sym(), result.components
    idx, labels, members = _labels(comps, clusters)
    within, across = _pair_values(sym, idx, labels)
    defined = len(within) > 0 and len(across) > 0
    auc = _auc(within, across) if defined else 0.5
    rng = np.random.default_rng(seed)
    null = [_auc_or_half(*_pair_values(sym, idx, rng.permutation(labels))) for _ in range(n_null)]
    arr = np.array(null)
    pct = 100.0 * (float((arr < auc).sum()) + 0.5 * float((arr == auc).sum())) / max(1, len(arr))
    sub = sym[np.ix_(idx, idx)]
    iu = np.triu_indices(len(idx), k=1)
    sizes = list(Counter(labels.tolist()).values())
    return ClusteringScore(auc=auc, defined=defined, n_within=len(within), n_across=len(across),
                           n_components=len(members), null_mean=float(arr.mean()) if null else 0.5,
                           null_std=float(arr.std()) if null else 0.0,
                           null_p95=float(np.quantile(arr, 0.95)) if null else 0.5,
                           null_aucs=[float(x) for x in null], percentile=pct, n_distinct=n_clusterings(sizes),
                           n_undefined_pairs=int(np.isnan(sub[iu]).sum()))


class SwapPoint(_Data):
    """The AUC after ``k`` swaps of members between clusters (mean over the draws that reached ``k``)."""

    k: int
    mean: float | None
    std: float | None
    n: int
    """Draws that reached k swaps (a small clustering may admit fewer moves that take it farther away)."""


def _disagreement(labels: np.ndarray, ref: np.ndarray) -> int:
    same_now = labels[:, None] == labels[None, :]
    same_ref = ref[:, None] == ref[None, :]
    return int((same_now != same_ref).sum() // 2)


def swap_curve(sym: np.ndarray, components: Sequence[str], clusters: Mapping[str, Iterable[str | Component]],
               ks: Sequence[int] = (1, 2, 3), draws: int = 20, seed: int = 0) -> list[SwapPoint]:
    """The AUC as members are swapped between clusters (a good metric's AUC falls with each swap).

    Each draw makes successive swaps of two members of different clusters (sizes are kept), each
    chosen at random among the swaps that take the clustering farther from the original (more
    component pairs whose together/apart status differs), and records the AUC after ``k`` swaps.
    """
    components = _names(components)
    idx, ref, _ = _labels(components, clusters)
    rng = random.Random(seed)
    kmax = max(ks) if ks else 0
    got: dict[int, list[float]] = {k: [] for k in ks}
    for _ in range(draws):
        lab = ref.copy()
        for step in range(1, kmax + 1):
            d0 = _disagreement(lab, ref)
            moves = []
            for i in range(len(lab)):
                for j in range(i + 1, len(lab)):
                    if lab[i] != lab[j]:
                        t = lab.copy()
                        t[i], t[j] = t[j], t[i]
                        if _disagreement(t, ref) > d0:
                            moves.append(t)
            if not moves:
                break
            lab = rng.choice(moves)
            if step in got:
                got[step].append(_auc_or_half(*_pair_values(sym, idx, lab)))
    return [SwapPoint(k=k, mean=float(np.mean(v)) if v else None, std=float(np.std(v)) if v else None, n=len(v))
            for k, v in got.items()]


def random_clustering(components: Sequence[str | Component], sizes: Sequence[int], seed: int = 0
                      ) -> dict[str, list[str]]:
    """A random clustering of ``components`` with the given cluster sizes (a baseline).

    >>> sorted(len(v) for v in random_clustering(["L0H0", "L0H1", "L0H2"], [2, 1]).values())
    [1, 2]
    """
    names = _names(components)
    if sum(sizes) != len(names):
        raise ScoreError(f"cluster sizes {list(sizes)} do not add up to {len(names)} components",
                         fix="give sizes that sum to the number of components")
    rng = random.Random(seed)
    rng.shuffle(names)
    out, i = {}, 0
    for k, s in enumerate(sizes):
        out[f"random{k}"] = names[i:i + s]
        i += s
    return out
