"""Interchangeability: the definition's logic on exact toy worlds, and known answers on tiny models.

The toy worlds (:class:`World`) stand in for a model: each variant's per-prompt metric is computed by
a small rule, so every choice of definition v2 (context, floor, cap, min) is checked on numbers
worked out by hand. The tiny GPT-2 with copied heads checks the measurement itself (batching, cache).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evals.interchange import (
    InterchangeOptions,
    InterchangeResult,
    _auc,
    _compute_v2,
    clustering_auc,
    interchange_matrix,
    n_clusterings,
    random_clustering,
    run_variants,
    score_clustering,
    swap_curve,
    variant_key,
)
from evals.scores import ScoreError
from tools.batch import TaskBatch
from tools.components import Component
from tools.model import load_model
from tools.tiny import make_tiny_model

# ---------------------------------------------------------------------------------------------
# exact toy worlds


class World:
    """A fake :class:`evals.interchange.VariantStore`: ``rule(slots) -> per-prompt metric``.

    ``slots`` maps each component to what its slot holds: its own clean output (the component's
    name), another's (``<B``), or a control (``mean`` / ``zero`` / ``resample``).
    """

    def __init__(self, comps: list[str], rule) -> None:
        self.comps, self.rule = comps, rule
        self.calls = 0

    def values(self, variants):
        self.calls += 1
        out = []
        for v in variants:
            slots = {c: c for c in self.comps}
            slots.update({a: (f[1:] if f.startswith("<") else f) for a, f in v.items()})
            out.append(np.asarray(self.rule(slots), dtype=float))
        return out

    def mean(self, variant):
        return float(self.values([variant])[0].mean())


def result(world: World, opts: InterchangeOptions | None = None) -> InterchangeResult:
    opts = opts or InterchangeOptions()
    m0 = world.mean({})
    nf = 0.02 * abs(m0)
    recs = _compute_v2(world, world.comps, opts, nf)
    return InterchangeResult(components=world.comps, m0=m0, noise_floor=nf, records=recs, options=opts)


P, Q, R, D = "L0H0", "L0H1", "L1H0", "L0H2"


def induction_world(slots):
    """P, Q: a redundant pair of previous-token heads; R: the induction head reading them.

    Works (10) when some previous-token slot carries a previous-token OR an induction output (R's
    output put in a layer-0 slot reaches the logits directly: the one-way restoration) and R's slot
    carries R's output; one prompt.
    """
    prev_ok = any(slots[s] in (P, Q, R) for s in (P, Q))
    return [10.0 if prev_ok and slots[R] == R else 0.0]


def test_redundant_pair_is_measured_in_its_group_and_one_way_restoration_does_not_count():
    r = result(World([P, Q, R], induction_world))
    assert r.records[P].context == [Q] and r.records[Q].context == [P] and r.records[R].context == []
    assert r.undefined_components == []
    assert r.I(P, Q) == 1.0 and r.I(Q, P) == 1.0  # Q moved into P's slot does P's job
    assert r.I(P, R) == 1.0 and r.I(R, P) == 0.0  # one way only
    sym = r.sym()
    assert sym[0, 1] == 1.0 and sym[0, 2] == 0.0 and sym[1, 2] == 0.0
    # without the group, P and Q are undefined; with the mean of both directions, P~R would be 0.5
    assert result(World([P, Q, R], induction_world), InterchangeOptions(context=False)).undefined_components == [P, Q]
    assert result(World([P, Q, R], induction_world), InterchangeOptions(symmetric="mean")).sym()[0, 2] == 0.5


def split_world(slots):
    """Two prompts; P does the job on prompt 0 only, Q on prompt 1 only (same label, different subspace)."""
    val = {P: (1.0, 0.0), Q: (0.0, 1.0)}
    return [sum(val.get(slots[s], (0.0, 0.0))[x] for s in (P, Q)) for x in (0, 1)]


def test_surplus_on_one_prompt_cannot_pay_for_a_deficit_on_another():
    capped = result(World([P, Q], split_world))
    assert capped.I(P, Q) == 0.0 and capped.I(Q, P) == 0.0
    uncapped = result(World([P, Q], split_world), InterchangeOptions(cap=False))
    assert uncapped.I(P, Q) == 1.0  # Q's double output on prompt 1 "restores" the batch mean


def leaky_world(slots):
    """P's mean ablation is harmful (-4), zero ablation mild (-1); any foreign output acts like zero."""
    a = slots[P]
    return [10.0 if a == P else 6.0 if a == "mean" else 9.0]


