"""Planted-circuit models: task accuracy and every head's ground-truth role, checked by its defining property.

Ablations here use a local forward pre-hook on ``attn.c_proj`` (the head's slice of its input set to
zero or to its mean), so these tests do not depend on ``tools``' intervention API.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from evals.tasks import load_task
from evals.zoo import load_zoo_hf, zoo_entry
from evals.zoo.planted import GROUND_TRUTH, REDUNDANT_PAIRS, build_planted_induction
from tools.components import Component

NAMES = sorted(GROUND_TRUTH)


@pytest.fixture(scope="session")
def planted() -> dict:
    torch.set_num_threads(1)
    out = {}
    for name in NAMES:
        model, tok = load_zoo_hf(name)
        batch = load_task(name).make_batch(tok, 100, seed=12345)
        out[name] = (model, tok, batch)
    return out


@contextmanager
def ablated(model, heads: list[Component], mode: str = "zero", ref_ids: torch.Tensor | None = None):
    dh = model.config.n_embd // model.config.n_head
    means: dict[Component, torch.Tensor] = {}
    if mode == "mean":
        zs = _head_inputs(model, ref_ids)
        means = {c: zs[c.layer][..., c.head * dh:(c.head + 1) * dh].mean(dim=0) for c in heads}  # [T, dh]
    handles = []
    for layer in {c.layer for c in heads}:
        mine = [c for c in heads if c.layer == layer]

        def pre(mod, args, mine=mine):
            z = args[0].clone()
            for c in mine:
                z[..., c.head * dh:(c.head + 1) * dh] = means[c] if mode == "mean" else 0.0
            return (z,)

        handles.append(model.transformer.h[layer].attn.c_proj.register_forward_pre_hook(pre))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _head_inputs(model, ids) -> dict[int, torch.Tensor]:
    store: dict[int, torch.Tensor] = {}
    hs = [blk.attn.c_proj.register_forward_pre_hook(lambda m, a, i=i: store.__setitem__(i, a[0].detach()))
          for i, blk in enumerate(model.transformer.h)]
    try:
        with torch.no_grad():
            model(ids)
    finally:
        for h in hs:
            h.remove()
    return store


def head_output_norms(model, ids, heads: list[Component]) -> dict[Component, float]:
    """Mean L2 norm of each head's output in the residual stream (z_h @ W_O[h])."""
    dh = model.config.n_embd // model.config.n_head
    zs = _head_inputs(model, ids)
    out = {}
    for c in heads:
        w = model.transformer.h[c.layer].attn.c_proj.weight[c.head * dh:(c.head + 1) * dh].detach()
        out[c] = float((zs[c.layer][..., c.head * dh:(c.head + 1) * dh] @ w).norm(dim=-1).mean())
    return out


def logit_diff(model, batch) -> tuple[float, float]:
    with torch.no_grad():
        logits = model(batch.clean_ids).logits
    i = torch.arange(batch.size)
    end = logits[i, batch.end]
    return (float((end[i, batch.answer_ids] - end[i, batch.wrong_ids]).mean()),
            float((end.argmax(-1) == batch.answer_ids).float().mean()))


def attention(model, ids) -> list[torch.Tensor]:
    with torch.no_grad():
        return model(ids, output_attentions=True).attentions


def attn_to(att: torch.Tensor, c: Component, q: torch.Tensor, k: torch.Tensor) -> float:
    i = torch.arange(att.shape[0])
    return float(att[i, c.head, q, k].mean())


@pytest.mark.parametrize("name", NAMES)
def test_planted_accuracy_at_least_99_percent(planted, name) -> None:
    model, _, batch = planted[name]
    ld, acc = logit_diff(model, batch)
    assert acc >= 0.99 and ld > 5.0
    assert zoo_entry(name).accuracy >= 0.99 and zoo_entry(name).kind == "planted"


@pytest.mark.parametrize("name", NAMES)
def test_task_reference_is_the_ground_truth(name) -> None:
    spec = load_task(name)
    assert {e.component: e.role for e in spec.reference} == GROUND_TRUTH[name]
    assert all(e.source == "planted (exact)" for e in spec.reference)
    assert zoo_entry(name).extra["ground_truth"] == GROUND_TRUTH[name]


@pytest.mark.parametrize("name", NAMES)
def test_distractors_are_large_and_have_no_effect(planted, name) -> None:
    model, _, batch = planted[name]
    ld0, _ = logit_diff(model, batch)
    roles = GROUND_TRUTH[name]
    distractors = [Component.parse(c) for c, r in roles.items() if r == "distractor"]
    workers = [Component.parse(c) for c, r in roles.items() if r != "distractor"]
    norms = head_output_norms(model, batch.clean_ids, distractors + workers)
    worker_norm = max(norms[c] for c in workers)
    for c in distractors:
        assert norms[c] > 5 * worker_norm, c
        for mode in ("zero", "mean"):
            with ablated(model, [c], mode, batch.clean_ids):
                ld, acc = logit_diff(model, batch)
            assert abs(ld - ld0) < 1e-3 * abs(ld0) and acc >= 0.99, (c, mode, ld, ld0)
    with ablated(model, distractors, "zero"):  # all at once, too
        assert abs(logit_diff(model, batch)[0] - ld0) < 1e-3 * abs(ld0)


