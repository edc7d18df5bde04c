"""The localisation's redundancy check (``tools.experiments.redundancy``) on the planted models.

Runs in-process against the planted ground truth and ``tools.ablate`` (its batched variants must equal
one ablation per variant).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import tools
from evals.zoo.planted import REDUNDANT_PAIRS
from tools import experiments as X


def _kernel(name: str) -> SimpleNamespace:
    from evals.tasks import load_task
    from evals.zoo import load_zoo_model

    model = load_zoo_model(name)
    task = load_task(name)
    return SimpleNamespace(model=model, batch=task.make_batch(model.tokenizer, 16, 0),
                           metric=task.metric_fn(model.tokenizer))


@pytest.fixture(scope="module")
def induction() -> SimpleNamespace:
    return _kernel("planted-induction")


def _run(k: SimpleNamespace, **kw) -> X.RedundancyResult:
    return X.redundancy(k.model, k.batch, k.metric, **kw)


def _ablated_frac(k: SimpleNamespace, comps: list[str], method: str) -> float:
    m0 = X.baseline(k.model, k.batch, k.metric)
    logits = tools.ablate(k.model, k.batch, tools.parse_components(comps), method=method)
    return (m0.clean - float(k.metric(logits, k.batch))) / m0.gap


def test_finds_the_planted_redundant_pair(induction):
    r = _run(induction, exclude=["L1H0"])
    a, b = REDUNDANT_PAIRS["planted-induction"]
    assert set(r.kept) == {a, b}
    assert r.kept[a].partners == [b] and r.kept[b].partners == [a]
    assert r.kept[a].joint > 0.3 and f"{a}+{b} ablated together" in r.kept[a].why
    assert r.groups["L0"].flagged and not r.groups["L1"].flagged
    assert r.groups["L1"].heads == ["L1H1", "L1H2", "L1H3"]  # the kept head is left out
    assert all(abs(r.single[c]) < 0.05 for c in (a, b))  # each alone is below the sweep's threshold
    assert len(r.pairs) == 6  # every pair of the flagged layer, none of the other


@pytest.mark.parametrize("method", ["mean", "zero"])
def test_batched_variants_equal_tools_ablate(induction, method):
    r = _run(induction, exclude=["L1H0"], method=method)
    for key in ("L0H0,L0H1", "L0H0,L0H2"):
        assert r.pairs[key] == pytest.approx(_ablated_frac(induction, key.split(","), method), abs=1e-5)
    for c in ("L0H0", "L1H2"):
        assert r.single[c] == pytest.approx(_ablated_frac(induction, [c], method), abs=1e-5)


def test_thresholds_are_inputs(induction):
    assert _run(induction, exclude=["L1H0"], threshold=0.9).kept == {}
    assert _run(induction, exclude=["L1H0", "L0H0"]).kept == {}  # a lone member: no pair


def test_no_redundancy_reported_where_there_is_none():
    r = _run(_kernel("planted-ioi"), exclude=["L0H0", "L1H0", "L1H1", "L2H0"])
    assert r.kept == {} and not any(g.flagged for g in r.groups.values())


def test_bounded_check_finds_the_pair_with_fewer_ablations(induction):
    full = _run(induction, exclude=["L1H0"])
    bounded = _run(induction, exclude=["L1H0"], max_groups=1, max_candidates=2)
    a, b = REDUNDANT_PAIRS["planted-induction"]
    assert set(bounded.kept) == set(full.kept) == {a, b}
    g = bounded.groups["L0"]
    assert g.flagged and set(g.candidates) == {a, b}  # each member alone restores the group's effect
    assert min(g.restores[a], g.restores[b]) > max(v for h, v in g.restores.items() if h not in (a, b))
    assert list(bounded.pairs) == [f"{a},{b}"]  # one pair instead of six
    assert bounded.groups["L1"].sum_single is None and not bounded.groups["L1"].flagged  # below threshold: skipped
    assert set(bounded.single) == set(g.heads)
    assert bounded.variants() < full.variants()
    assert bounded.pairs[f"{a},{b}"] == pytest.approx(full.pairs[f"{a},{b}"], abs=1e-6)
    assert X.redundancy_cost(2, 4, 1, 2) >= bounded.variants()


def test_unbounded_result_keeps_the_old_json(induction):
    data = _run(induction, exclude=["L1H0"]).model_dump(mode="json")
    assert "max_groups" not in data and "restores" not in data["groups"]["L0"]  # logs from before still replay


def test_split_check_matches_the_one_cell_check(induction):
    """Localisation on big models: a cell of layer groups only, then one cell per flagged layer."""
    full = _run(induction, exclude=["L1H0"])
    groups = _run(induction, exclude=["L1H0"], max_groups=0)
    assert groups.single == {} and groups.pairs == {} and groups.kept == {}
    assert {k: g.joint for k, g in groups.groups.items()} == pytest.approx({k: g.joint for k, g in full.groups.items()})
    layer0 = _run(induction, exclude=["L1H0"], layers=[0], max_candidates=4)
    assert list(layer0.groups) == ["L0"] and set(layer0.kept) == set(full.kept)
    assert layer0.pairs == pytest.approx(full.pairs)  # 4 heads: every pair, as in the one-cell check
