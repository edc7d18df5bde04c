"""Interchangeability: known answers on a tiny GPT-2 with planted identical heads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evals.interchange import (
    clustering_auc,
    interchange_matrix,
    random_clustering,
    run_variants,
    score_clustering,
)
from evals.scores import ScoreError
from tools.batch import TaskBatch
from tools.components import Component
from tools.model import load_model
from tools.tiny import make_tiny_model


def copy_head(model, layer: int, src: int, dst: int, scale: float = 1.0) -> None:
    """Make head ``dst`` compute exactly what head ``src`` computes (Q, K, V and O weights), both scaled."""
    attn = model.block(layer).attn
    D, dh = model.d_model, model.d_head
    with torch.no_grad():
        w, b = attn.c_attn.weight, attn.c_attn.bias  # Conv1D [D, 3D]
        for part in range(3):
            s = slice(part * D + src * dh, part * D + (src + 1) * dh)
            d = slice(part * D + dst * dh, part * D + (dst + 1) * dh)
            w[:, d] = w[:, s]
            b[d] = b[s]
        wo = attn.c_proj.weight  # Conv1D [H*dh, D]
        wo[src * dh:(src + 1) * dh] *= scale
        wo[dst * dh:(dst + 1) * dh] = wo[src * dh:(src + 1) * dh]
    model._fingerprint = None


@pytest.fixture(scope="session")
def twin_model(tmp_path_factory):
    """Tiny GPT-2 (2 layers x 4 heads) where L1H1 is an exact copy of L1H0, and L0H3 of L0H2."""
    path = make_tiny_model("gpt2", tmp_path_factory.mktemp("twin") / "m", seed=3)
    m = load_model(path, device="cpu")
    with torch.no_grad():  # random init is too quiet for components to matter: make them loud
        for name, p in m.hf.named_parameters():
            if name.endswith(("c_attn.weight", "c_proj.weight", "wte.weight")):
                p *= 10
    copy_head(m, 1, 0, 1, scale=2.0)
    copy_head(m, 0, 2, 3, scale=2.0)
    return m


@pytest.fixture(scope="session")
def twin_batch(twin_model):
    """Random prompts; the answer is the model's top token, the wrong one its bottom token (m0 ≈ 7.5)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 64, (16, 8), generator=g)
    last = twin_model(ids)[:, -1]
    return TaskBatch(clean_ids=ids, answer_ids=last.argmax(-1), wrong_ids=last.argmin(-1))


COMPS = ["L0H0", "L0H1", "L0H2", "L0H3", "L1H0", "L1H1", "L1H2", "MLP0", "MLP1"]


def test_identical_heads_have_I_equal_one(twin_model, twin_batch):
    r = interchange_matrix(twin_model, twin_batch, COMPS, cache=False)
    assert r.I("L1H0", "L1H1") == pytest.approx(1.0, abs=1e-5)
    assert r.I("L1H1", "L1H0") == pytest.approx(1.0, abs=1e-5)
    assert r.I("L0H2", "L0H3") == pytest.approx(1.0, abs=1e-5)
    # the swap of identical outputs reproduces the clean metric exactly
    assert r.m_swap["L1H0"]["L1H1"] == pytest.approx(r.m0, abs=1e-4)
    assert r.I("L1H0", "L1H0") is None
    m = r.matrix()
    assert m.shape == (9, 9) and np.isnan(np.diag(m)).all()
    assert np.nanmin(m) >= 0.0 and np.nanmax(m) <= 1.0


def test_batched_variants_equal_one_forward_each(twin_model, twin_batch):
    from tools.interventions import run_with_interventions
    from tools.metrics import logit_diff

    zero = torch.zeros(twin_batch.size, twin_batch.seq_len, twin_model.d_model)
    other = torch.randn(twin_batch.size, twin_batch.seq_len, twin_model.d_model)
    h, mlp, h2 = Component.parse("L1H0"), Component.parse("MLP0"), Component.parse("L0H1")
    # L1H0 gets the same tensor in chunks 1-3 (merged into one edit), then another one in chunk 4
    variants = [{}, {h: zero}, {h: zero, mlp: zero}, {h: zero, h2: other}, {h: other}, {mlp: zero, h2: zero}]
    batched = run_variants(twin_model, twin_batch, variants, "logit_diff", max_rows=5 * twin_batch.size)
    single = [float(logit_diff(run_with_interventions(twin_model, twin_batch.clean_ids, v), twin_batch))
              for v in variants]
    assert batched == pytest.approx(single, abs=1e-5)
    assert batched[0] != pytest.approx(batched[1], abs=1e-4)  # the ablation did something