def test_floor_is_the_least_harmful_control():
    r = result(World([P, Q], leaky_world))
    rec = r.records[P]
    assert rec.floor == "zero" and rec.controls == {"mean": 6.0, "zero": 9.0, "resample": 9.0}
    assert r.I(P, Q) == 0.0  # Q is merely less harmful than the mean: no credit
    v1_like = result(World([P, Q], leaky_world), InterchangeOptions(controls=("mean",)))
    assert v1_like.I(P, Q) == 0.75


def constant_world(slots):
    """P writes a feature that is the same on every prompt: its mean restores it, zero does not; Q writes it too."""
    return [5.0 if slots[P] in (P, "mean", "resample", Q) else 0.0, 5.0 if slots[Q] in (Q, P) else 3.0]


def test_component_blind_to_mean_ablation_uses_zero():
    r = result(World([P, Q], constant_world))
    assert r.records[P].ablation == "zero" and r.records[P].floor == "zero"
    assert r.I(P, Q) == 1.0
    assert r.records[Q].ablation == "mean"


def test_dead_component_is_undefined_and_scores_against_the_living():
    world = World([P, Q, D], lambda s: [10.0 if s[P] in (P, Q) and s[Q] == Q else 0.0])
    r = result(world)
    assert r.undefined_components == [D]
    assert r.I(P, D) == 0.0 and r.I(D, P) is None
    assert r.sym()[0, 2] == 0.0  # the defined direction counts
    assert r.n_undefined_sym == 0 and r.n_undefined == 2


# ---------------------------------------------------------------------------------------------
# scoring clusterings


def test_auc_equals_sklearn_roc_auc_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    for _ in range(20):
        w, a = rng.integers(0, 4, 7) / 4, rng.integers(0, 4, 9) / 4
        expect = roc_auc_score(np.r_[np.ones(7), np.zeros(9)], np.r_[w, a])
        assert _auc(w, a) == pytest.approx(expect)


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
    one = clustering_auc(sym, comps, {"all": comps})
    assert one.auc == 0.5 and not one.defined and one.n_across == 0


def test_clustering_names_component_missing_from_matrix():
    sym = np.zeros((2, 2))
    with pytest.raises(ScoreError, match="not in the interchange matrix"):
        clustering_auc(sym, ["L0H0", "L0H1"], {"a": ["L0H0", "L5H5"]})


def block_matrix(sizes: list[int]) -> tuple[np.ndarray, list[str], dict[str, list[str]]]:
    """I_sym = 1 within blocks, 0 across (plus a little noise so pairs differ)."""
    comps = [f"L0H{i}" for i in range(sum(sizes))]
    lab = np.repeat(np.arange(len(sizes)), sizes)
    rng = np.random.default_rng(0)
    sym = np.where(lab[:, None] == lab[None, :], 0.9, 0.1) + rng.normal(0, 0.01, (len(lab),) * 2)
    sym = (sym + sym.T) / 2
    np.fill_diagonal(sym, np.nan)
    clusters = {f"c{k}": [c for c, x in zip(comps, lab, strict=True) if x == k] for k in range(len(sizes))}
    return sym, comps, clusters


def test_swap_curve_falls_on_a_block_matrix_and_stops_where_no_swap_goes_farther():
    sym, comps, clusters = block_matrix([3, 3, 3])
    s = score_clustering(sym, clusters, n_null=100, components=comps)
    assert s.auc == 1.0 and s.percentile > 95 and s.n_distinct == n_clusterings([3, 3, 3]) == 280
    curve = swap_curve(sym, comps, clusters, draws=10)
    means = [1.0] + [p.mean for p in curve]
    assert [p.k for p in curve] == [1, 2, 3] and all(p.n == 10 for p in curve)
    assert all(x > y for x, y in zip(means, means[1:], strict=False))
    # two clusters of two: after one swap every further swap comes back closer
    sym2, comps2, clusters2 = block_matrix([2, 2])
    c2 = swap_curve(sym2, comps2, clusters2, draws=5)
    assert c2[0].n == 5 and c2[1].n == 0 and c2[1].mean is None


def test_score_reports_null_percentile_and_conventions():
    sym, comps, clusters = block_matrix([2, 1])
    s = score_clustering(sym, clusters, n_null=200, seed=0, components=comps)
    assert s.n_distinct == 3 and s.null_p95 == 1.0  # one draw in three is the clustering itself
    assert s.singleton_auc == 0.5 and s.all_in_one_auc == 0.5


# ---------------------------------------------------------------------------------------------
# measurement on a tiny GPT-2 with copied heads


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


@pytest.fixture(scope="session")
def twin_results(twin_model, twin_batch) -> dict:
    """Both definitions over COMPS (computed once: the v2 matrix is ~180 variants)."""
    return {d: interchange_matrix(twin_model, twin_batch, COMPS, definition=d, cache=False) for d in ("v1", "v2")}


