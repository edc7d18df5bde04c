"""Every experiment a planner tool runs, as a plain function returning a pydantic result.

A tool's kernel cell is ONE call into this module plus ``.model_dump(mode="json")``::

    _result = tools.experiments.ablation(model, batches['main'], metric, ['L1H0'], method='mean').model_dump(mode='json')

so each experiment is linted, type-checked and unit-tested here, and every consumer (offline planner,
report, figures, grounding, bench) reads the logged ``data`` back through the same model
(``AblationResult.model_validate(data)``). Result models ignore unknown keys, so logs written before
this module existed (they echoed the tool's ``prompts`` too) parse as well.

Effects and fractions of the gap (``m`` = the task metric, mean over the batch; ``gap = clean − corrupt``):

====================  ================================  =====================================================
experiment            effect                            ``effect_frac``
====================  ================================  =====================================================
:func:`ablation`      ``clean − ablated``               ``effect / gap``
:func:`patching`      ``patched − corrupt`` (c→c)       ``effect / gap`` (``patched − clean`` for corrupt→clean)
:func:`path_patching` ``clean − patched``               ``effect / gap``
:func:`steering`      —                                 ``(steered − corrupt) / gap``
:func:`sweep`         ``m(patched) − m(target)``        ``effect / gap`` per component
====================  ================================  =====================================================

A fraction is ``None`` when the gap is 0; NaN and ±inf serialise as ``null`` (:data:`Number`).

>>> import torch
>>> from transformers import AutoModelForCausalLM
>>> from tools.tiny import tiny_config
>>> from tools.model import Model
>>> from tools.metrics import logit_diff
>>> torch.manual_seed(0) and None
>>> m = Model.from_hf(AutoModelForCausalLM.from_config(tiny_config("gpt2")))
>>> b = TaskBatch(clean_ids=torch.randint(4, 64, (4, 5)), corrupt_ids=torch.randint(4, 64, (4, 5)),
...               answer_ids=torch.tensor([5, 6, 7, 8]), wrong_ids=torch.tensor([9, 10, 11, 12]))
>>> r = ablation(m, b, logit_diff, ["L1H0"], method="zero")
>>> abs(r.effect - (r.clean - r.ablated)) < 1e-9, sorted(r.model_dump(mode="json"))[:3]
(True, ['ablated', 'clean', 'components'])
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from tools.batch import TaskBatch
from tools.components import Component, parse_components
from tools.errors import InterpAgentError
from tools.inspection import (
    AttentionSummary,
    attention_patterns,
    attention_summary,
    direct_logit_attribution,
    repeated_sequences,
    subdiagonal,
)
from tools.inspection import head_scores as _head_scores
from tools.interventions import (
    ablate,
    ablation_sweep,
    attribution_ablation,
    attribution_patching,
    patch,
    patching_sweep,
    path_patch,
    run_with_cache,
    run_with_interventions,
)
from tools.metrics import Metric
from tools.model import Model
from tools.probe import diff_of_means_vector, steer, train_probe

__all__ = [
    "AblationResult", "AttentionPatterns", "AttentionResult", "Baseline", "DLAResult", "HeadProfile",
    "HeadProfileResult", "ModelCheck", "Number", "PatchingResult", "PathPatchingResult", "ProbingResult",
    "RedundancyResult", "SteeringResult", "SweepResult", "ablation", "attention", "attention_pattern",
    "baseline", "check_model", "head_profile", "logit_attribution", "lookback", "patching", "path_patching",
    "probing", "redundancy", "redundancy_cost", "steering", "sweep", "to_json",
]


def _finite_or_none(v: float | None) -> float | None:
    return v if v is None or math.isfinite(v) else None


Number = Annotated[float | None, PlainSerializer(_finite_or_none, return_type=float | None, when_used="json")]
"""A float that serialises NaN and ±inf as ``null`` in JSON (the sandbox refuses NaN in ``_result``)."""


class _Result(BaseModel):
    """Base of every experiment result: ignores unknown keys (older logs echoed more inputs)."""

    model_config = ConfigDict(extra="ignore", use_attribute_docstrings=True)


class Baseline(_Result):
    """The task metric on the clean and the corrupt prompts."""

    clean: Number
    """Metric on the clean prompts (mean over the batch)."""
    corrupt: Number = None
    """Metric on the corrupt prompts (0 when the batch has none; None in logs that did not record it)."""
    gap: Number
    """``clean − corrupt``: what a fraction of the gap divides by."""

    def frac(self, effect: float) -> float | None:
        """``effect / gap``, or None when the gap is 0.

        >>> Baseline(clean=3.0, corrupt=1.0, gap=2.0).frac(1.0), Baseline(clean=1.0, gap=0.0).frac(1.0)
        (0.5, None)
        """
        return effect / self.gap if self.gap else None


_BASELINES: OrderedDict[tuple[int, int, int], tuple[Any, Any, Any, Baseline]] = OrderedDict()
_BASELINE_CACHE = 16


def baseline(model: Model, batch: TaskBatch, metric: Metric) -> Baseline:
    """:class:`Baseline` of ``batch`` (cached per model, batch and metric: experiments reuse it).

    The cache holds the objects it is keyed by, so an id is never reused while its entry lives.
    """
    key = (id(model), id(batch), id(metric))
    hit = _BASELINES.get(key)
    if hit is not None:
        _BASELINES.move_to_end(key)
        return hit[3]
    with torch.no_grad():
        c = float(metric(model(batch.clean_ids), batch))
        k = float(metric(model(batch.corrupt_ids), batch)) if batch.corrupt_ids is not None else 0.0
    out = Baseline(clean=c, corrupt=k, gap=c - k)
    _BASELINES[key] = (model, batch, metric, out)
    if len(_BASELINES) > _BASELINE_CACHE:
        _BASELINES.popitem(last=False)
    return out


def _names(model: Model, components: Iterable[str | Component] | str) -> list[str]:
    return [str(model.check(c)) for c in parse_components(components)]


# ---------------------------------------------------------------------------------------------- effects


class AblationResult(Baseline):
    """:func:`ablation`: the metric with the components knocked out."""

    components: list[str]
    """The components ablated together."""
    method: Literal["mean", "zero", "resample"] = "mean"
    ablated: Number
    """Metric with the components ablated."""
    effect: Number
    """``clean − ablated`` (positive: the components help the task)."""
    effect_frac: Number = None
    """``effect / gap``."""


def ablation(model: Model, batch: TaskBatch, metric: Metric, components: Sequence[str | Component] | str,
             method: Literal["mean", "zero", "resample"] = "mean") -> AblationResult:
    """Ablate ``components`` together on the clean prompts (:func:`tools.ablate`) and measure the metric."""
    names = _names(model, components)
    base = baseline(model, batch, metric)
    ablated = float(metric(ablate(model, batch, parse_components(names), method=method), batch))
    effect = base.clean - ablated
    return AblationResult(**base.model_dump(), components=names, method=method, ablated=ablated, effect=effect,
                          effect_frac=base.frac(effect))


class PatchingResult(Baseline):
    """:func:`patching`: activation patching of components between clean and corrupt runs."""

    components: list[str]
    positions: list[str | int] | None = None
    """Positions patched (role names or indices); None for every position."""
    direction: Literal["clean_to_corrupt", "corrupt_to_clean"] = "clean_to_corrupt"
    patched: Number
    """Metric of the target run with the components patched."""
    effect: Number
    """``patched − corrupt`` (clean→corrupt: recovered) or ``patched − clean`` (corrupt→clean: damage, < 0)."""
    effect_frac: Number = None


def _position(p: str | int) -> str | int:
    return int(p) if isinstance(p, str) and p.lstrip("-").isdigit() else p


def patching(model: Model, batch: TaskBatch, metric: Metric, components: Sequence[str | Component] | str,
             positions: Sequence[str | int] | None = None,
             direction: Literal["clean_to_corrupt", "corrupt_to_clean"] = "clean_to_corrupt") -> PatchingResult:
    """Patch ``components`` (at ``positions``: roles or integers, digit strings count as integers)."""
    names = _names(model, components)
    pos = None if positions is None else [_position(p) for p in positions]
    base = baseline(model, batch, metric)
    patched = float(metric(patch(model, batch, parse_components(names), positions=pos, direction=direction), batch))
    ref = base.corrupt if direction == "clean_to_corrupt" else base.clean
    effect = patched - ref
    return PatchingResult(**base.model_dump(), components=names, positions=pos, direction=direction,
                          patched=patched, effect=effect, effect_frac=base.frac(effect))


class PathPatchingResult(Baseline):
    """:func:`path_patching`: the sender's corrupt output, only through the receivers' input."""

    sender: str
    receivers: list[str]
    receiver_input: Literal["q", "k", "v", "resid"] = "resid"
    patched: Number
    """Metric of the clean run with the path patched."""
    effect: Number
    """``clean − patched`` (the damage done through this path)."""
    effect_frac: Number = None


def path_patching(model: Model, batch: TaskBatch, metric: Metric, sender: str | Component,
                  receivers: Sequence[str | Component] | str,
                  receiver_input: Literal["q", "k", "v", "resid"] = "resid") -> PathPatchingResult:
    """Path patching (:func:`tools.path_patch`) of ``sender`` → ``receivers``' ``receiver_input``."""
    snd = model.check(sender)
    names = _names(model, receivers)
    base = baseline(model, batch, metric)
    patched = float(metric(path_patch(model, batch, snd, parse_components(names), receiver_input=receiver_input),
                           batch))
    effect = base.clean - patched
    return PathPatchingResult(**base.model_dump(), sender=str(snd), receivers=names, receiver_input=receiver_input,
                              patched=patched, effect=effect, effect_frac=base.frac(effect))


