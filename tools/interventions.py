"""Interventions: run with edits, cache, ablate, patch, batched patching sweeps, attribution and path patching.

Every operation takes token ids or a :class:`~tools.batch.TaskBatch` and components in the one grammar,
returns tensors or ``{Component: float}``, and never prints. Component outputs are in residual space
``[B, T, d_model]``: a head's output is ``z_h @ W_O[h]`` (no bias), ``ATTN{l}`` includes the output bias.

Positions (``positions=``): ``None`` (every position), an int (negative counts from the end), a role
name of the batch (``"S2"``, ``"END"``), a ``[B]`` index tensor, or a list of these (their union).

>>> import torch
>>> from tools.tiny import tiny_config
>>> from transformers import AutoModelForCausalLM
>>> from tools.model import Model
>>> from tools.batch import TaskBatch
>>> torch.manual_seed(0) and None
>>> m = Model.from_hf(AutoModelForCausalLM.from_config(tiny_config("gpt2")))
>>> b = TaskBatch(clean_ids=torch.randint(4, 64, (3, 6)), corrupt_ids=torch.randint(4, 64, (3, 6)),
...               answer_ids=torch.tensor([5, 6, 7]), wrong_ids=torch.tensor([8, 9, 10]))
>>> torch.allclose(patch(m, b, m.components("writers")), m(b.clean_ids), atol=1e-4)
True
>>> effects = patching_sweep(m, b, "logit_diff", components=["L1H0", "MLP1"])
>>> sorted(str(c) for c in effects)
['L1H0', 'MLP1']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from typing import Literal

import torch

from tools.batch import TaskBatch
from tools.components import Component, Kind
from tools.errors import BatchError, ComponentError, InterventionError
from tools.hooks import (
    Capture,
    Edit,
    StopForward,
    block_outputs,
    hooked,
    last_site,
    repeat_output,
    skip_blocks,
)
from tools.metrics import Metric, get_metric
from tools.model import Model

Positions = None | int | str | torch.Tensor | Sequence[int | str | torch.Tensor]
Value = torch.Tensor | Callable[[torch.Tensor], torch.Tensor]
Direction = Literal["clean_to_corrupt", "corrupt_to_clean"]


# --- small helpers --------------------------------------------------------------------------------
def _ids(x: torch.Tensor | TaskBatch, model: Model) -> torch.Tensor:
    ids = x.clean_ids if isinstance(x, TaskBatch) else x
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
        raise BatchError("token ids must be a [batch, seq] LongTensor", fix="stack ids into 2-D, e.g. ids[None]")
    return ids.to(model.device)


def position_mask(positions: Positions, batch: TaskBatch | torch.Tensor, device=None) -> torch.Tensor | None:
    """``[B, T]`` bool mask of the positions (None when every position is meant).

    >>> import torch
    >>> position_mask([0, -1], torch.zeros(2, 4, dtype=torch.long)).int().tolist()
    [[1, 0, 0, 1], [1, 0, 0, 1]]
    """
    if positions is None:
        return None
    ids = batch.clean_ids if isinstance(batch, TaskBatch) else batch
    B, T = ids.shape
    items = list(positions) if isinstance(positions, list | tuple) else [positions]
    mask = torch.zeros(B, T, dtype=torch.bool, device=device or ids.device)
    for p in items:
        if isinstance(p, torch.Tensor):
            if p.shape != (B,):
                raise BatchError(f"position tensor must have shape [{B}], got {tuple(p.shape)}",
                                 fix="give one index per prompt")
            idx = p.to(mask.device)
        elif isinstance(p, str):
            if not isinstance(batch, TaskBatch):
                raise BatchError(f"position {p!r} is a role name but no TaskBatch was given",
                                 fix="pass a TaskBatch, or use integer positions")
            idx = batch.position(p).to(mask.device)
        elif isinstance(p, int):
            q = p if p >= 0 else T + p
            if not 0 <= q < T:
                raise BatchError(f"position {p} is outside the prompt (length {T})", fix="index tokens from 0")
            idx = torch.full((B,), q, dtype=torch.long, device=mask.device)
        else:
            raise BatchError(f"cannot use {p!r} as a position", fix="use an int, a role name or a [B] tensor")
        mask[torch.arange(B, device=mask.device), idx] = True
    return mask


def _check_value(v: torch.Tensor, c: Component, model: Model) -> torch.Tensor:
    if not torch.is_floating_point(v):
        raise InterventionError(f"value for {c} must be a float tensor, got {v.dtype}", fix="convert with .float()")
    if v.shape[-1] != model.d_model:
        raise InterventionError(f"value for {c} has last dim {v.shape[-1]}, expected d_model={model.d_model}",
                                fix="give a residual-space tensor [B,T,d_model], [T,d_model] or [d_model]")
    if not torch.isfinite(v).all():
        raise InterventionError(f"value for {c} contains NaN or inf", fix="check how the vector was computed")
    return v.to(model.device, model.dtype)


def _edit(model: Model, c: Component, fn, *, z: bool = False, rows=None, mask=None) -> Edit:
    """An Edit on component ``c``'s output (``z=True``: a head edit in its own z-space [.., d_head])."""
    c = model.check(c)
    if c.kind is Kind.HEAD:
        cols = slice(c.head * model.d_head, (c.head + 1) * model.d_head)
        if z:
            return Edit("z", c.layer, fn, cols=cols, rows=rows, mask=mask)
        return Edit("attn_out", c.layer, fn, cols=cols, rows=rows, mask=mask, head_w=model.W_O(c.layer)[c.head])
    site = {Kind.ATTN: "attn_out", Kind.MLP: "mlp_out", Kind.EMB: "emb", Kind.RESID_PRE: "resid_pre",
            Kind.RESID_POST: "resid_post"}[c.kind]
    return Edit(site, c.layer, fn, rows=rows, mask=mask)


