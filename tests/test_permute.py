"""permute_heads preserves the function exactly and its mapping names the moved heads."""

from __future__ import annotations

import pytest
import torch

from tools import Component, load_model, map_components, permute_heads, run_with_cache
from tools.model import Model
from tools.tiny import TINY_ARCHS, make_tiny_model

ARCHS = TINY_ARCHS  # the `models` / `model` fixtures live in conftest.py


@pytest.mark.parametrize("arch", ARCHS)
def test_permutation_preserves_logits_and_maps_heads(models: dict[str, Model], arch: str) -> None:
    m = models[arch]
    ids = torch.randint(4, 64, (3, 9), generator=torch.Generator().manual_seed(0))
    pm, mapping = permute_heads(m, seed=1)
    assert sorted(mapping) == m.components("heads") and sorted(mapping.values()) == m.components("heads")
    assert any(k != v for k, v in mapping.items())  # not the identity
    torch.testing.assert_close(pm(ids), m(ids), atol=1e-5, rtol=0)
    assert pm.fingerprint() != m.fingerprint()
    _, old = run_with_cache(m, ids, "heads")
    _, new = run_with_cache(pm, ids, "heads")
    for h in m.components("heads"):
        torch.testing.assert_close(new[mapping[h]], old[h], atol=1e-5, rtol=0)
    assert map_components(mapping, ["L0H0", "MLP1"])[1] == Component.parse("MLP1")
    assert map_components(mapping, ["L1H2"])[0] == mapping[Component.parse("L1H2")]


def test_gqa_permutation_keeps_groups(tmp_path) -> None:
    m = load_model(make_tiny_model("llama", tmp_path / "gqa", n_heads=8), device="cpu")
    assert m.n_kv_heads == 4
    ids = torch.randint(4, 64, (2, 6), generator=torch.Generator().manual_seed(1))
    for seed in range(3):
        pm, mapping = permute_heads(m, seed=seed)
        torch.testing.assert_close(pm(ids), m(ids), atol=1e-5, rtol=0)
        for old, new in mapping.items():  # heads sharing a KV head still share one
            partner = Component.attn_head(old.layer, old.head ^ 1)
            assert mapping[partner].head // 2 == new.head // 2
