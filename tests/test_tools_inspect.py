"""Attention patterns, summaries, logit lens, direct logit attribution and head scores."""

from __future__ import annotations

import pytest
import torch

from tools import (
    Component,
    TaskBatch,
    attention_patterns,
    attention_summary,
    direct_logit_attribution,
    head_scores,
    logit_diff,
    logit_lens,
)
from tools.model import Model
from tools.tiny import TINY_ARCHS

ARCHS = TINY_ARCHS  # the `models` / `model` fixtures live in conftest.py


@pytest.fixture(scope="module")
def batch() -> TaskBatch:
    g = torch.Generator().manual_seed(1)
    B, T = 5, 7
    return TaskBatch(clean_ids=torch.randint(4, 64, (B, T), generator=g),
                     corrupt_ids=torch.randint(4, 64, (B, T), generator=g),
                     answer_ids=torch.randint(4, 64, (B,), generator=g), wrong_ids=torch.randint(4, 64, (B,), generator=g),
                     positions={"S1": torch.full((B,), 1), "S2": torch.tensor([3, 4, 3, 4, 3]),
                                "END": torch.full((B,), T - 1)})


def test_patterns_match_hf_output_attentions(model: Model, batch: TaskBatch) -> None:
    pats = attention_patterns(model, batch, "L1H2,L0H0")
    with torch.no_grad():
        ref = model.hf(input_ids=batch.clean_ids, output_attentions=True).attentions
    torch.testing.assert_close(pats[Component.parse("L1H2")], ref[1][:, 2], atol=1e-6, rtol=0)
    torch.testing.assert_close(pats[Component.parse("L0H0")], ref[0][:, 0], atol=1e-6, rtol=0)


def test_attention_summary_reads_the_pattern(model: Model, batch: TaskBatch) -> None:
    s = attention_summary(model, batch, "L1H1")
    pat = attention_patterns(model, batch, ["L1H1"])[Component.parse("L1H1")]
    rows = torch.arange(batch.size)
    assert s.roles["S2"] == pytest.approx(float(pat[rows, 6, batch.positions["S2"]].mean()), abs=1e-6)
    assert s.previous == pytest.approx(float(pat[:, 6, 5].mean()), abs=1e-6)
    assert s.first == pytest.approx(float(pat[:, 6, 0].mean()), abs=1e-6)
    assert s.self_ == pytest.approx(float(pat[:, 6, 6].mean()), abs=1e-6)
    assert "END" not in s.roles and s.top_role in s.roles


def test_logit_lens_last_layer_is_the_logits(model: Model, batch: TaskBatch) -> None:
    lens = logit_lens(model, batch, position="S2")
    logits = model(batch.clean_ids)
    torch.testing.assert_close(lens[-1], logits[torch.arange(batch.size), batch.positions["S2"]], atol=1e-5, rtol=0)
    assert not torch.allclose(lens[0], lens[-1], atol=1e-4)


def test_dla_sums_to_logit_diff(model: Model, batch: TaskBatch) -> None:
    comps = [Component.emb()] + model.components("attn") + model.components("mlps")
    dla = direct_logit_attribution(model, batch, comps)
    norm = model.module(model.adapter.final_norm)
    beta = getattr(norm, "bias", None)
    W_U = model.W_U.detach()
    d = W_U[batch.answer_ids] - W_U[batch.wrong_ids]
    const = float((beta.detach() * d).sum(-1).mean()) if beta is not None else 0.0
    assert sum(dla.values()) + const == pytest.approx(float(logit_diff(model(batch.clean_ids), batch)), abs=1e-4)
    # heads + the output bias's share == ATTN
    heads = direct_logit_attribution(model, batch, [c for c in model.components("heads") if c.layer == 1])
    bias_dir = direct_logit_attribution(model, batch, ["ATTN1"])[Component.parse("ATTN1")] - sum(heads.values())
    b = model.b_O(1).detach()
    rows = torch.arange(batch.size)
    from tools.inspection import _final_norm_linear
    from tools.interventions import run_with_cache
    _, cache = run_with_cache(model, batch.clean_ids, ["resid_post1"])
    f, _ = _final_norm_linear(model, cache[Component.parse("resid_post1")][rows, batch.end])
    assert bias_dir == pytest.approx(float((f(b.expand(batch.size, -1)) * d).sum(-1).mean()), abs=1e-5)


def test_dla_onto_a_direction(model: Model, batch: TaskBatch) -> None:
    v = torch.zeros(model.d_model)
    assert all(x == 0 for x in direct_logit_attribution(model, batch, ["MLP0"], direction=v).values())


def test_head_scores_ranges_and_offsets(model: Model) -> None:
    scores = head_scores(model, ["L0H0", "L1H3"], n_seqs=4)
    for s in scores.values():
        for v in (s.copying, s.prev_token, s.induction, s.duplicate_token, s.induction_textbook):
            assert 0.0 <= v <= 1.0
        assert s.induction >= s.induction_textbook and s.induction_offset in (1, 2, 3, 4)


def test_prev_token_head_is_found(models: dict[str, Model]) -> None:
    """A GPT-2 whose layer-0 head 1 is forced (through its position-embedding QK) to attend to t-1."""
    m = models["gpt2"].copy()
    D, dh = m.d_model, m.d_head
    with torch.no_grad():
        T = 64
        # orthonormal-ish position embeddings: query for position t aligns with key for t-1
        P = torch.linalg.qr(torch.randn(D, D))[0][:, :T // 2].T  # not enough dims for 64 positions; use cyclic
        pos = torch.zeros(m.hf.transformer.wpe.weight.shape)
        for t in range(pos.shape[0]):
            pos[t] = P[t % (T // 2)] * 40
        m.hf.transformer.wpe.weight.copy_(pos)
        m.hf.transformer.wte.weight.mul_(0.01)
        w = m.hf.transformer.h[0].attn.c_attn.weight  # [D, 3D]
        w[:, 1 * dh:2 * dh] = 0
        w[:, D + 1 * dh:D + 2 * dh] = 0
        # q = shift(P_t) ~ P_{t-1}: realise with a map sending P_t -> P_{t-1} inside head 1's dims
        Q = torch.zeros(D, dh)
        K = torch.zeros(D, dh)
        for t in range(dh):
            K[:, t] = P[t]
            Q[:, t] = P[(t + 1) % (T // 2)]
        w[:, 1 * dh:2 * dh] = Q
        w[:, D + 1 * dh:D + 2 * dh] = K
        m.hf.transformer.h[0].ln_1.weight.fill_(1.0)
        m.hf.transformer.h[0].ln_1.bias.zero_()
        m.hf.transformer.h[0].attn.c_attn.bias.zero_()
    m._fingerprint = None
    s = head_scores(m, ["L0H1", "L0H0"], seq_len=6, n_seqs=4)
    assert s[Component.parse("L0H1")].prev_token > 0.5 > s[Component.parse("L0H0")].prev_token
