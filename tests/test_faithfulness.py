"""Faithfulness (keep only the circuit, mean-ablate the rest): exact invariants on a tiny GPT-2."""

from __future__ import annotations

import pytest
import torch

from evals.faithfulness import faithfulness, faithfulness_curve
from evals.scores import ScoreError
from tools.batch import TaskBatch
from tools.model import load_model
from tools.tiny import make_tiny_model


@pytest.fixture(scope="module")
def model_and_batch(tmp_path_factory):
    m = load_model(make_tiny_model("gpt2", tmp_path_factory.mktemp("faith") / "m", seed=1), device="cpu")
    with torch.no_grad():
        for name, p in m.hf.named_parameters():
            if name.endswith(("c_attn.weight", "c_proj.weight", "wte.weight")):
                p *= 10
        m.block(1).attn.c_proj.weight[0:m.d_head] = 0.0  # L1H0 writes nothing: a dead head
    m._fingerprint = None
    ids = torch.randint(4, 64, (12, 7), generator=torch.Generator().manual_seed(0))
    last = m(ids)[:, -1]
    return m, TaskBatch(clean_ids=ids, answer_ids=last.argmax(-1), wrong_ids=last.argmin(-1))


def test_whole_model_is_fully_faithful_and_empty_circuit_is_zero(model_and_batch):
    m, b = model_and_batch
    full = faithfulness(m, b, m.components("heads") + m.components("mlps"))
    assert full.fraction == pytest.approx(1.0, abs=1e-6) and full.universe_size == 10
    assert full.m_circuit == pytest.approx(full.m0, abs=1e-5)
    empty = faithfulness(m, b, [])
    assert empty.fraction == pytest.approx(0.0, abs=1e-6)
    assert abs(empty.m0 - empty.m_empty) > 0.5  # the ablation matters on this model


def test_dropping_a_dead_head_changes_nothing(model_and_batch):
    m, b = model_and_batch
    rest = [c for c in m.components("heads") + m.components("mlps") if str(c) != "L1H0"]
    assert faithfulness(m, b, rest).fraction == pytest.approx(1.0, abs=1e-5)


def test_attn_stands_for_its_heads_and_emb_is_never_ablated(model_and_batch):
    m, b = model_and_batch
    f = faithfulness(m, b, ["EMB", "ATTN0", "ATTN1", "MLP0", "MLP1"])
    assert f.fraction == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ScoreError, match="residual-stream site"):
        faithfulness(m, b, ["resid_post0"])


def test_curve_points_equal_single_faithfulness_calls(model_and_batch):
    m, b = model_and_batch
    ranking = ["L0H2", "MLP0", "L1H3", "L0H0"]
    curve = faithfulness_curve(m, b, ranking)
    assert curve.ks == [0, 1, 2, 3, 4] and curve.fractions[0] == pytest.approx(0.0, abs=1e-6)
    for k in (1, 3):
        assert curve.fractions[k] == pytest.approx(faithfulness(m, b, ranking[:k]).fraction, abs=1e-5)
    fr = curve.fractions
    assert curve.area == pytest.approx(sum((fr[i] + fr[i + 1]) / 2 for i in range(4)) / 4)


def test_full_ranking_ends_at_one_and_good_rankings_score_higher(model_and_batch):
    m, b = model_and_batch
    comps = [str(c) for c in m.components("heads") + m.components("mlps")]
    single = {c: faithfulness(m, b, [c]).fraction for c in comps}
    best = sorted(comps, key=lambda c: -single[c])
    good, bad = faithfulness_curve(m, b, best), faithfulness_curve(m, b, best[::-1])
    assert good.fractions[-1] == pytest.approx(1.0, abs=1e-5) and bad.fractions[-1] == pytest.approx(1.0, abs=1e-5)
    assert good.area > bad.area
    with pytest.raises(ScoreError, match="twice"):
        faithfulness_curve(m, b, ["L0H0", "L0H0"])
