"""The one place that touches PyTorch hooks: edits and captures at internal sites, always unhooked.

Hooks are global state on the HF modules: a hook left behind silently changes every later forward.
:func:`hooked` registers one pre/forward hook per site and removes them all in ``finally``, so an
exception inside the forward (or the caller) never leaves one behind.

Internal sites (per layer ``l``; not user-facing names — users speak :class:`~tools.components.Component`):

============  ========================================================  =========================
site          tensor                                                    module / phase
============  ========================================================  =========================
``emb``       embedding output ``[B,T,d]``                              adapter.emb / forward
``resid_pre`` block input ``[B,T,d]``                                   block / pre
``resid_post`` block output ``[B,T,d]``                                 block / forward
``z``         input to the attention output projection ``[B,T,H*dh]``   o_proj / pre
``attn_out``  attention output incl. bias ``[B,T,d]`` (sees ``z``)      o_proj / forward
``mlp_in``    MLP input ``[B,T,d]``                                     mlp / pre
``mlp_out``   MLP output ``[B,T,d]``                                    mlp / forward
``pattern``   attention weights ``[B,H,T,T]`` (capture only)            attention / forward
``qkv``/``q``/``k``/``v``  query/key/value projection outputs           qkv modules / forward
============  ========================================================  =========================

>>> import torch
>>> from tools.tiny import tiny_config
>>> from transformers import AutoModelForCausalLM
>>> from tools.model import Model
>>> m = Model.from_hf(AutoModelForCausalLM.from_config(tiny_config("gpt2")))
>>> ids = torch.tensor([[5, 6, 7]])
>>> store = {}
>>> with hooked(m, edits=[Edit("mlp_out", 0, fn=torch.zeros_like)], captures=[Capture("mlp_out", 0, store)]):
...     _ = m(ids)
>>> float(store[("mlp_out", 0)].abs().sum())
0.0
>>> sum(len(mod._forward_hooks) for mod in m.hf.modules())  # all gone afterwards
0
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from tools.model import Model

PRE_SITES = {"resid_pre", "z", "mlp_in"}


@dataclass
class Edit:
    """Change the tensor at ``(site, layer)``: ``x[rows, :, cols] = fn(x[rows, :, cols])`` where ``mask``.

    ``rows`` picks a chunk of the (possibly stacked) batch; ``mask`` is ``[len(rows), T]`` bool (None:
    every position). With ``head_w`` (``[d_head, d_model]``) at site ``attn_out``, the edit is in a head's
    residual-space output: ``fn`` maps ``z[..., cols] @ head_w`` and the difference is added to the
    attention output.
    """

    site: str
    layer: int
    fn: Callable[[torch.Tensor], torch.Tensor]
    cols: slice | None = None
    rows: slice | None = None
    mask: torch.Tensor | None = None
    head_w: torch.Tensor | None = None


@dataclass
class Capture:
    """Store the tensor at ``(site, layer)`` (after edits there) into ``store[key or (site, layer)]``.

    ``retain_grad`` keeps it in the autograd graph and retains its ``.grad`` (for attribution).
    """

    site: str
    layer: int
    store: dict
    key: object = None
    retain_grad: bool = False
    detach: bool = True
    extra: dict = field(default_factory=dict)


def _module_for(model: Model, site: str, layer: int):
    a = model.adapter
    if site == "emb":
        return model.module(a.emb)
    if site in ("resid_pre", "resid_post"):
        return model.block(layer)
    if site in ("z", "attn_out"):
        return model.module(a.o_proj, layer)
    if site in ("mlp_in", "mlp_out"):
        return model.module(a.mlp, layer)
    if site == "pattern":
        return model.module(a.attn, layer)
    if site == "qkv":
        return model.module(a.qkv[0], layer)
    if site in ("q", "k", "v"):
        return model.module(a.qkv["qkv".index(site)], layer)
    raise KeyError(site)


def _apply(x: torch.Tensor, edits: list[Edit], z: torch.Tensor | None = None) -> torch.Tensor:
    x = x.clone()
    for e in edits:
        r = e.rows if e.rows is not None else slice(None)
        if e.head_w is not None:
            old = z[r][..., e.cols] @ e.head_w
            delta = e.fn(old) - old
            if e.mask is not None:
                delta = torch.where(e.mask[..., None], delta, torch.zeros_like(delta))
            x[r] = x[r] + delta
            continue
        cur = x[r] if e.cols is None else x[r][..., e.cols]
        new = e.fn(cur)
        if new.shape != cur.shape:
            new = new.expand_as(cur)
        if e.mask is not None:
            new = torch.where(e.mask[..., None], new, cur)
        if e.cols is None:
            x[r] = new
        else:
            x[r, ..., e.cols] = new
    return x


def _store(c: Capture, t: torch.Tensor) -> None:
    key = c.key if c.key is not None else (c.site, c.layer)
    if c.retain_grad and t.requires_grad:
        t.retain_grad()
    c.store[key] = t.detach() if (c.detach and not c.retain_grad) else t


_ORDER = {"emb": 0, "resid_pre": 1, "qkv": 2, "q": 2, "k": 2, "v": 2, "z": 3, "attn_out": 4, "pattern": 5,
          "mlp_in": 6, "mlp_out": 7, "resid_post": 8}


def last_site(sites) -> tuple[str, int]:
    """The ``(site, layer)`` reached last in a forward pass (for stopping a capture-only run early).

    >>> last_site([("mlp_out", 0), ("z", 1), ("emb", -1)])
    ('z', 1)
    """
    return max(sites, key=lambda s: (s[1], _ORDER[s[0]]) if s[0] != "emb" else (-1, 0))


class StopForward(Exception):
    """Raised by a hook to end a forward early once everything needed has been captured."""


@contextmanager
def hooked(model: Model, edits: list[Edit] = (), captures: list[Capture] = (),
           stop_after: tuple[str, int] | None = None) -> Iterator[None]:
    """Register the hooks for ``edits`` and ``captures`` for the duration of the block; always unhook.

    With ``stop_after=(site, layer)`` the forward raises :class:`StopForward` right after that site's
    captures (catch it: the rest of the model is not run, so there are no logits).
    """
    by_site: dict[tuple[str, int], tuple[list[Edit], list[Capture]]] = defaultdict(lambda: ([], []))
    for e in edits:
        by_site[(e.site, e.layer)][0].append(e)
    for c in captures:
        by_site[(c.site, c.layer)][1].append(c)
    handles = []
    try:
        for (site, layer), (eds, caps) in by_site.items():
            mod = _module_for(model, site, layer)
            if site in PRE_SITES:
                handles.append(mod.register_forward_pre_hook(_pre_hook(eds, caps), with_kwargs=True))
            else:
                handles.append(mod.register_forward_hook(_fwd_hook(site, eds, caps), with_kwargs=True))
        if stop_after is not None:
            site, layer = stop_after
            mod = _module_for(model, site, layer)
            if site in PRE_SITES:
                handles.append(mod.register_forward_pre_hook(_raise_stop))
            else:
                handles.append(mod.register_forward_hook(_raise_stop))
        yield
    finally:
        for h in handles:
            h.remove()


def _raise_stop(*_args):
    raise StopForward


@contextmanager
def block_outputs(model: Model, layers: Iterable[int]) -> Iterator[dict[int, object]]:
    """Record what each block in ``layers`` returns, as returned (a tensor, or a tuple), for the block's duration.

    >>> import torch
    >>> from tools.tiny import tiny_config
    >>> from transformers import AutoModelForCausalLM
    >>> m = Model.from_hf(AutoModelForCausalLM.from_config(tiny_config("gpt2")))
    >>> with block_outputs(m, [0]) as outs:
    ...     _ = m(torch.tensor([[5, 6, 7]]))
    >>> sorted(outs), sum(len(mod._forward_hooks) for mod in m.hf.modules())
    ([0], 0)
    """
    outs: dict[int, object] = {}
    handles = []
    try:
        for layer in set(layers):
            handles.append(model.block(layer).register_forward_hook(
                lambda _m, _a, out, layer=layer: outs.__setitem__(layer, out)))
        yield outs
    finally:
        for h in handles:
            h.remove()


def repeat_output(out: object, k: int) -> object | None:
    """A block's recorded output stacked ``k`` times along the batch (None: a form we do not know)."""
    if isinstance(out, torch.Tensor):
        return out.repeat(k, *([1] * (out.dim() - 1)))
    if isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor) and all(o is None for o in out[1:]):
        return (repeat_output(out[0], k), *out[1:])
    return None


