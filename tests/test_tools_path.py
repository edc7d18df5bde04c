"""Path patching: exact checks against independent run_with_interventions constructions."""

from __future__ import annotations

import pytest
import torch

from tools import Component, TaskBatch, load_model, path_patch, run_with_cache, run_with_interventions
from tools.errors import InterventionError
from tools.model import Model
from tools.tiny import TINY_ARCHS, make_tiny_model

ARCHS = TINY_ARCHS  # the `models` / `model` fixtures live in conftest.py


@pytest.fixture(scope="module")
def batch() -> TaskBatch:
    g = torch.Generator().manual_seed(7)
    clean = torch.randint(4, 64, (4, 8), generator=g)
    corrupt = clean.clone()
    corrupt[:, 1:4] = torch.randint(4, 64, (4, 3), generator=g)
    return TaskBatch(clean_ids=clean, corrupt_ids=corrupt, answer_ids=torch.randint(4, 64, (4,), generator=g),
                     wrong_ids=torch.randint(4, 64, (4,), generator=g), positions={"S1": torch.full((4,), 2)})


def test_no_corruption_means_clean(model: Model, batch: TaskBatch) -> None:
    same = TaskBatch(clean_ids=batch.clean_ids, corrupt_ids=batch.clean_ids)
    torch.testing.assert_close(path_patch(model, same, "L0H1", ["L1H0"], "q"), model(batch.clean_ids),
                               atol=1e-5, rtol=0)


def test_receivers_upstream_of_sender_have_no_effect(model: Model, batch: TaskBatch) -> None:
    out = path_patch(model, batch, "L1H1", ["L0H0", "L0H1", "L1H2", "L1H3", "MLP0"], "resid")
    torch.testing.assert_close(out, model(batch.clean_ids), atol=1e-5, rtol=0)


def test_direct_path_to_the_final_residual(model: Model, batch: TaskBatch) -> None:
    """Receiver resid_post{last}, MLPs frozen: = clean run with the sender corrupt and every other
    head and MLP held at its clean output (built independently, in residual space)."""
    clean, corrupt = batch.clean_ids, batch.corrupt_ids
    sender = Component.parse("L0H2")
    _, c_cache = run_with_cache(model, clean, "writers")
    _, k_cache = run_with_cache(model, corrupt, [sender])
    edits = {c: c_cache[c] for c in model.components("writers") if c not in (sender, Component.emb())}
    edits[sender] = k_cache[sender]
    want = run_with_interventions(model, clean, edits)
    got = path_patch(model, batch, sender, [f"resid_post{model.n_layers - 1}"], "resid", freeze_mlps=True)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    assert (got - model(clean)).abs().max() > 1e-5


def test_qkv_paths_differ_and_positions_restrict(model: Model, batch: TaskBatch) -> None:
    recv = ["L1H0", "L1H1"] if model.n_kv_heads != model.n_heads else ["L1H0"]  # GQA: one whole KV group
    outs = {r: path_patch(model, batch, "L0H0", recv, r) for r in ("q", "k", "v")}
    clean = model(batch.clean_ids)
    for r, o in outs.items():
        assert (o - clean).abs().max() > 1e-6, r
    assert (outs["q"] - outs["v"]).abs().max() > 1e-6
    # sender patched only at position 0 (identical in clean and corrupt): no effect
    torch.testing.assert_close(path_patch(model, batch, "L0H0", recv, "v", positions=0), clean, atol=1e-5, rtol=0)


def test_gqa_kv_receivers_need_whole_group(tmp_path) -> None:
    m = load_model(make_tiny_model("llama", tmp_path / "gqa"), device="cpu")
    b = TaskBatch(clean_ids=torch.tensor([[5, 6, 7]]), corrupt_ids=torch.tensor([[5, 9, 7]]))
    with pytest.raises(InterventionError, match="KV group"):
        path_patch(m, b, "L0H0", ["L1H0"], "k")
    path_patch(m, b, "L0H0", ["L1H0"], "q")  # queries are per head: fine
    with pytest.raises(InterventionError, match="no 'q' input"):
        path_patch(m, b, "L0H0", ["MLP1"], "q")
