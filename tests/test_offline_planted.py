"""The offline planner recovers the known roles of the planted-circuit models (exact ground truth).

Real sandbox kernel, real tools. Precision/recall of the circuit and role agreement are computed with
``evals``' ground-truth score and synonym table.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.run import RunConfig, start_run
from tests.test_investigate import _check_complete, _sandbox_ok

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not _sandbox_ok(), reason="no sandbox isolation (bubblewrap) on this machine")]
NOT_CIRCUIT = ("no task effect", "inconclusive", "unclear role")


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    from evals.zoo.planted import write_planted

    root = tmp_path_factory.mktemp("planted")
    for name in ("planted-ioi", "planted-induction"):
        d = write_planted(name, root)
        for f in d.iterdir():  # the kernel runs as another user: save_pretrained writes 0600 weights
            f.chmod(0o644)
    return root


def _run(planted: Path, name: str, tmp_path: Path, circuit: list[str] | None, explanations: bool = False):
    out = start_run(RunConfig(question="what does each head do?", task=name, model=str(planted / name),
                              planner="offline", out=str(tmp_path / "runs"), n_prompts=32, circuit=circuit,
                              max_components=12))
    assert out.status == "completed"
    _check_complete(Path(out.run_dir))
    roles = {c: v["role"] for c, v in out.conclusions.items()}
    return (roles, {c: v["explanation"] for c, v in out.conclusions.items()}) if explanations else roles


def test_planted_ioi_localised_circuit_and_roles(planted, tmp_path):
    from evals.ground_truth import ground_truth_score
    from evals.scores import labels_agree
    from evals.zoo.planted import GROUND_TRUTH

    truth = GROUND_TRUTH["planted-ioi"]
    roles = _run(planted, "planted-ioi", tmp_path, None)
    pred = [c for c, r in roles.items() if r not in NOT_CIRCUIT]
    g = ground_truth_score({c: roles[c] for c in pred}, truth, agent_components=pred)
    assert (g.precision, g.recall) == (1.0, 1.0), (roles, g)
    assert all(labels_agree(roles[c], truth[c]) for c in pred), roles


def test_planted_induction_localisation_finds_redundant_pair(planted, tmp_path):
    """L0H0 and L0H1 each change the metric ~1% alone (below the sweep's threshold); the redundancy check
    finds them by ablating them together, and the battery labels both previous-token heads."""
    from evals.ground_truth import ground_truth_score
    from evals.scores import labels_agree
    from evals.zoo.planted import GROUND_TRUTH

    truth = GROUND_TRUTH["planted-induction"]
    ref = {c: r for c, r in truth.items() if r != "distractor"}
    roles, expl = _run(planted, "planted-induction", tmp_path, None, explanations=True)
    pred = [c for c, r in roles.items() if r not in NOT_CIRCUIT]
    g = ground_truth_score({c: roles[c] for c in pred}, truth, agent_components=pred)
    assert (g.precision, g.recall) == (1.0, 1.0), (roles, g)
    assert set(pred) == set(ref)
    assert all(labels_agree(roles[c], truth[c]) for c in pred), roles
    assert "Redundant with L0H1" in expl["L0H0"] and "Redundant with L0H0" in expl["L0H1"], expl


def test_planted_induction_every_head_labelled_distractors_rejected(planted, tmp_path):
    from evals.scores import labels_agree
    from evals.zoo.planted import GROUND_TRUTH

    truth = GROUND_TRUTH["planted-induction"]
    roles = _run(planted, "planted-induction", tmp_path, list(truth))
    wrong = {c: (roles[c], truth[c]) for c in truth if not labels_agree(roles[c], truth[c])}
    assert not wrong, wrong