def _site(c: Component) -> tuple[str, int]:
    """Internal site whose captured tensor holds ``c`` (heads: the whole z of the layer)."""
    return {Kind.HEAD: "z", Kind.ATTN: "attn_out", Kind.MLP: "mlp_out", Kind.EMB: "emb",
            Kind.RESID_PRE: "resid_pre", Kind.RESID_POST: "resid_post"}[c.kind], c.layer


def _take(model: Model, store: dict, c: Component) -> torch.Tensor:
    """``c``'s activation from a capture store: heads in z-space ``[B,T,d_head]``, others ``[B,T,d]``."""
    t = store[_site(c)]
    if c.kind is Kind.HEAD:
        return t[..., c.head * model.d_head:(c.head + 1) * model.d_head]
    return t


def _capture(model: Model, ids: torch.Tensor, comps: Iterable[Component], edits: list[Edit] = (),
             grad: bool = False, extra: list[Capture] = (), early_stop: bool = False
             ) -> tuple[torch.Tensor | None, dict]:
    """Run once capturing ``comps``' sites. ``early_stop``: skip the layers after the last site
    (no logits then)."""
    store: dict = {}
    sites = {_site(c) for c in comps}
    caps = [Capture(s, layer, store, retain_grad=grad) for s, layer in sites] + list(extra)
    stop = last_site(sites | {(c.site, c.layer) for c in extra}) if early_stop and (sites or extra) else None
    logits = None
    try:
        with hooked(model, edits=list(edits), captures=caps, stop_after=stop), torch.set_grad_enabled(grad):
            logits = model.hf(input_ids=ids, use_cache=False).logits
    except StopForward:
        pass
    return logits, store


def _comps(model: Model, components) -> list[Component]:
    if components is None:
        return model.components("heads")
    if isinstance(components, str):
        if components in ("all", "writers", "heads", "mlps", "attn", "resid_pre", "resid_post"):
            return model.components(components)
        components = components.split(",")
    if isinstance(components, Component):
        components = [components]
    out = []
    for c in components:
        c = model.check(c)
        if c not in out:
            out.append(c)
    return out