class SteeringResult(Baseline):
    """:func:`steering`: the corrupt prompts with ``alpha`` × (clean − corrupt mean activation) added."""

    site: str
    alpha: float = 1.0
    steered: Number
    """Metric of the steered corrupt run."""
    effect_frac: Number = None
    """``(steered − corrupt) / gap`` (1: steering recovers the whole gap)."""


def steering(model: Model, batch: TaskBatch, metric: Metric, site: str | Component, alpha: float = 1.0
             ) -> SteeringResult:
    """Steer ``site`` on the corrupt prompts along the clean − corrupt difference of means at END."""
    c = model.check(site)
    base = baseline(model, batch, metric)
    vec = diff_of_means_vector(model, batch.clean_ids, batch.corrupt_ids, c, position=batch.end)
    steered = float(metric(steer(model, batch.corrupt_ids, c, vec, alpha), batch))
    return SteeringResult(**base.model_dump(), site=str(c), alpha=alpha, steered=steered,
                          effect_frac=base.frac(steered - (base.corrupt or 0.0)))


class SweepResult(Baseline):
    """:func:`sweep`: the effect of patching each component alone, largest ``top_k`` kept."""

    kind: Literal["heads", "mlps", "all"] = "all"
    method: Literal["exact", "attribution"] = "exact"
    top_k: int = 20
    zero_ablation: bool = False
    ablation_method: Literal["exact", "attribution"] = Field("exact", exclude_if=lambda v: v == "exact")
    """How ``ablation_frac`` was measured: one zero-ablation per component, or its gradient estimate (left out
    of the JSON when ``exact``, so results match those logged before the field existed)."""
    components: list[str] | None = Field(None, exclude_if=lambda v: v is None)
    """The components swept, when a subset was asked for (None: every one of ``kind``; left out of the JSON)."""
    effects: dict[str, Number]
    """Component → ``metric(patched) − metric(corrupt run)`` (the ``top_k`` largest |effect|, in that order)."""
    effect_frac: dict[str, Number]
    """Component → effect / gap (same components)."""
    ablation_frac: dict[str, Number] | None = None
    """With ``zero_ablation``: every component → (clean − zero-ablated) / gap (sees features that are
    constant across prompts, which patching and mean ablation cannot)."""

    def ranked(self) -> dict[str, float]:
        """Component → its larger |fraction| of the sweep and the zero ablation (signed), largest first.

        >>> SweepResult(clean=1, gap=1, effects={}, effect_frac={"A": 0.2, "B": None},
        ...             ablation_frac={"A": -0.5, "C": 0.1}).ranked()
        {'A': -0.5, 'C': 0.1}
        """
        fr = {k: float(v) for k, v in self.effect_frac.items() if v is not None}
        for k, v in (self.ablation_frac or {}).items():
            if v is not None and abs(v) > abs(fr.get(k, 0.0)):
                fr[k] = float(v)
        return dict(sorted(fr.items(), key=lambda kv: -abs(kv[1])))


