"""``tools.experiments``: every planner experiment as a function with a typed result, checked by exact
invariants against the intervention library on the tiny GPT-2 / NeoX / Llama models."""

from __future__ import annotations

import json
import math

import pytest
import torch

import tools
from tools import experiments as X
from tools.batch import TaskBatch
from tools.metrics import logit_diff


@pytest.fixture(scope="module")
def batch() -> TaskBatch:
    g = torch.Generator().manual_seed(0)
    B, T = 6, 7
    return TaskBatch(clean_ids=torch.randint(4, 64, (B, T), generator=g),
                     corrupt_ids=torch.randint(4, 64, (B, T), generator=g),
                     answer_ids=torch.randint(4, 64, (B,), generator=g),
                     wrong_ids=torch.randint(4, 64, (B,), generator=g),
                     positions={"IO": torch.full((B,), 2), "S1": torch.full((B,), 3), "END": torch.full((B,), T - 1)})


def _m(model, logits, batch) -> float:
    return float(logit_diff(logits, batch))


def test_baseline_is_the_metric_and_is_cached(model, batch):
    b = X.baseline(model, batch, logit_diff)
    assert b.clean == pytest.approx(_m(model, model(batch.clean_ids), batch), abs=1e-6)
    assert b.corrupt == pytest.approx(_m(model, model(batch.corrupt_ids), batch), abs=1e-6)
    assert b.gap == pytest.approx(b.clean - b.corrupt)
    assert X.baseline(model, batch, logit_diff) is b
    assert X.baseline(model, batch[:3], logit_diff) is not b


def test_ablation_matches_tools_ablate(model, batch):
    r = X.ablation(model, batch, logit_diff, ["L1H0", "MLP0"], method="zero")
    ablated = _m(model, tools.ablate(model, batch, ["L1H0", "MLP0"], method="zero"), batch)
    assert r.ablated == pytest.approx(ablated, abs=1e-6) and r.components == ["L1H0", "MLP0"]
    assert r.effect == pytest.approx(r.clean - r.ablated) and r.effect_frac == pytest.approx(r.effect / r.gap)


def test_patching_the_whole_residual_recovers_the_whole_gap(model, batch):
    r = X.patching(model, batch, logit_diff, ["resid_pre0"])
    assert r.patched == pytest.approx(r.clean, abs=1e-4) and r.effect_frac == pytest.approx(1.0, abs=1e-4)
    back = X.patching(model, batch, logit_diff, ["resid_pre0"], direction="corrupt_to_clean")
    assert back.patched == pytest.approx(back.corrupt, abs=1e-4) and back.effect_frac == pytest.approx(-1.0, abs=1e-4)
    at = X.patching(model, batch, logit_diff, ["L1H1"], positions=["END", "2"])
    assert at.positions == ["END", 2]
    assert at.patched == pytest.approx(_m(model, tools.patch(model, batch, ["L1H1"], positions=["END", 2]), batch),
                                       abs=1e-6)


def test_path_patching_matches_tools_path_patch(model, batch):
    r = X.path_patching(model, batch, logit_diff, "L0H1", ["L1H0"], receiver_input="q")
    patched = _m(model, tools.path_patch(model, batch, "L0H1", ["L1H0"], receiver_input="q"), batch)
    assert r.patched == pytest.approx(patched, abs=1e-6) and r.effect == pytest.approx(r.clean - patched, abs=1e-6)


def test_steering_with_alpha_zero_changes_nothing(model, batch):
    r = X.steering(model, batch, logit_diff, "resid_post0", alpha=0.0)
    assert r.steered == pytest.approx(r.corrupt, abs=1e-5) and r.effect_frac == pytest.approx(0.0, abs=1e-5)


def test_sweep_exact_attribution_and_zero_ablation(model, batch):
    r = X.sweep(model, batch, logit_diff, kind="all", top_k=5, zero_ablation=True)
    exact = {str(c): v for c, v in tools.patching_sweep(model, batch, logit_diff,
                                                        components=model.components("heads") + model.components("mlps")).items()}
    assert list(r.effects) == sorted(exact, key=lambda k: -abs(exact[k]))[:5]
    assert all(r.effects[k] == pytest.approx(exact[k]) and r.effect_frac[k] == pytest.approx(exact[k] / r.gap)
               for k in r.effects)
    assert set(r.ablation_frac) == set(exact)
    z = X.ablation(model, batch, logit_diff, ["MLP1"], method="zero")
    assert r.ablation_frac["MLP1"] == pytest.approx(z.effect_frac, abs=1e-6)
    ranked = r.ranked()
    assert list(ranked.values()) == sorted(ranked.values(), key=lambda v: -abs(v))
    att = X.sweep(model, batch, logit_diff, kind="heads", method="attribution", top_k=100)
    est = tools.attribution_patching(model, batch, logit_diff, components="heads")
    assert att.effects == pytest.approx({str(c): v for c, v in est.items()}) and att.ablation_frac is None