@pytest.mark.parametrize("definition", ["v1", "v2"])
def test_identical_heads_have_I_equal_one(twin_results, definition):
    r = twin_results[definition]
    assert r.version == definition
    for a, b in (("L1H0", "L1H1"), ("L1H1", "L1H0"), ("L0H2", "L0H3"), ("L0H3", "L0H2")):
        assert r.I(a, b) == pytest.approx(1.0, abs=1e-5), (a, b)
    assert r.I("L1H0", "L1H0") is None
    m = r.matrix()
    assert m.shape == (9, 9) and np.isnan(np.diag(m)).all()
    assert np.nanmin(m) >= 0.0 and np.nanmax(m) <= 1.0


def test_v1_swap_of_identical_outputs_reproduces_the_clean_metric(twin_results):
    r = twin_results["v1"]
    assert r.m_swap["L1H0"]["L1H1"] == pytest.approx(r.m0, abs=1e-4)
    assert r.undefined_components == ["L1H2", "MLP0", "MLP1"]  # effects under 2% of m0


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
    per = run_variants(twin_model, twin_batch, variants, "logit_diff", max_rows=5 * twin_batch.size, per_prompt=True)
    assert [float(p.mean()) for p in per] == pytest.approx(single, abs=1e-5)
    assert all(p.shape == (twin_batch.size,) for p in per)


def test_metric_that_is_not_a_mean_over_prompts_is_refused(twin_model, twin_batch):
    def total(logits, batch):
        return logits[:, -1].sum()

    with pytest.raises(ScoreError, match="not a mean over prompts"):
        run_variants(twin_model, twin_batch, [{}], total, per_prompt=True)


def test_twin_clustering_scores_auc_one_and_beats_null(twin_results):
    r = twin_results["v2"]
    clusters = {"a": ["L1H0", "L1H1"], "b": ["L0H2", "L0H3"], "c": ["L0H0"], "d": ["L0H1"], "e": ["L1H2"],
                "f": ["MLP0"], "g": ["MLP1"]}
    s = score_clustering(r, clusters, n_null=200, seed=0)
    assert s.auc == 1.0 and s.defined and s.n_within == 2
    assert len(s.null_aucs) == 200 and s.percentile > 95 and s.null_p95 < 1.0


def test_noise_floor_makes_rows_undefined(twin_model, twin_batch):
    for d in ("v1", "v2"):
        r = interchange_matrix(twin_model, twin_batch, ["L1H0", "L1H1", "MLP1"], definition=d, cache=False,
                               noise_floor=1e9)
        assert r.undefined_components == ["L1H0", "L1H1", "MLP1"]
        assert r.n_undefined == 6 and r.n_undefined_sym == 3
        assert np.isnan(r.sym()).all()


def test_cache_reuses_extends_and_is_keyed_by_version(twin_model, twin_batch, tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_AGENT_HOME", str(tmp_path))
    first = interchange_matrix(twin_model, twin_batch, ["L1H0", "L1H1"], task="t", seed=1)
    assert first.n_computed > 0 and first.cache_path.startswith(str(tmp_path)) and "-v2-" in first.cache_path
    again = interchange_matrix(twin_model, twin_batch, ["L1H1", "L1H0"], task="t", seed=1)
    assert again.n_computed == 0 and again.I("L1H0", "L1H1") == first.I("L1H0", "L1H1")
    more = interchange_matrix(twin_model, twin_batch, ["L1H0", "L1H1", "MLP1"], task="t", seed=1)
    assert more.n_computed > 0
    fresh = interchange_matrix(twin_model, twin_batch, ["L1H0", "L1H1", "MLP1"], cache=False)
    assert more.sym() == pytest.approx(fresh.sym(), nan_ok=True)
    old = interchange_matrix(twin_model, twin_batch, ["L1H0", "L1H1"], task="t", seed=1, definition="v1")
    assert old.n_computed == 1 + 2 + 2 and "-v1-" in old.cache_path  # v2's values are not reused
    as_path = interchange_matrix(twin_model, twin_batch, ["L1H0", "L1H1"], task=str(tmp_path / "spec" / "t.yaml"))
    assert as_path.cache_path.startswith(str(tmp_path / "cache" / "interchange"))  # a task path stays inside


def test_variant_names_are_canonical():
    assert variant_key({}) == ""
    assert variant_key({"MLP0": "zero", "L0H1": "<L1H0"}) == variant_key({"L0H1": "<L1H0", "MLP0": "zero"})


def test_non_writer_component_rejected(twin_model, twin_batch):
    with pytest.raises(ScoreError, match="residual stream"):
        interchange_matrix(twin_model, twin_batch, ["resid_pre1", "L0H0"], cache=False)
    with pytest.raises(ScoreError, match="unknown interchangeability definition"):
        interchange_matrix(twin_model, twin_batch, ["L0H0"], definition="v9", cache=False)
