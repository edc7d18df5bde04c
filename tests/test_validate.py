"""The interchangeability score on ground truth: known answers and the planted clusterings (definition v2).

Small batches (16 prompts) keep these fast; ``python -m evals.validate`` runs the full table (64 prompts,
200 null clusterings, 20 swap draws per k) that docs/EVALUATION.md reports.
"""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from evals.interchange import n_clusterings
from evals.validate import (
    HIGH,
    LOW,
    VARIANTS,
    _app,
    enumerate_clusterings,
    render_markdown,
    task_clustering,
    validate_task,
)
from evals.zoo.planted import INTERCHANGE_TRUTH, KNOWN_ANSWERS

PLANTED = sorted(INTERCHANGE_TRUTH)


@pytest.fixture(scope="module")
def planted_results(tmp_path_factory) -> dict:
    torch.set_num_threads(1)
    return {name: validate_task(name, definitions=("v2",) if name == "planted-ioi" else ("v1", "v2"), n_prompts=16,
                                seed=0, n_null=50, draws=5, cache=False) for name in PLANTED}


def _row(res, definition):
    return next(r for r in res.rows if r.definition == definition)


def test_known_answers_rank_as_constructed(planted_results) -> None:
    """(a) shared role and output subspace: high; (b) same label, different subspace: low; (c) redundant: defined, high."""
    row = _row(planted_results["planted-twin-induction"], "v2")
    kinds = {(k.kind, k.a, k.b): k for k in row.known}
    assert len(kinds) == sum(len(v) for v in KNOWN_ANSWERS["planted-twin-induction"].values())
    (a,) = [k for (kind, *_), k in kinds.items() if kind == "substitutable"]
    b = [k for (kind, *_), k in kinds.items() if kind == "same label, different subspace"]
    (c,) = [k for (kind, *_), k in kinds.items() if kind == "redundant"]
    assert a.I_sym >= HIGH and a.I_ab >= HIGH and a.I_ba >= HIGH
    assert all(k.I_sym is not None and k.I_sym <= LOW for k in b)
    assert c.I_ab is not None and c.I_ba is not None and c.I_sym >= HIGH
    assert a.I_sym > max(k.I_sym for k in b) + 0.5
    # the first definition gets two of them wrong: the redundant pair is undefined, L1H2~L1H3 looks substitutable
    old = {(k.kind, k.a, k.b): k for k in _row(planted_results["planted-twin-induction"], "v1").known}
    assert old[("redundant", "L0H0", "L0H1")].I_sym is None
    assert old[("same label, different subspace", "L1H2", "L1H3")].I_sym > 0.5


@pytest.mark.parametrize("name", PLANTED)
def test_ground_truth_clustering_scores_at_least_095_with_no_undefined_pair(planted_results, name) -> None:
    res = planted_results[name]
    assert res.clustering_source == "ground truth" and res.clustering == INTERCHANGE_TRUTH[name]
    row = _row(res, "v2")
    assert row.auc >= 0.95 and row.n_undefined_pairs == 0
    assert row.rank == 1 and row.checks["swap curve falls"] is True and row.checks["known answers"] is True
    if row.n_distinct >= 20:
        assert row.auc >= row.null_p95 and row.checks[">= null p95"] is True


def test_first_definition_fails_planted_induction(planted_results) -> None:
    row = _row(planted_results["planted-induction"], "v1")
    assert row.n_undefined_pairs == 1 and row.auc == 0.5 and row.checks["AUC >= 0.95, 0 undefined"] is False


def test_markdown_puts_definitions_side_by_side(planted_results) -> None:
    md = render_markdown([planted_results[n] for n in ("planted-induction", "planted-twin-induction")])
    lines = md.splitlines()
    twin = [ln for ln in lines if ln.startswith("| planted-twin-induction | ground truth")]
    assert [ln.split(" | ")[2] for ln in twin] == ["v1", "v2"]
    assert "| planted-twin-induction | same label, different subspace | L1H2–L1H3 |" in md
    assert "Preferred clusterings" in md


def test_enumerated_clusterings_are_all_distinct_and_counted() -> None:
    comps = ["L0H0", "L0H1", "L0H2", "L1H0", "L1H1", "L1H2", "L1H3"]
    for sizes in ([2, 1], [2, 2, 1], [3, 2, 2], [2, 2, 1, 1, 1]):
        parts = list(enumerate_clusterings(comps[:sum(sizes)], sizes))
        keys = {frozenset(frozenset(c) for c in p) for p in parts}
        assert len(parts) == len(keys) == n_clusterings(sizes)
        assert all(sorted(len(c) for c in p) == sorted(sizes) for p in parts)


def test_trained_toy_uses_reference_without_distractors() -> None:
    from evals.tasks import load_task

    clusters, source = task_clustering(load_task("toy-induction"), "toy-induction")
    assert source == "reference" and sorted(clusters) == ["induction", "previous token"]
    assert sum(len(v) for v in clusters.values()) == 8


def test_cli_writes_tables_and_rejects_bad_input(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("INTERP_AGENT_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    res = runner.invoke(_app(), ["planted-induction", "--n-prompts", "8", "--n-null", "20", "--draws", "2",
                                 "--definitions", "v1,v2", "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "| planted-induction | ground truth (2+1) | v2 | 1.000 |" in res.output
    data = json.loads((tmp_path / "out" / "validation.json").read_text())
    assert [r["definition"] for r in data[0]["rows"]] == ["v1", "v2"]
    assert (tmp_path / "out" / "validation.md").read_text() in res.output
    bad = runner.invoke(_app(), ["no-such-task", "--n-prompts", "8"])
    assert bad.exit_code == 2 and "error:" in bad.output and len(bad.output.strip().splitlines()) == 1
    bad_def = runner.invoke(_app(), ["planted-induction", "--definitions", "v7"])
    assert bad_def.exit_code == 2 and "v7" in bad_def.output
    assert set(VARIANTS) >= {"v1", "v2"}