@contextmanager
def skip_blocks(model: Model, n: int, output: object) -> Iterator[None]:
    """Blocks ``0 .. n-1`` do not run: each returns ``output`` instead (their own ``forward`` comes back after).

    Only for when ``output`` is exactly what block ``n-1`` would return on this forward (e.g. its recorded
    output on the same prompts, stacked along the batch) and nothing is edited before block ``n``: then
    the blocks from ``n`` on see the input they would have computed, and the forward skips ``n`` blocks.

    >>> import torch
    >>> from tools.tiny import tiny_config
    >>> from transformers import AutoModelForCausalLM
    >>> m = Model.from_hf(AutoModelForCausalLM.from_config(tiny_config("gpt2")))
    >>> ids = torch.tensor([[5, 6, 7]])
    >>> with block_outputs(m, [0]) as outs:
    ...     full = m(ids)
    >>> with skip_blocks(m, 1, outs[0]):
    ...     skipped = m(ids)
    >>> torch.equal(full, skipped), "forward" in m.block(0).__dict__
    (True, False)
    """
    saved = []
    try:
        for i in range(n):
            blk = model.block(i)
            saved.append((blk, blk.__dict__.get("forward")))
            blk.forward = lambda *_args, **_kwargs: output
        yield
    finally:
        for blk, own in saved:
            if own is None:
                del blk.forward
            else:
                blk.forward = own


def _pre_hook(eds: list[Edit], caps: list[Capture]):
    def hook(module, args, kwargs):
        x = args[0] if args else kwargs["hidden_states"]
        if eds:
            x = _apply(x, eds)
        for c in caps:
            _store(c, x)
        if not eds:
            return None
        if args:
            return (x, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": x}

    return hook


def _fwd_hook(site: str, eds: list[Edit], caps: list[Capture]):
    def hook(module, args, kwargs, output):
        is_tuple = isinstance(output, tuple)
        if site == "pattern":
            for c in caps:
                _store(c, output[1])
            return None
        x = output[0] if is_tuple else output
        if eds:
            z = (args[0] if args else kwargs.get("input")) if site == "attn_out" else None
            x = _apply(x, eds, z)
        for c in caps:
            _store(c, x)
        if not eds:
            return None
        return (x, *output[1:]) if is_tuple else x

    return hook
