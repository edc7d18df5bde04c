"""Fakes for the research-loop tests: a sandbox that executes the agent's cells against fake experiments.

Each experiment cell is one call ``tools.experiments.<fn>(model, ...)`` (see ``agent.actions``); the fake
sandbox runs that very code with :class:`FakeExperiments` in place of ``tools.experiments``, whose functions
have the real signatures (tested) and return the real result models with the numbers a model with known
per-component signatures would give. So the graph, planners, budgets and resume are tested without a
kernel or a model, on exactly the data shapes the real kernel returns. Real end-to-end runs are in
tests/test_investigate*.py.
"""

from __future__ import annotations

import inspect
import re
import traceback
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from tools import experiments as X

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


class FakeExperiments:
    """``tools.experiments`` with the same signatures, answering from :data:`SIGNATURES`.

    A batch is the name of the prompt set (``"main"`` / ``"heldout"``: held-out numbers are scaled by 0.9).
    """

    def __init__(self, signatures: dict[str, dict[str, Any]]) -> None:
        self.sig = signatures

    @staticmethod
    def _base(batch: Any) -> X.Baseline:
        scale = 0.9 if batch == "heldout" else 1.0
        return X.Baseline(clean=CLEAN * scale, corrupt=CORRUPT * scale, gap=GAP * scale)

    def _s(self, component: Any) -> dict[str, Any]:
        return self.sig[str(component)]

    def check_model(self, model, components=()):
        bad = [f"{c}: layer out of range (the fake model has 2 layers)" for c in components
               if (m := re.match(r"\D+(\d+)", str(c))) and int(m.group(1)) > 1]
        return X.ModelCheck(fingerprint="f" * 64, n_layers=2, n_heads=4, bad=bad)

    def ablation(self, model, batch, metric, components, method="mean"):
        b = self._base(batch)
        comps = [str(c) for c in components]
        s = self._s(comps[0])
        frac = s["joint"] if len(comps) > 1 and "joint" in s else s["abl"]
        return X.AblationResult(**b.model_dump(), components=comps, method=method, ablated=b.clean - frac * b.gap,
                                effect=frac * b.gap, effect_frac=frac)

    def patching(self, model, batch, metric, components, positions=None, direction="clean_to_corrupt"):
        b = self._base(batch)
        frac = self._s(components[0])["pat"]
        return X.PatchingResult(**b.model_dump(), components=list(components), positions=positions,
                                direction=direction, patched=b.corrupt + frac * b.gap, effect=frac * b.gap,
                                effect_frac=frac)

    def path_patching(self, model, batch, metric, sender, receivers, receiver_input="resid"):
        b = self._base(batch)
        frac = self._s(sender).get("paths", {}).get(receiver_input, 0.0)
        return X.PathPatchingResult(**b.model_dump(), sender=str(sender), receivers=list(receivers),
                                    receiver_input=receiver_input, patched=b.clean - frac * b.gap,
                                    effect=frac * b.gap, effect_frac=frac)

    def sweep(self, model, batch, metric, kind="all", method="exact", top_k=20, zero_ablation=False, components=None,
              ablation_method="exact"):
        """Exact numbers from ``pat`` / ``zab``; the attribution screen's from ``attr_pat`` / ``attr_zab`` when
        a signature has them (else the exact ones)."""
        b = self._base(batch)
        sig = {c: s for c, s in self.sig.items() if components is None or c in components}
        pre = "attr_" if method == "attribution" else ""
        fr = {c: s.get(pre + "pat", s.get("pat", 0.0)) for c, s in sig.items()}
        top = sorted(fr, key=lambda c: -abs(fr[c]))[:top_k]
        apre = "attr_" if ablation_method == "attribution" else ""
        return X.SweepResult(**b.model_dump(), kind=kind, method=method, top_k=top_k, zero_ablation=zero_ablation,
                             ablation_method=ablation_method, components=components,
                             effects={c: fr[c] * b.gap for c in top}, effect_frac={c: fr[c] for c in top},
                             ablation_frac={c: s.get(apre + "zab", s.get("zab", 0.0)) for c, s in sig.items()}
                             if zero_ablation else None)

    def redundancy(self, model, batch, metric, exclude=(), threshold=0.10, synergy=2.0, method="mean",
                   max_groups=None, max_candidates=None, layers=None):
        """Signatures with a ``partner`` form redundant pairs (their ``joint`` effect, also their layer group's
        joint effect); ``max_groups=0`` reports the groups only, ``layers`` keeps those layers' groups."""
        heads = [c for c in self.sig if c.startswith("L") and c not in exclude
                 and (layers is None or int(c[1:c.index("H")]) in layers)]
        groups: dict[str, list[str]] = {}
        for c in heads:
            groups.setdefault(c[:c.index("H")], []).append(c)
        joint = {g: max([self.sig[c].get("joint", 0.0) for c in cs if self.sig[c].get("partner")] or [0.0])
                 for g, cs in groups.items()}
        gres = {g: X.RedundancyGroup(heads=cs, joint=joint[g], sum_single=None, flagged=False)
                for g, cs in groups.items() if len(cs) >= 2}
        kept = {c: X.RedundantHead(partners=[self.sig[c]["partner"]], joint=self.sig[c]["joint"],
                                   why=f"{c}+{self.sig[c]['partner']} jointly")
                for c in heads if self.sig[c].get("partner") and max_groups != 0}
        return X.RedundancyResult(**self._base(batch).model_dump(), exclude=list(exclude), threshold=threshold,
                                  synergy=synergy, method=method, single={}, groups=gres, pairs={}, kept=kept)

    def attention(self, model, batch, head):
        roles = {k: v * (0.9 if batch == "heldout" else 1.0) for k, v in self._s(head)["attn"].items()}
        return X.AttentionResult(head=str(head), summary=X.AttentionSummary(
            head=str(head), query="END", roles=roles, previous=0.0, first=0.0, self=0.0))

    def logit_attribution(self, model, batch, metric, components):
        b = self._base(batch)
        comp = str(components[0])
        return X.DLAResult(dla={comp: self._s(comp)["dla"] * b.clean}, clean=b.clean, gap=b.gap)

    def head_profile(self, model, heads, seed=0):
        out = {}
        for h in heads:
            sc = {k: v * (0.9 if seed == 1 else 1.0) for k, v in self._s(h)["scores"].items()}
            out[str(h)] = X.HeadProfile(copying=sc["copying"], prev_token=sc["previous_token"],
                                        induction=sc["induction"], induction_offset=1,
                                        induction_textbook=sc["induction"], duplicate_token=sc["duplicate_token"],
                                        lookback=sc["previous_token"], lookback_offset=1)
        return X.HeadProfileResult(scores=out)

    def probing(self, model, batch, site, position="END", seed=0):
        return X.ProbingResult(site=str(site), position=str(position), seed=seed, heldout_accuracy=0.5,
                               train_accuracy=0.5)

    def steering(self, model, batch, metric, site, alpha=1.0):
        b = self._base(batch)
        return X.SteeringResult(**b.model_dump(), site=str(site), alpha=alpha, steered=b.corrupt, effect_frac=0.0)

    def baseline(self, model, batch, metric):
        return self._base(batch)


