"""Fakes for the research-loop tests: a scripted sandbox answering the agent's cells from a table.

The fake reads each cell's first comment line (written by ``agent.actions``) and returns the numbers a
model with known per-component signatures would give, so the graph, planners, budgets and resume are
tested without a kernel or a model. Real end-to-end runs are in tests/test_investigate*.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

CLEAN, CORRUPT = 4.0, -4.0
GAP = CLEAN - CORRUPT

# component -> signature: ablation/patching effect (fraction of gap), DLA (fraction of clean),
# attention from END on roles, head scores on seed 0 and seed 1.
SIGNATURES: dict[str, dict[str, Any]] = {
    "L1H0": {"abl": 0.5, "pat": 0.45, "dla": 0.6, "attn": {"IO": 0.8, "S1": 0.05, "S2": 0.05},
             "scores": {"copying": 0.9, "previous_token": 0.0, "induction": 0.1, "duplicate_token": 0.0}},
    "L1H1": {"abl": -0.1, "pat": -0.1, "dla": -0.3, "attn": {"IO": 0.5, "S1": 0.1, "S2": 0.1},
             "scores": {"copying": 0.2, "previous_token": 0.0, "induction": 0.0, "duplicate_token": 0.0}},
    "L0H1": {"abl": 0.3, "pat": 0.3, "dla": 0.0, "attn": {"IO": 0.05, "S1": 0.1, "S2": 0.1},
             "scores": {"copying": 0.1, "previous_token": 0.95, "induction": 0.0, "duplicate_token": 0.0}},
    "L0H2": {"abl": 0.25, "pat": 0.2, "dla": 0.02, "attn": {"IO": 0.05, "S1": 0.6, "S2": 0.1},
             "scores": {"copying": 0.1, "previous_token": 0.0, "induction": 0.0, "duplicate_token": 0.8}},
    "L0H3": {"abl": 0.0, "pat": 0.01, "dla": 0.0, "attn": {"IO": 0.2, "S1": 0.2, "S2": 0.2},
             "scores": {"copying": 0.0, "previous_token": 0.1, "induction": 0.0, "duplicate_token": 0.1}},
    "MLP0": {"abl": 0.15, "pat": 0.15, "dla": 0.01},
}
EXPECTED_ROLES = {"L1H0": "name mover", "L1H1": "negative mover", "L0H1": "previous token",
                  "L0H2": "duplicate token", "L0H3": "no task effect", "MLP0": "indirect MLP"}


@dataclass
class FakeResult:
    status: str = "ok"
    data: Any = None
    stdout: str = ""
    stderr: str = ""
    result: str | None = None
    outputs: list[str] = field(default_factory=list)
    error_name: str | None = None
    error_value: str | None = None
    traceback: str | None = None
    duration_s: float = 0.001

    def model_dump(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Crash(BaseException):
    """Simulates the process dying (not an Exception, so nothing in the loop catches it)."""


class FakeSandbox:
    """Answers the cells ``agent.actions`` writes, from :data:`SIGNATURES`."""

    isolation = "fake (tests)"

    def __init__(self, signatures: dict[str, dict[str, Any]] | None = None, crash_after: int | None = None) -> None:
        self.sig = SIGNATURES if signatures is None else signatures
        self.cells: list[str] = []
        self.crash_after = crash_after
        self.shut = False

    def start(self) -> FakeSandbox:
        return self

    def shutdown(self) -> None:
        self.shut = True

    def execute(self, code: str, timeout: float | None = None) -> FakeResult:
        self.cells.append(code)
        if self.crash_after is not None and len(self.cells) > self.crash_after:
            raise Crash(f"simulated kill after {self.crash_after} cells")
        if "model.fingerprint()" in code:
            return FakeResult(data={"fingerprint": "f" * 64})
        head = code.splitlines()[0]
        held = "heldout" in head
        scale = 0.9 if held else 1.0
        base = {"clean": CLEAN * scale, "corrupt": CORRUPT * scale, "gap": GAP * scale}
        m = re.match(r"# (\w+)", head)
        kind = m.group(1) if m else ""
        comp = next((c for c in self.sig if re.search(rf"\b{c}\b", head)), None)
        if kind == "exact" or kind == "attribution":
            fr = {c: s.get("pat", 0.0) for c, s in self.sig.items()}
            za = {c: s.get("zab", 0.0) for c, s in self.sig.items()}
            return FakeResult(data={**base, "effects": {c: v * GAP for c, v in fr.items()}, "effect_frac": fr,
                                    "ablation_frac": za})
        if kind == "redundancy":  # signatures with a "partner" form redundant pairs (their "joint" effect)
            kept = {c: {"partners": [s["partner"]], "joint": s["joint"], "why": f"{c}+{s['partner']} jointly"}
                    for c, s in self.sig.items() if s.get("partner") and not re.search(rf"\b{c}\b", head)}
            return FakeResult(data={**base, "kept": kept})
        if comp is None:
            return FakeResult(status="error", error_name="NameError", error_value=f"unknown cell {head!r}")
        s = self.sig[comp]
        if kind == "ablate" and "joint" in s and re.match(r"# ablate \S+,", head):
            return FakeResult(data={**base, "effect_frac": s["joint"], "effect": s["joint"] * base["gap"]})
        if kind == "ablate":
            return FakeResult(data={**base, "effect_frac": s["abl"], "effect": s["abl"] * base["gap"]})
        if kind == "patch":
            return FakeResult(data={**base, "effect_frac": s["pat"], "effect": s["pat"] * base["gap"]})
        if kind == "direct":
            return FakeResult(data={"dla": {comp: s["dla"] * base["clean"]}, "clean": base["clean"],
                                    "gap": base["gap"]})
        if kind == "attention":
            return FakeResult(data={"head": comp, "summary": dict(s["attn"])})
        if kind == "head":
            seed1 = "seed 1" in head
            sc = {k: (v * 0.9 if seed1 else v) for k, v in s["scores"].items()}
            return FakeResult(data={"scores": {comp: sc}})
        return FakeResult(status="error", error_name="NotImplementedError", error_value=head)


def fake_factory(**kw: Any):
    """A sandbox factory (``factory(workspace, setup, cfg)``) making :class:`FakeSandbox` instances."""
    made: list[FakeSandbox] = []

    def factory(workspace, setup, cfg):
        sb = FakeSandbox(**kw)
        made.append(sb)
        return sb

    factory.made = made  # type: ignore[attr-defined]
    return factory


class FakeTask:
    """A stand-in for ``evals.tasks.TaskSpec`` (framing only)."""

    name = "toy-ioi"
    model = "toy-ioi"
    description = "toy IOI"
    metric = "logit_diff"
    roles = ["IO", "S1", "S2", "END"]
    question_keywords = ["ioi", "indirect object"]


import pytest  # noqa: E402


@pytest.fixture(autouse=False)
def fake_tasks(monkeypatch):
    """Framing without evals' task data: ``--task toy-ioi`` resolves to :class:`FakeTask`."""
    monkeypatch.setattr("agent.framing._load_task", lambda name: FakeTask())
    monkeypatch.setattr("agent.framing._load_tasks", lambda: [FakeTask()])
    monkeypatch.setattr("agent.framing._zoo_names", lambda: {"toy-ioi"})