@pytest.mark.parametrize("name", NAMES)
def test_redundant_pair(planted, name) -> None:
    model, _, batch = planted[name]
    ld0, _ = logit_diff(model, batch)
    a, b = (Component.parse(x) for x in REDUNDANT_PAIRS[name])
    assert GROUND_TRUTH[name][str(a)] == GROUND_TRUTH[name][str(b)]
    for mode in ("zero", "mean"):
        for c in (a, b):
            with ablated(model, [c], mode, batch.clean_ids):
                ld, acc = logit_diff(model, batch)
            assert abs(ld - ld0) <= 0.1 * ld0 and acc >= 0.99, (c, mode, ld, ld0)  # barely changes
        with ablated(model, [a, b], mode, batch.clean_ids):
            ld, _ = logit_diff(model, batch)
        assert ld <= 0.2 * ld0, (mode, ld, ld0)  # both: broken


def test_induction_roles(planted) -> None:
    model, _, batch = planted["planted-induction"]
    att = attention(model, batch.clean_ids)
    T = batch.seq_len
    q = torch.arange(1, T)
    for prev in ("L0H0", "L0H1"):
        c = Component.parse(prev)
        assert float(att[c.layer][:, c.head, q, q - 1].mean()) > 0.95
    ind = Component.parse("L1H0")
    assert attn_to(att[1], ind, batch.end, batch.position("NEXT")) > 0.9
    # Induction score on the second copy of every repeated segment: attention to (earlier occurrence + 1).
    ld0, _ = logit_diff(model, batch)
    with ablated(model, [ind], "zero"):
        ld, acc = logit_diff(model, batch)
    assert ld < 0.05 * ld0 and acc < 0.1


def test_ioi_roles(planted) -> None:
    model, _, batch = planted["planted-ioi"]
    att = attention(model, batch.clean_ids)
    dup, s_inh, mover = (Component.parse(x) for x in ("L0H0", "L1H0", "L2H0"))
    assert attn_to(att[0], dup, batch.position("S2"), batch.position("S1")) > 0.9
    for c in (s_inh, Component.parse("L1H1")):
        assert attn_to(att[1], c, batch.end, batch.position("S2")) > 0.9
    assert attn_to(att[2], mover, batch.end, batch.position("IO")) > 0.9
    ld0, _ = logit_diff(model, batch)
    with ablated(model, [dup], "zero"):  # no duplicate flag -> no inhibition -> S wins
        ld, _ = logit_diff(model, batch)
    assert ld < 0
    with ablated(model, [mover], "zero"):
        ld, _ = logit_diff(model, batch)
    assert abs(ld) < 0.05 * ld0
    # The corrupt prompt (IO written at S2) flips the answer.
    with torch.no_grad():
        logits = model(batch.corrupt_ids).logits
    end = logits[torch.arange(batch.size), batch.end]
    assert float((end.argmax(-1) == batch.wrong_ids).float().mean()) >= 0.99


def test_committed_weights_match_a_fresh_build() -> None:
    model, _ = build_planted_induction()
    saved, _ = load_zoo_hf("planted-induction")
    sd = saved.state_dict()
    for k, v in model.state_dict().items():
        assert torch.allclose(v, sd[k], atol=1e-6), k


@pytest.mark.parametrize("name", NAMES)
def test_ground_truth_maps_through_head_permutation(name) -> None:
    """Memorisation control: permute heads, rename the reference, and the roles still hold exactly."""
    from evals.zoo import load_zoo_model
    from tools import attention_patterns, permute_heads

    model = load_zoo_model(name)
    spec = load_task(name)
    batch = spec.make_batch(model.tokenizer, 32, seed=3)
    permuted, mapping = permute_heads(model, seed=1)
    assert any(k != v for k, v in mapping.items())
    # Function-preserving up to float32 rounding: the distractors' large all-ones outputs are summed in
    # another order, which moves END logits by ~1e-4 (tools' exactness test uses random tiny models).
    rows = torch.arange(batch.size)
    a, b = model(batch.clean_ids)[rows, batch.end], permuted(batch.clean_ids)[rows, batch.end]
    assert torch.allclose(a, b, atol=2e-3) and torch.equal(a.argmax(-1), b.argmax(-1))
    mapped = spec.with_mapping(mapping)
    old = {e.component: e.role for e in spec.reference}
    new = {e.component: e.role for e in mapped.reference}
    assert new == {str(mapping[Component.parse(c)]): r for c, r in old.items()}
    # the head now named as the copier still does the copying
    copier = next(e.parsed for e in mapped.reference if e.role in ("induction", "name mover"))
    target = batch.position("NEXT" if name == "planted-induction" else "IO")
    pat = attention_patterns(permuted, batch, [copier])[copier]
    assert float(pat[torch.arange(batch.size), batch.end, target].mean()) > 0.9