FAKED = [n for n in X.RESULT_MODELS if n not in ("attention_pattern",)] + ["baseline"]
"""The experiments the fake implements (every one a planner tool or the setup check uses)."""


def same_signature(name: str) -> bool:
    """The fake's function takes exactly the real one's parameters (names, order, defaults)."""
    real = inspect.signature(getattr(X, name))
    fake = inspect.signature(getattr(FakeExperiments, name))
    strip = lambda sig: [(p.name, p.default) for p in sig.parameters.values() if p.name != "self"]  # noqa: E731
    return strip(real) == strip(fake)


class FakeSandbox:
    """Runs the cells ``agent.actions`` / ``agent.kernel`` write, with :class:`FakeExperiments` as the kernel's
    ``tools.experiments`` and ``batches`` naming the prompt sets."""

    isolation = "fake (tests)"

    def __init__(self, signatures: dict[str, dict[str, Any]] | None = None, crash_after: int | None = None) -> None:
        self.sig = SIGNATURES if signatures is None else signatures
        self.cells: list[str] = []
        self.crash_after = crash_after
        self.shut = False
        self.ns: dict[str, Any] = {
            "tools": SimpleNamespace(experiments=FakeExperiments(self.sig)), "model": None, "metric": None,
            "batches": {"main": "main", "heldout": "heldout"}, "batch": "main"}

    def start(self) -> FakeSandbox:
        return self

    def shutdown(self) -> None:
        self.shut = True

    def execute(self, code: str, timeout: float | None = None) -> FakeResult:
        self.cells.append(code)
        if self.crash_after is not None and len(self.cells) > self.crash_after:
            raise Crash(f"simulated kill after {self.crash_after} cells")
        self.ns.pop("_result", None)
        try:
            exec(code, self.ns)  # noqa: S102 - the agent's own cells, against fakes
        except Exception as e:  # noqa: BLE001 - a cell error is data
            return FakeResult(status="error", error_name=type(e).__name__, error_value=str(e),
                              traceback="".join(traceback.format_exception(e))[-500:])
        return FakeResult(data=self.ns.get("_result"))


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
