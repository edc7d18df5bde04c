"""The benchmark scripts' own logic: exponent fit, skipping peers that are not installed, peer agreement.

The peers (TransformerLens, nnsight) are an optional extra: the agreement test skips without them.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def peers():
    return _load("peers")


@pytest.fixture(scope="module")
def scaling():
    return _load("scaling")


def test_fit_exponent_recovers_a_power_law(scaling):
    xs = [3.0, 7.0, 20.0, 64.0]
    assert scaling.fit_exponent(xs, [0.5 * x ** 1.7 for x in xs]) == pytest.approx(1.7, abs=1e-9)
    assert scaling.fit_exponent(xs, [2.0 for _ in xs]) == pytest.approx(0.0, abs=1e-9)


def test_flops_per_token_counts_gpt2_small(scaling):
    # GPT-2 small: 12 x 12 x 768^2 = 84.9M non-embedding weights, + 768 x vocab unembedding
    assert scaling.flops_per_token(12, 768, vocab=50257) == pytest.approx(2 * (84_934_656 + 768 * 50257))


def test_spread_keeps_ends_and_count(scaling):
    items = list(range(64))
    picked = scaling.spread(items, 8)
    assert len(picked) == 8 and picked[0] == 0 and picked[-1] == 63 and picked == sorted(set(picked))
    assert scaling.spread(items[:5], 8) == items[:5]


def test_missing_peer_is_skipped_with_a_note(peers, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "transformer_lens" else real(name, *a))
    found, notes = peers.installed_peers()
    assert peers.TransformerLensPeer not in found
    assert any("TransformerLens" in n and "not installed" in n for n in notes)


@pytest.fixture(scope="module")
def tiny_setup(peers, tmp_path_factory):
    path = peers.build_gpt2(tmp_path_factory.mktemp("peer-model") / "m", n_layers=2, n_heads=4, d_model=64,
                            vocab=64, n_positions=64)
    batch = peers.make_batch(3, 6, 64)
    return path, batch, peers.Ours(path, batch)


def test_ours_grid_and_ablation_are_consistent(peers, tiny_setup):
    from tools.interventions import ablation_sweep, patch
    from tools.metrics import get_metric

    path, batch, ours = tiny_setup
    m = get_metric("logit_diff")
    heads = ours.cache_heads()
    assert heads.shape == (8, 3, 6, 64)
    L, H = ours.ab
    name = f"L{L}H{H}"
    # the timed ablation is the sweep's single zero-ablation of that head
    (eff,) = ablation_sweep(ours.model, batch, "logit_diff", components=[name], method="zero").values()
    assert float(m(ours.forward(), batch) - m(ours.ablate_one(), batch)) == pytest.approx(eff, abs=1e-5)
    assert abs(eff) > 1e-6
    # the timed sweep's grid puts each head's single patch at [layer, head]
    sweep = ours.sweep()
    one = float(m(patch(ours.model, batch, [name]), batch) - m(ours.model(batch.corrupt_ids), batch))
    assert float(sweep[L, H]) == pytest.approx(one, abs=1e-5)
    assert ours.attribution().shape == (2, 4)


@pytest.mark.slow
@pytest.mark.parametrize("peer_name", ["TransformerLens", "nnsight"])
def test_installed_peer_agrees_with_ours(peers, tiny_setup, peer_name):
    cls = next(c for c in peers.PEERS if c.name == peer_name)
    pytest.importorskip(cls.package)
    path, batch, ours = tiny_setup
    agree = peers.agreement(ours, cls(path, batch))
    assert set(agree) == set(peers.WORK)
    for work, (diff, scale) in agree.items():
        assert scale > 0 and diff <= peers.REL_TOLERANCE * scale, (work, diff, scale)


def test_scaling_measures_the_three_works_on_a_tiny_model(scaling, tmp_path):
    from tools import load_model

    path = scaling.build_gpt2(tmp_path / "m", n_layers=2, n_heads=4, d_model=64, vocab=64, n_positions=64)
    model = load_model(path, device="cpu")
    batch = scaling.make_batch(4, 6, 64)
    hs = model.components("heads")
    res, fwd = scaling.measure(model, batch, {"sweep": hs, "attribution": hs, "matrix": hs[:3]})
    assert set(res) == {"sweep", "attribution", "matrix"} and fwd > 0
    assert all(t > 0 for t in res.values())
