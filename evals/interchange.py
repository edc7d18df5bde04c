"""Interchangeability: an intrinsic, reference-free evaluation of a clustering of circuit components.

Definition (also in the README). For components *a*, *b* that write into the same residual stream
(heads and MLPs alike), on the task's prompts with task metric *m* (a scalar mean over the batch):

- ``m0``      — the clean run;
- ``m_a``     — *a* mean-ablated (its output replaced, per position, by its mean over the task
  distribution: the batch itself unless a reference batch is given);
- ``m_{a←b}`` — *a*'s output replaced by *b*'s clean output on the same prompt (everything else,
  *b* included, runs as usual).

``I(a, b) = clip((m_{a←b} − m_a) / (m0 − m_a), 0, 1)``, undefined when ``|m0 − m_a|`` is below the
noise floor (ablating *a* does not move the metric, so nothing can be restored). ``I(a, b) = 1``: *b*'s
output does *a*'s job completely; ``0``: no better than ablating *a*. ``I_sym(a, b)`` is the mean of
``I(a, b)`` and ``I(b, a)`` over those that are defined (undefined when neither is).

A clustering is scored by the AUC that a random within-cluster pair has a higher ``I_sym`` than a
random across-cluster pair (ties count ½; pairs with undefined ``I_sym`` are left out), reported beside
a null distribution from random clusterings with the same cluster sizes (:func:`score_clustering`).

The matrix is computed batched: the task batch is repeated along the batch dimension and each copy
(chunk) gets a different replacement, so one forward evaluates many (a, b) pairs
(:func:`run_variants`). Raw metric values are cached on disk under
``$INTERP_AGENT_HOME/cache/interchange/`` keyed by the model fingerprint and the batch contents (task
and seed appear in the file name), and only missing pairs are computed on a later call.

>>> import numpy as np
>>> sym = np.array([[np.nan, 0.9, 0.1], [0.9, np.nan, 0.2], [0.1, 0.2, np.nan]])
>>> clustering_auc(sym, ["L0H0", "L0H1", "MLP0"], {"a": ["L0H0", "L0H1"], "b": ["MLP0"]}).auc
1.0
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

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

DEFAULT_REL_NOISE_FLOOR = 0.02
"""Default noise floor as a fraction of ``|m0|`` (with an absolute minimum of 1e-6)."""


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
                 max_rows: int | None = None) -> list[float]:
    """The metric under each variant (a set of output replacements), many variants per forward.

    The clean prompts are repeated ``K`` times along the batch dimension (``K·B ≤ max_rows``); chunk
    ``k`` gets variant ``k``'s replacements (hooks restricted to its rows, so the cost of the edits
    does not grow with ``K``) and is scored with ``metric(logits_k, batch)``. An empty variant is the
    clean run. Equals one :func:`tools.interventions.run_with_interventions` call per variant (tested).
    """
    from tools.hooks import hooked

    fn = resolve_metric(metric)
    B = batch.size
    per_forward = max(1, _rows_budget(batch, model, max_rows) // B)
    ids_all = batch.clean_ids.to(model.device)
    out: list[float] = []
    for start in range(0, len(variants), per_forward):
        chunk = variants[start:start + per_forward]
        edits = _merged_edits(model, chunk, B)
        with hooked(model, edits=edits), torch.no_grad():
            logits = model.hf(input_ids=ids_all.repeat(len(chunk), 1), use_cache=False).logits
        for k in range(len(chunk)):
            out.append(float(fn(logits[k * B:(k + 1) * B], batch)))
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
# the matrix


class InterchangeResult(_Data):
    """Raw metric values behind the interchangeability matrix, and the derived I / I_sym."""

    components: list[str]
    """Components in matrix order."""
    m0: float
    """Clean metric."""
    m_ablated: dict[str, float]
    """``m_a``: metric with component a mean-ablated."""
    m_swap: dict[str, dict[str, float]]
    """``m_swap[a][b] = m_{a←b}``: metric with a's output replaced by b's clean output."""
    noise_floor: float
    """``I(a, ·)`` is undefined when ``|m0 − m_a|`` is below this."""
    metric: str = "logit_diff"
    ablation: str = "mean"
    n_prompts: int = 0
    task: str | None = None
    seed: int | None = None
    model_fingerprint: str | None = None
    cache_path: str | None = None
    n_computed: int = 0
    """Variants evaluated in this call (0 when everything came from the cache)."""

    def I(self, a: str, b: str) -> float | None:  # noqa: E743 - the paper's name
        """``I(a, b)`` or None when undefined (diagonal included)."""
        a, b = str(Component.parse(a)), str(Component.parse(b))
        if a == b:
            return None
        denom = self.m0 - self.m_ablated[a]
        if abs(denom) < self.noise_floor:
            return None
        return float(min(1.0, max(0.0, (self.m_swap[a][b] - self.m_ablated[a]) / denom)))

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

    def sym(self) -> np.ndarray:
        """``I_sym`` ``[n, n]``: mean of the defined ones of I(a,b), I(b,a); NaN when neither is."""
        m = self.matrix()
        both = np.stack([m, m.T])
        with np.errstate(invalid="ignore"):
            total = np.nansum(both, axis=0)
            count = (~np.isnan(both)).sum(axis=0)
            return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    @property
    def undefined_components(self) -> list[str]:
        """Components whose ablation moves the metric less than the noise floor."""
        return [a for a in self.components if abs(self.m0 - self.m_ablated[a]) < self.noise_floor]

    @property
    def n_undefined(self) -> int:
        """Ordered pairs (a ≠ b) with I(a, b) undefined."""
        n = len(self.components)
        return len(self.undefined_components) * (n - 1)

    @property
    def n_undefined_sym(self) -> int:
        """Unordered pairs with I_sym undefined (both directions undefined)."""
        u = len(self.undefined_components)
        return u * (u - 1) // 2

    def subset(self, components: Iterable[str | Component]) -> InterchangeResult:
        """The same result restricted to ``components`` (all must be present)."""
        names = _names(components)
        missing = [c for c in names if c not in self.m_ablated]
        if missing:
            raise ScoreError(f"the interchange matrix lacks {missing}", fix="compute it with these components")
        return self.model_copy(update={"components": names,
                                       "m_ablated": {c: self.m_ablated[c] for c in names},
                                       "m_swap": {a: {b: self.m_swap[a][b] for b in names if b != a}
                                                  for a in names}})


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


def interchange_matrix(model: Any, batch: TaskBatch, components: Iterable[str | Component] | None = None,
                       metric: str | Metric = "logit_diff", *, reference: TaskBatch | None = None,
                       noise_floor: float | None = None, task: str | None = None, seed: int | None = None,
                       cache: bool = True, max_rows: int | None = None) -> InterchangeResult:
    """Compute (or load from the cache) the interchangeability data for ``components`` on ``batch``.

    ``components`` default to every head and MLP of the model. ``noise_floor`` defaults to
    ``max(1e-6, 0.02·|m0|)``. Cost: ``n`` ablation variants plus ``n(n−1)`` swap variants, packed
    ``max_rows // batch.size`` per forward. With ``cache=True`` the raw values are stored under
    :func:`cache_dir` and only missing ones are computed on the next call.
    """
    comps = [_check_writer(model, Component.parse(c)) for c in
             (components if components is not None else model.components("heads") + model.components("mlps"))]
    comps = list(dict.fromkeys(comps))
    names = [str(c) for c in comps]
    mname = _metric_name(metric)
    fp = model.fingerprint() if hasattr(model, "fingerprint") else "unknown"
    key = hashlib.sha256(f"{fp}|{_batch_digest(batch, reference)}|{mname}|mean".encode()).hexdigest()[:16]
    path = cache_dir() / f"{_slug(task)}-s{seed if seed is not None else 'x'}-{key}.json" if cache else None
    stored: dict[str, Any] = {"m0": None, "m_ablated": {}, "m_swap": {}}
    if path is not None and path.exists():
        try:
            stored = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            pass  # a corrupt cache file is recomputed
    m_abl: dict[str, float] = dict(stored.get("m_ablated", {}))
    m_swap: dict[str, dict[str, float]] = {a: dict(v) for a, v in stored.get("m_swap", {}).items()}
    m0 = stored.get("m0")

    need_abl = [c for c in comps if str(c) not in m_abl]
    need_swap = [(a, b) for a in comps for b in comps if a != b and str(b) not in m_swap.get(str(a), {})]
    n_computed = 0
    if m0 is None or need_abl or need_swap:
        used = sorted({c for c in need_abl} | {a for a, _ in need_swap} | {b for _, b in need_swap})
        clean = component_outputs(model, batch.clean_ids, used) if need_swap else {}
        means = mean_outputs(model, batch, need_abl, reference) if need_abl else {}
        variants: list[dict[Component, torch.Tensor]] = [{}] if m0 is None else []
        variants += [{c: means[c]} for c in need_abl]
        variants += [{a: clean[b]} for a, b in need_swap]
        values = run_variants(model, batch, variants, metric, max_rows=max_rows)
        n_computed = len(values)
        it = iter(values)
        if m0 is None:
            m0 = next(it)
        for c in need_abl:
            m_abl[str(c)] = next(it)
        for a, b in need_swap:
            m_swap.setdefault(str(a), {})[str(b)] = next(it)
        if path is not None:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"m0": m0, "m_ablated": m_abl, "m_swap": m_swap, "metric": mname,
                                       "task": task, "seed": seed, "model_fingerprint": fp}))
            tmp.replace(path)
    floor = noise_floor if noise_floor is not None else max(1e-6, DEFAULT_REL_NOISE_FLOOR * abs(m0))
    return InterchangeResult(
        components=names, m0=m0, m_ablated={c: m_abl[c] for c in names},
        m_swap={a: {b: m_swap[a][b] for b in names if b != a} for a in names}, noise_floor=floor,
        metric=mname, n_prompts=batch.size, task=task, seed=seed, model_fingerprint=fp,
        cache_path=str(path) if path else None, n_computed=n_computed)


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
    from scipy.stats import rankdata

    nw, na = len(within), len(across)
    ranks = rankdata(np.concatenate([within, across]))  # average ranks: ties count ½
    return float((ranks[:nw].sum() - nw * (nw + 1) / 2) / (nw * na))


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
    null_aucs: list[float] = Field(default_factory=list)
    percentile: float
    """100 × P(null AUC < AUC) (+ ½ ties): where the clustering sits in the null distribution."""
    singleton_auc: float = 0.5
    """The singleton clustering (every component alone) has no within pairs: AUC ½ by convention."""
    n_undefined_pairs: int
    """Unordered pairs among these components whose I_sym is undefined (left out of the AUC)."""


def score_clustering(result: InterchangeResult, clusters: Mapping[str, Iterable[str | Component]],
                     n_null: int = 200, seed: int = 0) -> ClusteringScore:
    """Score ``clusters`` on an :class:`InterchangeResult`: AUC, null distribution and percentile.

    The null draws ``n_null`` random clusterings with the same cluster sizes over the same components
    (a random permutation of the labels).
    """
    sym = result.sym()
    idx, labels, members = _labels(result.components, clusters)
    within, across = _pair_values(sym, idx, labels)
    defined = len(within) > 0 and len(across) > 0
    auc = _auc(within, across) if defined else 0.5
    rng = np.random.default_rng(seed)
    null = []
    for _ in range(n_null):
        w, a = _pair_values(sym, idx, rng.permutation(labels))
        null.append(_auc(w, a) if len(w) and len(a) else 0.5)
    arr = np.array(null)
    pct = 100.0 * (float((arr < auc).sum()) + 0.5 * float((arr == auc).sum())) / max(1, len(arr))
    sub = sym[np.ix_(idx, idx)]
    iu = np.triu_indices(len(idx), k=1)
    return ClusteringScore(auc=auc, defined=defined, n_within=len(within), n_across=len(across),
                           n_components=len(members), null_mean=float(arr.mean()) if null else 0.5,
                           null_std=float(arr.std()) if null else 0.0, null_aucs=[float(x) for x in null],
                           percentile=pct, n_undefined_pairs=int(np.isnan(sub[iu]).sum()))


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