def _pair(model: Model, batch: TaskBatch, direction: Direction) -> tuple[torch.Tensor, torch.Tensor]:
    """(source ids, target ids) for a patching direction."""
    if not isinstance(batch, TaskBatch):
        raise BatchError("patching needs a TaskBatch with clean and corrupt prompts",
                         fix="build a TaskBatch(clean_ids=..., corrupt_ids=...)")
    if batch.corrupt_ids is None:
        raise BatchError("this batch has no corrupt prompts to patch from/into", fix="build it with corrupt_ids")
    if direction not in ("clean_to_corrupt", "corrupt_to_clean"):
        raise InterventionError(f"unknown direction {direction!r}", fix="use clean_to_corrupt or corrupt_to_clean")
    c, k = batch.clean_ids.to(model.device), batch.corrupt_ids.to(model.device)
    return (c, k) if direction == "clean_to_corrupt" else (k, c)


# --- public operations ----------------------------------------------------------------------------
def run_with_interventions(model: Model, ids: torch.Tensor | TaskBatch,
                           interventions: dict[str | Component, Value],
                           positions: Positions = None) -> torch.Tensor:
    """One forward with component outputs replaced (tensor) or mapped (``callable(out) -> out``).

    Tensors are residual-space ``[B,T,d]``, ``[T,d]`` or ``[d]`` (broadcast); only ``positions`` change.
    Returns logits ``[B,T,V]`` (no grad).

    >>> import torch
    >>> from tools.tiny import tiny_config
    >>> from transformers import AutoModelForCausalLM
    >>> m = Model.from_hf(AutoModelForCausalLM.from_config(tiny_config("neox")))
    >>> ids = torch.tensor([[5, 6, 7, 8]])
    >>> same = run_with_interventions(m, ids, {"MLP0": lambda out: out})
    >>> torch.equal(same, m(ids))
    True
    >>> run_with_interventions(m, ids, {"L0H9": torch.zeros(64)})
    Traceback (most recent call last):
    ...
    tools.errors.ComponentError: head index 9 out of range in 'L0H9' (model has 4 heads per layer) — use heads 0..3
    """
    mask = position_mask(positions, ids, model.device)
    ids = _ids(ids, model)
    edits = []
    for name, v in interventions.items():
        c = model.check(name)
        if isinstance(v, torch.Tensor):
            v = _check_value(v, c, model)
            fn = (lambda val: (lambda cur: val.expand_as(cur)))(v)
        elif callable(v):
            fn = v
        else:
            raise InterventionError(f"intervention for {c} must be a tensor or a callable, got {type(v).__name__}",
                                    fix="pass a [B,T,d_model] tensor or a function out -> out")
        edits.append(_edit(model, c, fn, mask=mask))
    with hooked(model, edits=edits), torch.no_grad():
        return model.hf(input_ids=ids, use_cache=False).logits


def run_with_cache(model: Model, ids: torch.Tensor | TaskBatch,
                   components: Iterable[str | Component] | str | None = "all",
                   ) -> tuple[torch.Tensor, dict[Component, torch.Tensor]]:
    """Logits ``[B,T,V]`` and each requested component's output ``[B,T,d_model]`` (no grad).

    >>> import torch
    >>> from tools.tiny import tiny_config
    >>> from transformers import AutoModelForCausalLM
    >>> m = Model.from_hf(AutoModelForCausalLM.from_config(tiny_config("gpt2")))
    >>> logits, cache = run_with_cache(m, torch.tensor([[5, 6, 7]]), ["L0H1", "ATTN0"])
    >>> cache[Component.parse("L0H1")].shape
    torch.Size([1, 3, 64])
    """
    ids = _ids(ids, model)
    comps = _comps(model, components)
    logits, store = _capture(model, ids, comps)
    by_layer: dict[int, list[Component]] = {}
    for c in comps:
        if c.kind is Kind.HEAD:
            by_layer.setdefault(c.layer, []).append(c)
    heads: dict[Component, torch.Tensor] = {}
    for layer, hs in by_layer.items():  # one batched projection per layer: z_h @ W_O[h] for its heads
        z = store[("z", layer)]
        idx = torch.tensor([c.head for c in hs], device=z.device)
        zh = z.reshape(*z.shape[:-1], model.n_heads, model.d_head)[..., idx, :]
        proj = torch.einsum("btne,ned->nbtd", zh, model.W_O(layer).detach()[idx])
        heads.update(zip(hs, proj, strict=True))
    return logits, {c: heads[c] if c.kind is Kind.HEAD else _take(model, store, c) for c in comps}