def _kind_components(model: Model, kind: str) -> list[Component]:
    return model.components("heads") + model.components("mlps") if kind == "all" else model.components(kind)


def sweep(model: Model, batch: TaskBatch, metric: Metric, kind: Literal["heads", "mlps", "all"] = "all",
          method: Literal["exact", "attribution"] = "exact", top_k: int = 20, zero_ablation: bool = False,
          components: Sequence[str | Component] | None = None,
          ablation_method: Literal["exact", "attribution"] = "exact") -> SweepResult:
    """Patch every head / MLP alone (exact batched sweep, or its gradient approximation), clean → corrupt.

    ``components`` restricts the sweep to those (a chunk of a long sweep); ``zero_ablation`` also zero-ablates
    each on the clean prompts, exactly (batched) or by its gradient estimate (``ablation_method``).
    """
    comps = _kind_components(model, kind) if components is None else [model.check(c) for c in
                                                                        parse_components(components)]
    base = baseline(model, batch, metric)
    fn = patching_sweep if method == "exact" else attribution_patching
    eff = {str(c): float(v) for c, v in fn(model, batch, metric, components=comps).items()}
    top = sorted(eff, key=lambda k: -abs(eff[k]))[:top_k]
    abl = None
    if zero_ablation:
        afn = ablation_sweep if ablation_method == "exact" else attribution_ablation
        abl = {str(c): base.frac(float(v)) for c, v in afn(model, batch, metric, components=comps).items()}
    return SweepResult(**base.model_dump(), kind=kind, method=method, top_k=top_k, zero_ablation=zero_ablation,
                       ablation_method=ablation_method,
                       components=None if components is None else [str(c) for c in comps],
                       effects={k: eff[k] for k in top}, effect_frac={k: base.frac(eff[k]) for k in top},
                       ablation_frac=abl)