def test_twin_clustering_scores_auc_one_and_beats_null(twin_model, twin_batch):
    r = interchange_matrix(twin_model, twin_batch, COMPS, cache=False)
    assert r.undefined_components == ["L1H2", "MLP0", "MLP1"]  # effects under 2% of m0
    clusters = {"a": ["L1H0", "L1H1"], "b": ["L0H2", "L0H3"], "c": ["L0H0"], "d": ["L0H1"], "e": ["L1H2"],
                "f": ["MLP0"], "g": ["MLP1"]}
    s = score_clustering(r, clusters, n_null=200, seed=0)
    assert s.auc == 1.0 and s.defined and s.n_within == 2 and s.n_across == 36 - 2 - 3
    assert len(s.null_aucs) == 200 and s.percentile > 95
    assert s.singleton_auc == 0.5


def test_random_clusterings_average_half():
    rng = np.random.default_rng(0)
    n = 12
    comps = [f"L0H{i}" for i in range(n)]
    aucs = []
    for seed in range(300):
        sym = rng.random((n, n))
        sym = (sym + sym.T) / 2
        np.fill_diagonal(sym, np.nan)
        aucs.append(clustering_auc(sym, comps, random_clustering(comps, [4, 4, 4], seed=seed)).auc)
    assert abs(np.mean(aucs) - 0.5) < 0.03


def test_ties_count_half_and_degenerate_clusterings():
    sym = np.array([[np.nan, 1.0, 1.0], [1.0, np.nan, 1.0], [1.0, 1.0, np.nan]])
    comps = ["L0H0", "L0H1", "L0H2"]
    assert clustering_auc(sym, comps, {"a": ["L0H0", "L0H1"], "b": ["L0H2"]}).auc == 0.5
    single = clustering_auc(sym, comps, {str(i): [c] for i, c in enumerate(comps)})
    assert single.auc == 0.5 and not single.defined and single.n_within == 0


def test_clustering_names_component_missing_from_matrix():
    sym = np.zeros((2, 2))
    with pytest.raises(ScoreError, match="not in the interchange matrix"):
        clustering_auc(sym, ["L0H0", "L0H1"], {"a": ["L0H0", "L5H5"]})


def test_noise_floor_makes_pairs_undefined(twin_model, twin_batch):
    r = interchange_matrix(twin_model, twin_batch, ["L1H0", "L1H1", "MLP1"], cache=False, noise_floor=1e9)
    assert r.undefined_components == ["L1H0", "L1H1", "MLP1"]
    assert r.n_undefined == 6 and r.n_undefined_sym == 3
    assert np.isnan(r.sym()).all()


def test_cache_reuses_and_extends(twin_model, twin_batch, tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_AGENT_HOME", str(tmp_path))
    first = interchange_matrix(twin_model, twin_batch, ["L1H0", "L1H1"], task="t", seed=1)
    assert first.n_computed == 1 + 2 + 2 and first.cache_path.startswith(str(tmp_path))
    again = interchange_matrix(twin_model, twin_batch, ["L1H1", "L1H0"], task="t", seed=1)
    assert again.n_computed == 0 and again.I("L1H0", "L1H1") == first.I("L1H0", "L1H1")
    more = interchange_matrix(twin_model, twin_batch, ["L1H0", "L1H1", "MLP1"], task="t", seed=1)
    assert more.n_computed == 1 + 4  # MLP1's ablation and the 4 new ordered pairs
    as_path = interchange_matrix(twin_model, twin_batch, ["L1H0", "L1H1"], task=str(tmp_path / "spec" / "t.yaml"))
    assert as_path.cache_path.startswith(str(tmp_path / "cache" / "interchange"))  # a task path stays inside
    fresh = interchange_matrix(twin_model, twin_batch, ["L1H0", "L1H1", "MLP1"], cache=False)
    assert more.sym() == pytest.approx(fresh.sym(), nan_ok=True)


def test_non_writer_component_rejected(twin_model, twin_batch):
    with pytest.raises(ScoreError, match="residual stream"):
        interchange_matrix(twin_model, twin_batch, ["resid_pre1", "L0H0"], cache=False)
