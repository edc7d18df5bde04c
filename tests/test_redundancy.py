"""The localisation's redundancy check (``agent.actions.RedundancyCheck``) on the planted models.

The tool's cell runs in-process here (the kernel's setup cells executed into a namespace), so the
generated code itself is tested against ``tools.ablate`` and the planted ground truth, without a sandbox.
"""

from __future__ import annotations

import pytest

from agent.actions import RedundancyCheck, setup_cells
from evals.zoo.planted import REDUNDANT_PAIRS


def _kernel(name: str) -> dict:
    ns: dict = {}
    for cell in setup_cells(name, name, 16, 0):
        exec(cell, ns)  # noqa: S102 - the project's own setup cells
    return ns


@pytest.fixture(scope="module")
def induction() -> dict:
    return _kernel("planted-induction")


def _run(ns: dict, tool: RedundancyCheck) -> dict:
    exec(tool.to_code(), ns)  # noqa: S102
    return ns["_result"]


def _ablated_frac(ns: dict, comps: list[str], method: str) -> float:
    import tools

    b, m0 = ns["batch"], ns["_base"](ns["batch"])
    logits = tools.ablate(ns["model"], b, tools.parse_components(comps), method=method)
    return (m0["clean"] - float(ns["metric"](logits, b))) / m0["gap"]


def test_finds_the_planted_redundant_pair(induction):
    r = _run(induction, RedundancyCheck(exclude=["L1H0"]))
    a, b = REDUNDANT_PAIRS["planted-induction"]
    assert set(r["kept"]) == {a, b}
    assert r["kept"][a]["partners"] == [b] and r["kept"][b]["partners"] == [a]
    assert r["kept"][a]["joint"] > 0.3 and f"{a}+{b} ablated together" in r["kept"][a]["why"]
    assert r["groups"]["L0"]["flagged"] and not r["groups"]["L1"]["flagged"]
    assert r["groups"]["L1"]["heads"] == ["L1H1", "L1H2", "L1H3"]  # the kept head is left out
    assert all(abs(r["single"][c]) < 0.05 for c in (a, b))  # each alone is below the sweep's threshold
    assert len(r["pairs"]) == 6  # every pair of the flagged layer, none of the other


@pytest.mark.parametrize("method", ["mean", "zero"])
def test_batched_variants_equal_tools_ablate(induction, method):
    r = _run(induction, RedundancyCheck(exclude=["L1H0"], method=method))
    for key in ("L0H0,L0H1", "L0H0,L0H2"):
        assert r["pairs"][key] == pytest.approx(_ablated_frac(induction, key.split(","), method), abs=1e-5)
    for c in ("L0H0", "L1H2"):
        assert r["single"][c] == pytest.approx(_ablated_frac(induction, [c], method), abs=1e-5)


def test_thresholds_are_inputs(induction):
    assert _run(induction, RedundancyCheck(exclude=["L1H0"], threshold=0.9))["kept"] == {}
    assert _run(induction, RedundancyCheck(exclude=["L1H0", "L0H0"]))["kept"] == {}  # a lone member: no pair


def test_no_redundancy_reported_where_there_is_none():
    ns = _kernel("planted-ioi")
    r = _run(ns, RedundancyCheck(exclude=["L0H0", "L1H0", "L1H1", "L2H0"]))
    assert r["kept"] == {} and not any(g["flagged"] for g in r["groups"].values())
