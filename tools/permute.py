"""Function-preserving head permutations (for testing that analyses do not depend on head indices).

Within each layer the heads are reordered: the query/key/value weights and biases and the output
projection's rows/columns move together, so the permuted model computes exactly the same function
(rotary embeddings are the same for every head). For grouped-query models (Llama with fewer KV heads)
the permutation is *group-consistent*: the KV groups are permuted, and the query heads inside each
group are permuted among themselves, so every query head keeps its own key/value head.

>>> import torch
>>> from tools.tiny import tiny_config
>>> from transformers import AutoModelForCausalLM
>>> from tools.model import Model
>>> m = Model.from_hf(AutoModelForCausalLM.from_config(tiny_config("gpt2")))
>>> pm, mapping = permute_heads(m, seed=1)
>>> ids = torch.tensor([[5, 6, 7]])
>>> torch.allclose(pm(ids), m(ids), atol=1e-5)
True
>>> sorted(str(c) for c in map_components(mapping, ["L0H0", "MLP1"]))[1]
'MLP1'
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from tools.components import Component, Kind
from tools.model import Model


def _head_perm(model: Model, g: torch.Generator) -> list[int]:
    H, KV = model.n_heads, model.n_kv_heads
    if KV == H:
        return torch.randperm(H, generator=g).tolist()
    rep = H // KV
    gperm = torch.randperm(KV, generator=g).tolist()
    perm = []
    for gj in range(KV):
        inner = torch.randperm(rep, generator=g).tolist()
        perm += [gperm[gj] * rep + i for i in inner]
    return perm


def _blocks(perm: list[int], size: int) -> torch.Tensor:
    return torch.cat([torch.arange(p * size, (p + 1) * size) for p in perm])


def permute_heads(model: Model, seed: int = 0) -> tuple[Model, dict[Component, Component]]:
    """A permuted copy of ``model`` and ``mapping`` from each original head to its new name.

    New head ``j`` of layer ``l`` is old head ``perm_l[j]``; ``mapping[L{l}H{perm_l[j]}] == L{l}H{j}``.
    """
    g = torch.Generator().manual_seed(seed)
    new = model.copy()
    a = new.adapter
    H, dh, D = new.n_heads, new.d_head, new.d_model
    mapping: dict[Component, Component] = {}
    with torch.no_grad():
        for layer in range(new.n_layers):
            perm = _head_perm(new, g)
            for j, old in enumerate(perm):
                mapping[Component.attn_head(layer, old)] = Component.attn_head(layer, j)
            heads = _blocks(perm, dh)
            o = new.module(a.o_proj, layer)
            if a.qkv_layout == "gpt2":
                qkv = new.module(a.qkv[0], layer)
                cols = torch.cat([heads, D + heads, 2 * D + heads])
                qkv.weight.copy_(qkv.weight[:, cols])
                if qkv.bias is not None:
                    qkv.bias.copy_(qkv.bias[cols])
                o.weight.copy_(o.weight[heads, :])  # Conv1D [in, out]
            else:
                if a.qkv_layout == "neox":
                    pairs = [(new.module(a.qkv[0], layer), _blocks(perm, 3 * dh))]
                else:
                    rep = H // new.n_kv_heads
                    groups = [perm[j * rep] // rep for j in range(new.n_kv_heads)]
                    kv = _blocks(groups, dh)
                    pairs = [(new.module(a.qkv[0], layer), heads), (new.module(a.qkv[1], layer), kv),
                             (new.module(a.qkv[2], layer), kv)]
                for mod, rows in pairs:
                    mod.weight.copy_(mod.weight[rows])
                    if getattr(mod, "bias", None) is not None:
                        mod.bias.copy_(mod.bias[rows])
                o.weight.copy_(o.weight[:, heads])  # Linear [out, in]
    new._fingerprint = None
    return new, mapping


def map_components(mapping: dict[Component, Component], components: Iterable[str | Component]) -> list[Component]:
    """Rename heads through ``mapping`` (from :func:`permute_heads`); other components pass unchanged."""
    out = []
    for c in components:
        c = Component.parse(c)
        out.append(mapping.get(c, c) if c.kind is Kind.HEAD else c)
    return out
