"""Looking at a model: attention patterns and summaries, logit lens, direct logit attribution, head scores.

>>> import torch
>>> from tools.tiny import tiny_config
>>> from transformers import AutoModelForCausalLM
>>> from tools.model import Model
>>> m = Model.from_hf(AutoModelForCausalLM.from_config(tiny_config("gpt2")))
>>> pats = attention_patterns(m, torch.tensor([[5, 6, 7, 8]]), ["L1H2"])
>>> pats[Component.parse("L1H2")].shape, float(pats[Component.parse("L1H2")].sum(-1).mean())
(torch.Size([1, 4, 4]), 1.0)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from tools.batch import TaskBatch
from tools.components import Component, Kind
from tools.errors import ComponentError, InterventionError
from tools.hooks import Capture, hooked
from tools.interventions import _ids, run_with_cache
from tools.model import Model


def _heads(model: Model, heads) -> list[Component]:
    if heads is None:
        return model.components("heads")
    if isinstance(heads, str | Component):
        heads = [h for h in str(heads).split(",") if h.strip()]
    out = [model.check(h) for h in heads]
    for c in out:
        if c.kind is not Kind.HEAD:
            raise ComponentError(f"{c} is not an attention head", fix="use L{layer}H{head} names")
    return out


def attention_patterns(model: Model, ids: torch.Tensor | TaskBatch, heads=None) -> dict[Component, torch.Tensor]:
    """Attention weights ``[B, T_query, T_key]`` of each head (rows sum to 1), from one forward."""
    ids = _ids(ids, model)
    heads = _heads(model, heads)
    store: dict = {}
    caps = [Capture("pattern", layer, store) for layer in sorted({h.layer for h in heads})]
    with hooked(model, captures=caps), torch.no_grad():
        model.hf(input_ids=ids, use_cache=False)
    return {h: store[("pattern", h.layer)][:, h.head] for h in heads}


class AttentionSummary(BaseModel):
    """Where a head attends from one query position, averaged over the batch (fractions of attention).

    Buckets may overlap (a role can also be the previous token); ``roles`` excludes the query's own role.
    """

    model_config = ConfigDict(frozen=True, validate_by_name=True, validate_by_alias=True)
    head: str
    query: str = Field(description="the query position: a role name or an integer index")
    roles: dict[str, float] = Field(description="attention to each named role's position")
    previous: float = Field(description="attention to the token just before the query")
    first: float = Field(description="attention to position 0 (BOS / first token)")
    self_: float = Field(alias="self", description="attention to the query position itself")

    @property
    def top_role(self) -> str | None:
        """The role receiving the most attention (None when the batch has no roles)."""
        return max(self.roles, key=self.roles.get) if self.roles else None


def attention_summary(model: Model, batch: TaskBatch, head: str | Component, query: str | int = "END"
                      ) -> AttentionSummary:
    """Summarise where ``head`` attends from ``query`` (default ``END``) in task terms.

    >>> import torch
    >>> from tools.tiny import tiny_config
    >>> from transformers import AutoModelForCausalLM
    >>> m = Model.from_hf(AutoModelForCausalLM.from_config(tiny_config("gpt2")))
    >>> b = TaskBatch(clean_ids=torch.tensor([[5, 6, 7, 8]]), positions={"S1": torch.tensor([1])})
    >>> s = attention_summary(m, b, "L0H0", query=-1)
    >>> sorted(s.roles), 0 <= s.first <= 1
    (['S1'], True)
    """
    h = _heads(model, [head])[0]
    pat = attention_patterns(model, batch, [h])[h]  # [B, T, T]
    B = pat.shape[0]
    rows = torch.arange(B, device=pat.device)
    q = (batch.end if query == "END" else batch.position(query)).to(pat.device)
    at_q = pat[rows, q]  # [B, T]
    take = lambda idx: float(at_q[rows, idx.to(pat.device)].mean())  # noqa: E731
    roles = {r: take(p) for r, p in batch.positions.items() if r != query}
    prev = float(at_q[rows, (q - 1).clamp(min=0)][q > 0].mean()) if bool((q > 0).any()) else 0.0
    return AttentionSummary(head=str(h), query=str(query), roles=roles, previous=prev,
                            first=float(at_q[:, 0].mean()), self=take(q))


def _final_norm_linear(model: Model, resid: torch.Tensor):
    """The final norm as a linear map with its scale frozen from ``resid`` ``[..., d]``: returns
    ``(f, beta)`` with ``norm(resid) == f(resid) + beta`` and ``f`` linear (applied to any summand)."""
    norm = model.module(model.adapter.final_norm)
    gamma = norm.weight.detach() if getattr(norm, "weight", None) is not None else 1.0
    if isinstance(norm, nn.LayerNorm):
        sigma = (resid.var(-1, unbiased=False, keepdim=True) + norm.eps).sqrt()
        beta = norm.bias.detach() if norm.bias is not None else torch.zeros_like(resid[..., 0, None])
        return (lambda c: (c - c.mean(-1, keepdim=True)) / sigma * gamma), beta
    if isinstance(norm, nn.Identity):
        return (lambda c: c), torch.zeros(resid.shape[-1], dtype=resid.dtype, device=resid.device)
    eps = getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", 1e-6)
    rms = (resid.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    return (lambda c: c / rms * gamma), torch.zeros(resid.shape[-1], dtype=resid.dtype, device=resid.device)


def logit_lens(model: Model, ids: torch.Tensor | TaskBatch, position: int | str = -1) -> torch.Tensor:
    """Logits ``[n_layers, B, V]`` read from each ``resid_post{l}`` at ``position`` through the final
    norm and unembedding (the last layer's row equals the model's logits there).

    >>> import torch
    >>> from tools.tiny import tiny_config
    >>> from transformers import AutoModelForCausalLM
    >>> m = Model.from_hf(AutoModelForCausalLM.from_config(tiny_config("llama")))
    >>> ids = torch.tensor([[5, 6, 7]])
    >>> lens = logit_lens(m, ids)
    >>> lens.shape, torch.allclose(lens[-1], m(ids)[:, -1], atol=1e-5)
    (torch.Size([2, 1, 64]), True)
    """
    batch = ids if isinstance(ids, TaskBatch) else None
    ids = _ids(ids, model)
    B, T = ids.shape
    pos = (batch.position(position) if batch is not None else
           torch.full((B,), position if position >= 0 else T + position, dtype=torch.long)).to(model.device)
    _, cache = run_with_cache(model, ids, model.components("resid_post"))
    norm = model.module(model.adapter.final_norm)
    head = model.hf.get_output_embeddings()
    rows = torch.arange(B, device=model.device)
    with torch.no_grad():
        return torch.stack([head(norm(cache[Component.resid_post(layer)][rows, pos]))
                            for layer in range(model.n_layers)])


def direct_logit_attribution(model: Model, batch: TaskBatch, components=None,
                             direction: torch.Tensor | None = None) -> dict[Component, float]:
    """Each component's direct contribution to the logits at ``batch.end``, onto ``direction``.

    ``direction`` defaults to ``W_U[answer] - W_U[wrong]`` per prompt (so contributions are in logit-
    difference units); or give a ``[d_model]`` / ``[B, d_model]`` residual direction. The final norm is
    linearised with its scale frozen from the clean run (LayerNorm: centre, divide by the clean σ,
    times γ; RMSNorm: divide by the clean rms, times γ): contributions of EMB, every ATTN and MLP and
    the norm's bias then sum exactly to the metric (tested). Returns mean over the batch.

    >>> import torch
    >>> from tools.tiny import tiny_config
    >>> from transformers import AutoModelForCausalLM
    >>> m = Model.from_hf(AutoModelForCausalLM.from_config(tiny_config("llama")))
    >>> b = TaskBatch(clean_ids=torch.tensor([[5, 6, 7]]), answer_ids=torch.tensor([10]),
    ...               wrong_ids=torch.tensor([11]))
    >>> sorted(str(c) for c in direct_logit_attribution(m, b, ["MLP1", "L1H0", "EMB"]))
    ['EMB', 'L1H0', 'MLP1']
    """
    ids = _ids(batch, model)
    comps = model.components("writers") if components is None else [model.check(c) for c in components]
    last = Component.resid_post(model.n_layers - 1)
    _, cache = run_with_cache(model, ids, list(dict.fromkeys([*comps, last])))
    B = ids.shape[0]
    rows = torch.arange(B, device=model.device)
    end = batch.end.to(model.device)
    if direction is None:
        if batch.answer_ids is None or batch.wrong_ids is None:
            raise InterventionError("direct logit attribution needs answer_ids and wrong_ids, or a direction",
                                    fix="build the batch with answers, or pass direction=")
        W_U = model.W_U.detach()
        direction = W_U[batch.answer_ids.to(model.device)] - W_U[batch.wrong_ids.to(model.device)]
    direction = direction.to(model.device, model.dtype)
    if not torch.isfinite(direction).all():
        raise InterventionError("direction contains NaN or inf", fix="check how the direction was computed")
    direction = direction.expand(B, model.d_model)
    f, _ = _final_norm_linear(model, cache[last][rows, end])
    return {c: float((f(cache[c][rows, end]) * direction).sum(-1).mean()) for c in comps}


class HeadScores(BaseModel):
    """Per-head scores. Attention scores are mean attention weights on repeated random sequences."""

    model_config = ConfigDict(frozen=True)
    copying: float = Field(description="fraction of tokens whose own logit is in the top 5 of the head's "
                                       "OV circuit W_E·norm·W_V·W_O·norm·W_U (1 = copies every token)")
    prev_token: float = Field(description="attention from each token to the one before it")
    induction: float = Field(description="attention from a repeated token to the key at the best offset "
                                         "(see induction_offset) in the sequence's first copy")
    induction_offset: int = Field(description="o in key = t - L + o that maximises induction (textbook: 1)")
    induction_textbook: float = Field(description="induction score at the textbook offset o = 1")
    duplicate_token: float = Field(description="attention from a repeated token to its first occurrence")


def _normalise(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return norm(x)


@dataclass
class RepeatedSequences:
    """The probe sequences of :func:`head_scores`: ``[BOS] r r`` with ``r`` random distinct tokens."""

    ids: torch.Tensor
    """``[n_seqs, prefix + 2 × length]`` token ids."""
    prefix: int
    """1 with a BOS token, else 0."""
    length: int
    """``L``: tokens in each half."""
    pool: torch.Tensor
    """The token ids drawn from (the vocabulary without special tokens)."""
    generator: torch.Generator
    """The seeded generator, after drawing ``ids`` (:func:`head_scores` draws its copying tokens next)."""


def repeated_sequences(model: Model, seq_len: int | None = None, n_seqs: int = 16, seed: int = 0
                       ) -> RepeatedSequences:
    """The ``[BOS] r r`` sequences :func:`head_scores` measures attention on (the same ones for the same seed).

    ``L`` = ``seq_len`` or ``max(4, min(20, (max positions − 1) // 2, usable vocabulary))``.
    """
    V = model.d_vocab
    specials = set()
    if model.tokenizer is not None:
        specials = {i for i in (model.tokenizer.all_special_ids or []) if i is not None}
    pool = torch.tensor([t for t in range(V) if t not in specials])
    g = torch.Generator().manual_seed(seed)
    max_pos = getattr(model.hf.config, "max_position_embeddings", None) or getattr(model.hf.config,
                                                                                    "n_positions", 64)
    L = seq_len or max(4, min(20, (max_pos - 1) // 2, len(pool)))
    r = torch.stack([pool[torch.randperm(len(pool), generator=g)[:L]] for _ in range(n_seqs)])
    bos = getattr(model.hf.config, "bos_token_id", None)
    prefix = torch.full((n_seqs, 1), bos, dtype=torch.long) if bos is not None and bos < V else \
        torch.empty((n_seqs, 0), dtype=torch.long)
    ids = torch.cat([prefix, r, r], 1).to(model.device)
    return RepeatedSequences(ids=ids, prefix=prefix.shape[1], length=L, pool=pool, generator=g)


def subdiagonal(pattern: torch.Tensor, k: int) -> float:
    """Mean attention from each position t to t − ``k`` (``pattern``: ``[B, T, T]``); k = 1 is the previous token."""
    return float(pattern.diagonal(-k, dim1=-2, dim2=-1).mean())


def head_scores(model: Model, heads=None, seq_len: int | None = None, n_seqs: int = 16, seed: int = 0,
                offsets: Iterable[int] = (1, 2, 3, 4), n_tokens: int = 512) -> dict[Component, HeadScores]:
    """Copying, previous-token, induction (scanning ``offsets``) and duplicate-token scores per head.

    Attention scores use ``n_seqs`` sequences ``[BOS] r r`` with ``r`` ``seq_len`` random distinct
    tokens (seeded). Trained induction heads can attend a few tokens past the textbook ``t - L + 1``
    (see FIELD-NOTES), so the best offset is reported. Copying uses up to ``n_tokens`` sampled tokens.

    >>> from tools.tiny import tiny_config
    >>> from transformers import AutoModelForCausalLM
    >>> m = Model.from_hf(AutoModelForCausalLM.from_config(tiny_config("neox")))
    >>> s = head_scores(m, ["L1H0"], n_seqs=2)[Component.parse("L1H0")]
    >>> 0 <= s.prev_token <= 1 and s.induction >= s.induction_textbook
    True
    """
    heads = _heads(model, heads)
    V = model.d_vocab
    rs = repeated_sequences(model, seq_len=seq_len, n_seqs=n_seqs, seed=seed)
    ids, p0, L, pool, g = rs.ids, rs.prefix, rs.length, rs.pool, rs.generator
    pats = attention_patterns(model, ids, heads)
    second = torch.arange(p0 + L, p0 + 2 * L)

    def at_offset(pat: torch.Tensor, o: int) -> float:
        i = torch.arange(L)
        ok = (i + o < L) & (i + o >= 0)
        q, k = second[ok], (second - L + o)[ok]
        return float(pat[:, q, k].mean())

    # copying: the OV circuit on sampled tokens, through the attention input norm and the final norm
    toks = pool[torch.randperm(len(pool), generator=g)[:n_tokens]].to(model.device)
    W_U = model.W_U.detach()
    out: dict[Component, HeadScores] = {}
    with torch.no_grad():
        for h in heads:
            pat = pats[h]
            prev = subdiagonal(pat, 1)
            scan = {o: at_offset(pat, o) for o in offsets}
            best = max(scan, key=scan.get)
            x = _normalise(model.module(model.adapter.ln_attn, h.layer), model.W_E.detach()[toks])
            ov = x @ model.W_V(h.layer)[h.head].detach() @ model.W_O(h.layer)[h.head].detach()
            logits = _normalise(model.module(model.adapter.final_norm), ov) @ W_U.T
            k = min(5, V)
            top = logits.topk(k, dim=-1).indices
            copying = float((top == toks[:, None]).any(-1).float().mean())
            out[h] = HeadScores(copying=copying, prev_token=prev, induction=scan[best], induction_offset=best,
                                induction_textbook=at_offset(pat, 1), duplicate_token=at_offset(pat, 0))
    return out