# ---------------------------------------------------------------------------------------------- redundancy


class RedundancyGroup(_Result):
    heads: list[str]
    """The layer's heads tested together (those not excluded)."""
    joint: Number
    """Fraction of the gap removed by ablating them together."""
    sum_single: Number
    """Σ |fraction removed by each alone| (None: the group was not examined, see ``max_groups``)."""
    flagged: bool
    """joint ≥ threshold and ≥ synergy × sum_single: its pairs were tested."""
    restores: dict[str, Number] | None = Field(None, exclude_if=lambda v: v is None)
    """Flagged groups larger than ``max_candidates``: head → ``joint − fraction removed with every other head of
    the group ablated`` (how much of the group's effect that head alone brings back)."""
    candidates: list[str] | None = Field(None, exclude_if=lambda v: v is None)
    """The heads whose pairs were tested (the ``max_candidates`` largest ``restores``), when not all were."""


class RedundantHead(_Result):
    partners: list[str]
    """Heads it forms a kept pair with."""
    joint: Number
    """The largest joint fraction of its pairs."""
    why: str
    """One sentence per pair with the numbers."""


class RedundancyResult(Baseline):
    """:func:`redundancy`: groups and pairs of heads that matter jointly but not alone."""

    exclude: list[str] = []
    threshold: float = 0.1
    synergy: float = 2.0
    method: Literal["mean", "zero"] = "mean"
    max_groups: int | None = Field(None, exclude_if=lambda v: v is None)
    max_candidates: int | None = Field(None, exclude_if=lambda v: v is None)
    layers: list[int] | None = Field(None, exclude_if=lambda v: v is None)
    single: dict[str, Number]
    """Head → fraction of the gap removed by ablating it alone (the heads of the groups examined)."""
    groups: dict[str, RedundancyGroup]
    """``L{layer}`` → that layer's group."""
    pairs: dict[str, Number]
    """``"A,B"`` → fraction removed by ablating the pair (pairs of flagged groups only)."""
    kept: dict[str, RedundantHead]
    """Heads of the pairs passing both tests, with their partners and why."""

    def variants(self) -> int:
        """Ablation variants this check ran (each one forward of the batch, stacked): groups, singles, the
        leave-one-out restores and pairs.

        >>> RedundancyResult(clean=1, gap=1, single={"A": 0, "B": 0}, pairs={"A,B": 1}, kept={},
        ...                  groups={"L0": RedundancyGroup(heads=["A", "B"], joint=1, sum_single=0, flagged=True)}
        ...                  ).variants()
        4
        """
        loo = sum(len(g.restores or {}) for g in self.groups.values())
        return len(self.groups) + len(self.single) + loo + len(self.pairs)