def _reference_values(model: Model, comps: list[Component], method: str, ids: torch.Tensor,
                      reference, seed: int) -> dict[Component, Callable]:
    B, T = ids.shape
    if method == "zero":
        return {c: torch.zeros_like for c in comps}
    if method not in ("mean", "resample"):
        raise InterventionError(f"unknown ablation method {method!r}", fix="use mean, zero or resample")
    ref = ids if reference is None else _ids(reference, model)
    if ref.shape[1] != T:
        raise BatchError(f"reference prompts have length {ref.shape[1]}, the batch {T}",
                         fix="use a reference batch from the same task template (same token length)")
    _, store = _capture(model, ref, comps, early_stop=True)
    fns: dict[Component, Callable] = {}
    g = torch.Generator().manual_seed(seed)
    pick = torch.randint(0, ref.shape[0], (B,), generator=g).to(model.device)
    for c in comps:
        act = _take(model, store, c)
        val = act.mean(0, keepdim=True) if method == "mean" else act[pick]
        fns[c] = (lambda v: (lambda cur: v.expand_as(cur)))(val)
    return fns


def ablate(model: Model, batch: torch.Tensor | TaskBatch, components, method: str = "mean",
           reference: torch.Tensor | TaskBatch | None = None, positions: Positions = None,
           seed: int = 0) -> torch.Tensor:
    """Logits ``[B,T,V]`` with components knocked out on the clean prompts.

    ``zero``: output set to 0; ``mean``: the mean output over ``reference`` (default: the batch
    itself) at each position; ``resample``: the output on a random reference prompt (seeded).

    >>> import torch
    >>> from tools.tiny import tiny_config
    >>> from transformers import AutoModelForCausalLM
    >>> m = Model.from_hf(AutoModelForCausalLM.from_config(tiny_config("llama")))
    >>> ids = torch.randint(4, 64, (4, 5))
    >>> ablate(m, ids, ["L1H0", "MLP0"], method="zero").shape
    torch.Size([4, 5, 64])
    """
    ids = _ids(batch, model)
    comps = _comps(model, components)
    mask = position_mask(positions, batch, model.device)
    fns = _reference_values(model, comps, method, ids, reference, seed)
    edits = [_edit(model, c, fns[c], z=True, mask=mask) for c in comps]
    with hooked(model, edits=edits), torch.no_grad():
        return model.hf(input_ids=ids, use_cache=False).logits


def patch(model: Model, batch: TaskBatch, components, positions: Positions = None,
          direction: Direction = "clean_to_corrupt") -> torch.Tensor:
    """Activation patching: logits ``[B,T,V]`` of the target run with components taken from the source run.

    ``clean_to_corrupt`` runs the corrupt prompts with the clean activations (denoising);
    ``corrupt_to_clean`` runs the clean prompts with corrupt activations (noising).

    >>> import torch
    >>> from tools.tiny import tiny_config
    >>> from transformers import AutoModelForCausalLM
    >>> m = Model.from_hf(AutoModelForCausalLM.from_config(tiny_config("neox")))
    >>> b = TaskBatch(clean_ids=torch.tensor([[5, 6, 7]]), corrupt_ids=torch.tensor([[5, 9, 7]]))
    >>> torch.allclose(patch(m, b, ["resid_pre1"], positions=[1, 2]), m(b.clean_ids), atol=1e-5)
    True
    """
    src, tgt = _pair(model, batch, direction)
    comps = _comps(model, components)
    mask = position_mask(positions, batch, model.device)
    _, store = _capture(model, src, comps, early_stop=True)
    edits = [_edit(model, c, (lambda v: (lambda cur: v))(_take(model, store, c)), z=True, mask=mask)
             for c in comps]
    with hooked(model, edits=edits), torch.no_grad():
        return model.hf(input_ids=tgt, use_cache=False).logits


