"""Exact invariants of the intervention core on tiny GPT-2, GPT-NeoX and Llama models (float32)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tools import (
    Component,
    TaskBatch,
    ablate,
    ablation_sweep,
    attribution_ablation,
    attribution_patching,
    logit_diff,
    patch,
    patching_sweep,
    run_with_cache,
    run_with_interventions,
)
from tools.model import Model
from tools.tiny import TINY_ARCHS

ARCHS = TINY_ARCHS  # the `models` / `model` fixtures live in conftest.py


def make_batch(B: int = 4, T: int = 8, seed: int = 0) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(4, 64, (B, T), generator=g)
    corrupt = clean.clone()
    corrupt[:, 2] = torch.randint(4, 64, (B,), generator=g)
    corrupt[:, 5] = torch.randint(4, 64, (B,), generator=g)
    return TaskBatch(clean_ids=clean, corrupt_ids=corrupt, answer_ids=torch.randint(4, 64, (B,), generator=g),
                     wrong_ids=torch.randint(4, 64, (B,), generator=g),
                     positions={"S2": torch.full((B,), 5), "END": torch.full((B,), T - 1)})


@pytest.fixture(scope="module")
def batch() -> TaskBatch:
    return make_batch()


def test_arch_and_shapes(model: Model) -> None:
    assert model.arch in ARCHS and model.n_layers == 2 and model.n_heads == 4 and model.d_model == 64
    assert model.W_O(0).shape == (4, 16, 64)
    assert len(model.fingerprint()) == 64 and model.fingerprint() == model.fingerprint()


def test_patch_every_component_reproduces_clean(model: Model, batch: TaskBatch) -> None:
    clean, corrupt = model(batch.clean_ids), model(batch.corrupt_ids)
    assert (clean - corrupt).abs().max() > 1e-3  # the prompts differ, so the test can fail
    for kind in ("writers", "heads", "mlps", "attn", "resid_pre", "resid_post"):
        comps = model.components(kind)
        if kind in ("heads",):
            comps = comps + [Component.emb()] + model.components("mlps")
        if kind in ("mlps",):
            comps = comps + [Component.emb()] + model.components("attn")
        if kind in ("attn",):
            comps = comps + [Component.emb()] + model.components("mlps")
        if kind in ("resid_pre", "resid_post"):
            comps = comps[-1:]  # the last residual alone decides the logits
            kind_clean = patch(model, batch, comps)
            if kind == "resid_pre":  # only the last block recomputes: not clean in general
                continue
            torch.testing.assert_close(kind_clean, clean, atol=1e-4, rtol=0)
            continue
        torch.testing.assert_close(patch(model, batch, comps), clean, atol=1e-4, rtol=0)
    torch.testing.assert_close(patch(model, batch, ["resid_pre0"]), clean, atol=1e-4, rtol=0)
    torch.testing.assert_close(patch(model, batch, ["EMB"]), clean, atol=1e-4, rtol=0)


def test_patch_every_component_corrupt_to_clean(model: Model, batch: TaskBatch) -> None:
    out = patch(model, batch, model.components("writers"), direction="corrupt_to_clean")
    torch.testing.assert_close(out, model(batch.corrupt_ids), atol=1e-4, rtol=0)


def test_patching_nothing_changes_nothing(model: Model, batch: TaskBatch) -> None:
    assert torch.equal(patch(model, batch, []), model(batch.corrupt_ids))
    # patching at a position where clean == corrupt (position 0) changes nothing either
    torch.testing.assert_close(patch(model, batch, model.components("writers"), positions=0),
                               model(batch.corrupt_ids), atol=1e-5, rtol=0)


def test_patch_positions_only_change_later_tokens(model: Model, batch: TaskBatch) -> None:
    out = patch(model, batch, ["L0H1", "MLP0"], positions="S2")
    corrupt = model(batch.corrupt_ids)
    torch.testing.assert_close(out[:, :5], corrupt[:, :5], atol=1e-6, rtol=0)  # causal: before S2 untouched
    assert (out[:, 5:] - corrupt[:, 5:]).abs().max() > 1e-6


def test_head_outputs_sum_to_attention_output(model: Model, batch: TaskBatch) -> None:
    _, cache = run_with_cache(model, batch.clean_ids, "all")
    for layer in range(model.n_layers):
        heads = sum(cache[Component.attn_head(layer, h)] for h in range(model.n_heads))
        torch.testing.assert_close(heads + model.b_O(layer).detach(), cache[Component.attn(layer)],
                                   atol=1e-5, rtol=0)
    # the residual stream is the sum of its writers
    last = model.n_layers - 1
    total = cache[Component.emb()] + sum(cache[Component.attn(layer)] + cache[Component.mlp(layer)]
                                         for layer in range(model.n_layers))
    torch.testing.assert_close(total, cache[Component.resid_post(last)], atol=1e-4, rtol=0)


def test_cache_of_some_heads_equals_their_slice_of_the_full_cache(model: Model, batch: TaskBatch) -> None:
    # the batched per-layer projection picks the requested heads by index: any subset, in any order,
    # gives each head exactly z_h @ W_O[h], computed here one head at a time from the `ATTN` input
    some = [Component.parse(c) for c in ("L1H3", "L0H1", "L1H0", "ATTN0")]
    _, part = run_with_cache(model, batch.clean_ids, some)
    _, full = run_with_cache(model, batch.clean_ids, "all")
    assert list(part) == some
    for c in some:
        torch.testing.assert_close(part[c], full[c], atol=1e-6, rtol=0)
    z = {}
    handle = model.module(model.adapter.o_proj, 1).register_forward_pre_hook(
        lambda _m, args: z.__setitem__("z", args[0].detach()))
    try:
        model(batch.clean_ids)
    finally:
        handle.remove()
    zh = z["z"].reshape(*z["z"].shape[:-1], model.n_heads, model.d_head)[..., 3, :]
    torch.testing.assert_close(part[some[0]], zh @ model.W_O(1)[3].detach(), atol=1e-5, rtol=0)


def test_zero_ablating_head_with_zero_WO_changes_nothing(model: Model, batch: TaskBatch) -> None:
    m = model.copy()
    with torch.no_grad():
        w = m.module(m.adapter.o_proj, 1).weight
        dh = m.d_head
        if m.adapter.conv1d:
            w[2 * dh:3 * dh, :] = 0
        else:
            w[:, 2 * dh:3 * dh] = 0
    base = m(batch.clean_ids)
    assert torch.equal(ablate(m, batch, ["L1H2"], method="zero"), base)
    assert (ablate(m, batch, ["L1H1"], method="zero") - base).abs().max() > 1e-5  # a live head does matter


def test_ablate_variants(model: Model, batch: TaskBatch) -> None:
    one = batch[:1]
    base = model(one.clean_ids)
    # mean / resample over a reference that is the prompt itself reproduce it exactly
    torch.testing.assert_close(ablate(model, one, ["L0H0", "MLP1"], method="mean"), base, atol=1e-6, rtol=0)
    torch.testing.assert_close(ablate(model, one, ["L0H0", "MLP1"], method="resample", reference=one), base,
                               atol=1e-6, rtol=0)
    # mean ablation = replacing with the mean output, computed independently
    _, cache = run_with_cache(model, batch.corrupt_ids, ["MLP0"])
    mean = cache[Component.parse("MLP0")].mean(0)
    want = run_with_interventions(model, batch.clean_ids, {"MLP0": mean})
    got = ablate(model, batch, ["MLP0"], method="mean", reference=batch.corrupt_ids)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_residual_space_head_edit_equals_z_space(model: Model, batch: TaskBatch) -> None:
    zeroed = run_with_interventions(model, batch.clean_ids, {"L0H3": torch.zeros(model.d_model)})
    torch.testing.assert_close(zeroed, ablate(model, batch, ["L0H3"], method="zero"), atol=1e-5, rtol=0)
    same = run_with_interventions(model, batch.clean_ids, {"L1H0": lambda out: out})
    torch.testing.assert_close(same, model(batch.clean_ids), atol=1e-6, rtol=0)


def test_batched_sweep_equals_loop_of_single_patches(model: Model, batch: TaskBatch) -> None:
    # every kind, in an order that is not layer order: the sweep sorts by first edited block and skips the
    # blocks before it, so each kind's skip is checked against a plain single patch
    comps = model.components("resid_post")[::-1] + model.components("writers") + model.components("resid_pre")
    for positions in (None, "S2"):
        # max_tokens small: several chunks of several variants each
        swept = patching_sweep(model, batch, logit_diff, components=comps, positions=positions,
                               max_tokens=3 * batch.size * batch.seq_len)
        base = float(logit_diff(model(batch.corrupt_ids), batch))
        for c in comps:
            single = float(logit_diff(patch(model, batch, [c], positions=positions), batch)) - base
            assert swept[c] == pytest.approx(single, abs=1e-5), c
    assert any(abs(v) > 1e-4 for v in swept.values())


def test_sweep_skips_the_blocks_before_its_edits(model: Model, batch: TaskBatch) -> None:
    comps = [Component.parse(c) for c in ("MLP1", "L1H0", "L0H1")]  # not in layer order
    calls = []
    mlp0 = model.module(model.adapter.mlp, 0)
    handle = mlp0.register_forward_hook(lambda *_: calls.append(1))
    try:
        swept = patching_sweep(model, batch, logit_diff, components=comps, max_tokens=2 * batch.size * batch.seq_len)
    finally:
        handle.remove()
    # source capture + unpatched target + the chunk [L0H1, L1H0]; the chunk [MLP1] skipped block 0
    assert len(calls) == 3
    assert list(swept) == comps  # results in the order asked
    assert all("forward" not in model.block(i).__dict__ for i in range(model.n_layers))
    base = float(logit_diff(model(batch.corrupt_ids), batch))
    single = float(logit_diff(patch(model, batch, ["MLP1"]), batch)) - base
    assert swept[Component.parse("MLP1")] == pytest.approx(single, abs=1e-5)


def linear_tail(model: Model) -> Model:
    """A copy whose final norm is the identity and whose last MLP outputs 0: the logits are then
    exactly linear in every last-layer head, in ATTN{last} and in resid_post{last}."""
    m = model.copy()
    path = m.adapter.final_norm.rsplit(".", 1)
    setattr(m.module(path[0]), path[1], nn.Identity())
    with torch.no_grad():
        for p in m.module(m.adapter.mlp, m.n_layers - 1).parameters():
            p.zero_()
    return m


def test_attribution_equals_exact_on_linear_sites(model: Model, batch: TaskBatch) -> None:
    m = linear_tail(model)
    last = m.n_layers - 1
    comps = [c for c in m.components("heads") if c.layer == last] + [Component.attn(last),
                                                                     Component.resid_post(last)]
    for positions in (None, ["S2", "END"]):
        exact = patching_sweep(m, batch, logit_diff, components=comps, positions=positions)
        approx = attribution_patching(m, batch, logit_diff, components=comps, positions=positions)
        scale = max(abs(v) for v in exact.values())
        assert scale > 1e-5  # random-init weights are small; compare relative to the largest effect
        for c in comps:
            assert approx[c] == pytest.approx(exact[c], abs=1e-3 * scale), c
    # on the original model (norm + MLP after the site) it is only an approximation
    exact = patching_sweep(model, batch, logit_diff, components=["L0H0", "L0H1", "MLP0"])
    approx = attribution_patching(model, batch, logit_diff, components=["L0H0", "L0H1", "MLP0"])
    scale = max(abs(v) for v in exact.values())
    assert any(abs(approx[c] - exact[c]) > 1e-3 * scale for c in exact)


def test_ablation_sweep_equals_one_ablation_per_component(model: Model, batch: TaskBatch) -> None:
    comps = model.components("heads")[:3] + model.components("mlps")
    clean = float(logit_diff(model(batch.clean_ids), batch))
    for method in ("zero", "mean"):
        # max_tokens of two variants: several stacked chunks, the last one partial
        swept = ablation_sweep(model, batch, logit_diff, components=comps, method=method,
                               max_tokens=2 * batch.size * batch.seq_len)
        for c in comps:
            one = clean - float(logit_diff(ablate(model, batch, [c], method=method), batch))
            assert swept[c] == pytest.approx(one, abs=1e-5), (method, c)
    assert max(abs(v) for v in swept.values()) > 1e-4  # the ablations do something, so the test can fail


def test_attribution_ablation_equals_exact_on_linear_sites(model: Model, batch: TaskBatch) -> None:
    m = linear_tail(model)
    comps = [c for c in m.components("heads") if c.layer == m.n_layers - 1]
    exact = ablation_sweep(m, batch, logit_diff, components=comps, method="zero")
    approx = attribution_ablation(m, batch, logit_diff, components=comps)
    scale = max(abs(v) for v in exact.values())
    assert scale > 1e-5
    for c in comps:
        assert approx[c] == pytest.approx(exact[c], abs=1e-3 * scale), c


def test_token_budget_fits_free_memory(model: Model) -> None:
    assert model.token_budget() == 2048  # CPU: the measured sweet spot
    per = model.bytes_per_token(16)
    assert model.token_budget(seq_len=16, free_bytes=2 * 1000 * per) == 1000  # half the free memory
    assert model.token_budget(seq_len=16, free_bytes=10 * per) == 256  # a floor
    assert model.token_budget(seq_len=16, free_bytes=2**60) == 2**18  # a ceiling
    assert model.bytes_per_token(64) > per  # longer prompts: bigger attention weights per token


def test_hooks_always_removed_and_early_stop(model: Model, batch: TaskBatch) -> None:
    from tools.hooks import Capture, Edit, StopForward, hooked

    store: dict = {}
    with pytest.raises(StopForward), hooked(model, captures=[Capture("z", 0, store), Capture("mlp_out", 1, store)],
                                            stop_after=("z", 0)):
        model.hf(input_ids=batch.clean_ids)
    assert ("z", 0) in store and ("mlp_out", 1) not in store  # layer 1 never ran

    def boom(x):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError), hooked(model, edits=[Edit("mlp_out", 0, boom)]):
        model.hf(input_ids=batch.clean_ids)
    n = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.hf.modules())
    assert n == 0