def test_redundancy_variants_equal_joint_mean_ablation(model, batch):
    r = X.redundancy(model, batch, logit_diff, exclude=["L1H0"], threshold=0.0, synergy=1.0)
    assert r.groups["L1"].heads == ["L1H1", "L1H2", "L1H3"]

    def frac(comps):
        return (r.clean - _m(model, tools.ablate(model, batch, comps, method="mean"), batch)) / r.gap

    for c in ("L0H0", "L1H3"):
        assert r.single[c] == pytest.approx(frac([c]), abs=1e-5)
    assert r.groups["L0"].joint == pytest.approx(frac(["L0H0", "L0H1", "L0H2", "L0H3"]), abs=1e-5)
    for key, v in r.pairs.items():
        assert v == pytest.approx(frac(key.split(",")), abs=1e-5)


def test_attention_and_dla_and_head_profile(model, batch):
    a = X.attention(model, batch, "L1H2")
    assert a.summary == tools.attention_summary(model, batch, "L1H2")
    d = X.logit_attribution(model, batch, logit_diff, ["L1H0", "MLP1"])
    ref = tools.direct_logit_attribution(model, batch, ["L1H0", "MLP1"])
    assert d.dla == pytest.approx({str(c): v for c, v in ref.items()})
    assert d.frac("L1H0") == pytest.approx(d.dla["L1H0"] / abs(d.clean))
    hp = X.head_profile(model, ["L0H1", "L1H3"], seed=3)
    scores = tools.head_scores(model, ["L0H1", "L1H3"], seed=3)
    for h, s in scores.items():
        p = hp.scores[str(h)]
        assert p.model_dump(include=set(type(s).model_fields)) == s.model_dump()
        assert 0 <= p.lookback <= 1 and p.lookback_offset in (1, 2, 3, 4)
        assert p.score("previous token") == max(p.prev_token, p.lookback)


def test_lookback_is_the_best_subdiagonal_of_the_head_score_sequences(model):
    lb = X.lookback(model, ["L0H2"], seed=1)["L0H2"]
    ids = tools.inspection.repeated_sequences(model, seed=1).ids
    pat = next(iter(tools.attention_patterns(model, ids, ["L0H2"]).values()))
    diag = {k: float(pat.diagonal(-k, dim1=1, dim2=2).mean()) for k in range(1, 5)}
    assert lb[1] == max(diag, key=diag.get) and lb[0] == pytest.approx(max(diag.values()), abs=1e-6)


def test_lookback_at_offset_one_is_prev_token(model):
    """The look-back scan and ``prev_token`` read the same sequences: at k = 1 they are the same number."""
    for seed in (0, 2):
        scores = tools.head_scores(model, seed=seed)
        for h, s in scores.items():
            one = X.lookback(model, [h], seed=seed, max_k=1)[str(h)]
            assert one == (s.prev_token, 1)


def test_probing_and_attention_pattern_and_check_model(model, batch):
    labels_batch = TaskBatch(clean_ids=batch.clean_ids.repeat(4, 1), answer_ids=torch.arange(24) % 2)
    p = X.probing(model, labels_batch, "resid_post1", position="-1")
    assert 0 <= p.heldout_accuracy <= 1 and p.site == "resid_post1"
    pats = X.attention_pattern(model, batch, ["L0H0"], prompt=1)
    pat = pats.patterns["L0H0"]
    assert len(pat.attn_pattern) == len(pat.tokens) == batch.seq_len
    assert all(sum(row) == pytest.approx(1.0, abs=1e-5) for row in pat.attn_pattern)
    chk = X.check_model(model, ["L0H0", "L9H0", "MLP7"])
    assert chk.fingerprint == model.fingerprint() and [b.split(":")[0] for b in chk.bad] == ["L9H0", "MLP7"]


def test_results_serialise_nan_as_null_and_round_trip():
    r = X.AblationResult(clean=1.0, corrupt=float("nan"), gap=float("inf"), components=["L0H0"], ablated=0.5,
                         effect=0.5, effect_frac=None)
    data = r.model_dump(mode="json")
    assert data["corrupt"] is None and data["gap"] is None
    json.dumps(data, allow_nan=False)  # what the sandbox requires of _result
    again = X.AblationResult.model_validate(data)
    assert again.clean == 1.0 and again.corrupt is None
    assert math.isnan(r.model_dump()["corrupt"])  # in Python, numbers stay numbers


def test_old_log_shapes_parse():
    """Results logged before tools.experiments existed (they echoed the tool's prompts) still parse."""
    old = {"components": ["L1H1"], "method": "mean", "prompts": "main", "clean": 3.0, "gap": 6.0, "ablated": 1.0,
           "effect": 2.0, "effect_frac": 0.333}
    assert X.AblationResult.model_validate(old).corrupt is None
    att = {"head": "L1H1", "summary": {"head": "L1H1", "query": "END", "roles": {"IO": 0.36}, "previous": 0.1,
                                       "first": 0.2, "self_": 0.05}}
    assert X.AttentionResult.model_validate(att).summary.top_role == "IO"