def _variants_metric(model: Model, batch: TaskBatch, metric: Metric, base: Baseline,
                     ref: dict[str, torch.Tensor], variants: list[list[str]]) -> dict[str, float]:
    """``"A,B"`` → fraction of the gap removed with every head of the variant replaced by ``ref``.

    Variants are stacked along the batch: one chunk of the repeated prompts per variant, up to
    :meth:`Model.token_budget` tokens per forward; a head is replaced only in the rows of the variants that
    ablate it.
    """
    ids = batch.clean_ids.to(model.device)
    B = ids.shape[0]
    out: dict[str, float] = {}
    k = max(1, model.token_budget(ids.shape[1]) // ids.numel())
    for s in range(0, len(variants), k):
        chunk = variants[s:s + k]
        iv: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
        for c in dict.fromkeys(c for v in chunk for c in v):
            rows = torch.tensor([c in v for v in chunk], device=model.device).repeat_interleave(B)
            iv[c] = (lambda r, m: (lambda o: torch.where(r[:, None, None], m.expand_as(o), o)))(rows, ref[c])
        logits = run_with_interventions(model, ids.repeat(len(chunk), 1), iv)
        for i, v in enumerate(chunk):
            fx = base.clean - float(metric(logits[i * B:(i + 1) * B], batch))
            out[",".join(v)] = fx / base.gap if base.gap else 0.0
    return out


def redundancy_cost(n_layers: int, n_heads: int, max_groups: int | None, max_candidates: int | None) -> int:
    """Most ablation variants :func:`redundancy` runs with these bounds (each one forward of the batch).

    >>> redundancy_cost(12, 12, None, None), redundancy_cost(12, 12, 3, 4)
    (948, 102)
    """
    groups = n_layers if max_groups is None else min(n_layers, max_groups)
    c = n_heads if max_candidates is None else min(n_heads, max_candidates)
    loo = n_heads if max_candidates is not None and n_heads > max_candidates else 0
    return n_layers + groups * (n_heads + loo + c * (c - 1) // 2)


def redundancy(model: Model, batch: TaskBatch, metric: Metric, exclude: Sequence[str] = (),
               threshold: float = 0.10, synergy: float = 2.0, method: Literal["mean", "zero"] = "mean",
               max_groups: int | None = None, max_candidates: int | None = None,
               layers: Sequence[int] | None = None) -> RedundancyResult:
    """Find redundant heads (a head of a redundant pair does nothing alone, so a single sweep misses it).

    Pass 1: each layer's group (its heads not in ``exclude``, when ≥ 2) ablated together (mean: each head's
    output replaced by its mean over the prompts, per position; or zero), and each head of a group alone. A
    group is *flagged* when joint ≥ ``threshold`` and ≥ ``synergy`` × Σ|single|. Pass 2: every pair inside a
    flagged group; a pair passing the same two tests is *kept*, with the numbers saying why.

    Bounded (for models with many heads; :func:`redundancy_cost` counts the variants): with ``max_groups``
    only the groups whose joint effect reaches ``threshold`` are examined, the ``max_groups`` largest, and
    singles are measured for their heads only. With ``max_candidates``, a flagged group of more heads first
    ablates all but one of its heads for each head (what that head alone restores of the joint effect: both
    members of a redundant pair restore it), and only pairs among the ``max_candidates`` heads restoring
    most are tested. Left at None, every group and every pair of a flagged group is tested. ``layers`` keeps
    only those layers' groups (a long check split into one cell per group).
    """
    base = baseline(model, batch, metric)
    excl = {str(Component.parse(c)) for c in exclude}
    groups: dict[str, list[str]] = {}
    for c in model.components("heads"):
        if str(c) not in excl and (layers is None or c.layer in layers):
            groups.setdefault(f"L{c.layer}", []).append(str(c))
    groups = {k: v for k, v in groups.items() if len(v) >= 2}
    heads = [c for g in groups.values() for c in g]
    cache = run_with_cache(model, batch.clean_ids.to(model.device), parse_components(heads))[1] if heads else {}
    ref = {str(c): (a.mean(0, keepdim=True) if method == "mean" else torch.zeros_like(a[:1]))
           for c, a in cache.items()}
    joint = _variants_metric(model, batch, metric, base, ref, list(groups.values()))
    examined = list(groups)
    if max_groups is not None:
        big = [k for k in groups if joint[",".join(groups[k])] >= threshold]
        examined = sorted(big, key=lambda k: -joint[",".join(groups[k])])[:max_groups]
    single = _variants_metric(model, batch, metric, base, ref, [[c] for k in examined for c in groups[k]])
    gres: dict[str, RedundancyGroup] = {}
    todo: list[list[str]] = []
    for layer, g in groups.items():
        j = joint[",".join(g)]
        if layer not in examined:
            gres[layer] = RedundancyGroup(heads=g, joint=j, sum_single=None, flagged=False)
            continue
        s = sum(abs(single[c]) for c in g)
        gres[layer] = RedundancyGroup(heads=g, joint=j, sum_single=s, flagged=j >= threshold and j >= synergy * s)
        if not gres[layer].flagged:
            continue
        cand = g
        if max_candidates is not None and len(g) > max_candidates:
            others = _variants_metric(model, batch, metric, base, ref, [[c for c in g if c != h] for h in g])
            restores = {h: j - others[",".join(c for c in g if c != h)] for h in g}
            cand = sorted(g, key=lambda h: (-restores[h], g.index(h)))[:max_candidates]
            cand = [h for h in g if h in cand]
            gres[layer] = gres[layer].model_copy(update={"restores": restores, "candidates": cand})
        todo += [list(p) for p in itertools.combinations(cand, 2)]
    pairs = _variants_metric(model, batch, metric, base, ref, todo) if todo else {}
    kept: dict[str, dict[str, Any]] = {}
    for p, j in sorted(pairs.items(), key=lambda kv: -kv[1]):
        a, b = p.split(",")
        if j >= threshold and j >= synergy * (abs(single[a]) + abs(single[b])):
            for x, y in ((a, b), (b, a)):
                e = kept.setdefault(x, {"partners": [], "joint": j, "why": []})
                e["partners"].append(y)
                e["why"].append(f"{x}+{y} ablated together remove {j:.2f} of the gap "
                                f"(alone: {x} {single[x]:+.3f}, {y} {single[y]:+.3f})")
    return RedundancyResult(**base.model_dump(), exclude=[str(Component.parse(c)) for c in exclude],
                            threshold=threshold, synergy=synergy, method=method, max_groups=max_groups,
                            max_candidates=max_candidates, layers=None if layers is None else list(layers),
                            single=single, groups=gres, pairs=pairs,
                            kept={k: RedundantHead(partners=v["partners"], joint=v["joint"], why="; ".join(v["why"]))
                                  for k, v in kept.items()})


# ---------------------------------------------------------------------------------------------- inspection


class AttentionResult(_Result):
    """:func:`attention`: where a head attends from END, in task roles."""

    head: str
    summary: AttentionSummary


def attention(model: Model, batch: TaskBatch, head: str | Component) -> AttentionResult:
    """:func:`tools.attention_summary` of ``head`` from the END position."""
    h = model.check(head)
    return AttentionResult(head=str(h), summary=attention_summary(model, batch, h))


class DLAResult(_Result):
    """:func:`logit_attribution`: each component's direct effect onto answer − wrong."""

    dla: dict[str, Number]
    """Component → direct logit attribution (logit-difference units, mean over the batch)."""
    clean: Number
    """The clean metric (to express DLA as a fraction of it)."""
    gap: Number

    def frac(self, component: str) -> float | None:
        """DLA of ``component`` as a fraction of |clean| (None when unknown).

        >>> DLAResult(dla={"L1H0": 2.0}, clean=-4.0, gap=8.0).frac("L1H0")
        0.5
        """
        v = self.dla.get(component)
        return None if v is None or not self.clean else v / abs(self.clean)


def logit_attribution(model: Model, batch: TaskBatch, metric: Metric, components: Sequence[str | Component] | str
                      ) -> DLAResult:
    """Direct logit attribution (:func:`tools.direct_logit_attribution`) of ``components``."""
    names = _names(model, components)
    base = baseline(model, batch, metric)
    dla = direct_logit_attribution(model, batch, parse_components(names))
    return DLAResult(dla={str(c): v for c, v in dla.items()}, clean=base.clean, gap=base.gap)


class HeadProfile(_Result):
    """:func:`tools.head_scores` of one head plus its look-back (see :func:`lookback`)."""

    copying: Number
    prev_token: Number
    induction: Number
    induction_offset: int
    induction_textbook: Number
    duplicate_token: Number
    lookback: Number = None
    """Mean attention from t to t − ``lookback_offset`` (the best k in 1..4) on the sequences ``prev_token`` is
    measured on, so the look-back at k = 1 is ``prev_token`` (logs written before this rule used other
    random sequences: there the two can differ)."""
    lookback_offset: int | None = None

    def score(self, which: Literal["copying", "previous token", "induction", "duplicate token"]) -> float | None:
        """A role's score: ``previous token`` is the larger of ``prev_token`` and ``lookback`` (the look-back).

        >>> HeadProfile(copying=0, prev_token=0.1, induction=0, induction_offset=1, induction_textbook=0,
        ...             duplicate_token=0, lookback=0.6, lookback_offset=2).score("previous token")
        0.6
        """
        vals = {"copying": [self.copying], "induction": [self.induction], "duplicate token": [self.duplicate_token],
                "previous token": [self.prev_token, self.lookback]}[which]
        got = [v for v in vals if v is not None]
        return max(got) if got else None


class HeadProfileResult(_Result):
    """:func:`head_profile`: scores per head."""

    scores: dict[str, HeadProfile]


def lookback(model: Model, heads: Sequence[str | Component] | str, seed: int = 0, max_k: int = 4
             ) -> dict[str, tuple[float, int]]:
    """Head → (mean attention from t to t−k, k) for the best k in 1..``max_k`` (the first best on a tie).

    Measured on :func:`tools.head_scores`' sequences for the same ``seed`` (:func:`tools.inspection.
    repeated_sequences`), so k = 1 gives exactly its ``prev_token``. Trained heads often look 2–3 tokens back
    rather than 1 (see FIELD-NOTES), which ``prev_token`` misses.
    """
    ids = repeated_sequences(model, seed=seed).ids
    out = {}
    for h, p in attention_patterns(model, ids, parse_components(heads)).items():
        lb = {k: subdiagonal(p, k) for k in range(1, max_k + 1)}
        best = max(lb, key=lb.get)
        out[str(h)] = (lb[best], best)
    return out


def head_profile(model: Model, heads: Sequence[str | Component] | str, seed: int = 0) -> HeadProfileResult:
    """OV copying, previous-token, induction, duplicate-token (:func:`tools.head_scores`) and look-back scores."""
    names = _names(model, heads)
    scores = _head_scores(model, heads=parse_components(names), seed=seed)
    lb = lookback(model, names, seed=seed)
    return HeadProfileResult(scores={
        str(h): HeadProfile(**s.model_dump(), lookback=lb[str(h)][0], lookback_offset=lb[str(h)][1])
        for h, s in scores.items()})


class ProbingResult(_Result):
    """:func:`probing`: a linear probe for the answer token."""

    site: str
    position: str
    seed: int = 0
    heldout_accuracy: Number
    """Accuracy on the probe's held-out split."""
    train_accuracy: Number


def probing(model: Model, batch: TaskBatch, site: str | Component, position: str | int = "END", seed: int = 0
            ) -> ProbingResult:
    """Train a logistic-regression probe (:func:`tools.train_probe`) at ``site`` for ``batch.answer_ids``."""
    c = model.check(site)
    pr = train_probe(model, batch, c, batch.answer_ids, position=_position(position), seed=seed)
    return ProbingResult(site=str(c), position=str(position), seed=seed, heldout_accuracy=pr.test_accuracy,
                         train_accuracy=pr.train_accuracy)


class AttentionPattern(_Result):
    attn_pattern: list[list[float]]
    """``[T, T]`` attention weights (query × key)."""
    tokens: list[str]


class AttentionPatterns(_Result):
    """:func:`attention_pattern`: full patterns of heads on one prompt (for figures)."""

    patterns: dict[str, AttentionPattern]


def attention_pattern(model: Model, batch: TaskBatch, heads: Sequence[str | Component] | str, prompt: int = 0
                      ) -> AttentionPatterns:
    """Each head's attention pattern on prompt number ``prompt`` of ``batch``, with its tokens."""
    ids = batch.clean_ids[prompt:prompt + 1]
    pats = attention_patterns(model, ids, parse_components(heads))
    toks = (model.tokenizer.convert_ids_to_tokens(ids[0].tolist()) if model.tokenizer is not None
            else [str(t) for t in ids[0].tolist()])
    return AttentionPatterns(patterns={str(h): AttentionPattern(attn_pattern=p[0].tolist(), tokens=toks)
                                       for h, p in pats.items()})


# ---------------------------------------------------------------------------------------------- kernel


class ModelCheck(_Result):
    """:func:`check_model`: the loaded model's identity and which named components it lacks."""

    fingerprint: str
    n_layers: int
    n_heads: int
    bad: list[str] = []
    """``"NAME: why"`` for each component the model does not have."""


def check_model(model: Model, components: Sequence[str] = ()) -> ModelCheck:
    """The model's fingerprint and shape, and every component of ``components`` it lacks (with why)."""
    bad = []
    for c in components:
        try:
            model.check(Component.parse(c))
        except InterpAgentError as e:
            bad.append(f"{c}: {e}")
    return ModelCheck(fingerprint=model.fingerprint(), n_layers=model.n_layers, n_heads=model.n_heads, bad=bad)


def to_json(x: Any) -> Any:
    """Tensors, components, pydantic models and containers as JSON values (NaN/inf → None).

    >>> to_json({Component.parse("L0H1"): torch.tensor(2.5), "v": [float("nan"), (1, 2)]})
    {'L0H1': 2.5, 'v': [None, [1, 2]]}
    """
    if isinstance(x, torch.Tensor):
        return to_json(x.item()) if x.numel() == 1 else to_json(x.detach().cpu().tolist())
    if isinstance(x, BaseModel):
        return to_json(x.model_dump())
    if isinstance(x, dict):
        return {str(k): to_json(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [to_json(v) for v in x]
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, int | str | bool) or x is None:
        return x
    return str(x)


RESULT_MODELS: dict[str, type[_Result]] = {
    "ablation": AblationResult, "patching": PatchingResult, "path_patching": PathPatchingResult,
    "sweep": SweepResult, "redundancy": RedundancyResult, "attention": AttentionResult,
    "logit_attribution": DLAResult, "head_profile": HeadProfileResult, "probing": ProbingResult,
    "steering": SteeringResult, "attention_pattern": AttentionPatterns, "check_model": ModelCheck,
}
"""Experiment function name → the result model it returns."""
