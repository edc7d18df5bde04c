"""The offline planner on the trained zoo models, scored against their reference circuits (project analysis).

Real sandbox kernel and tools; localisation included (no --circuit). Skipped while a model or its
reference is missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.run import RunConfig, start_run
from tests.test_investigate import _check_complete, _sandbox_ok

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not _sandbox_ok(), reason="no sandbox isolation (bubblewrap) on this machine")]
NOT_CIRCUIT = ("no task effect", "inconclusive", "unclear role")
# Floors below the values measured when this test was written (see the final report of issue 6).
FLOORS = {"toy-induction": (0.75, 0.75, 0.75), "toy-ioi": (0.75, 0.75, 0.66)}


def _reference(name: str) -> dict[str, str]:
    from evals.tasks import load_task
    from evals.zoo import list_zoo

    if name not in {e.name for e in list_zoo()}:
        pytest.skip(f"zoo model {name} is not built")
    ref = {e.component: e.role for e in load_task(name).reference}
    if not ref:
        pytest.skip(f"task {name} has no reference circuit yet")
    return ref


@pytest.mark.parametrize("name", ["toy-induction", "toy-ioi"])
def test_offline_planner_recovers_reference_roles(name, tmp_path):
    from evals.ground_truth import ground_truth_score
    from evals.scores import labels_agree

    ref = _reference(name)
    out = start_run(RunConfig(question="what does each component do?", task=name, model=name, planner="offline",
                              out=str(tmp_path / "runs"), n_prompts=32, max_components=8))
    assert out.status == "completed"
    _check_complete(Path(out.run_dir))
    roles = {c: v["role"] for c, v in out.conclusions.items()}
    pred = [c for c, r in roles.items() if r not in NOT_CIRCUIT]
    g = ground_truth_score({c: roles[c] for c in pred}, ref, agent_components=pred)
    tp = [c for c in pred if c in ref]
    agree = sum(labels_agree(roles[c], ref[c]) for c in tp) / max(1, len(tp))
    p_min, r_min, a_min = FLOORS[name]
    print(f"{name}: precision {g.precision:.2f} recall {g.recall:.2f} role agreement {agree:.2f} roles {roles}")
    assert g.precision >= p_min and g.recall >= r_min and agree >= a_min, (roles, ref)


@pytest.mark.parametrize("name", ["toy-greater-than", "toy-pronoun", "planted-twin-induction"])
def test_offline_planner_is_grounded_on_the_other_zoo_tasks(name, tmp_path):
    """Every conclusion traced to logged evidence (checked in ``_check_complete``) on the zoo tasks the test
    above does not cover (planted-ioi and planted-induction are in tests/test_offline_planted.py)."""
    from evals.zoo import list_zoo

    if name not in {e.name for e in list_zoo()}:
        pytest.skip(f"zoo model {name} is not built")
    out = start_run(RunConfig(question="what does each component do?", task=name, model=name, planner="offline",
                              out=str(tmp_path / "runs"), n_prompts=16, max_components=4))
    assert out.status == "completed"
    events = _check_complete(Path(out.run_dir))
    assert sum(1 for e in events if e.kind == "conclusion" and e.inconclusive_reason is None) >= 2