def _stacked(model: Model, ids: torch.Tensor, batch: TaskBatch, metric: Metric, comps: list[Component],
             fn_of: Callable[[Component], Callable], mask: torch.Tensor | None, max_tokens: int | None
             ) -> tuple[float, dict[Component, float]]:
    """``metric`` of ``ids`` unedited, and with each component edited alone by ``fn_of(c)`` (in its z-space for
    heads).

    The prompts are repeated ``k`` times along the batch and chunk ``i`` has component ``i`` edited, so one
    forward covers ``k`` variants (``k * B * T <= max_tokens``, default :meth:`Model.token_budget`).
    Components go in layer order, and a forward whose edits all sit in block ``n`` or later does not run
    blocks ``0..n-1``: they compute what the unedited run does, whose block outputs are recorded once.
    """
    B, T = ids.shape
    budget = max_tokens if max_tokens is not None else model.token_budget(T)
    k = max(1, min(len(comps), budget // max(1, B * T)))
    order = sorted(comps, key=_first_block)
    chunks = [order[s:s + k] for s in range(0, len(order), k)]
    skips = {_first_block(ch[0]) for ch in chunks} - {0}
    with block_outputs(model, [n - 1 for n in skips]) as prefix, torch.no_grad():
        base = float(metric(model.hf(input_ids=ids, use_cache=False).logits, batch))
    out: dict[Component, float] = {}
    for chunk in chunks:
        edits = [_edit(model, c, fn_of(c), z=True, rows=slice(i * B, (i + 1) * B), mask=mask)
                 for i, c in enumerate(chunk)]
        n = _first_block(chunk[0])
        stacked = repeat_output(prefix[n - 1], len(chunk)) if n > 0 else None
        skip = skip_blocks(model, n, stacked) if stacked is not None else nullcontext()
        with hooked(model, edits=edits), skip, torch.no_grad():
            logits = model.hf(input_ids=ids.repeat(len(chunk), 1), use_cache=False).logits
        for i, c in enumerate(chunk):
            out[c] = float(metric(logits[i * B:(i + 1) * B], batch))
    return base, {c: out[c] for c in comps}


def _first_block(c: Component) -> int:
    """The first block whose computation an edit on ``c`` changes (the blocks before it can be skipped)."""
    return 0 if c.kind is Kind.EMB else c.layer


def patching_sweep(model: Model, batch: TaskBatch, metric: str | Metric = "logit_diff", components=None,
                   positions: Positions = None, direction: Direction = "clean_to_corrupt",
                   max_tokens: int | None = None) -> dict[Component, float]:
    """Exact effect of patching each component alone: ``metric(patched) - metric(target)``.

    Batched: the target prompts are repeated ``k`` times along the batch and chunk ``i`` has component
    ``i`` patched, so one forward covers ``k`` variants (``k * B * T <= max_tokens``); components go in
    layer order, and a forward whose edits all sit in block ``n`` or later does not run blocks ``0..n-1``
    (their outputs are the unpatched target run's, recorded once). Equals a loop of single :func:`patch`
    calls (tested). Components default to every head. ``max_tokens`` defaults to
    :meth:`Model.token_budget`: 2048 on the CPU, the sweet spot there (per-variant cost rises again for very
    large stacked batches, and the logits alone are ``k * B * T * vocab`` floats), else sized to the
    accelerator's free memory.
    """
    metric = get_metric(metric)
    src, tgt = _pair(model, batch, direction)
    comps = _comps(model, components)
    mask = position_mask(positions, batch, model.device)
    _, store = _capture(model, src, comps, early_stop=True)
    const = lambda c: (lambda v: (lambda cur: v))(_take(model, store, c))  # noqa: E731
    base, out = _stacked(model, tgt, batch, metric, comps, const, mask, max_tokens)
    return {c: v - base for c, v in out.items()}


def ablation_sweep(model: Model, batch: TaskBatch, metric: str | Metric = "logit_diff", components=None,
                   method: str = "zero", max_tokens: int | None = None) -> dict[Component, float]:
    """Exact effect of ablating each component alone on the clean prompts: ``metric(clean) - metric(ablated)``.

    Batched like :func:`patching_sweep` (equals a loop of single :func:`ablate` calls; tested); ``method``
    ``zero`` or ``mean`` (each component's mean output over the batch, per position).

    >>> import torch
    >>> from tools.tiny import tiny_config
    >>> from transformers import AutoModelForCausalLM
    >>> m = Model.from_hf(AutoModelForCausalLM.from_config(tiny_config("gpt2")))
    >>> b = TaskBatch(clean_ids=torch.tensor([[5, 6, 7]]), corrupt_ids=torch.tensor([[5, 9, 7]]),
    ...               answer_ids=torch.tensor([10]), wrong_ids=torch.tensor([11]))
    >>> eff = ablation_sweep(m, b, "logit_diff", components=["L0H1", "MLP1"])
    >>> one = float(get_metric("logit_diff")(m(b.clean_ids), b) - get_metric("logit_diff")(ablate(m, b, ["MLP1"], "zero"), b))
    >>> abs(eff[Component.parse("MLP1")] - one) < 1e-5
    True
    """
    metric = get_metric(metric)
    ids = _ids(batch, model)
    comps = _comps(model, components)
    fns = _reference_values(model, comps, method, ids, None, 0)
    base, out = _stacked(model, ids, batch, metric, comps, fns.__getitem__, None, max_tokens)
    return {c: base - v for c, v in out.items()}


def _act_grads(model: Model, ids: torch.Tensor, batch: TaskBatch, metric: Metric, comps: list[Component]
               ) -> tuple[dict, dict]:
    """One forward of ``ids`` capturing ``comps``' sites and one backward of ``metric``: (activations, their
    gradients; None where the metric does not depend on a site)."""
    # Make the graph start at the embedding output, so only activation gradients are computed.
    leaf = Edit("emb", -1, lambda x: x.detach().requires_grad_(True))
    logits, store = _capture(model, ids, comps, edits=[leaf], grad=True)
    keys = list(store)
    grads = torch.autograd.grad(metric(logits, batch), [store[k] for k in keys], allow_unused=True)
    return store, dict(zip(keys, grads, strict=True))


def _slice(model: Model, c: Component) -> slice:
    """A head's slice of its site's last dimension (every feature for other components)."""
    return slice(c.head * model.d_head, (c.head + 1) * model.d_head) if c.kind is Kind.HEAD else slice(None)


def attribution_patching(model: Model, batch: TaskBatch, metric: str | Metric = "logit_diff", components=None,
                         positions: Positions = None, direction: Direction = "clean_to_corrupt",
                         ) -> dict[Component, float]:
    """First-order estimate of :func:`patching_sweep`: ``(source - target activation) · d metric / d act``.

    Two forwards (source, target) and one backward, for all components at once. Exact where the metric
    is linear in the component (tested on a model with the final norm removed and the last MLP zeroed).

    >>> import torch
    >>> from tools.tiny import tiny_config
    >>> from transformers import AutoModelForCausalLM
    >>> m = Model.from_hf(AutoModelForCausalLM.from_config(tiny_config("gpt2")))
    >>> b = TaskBatch(clean_ids=torch.tensor([[5, 6, 7]]), corrupt_ids=torch.tensor([[5, 9, 7]]),
    ...               answer_ids=torch.tensor([10]), wrong_ids=torch.tensor([11]))
    >>> est = attribution_patching(m, b, "logit_diff", components="heads")
    >>> len(est), est[Component.parse("L0H0")] == 0.0
    (8, False)
    """
    metric = get_metric(metric)
    src, tgt = _pair(model, batch, direction)
    comps = _comps(model, components)
    mask = position_mask(positions, batch, model.device)
    _, src_store = _capture(model, src, comps, early_stop=True)
    tgt_store, grad_of = _act_grads(model, tgt, batch, metric, comps)
    out: dict[Component, float] = {}
    for c in comps:
        g = grad_of[_site(c)]
        if g is None:
            out[c] = 0.0
            continue
        sl = _slice(model, c)
        delta = _take(model, src_store, c) - tgt_store[_site(c)][..., sl].detach()
        prod = (delta * g[..., sl]).sum(-1)
        if mask is not None:
            prod = prod * mask
        out[c] = float(prod.sum())
    return out


def attribution_ablation(model: Model, batch: TaskBatch, metric: str | Metric = "logit_diff", components=None
                         ) -> dict[Component, float]:
    """First-order estimate of :func:`ablation_sweep` (zero): ``metric(clean) - metric(zeroed) ≈ act · d metric / d act``.

    One forward and one backward on the clean prompts, for all components at once. Exact where the metric is
    linear in the component.

    >>> import torch
    >>> from tools.tiny import tiny_config
    >>> from transformers import AutoModelForCausalLM
    >>> m = Model.from_hf(AutoModelForCausalLM.from_config(tiny_config("gpt2")))
    >>> b = TaskBatch(clean_ids=torch.tensor([[5, 6, 7]]), corrupt_ids=torch.tensor([[5, 9, 7]]),
    ...               answer_ids=torch.tensor([10]), wrong_ids=torch.tensor([11]))
    >>> len(attribution_ablation(m, b, "logit_diff", components="heads"))
    8
    """
    metric = get_metric(metric)
    ids = _ids(batch, model)
    comps = _comps(model, components)
    store, grad_of = _act_grads(model, ids, batch, metric, comps)
    out: dict[Component, float] = {}
    for c in comps:
        g = grad_of[_site(c)]
        sl = _slice(model, c)
        out[c] = 0.0 if g is None else float((store[_site(c)][..., sl].detach() * g[..., sl]).sum())
    return out


def path_patch(model: Model, batch: TaskBatch, sender: str | Component, receivers,
               receiver_input: Literal["q", "k", "v", "resid"] = "resid", positions: Positions = None,
               freeze_mlps: bool = False) -> torch.Tensor:
    """Path patching (Wang et al. 2022, IOI): the effect of ``sender`` only through ``receivers``' inputs.

    1. Run clean and corrupt, caching every head's output. 2. Run clean with the sender's output from
    the corrupt run (at ``positions``) and every other head frozen at its clean output (MLPs too with
    ``freeze_mlps``; the paper lets MLPs recompute); record the receivers' inputs. 3. Run clean with
    only the receivers' inputs replaced by those records; return its logits ``[B,T,V]``.

    Receivers: heads (``receiver_input`` ``q``/``k``/``v`` patches that head's query/key/value; ``resid``
    all three), ``ATTN{l}`` (every head of the layer), ``MLP{l}`` (its input; ``resid`` only),
    ``resid_pre{l}``/``resid_post{l}`` (the residual stream itself; ``resid`` only). In grouped-query
    models a key/value is shared by a KV group: patching k/v needs the whole group among the receivers.

    >>> import torch
    >>> from tools.tiny import tiny_config
    >>> from transformers import AutoModelForCausalLM
    >>> m = Model.from_hf(AutoModelForCausalLM.from_config(tiny_config("gpt2")))
    >>> b = TaskBatch(clean_ids=torch.tensor([[5, 6, 7]]), corrupt_ids=torch.tensor([[5, 9, 7]]))
    >>> path_patch(m, b, "L0H1", ["L1H0", "L1H3"], receiver_input="k").shape
    torch.Size([1, 3, 64])
    """
    clean, corrupt = _pair(model, batch, "clean_to_corrupt")
    sender = model.check(sender)
    if sender.kind in (Kind.RESID_PRE, Kind.RESID_POST):
        raise ComponentError(f"sender {sender} is a residual-stream site, not a component that writes to it",
                             fix="use a head, ATTN{l}, MLP{l} or EMB as the sender")
    if receiver_input not in ("q", "k", "v", "resid"):
        raise InterventionError(f"unknown receiver_input {receiver_input!r}", fix="use q, k, v or resid")
    recv = _comps(model, receivers)
    mask = position_mask(positions, batch, model.device)

    # receiver input sites: (site, layer, cols or None)
    sites: list[tuple[str, int, slice | None]] = []
    for r in recv:
        if r.kind in (Kind.HEAD, Kind.ATTN):
            heads = [r.head] if r.kind is Kind.HEAD else list(range(model.n_heads))
            for h in heads:
                for which in ("qkv" if receiver_input == "resid" else receiver_input):
                    site, cols = model.qkv_site(which, h)
                    sites.append((site, r.layer, cols))
        elif receiver_input != "resid":
            raise InterventionError(f"receiver {r} has no {receiver_input!r} input",
                                    fix="use receiver_input='resid' for MLP and residual-stream receivers")
        elif r.kind is Kind.MLP:
            sites.append(("mlp_in", r.layer, None))
        elif r.kind in (Kind.RESID_PRE, Kind.RESID_POST):
            sites.append((r.kind.value, r.layer, None))
        else:
            raise ComponentError(f"{r} cannot be a receiver", fix="use heads, ATTN{l}, MLP{l}, resid_pre/post{l}")
    if model.n_kv_heads != model.n_heads and receiver_input in ("k", "v", "resid"):
        rep = model.n_heads // model.n_kv_heads
        chosen = {(r.layer, h) for r in recv if r.kind in (Kind.HEAD, Kind.ATTN)
                  for h in ([r.head] if r.kind is Kind.HEAD else range(model.n_heads))}
        for layer, h in chosen:
            group = {(layer, g) for g in range(h // rep * rep, (h // rep + 1) * rep)}
            if not group <= chosen:
                raise InterventionError(
                    f"L{layer}H{h} shares its key/value with heads {sorted(g for _, g in group)} (grouped-query)",
                    fix="add the whole KV group to the receivers, or use receiver_input='q'")
    sites = list({(s, layer, None if c is None else (c.start, c.stop)): (s, layer, c)
                  for s, layer, c in sites}.values())

    heads = model.components("heads")
    mlps = model.components("mlps") if freeze_mlps else []
    _, clean_store = _capture(model, clean, heads + mlps)
    _, corrupt_store = _capture(model, corrupt, [sender], early_stop=True)
    const = lambda v: (lambda cur: v)  # noqa: E731
    frozen = [c for c in heads if not (c == sender or (sender.kind is Kind.ATTN and c.layer == sender.layer))]
    edits = [_edit(model, c, const(_take(model, clean_store, c)), z=True) for c in frozen + mlps]
    edits.append(_edit(model, sender, const(_take(model, corrupt_store, sender)), z=True, mask=mask))
    store: dict = {}
    caps = [Capture(s, layer, store) for s, layer in {(s, layer) for s, layer, _ in sites}]
    with hooked(model, edits=edits, captures=caps), torch.no_grad():
        model.hf(input_ids=clean, use_cache=False)
    final = []
    for s, layer, cols in sites:
        v = store[(s, layer)]
        final.append(Edit(s, layer, const(v if cols is None else v[..., cols]), cols=cols))
    with hooked(model, edits=final), torch.no_grad():
        return model.hf(input_ids=clean, use_cache=False).logits
