"""Localisation that scales (agent.graph.localise): gradient screen, exact checks of the top candidates in
chunks that fit the cell limit, the agreement between the two, the fallback to exact, and the bounded
redundancy check — on the scripted sandbox of tests/test_graph_fakes.py (no kernel, no model)."""

from __future__ import annotations

import re

import pytest

from agent.graph.localise import candidate_count
from agent.log import read_events
from agent.run import RunConfig, start_run
from agent.view import LOCALISE_EXACT, LOCALISE_SWEEP, RunView
from tests.test_graph_fakes import SIGNATURES, FakeResult, FakeSandbox, fake_tasks

pytestmark = pytest.mark.usefixtures(fake_tasks.__name__)

QUIET = {"attn": {"IO": 0.1, "S1": 0.1, "S2": 0.1}, "dla": 0.0,
         "scores": {"copying": 0.0, "previous_token": 0.0, "induction": 0.0, "duplicate_token": 0.0}}


def big_model(effects: dict[str, float], attr: dict[str, float] | None = None) -> dict[str, dict]:
    """Signatures of a 6-layer, 8-head model (54 components): ``effects`` are exact patching fractions,
    ``attr`` the screen's (default: the exact ones, plus a small rank-preserving tail for the rest)."""
    sig: dict[str, dict] = {}
    names = [f"L{layer}H{h}" for layer in range(6) for h in range(8)] + [f"MLP{layer}" for layer in range(6)]
    for i, c in enumerate(names):
        s = {**QUIET, "abl": 0.0, "pat": effects.get(c, 0.001 * (i % 7))}
        s["attr_pat"] = (attr or {}).get(c, s["pat"])
        sig[c] = s
    return sig


IMPORTANT = {"L5H1": 0.6, "L4H2": 0.4, "L3H0": 0.3, "MLP5": 0.25, "L2H7": 0.2}


def _run(tmp_path, sig, sandbox: dict | None = None, **kw):
    made: list[FakeSandbox] = []

    def factory(workspace, setup, cfg):
        made.append(SlowSandbox(sig, **(sandbox or {})) if not made else made[0])
        return made[-1]

    cfg = RunConfig(question="Which heads move the indirect object's name?", task="toy-ioi", model="toy-ioi",
                    planner="offline", out=str(tmp_path / "runs"), n_prompts=8, **kw)
    progress: list[dict] = []
    out = start_run(cfg, sandbox_factory=factory, on_progress=progress.append)
    return out, read_events(out.run_dir), progress


class SlowSandbox(FakeSandbox):
    """A fake kernel whose sweep cells take ``per_variant`` seconds per variant (patching + zero ablation per
    component) and time out past the cell limit; a chunk holding ``slow`` takes ``slow_s`` longer."""

    def __init__(self, sig, per_variant: float = 0.0, slow: str | None = None, slow_s: float = 0.0,
                 screen_fails: bool = False) -> None:
        super().__init__(sig)
        self.per_variant, self.slow, self.slow_s, self.screen_fails = per_variant, slow, slow_s, screen_fails

    def execute(self, code: str, timeout: float | None = None) -> FakeResult:
        m = re.search(r"components=(\[[^\]]*\])", code)
        if "sweep(" not in code:
            return super().execute(code, timeout)
        comps = eval(m.group(1)) if m else list(self.sig)  # noqa: S307 - the agent's own cell text
        dur = self.per_variant * (6 if "attribution" in code else 2 * len(comps))
        if "attribution" in code and self.screen_fails:
            self.cells.append(code)
            return FakeResult(status="error", error_name="RuntimeError", error_value="no grad", duration_s=dur)
        dur += self.slow_s if self.slow in comps and "exact" in code else 0.0
        if timeout is not None and dur > timeout:
            self.cells.append(code)
            return FakeResult(status="timeout", error_name="Timeout", error_value="past the limit", duration_s=timeout)
        res = super().execute(code, timeout)
        res.duration_s = dur
        return res


def _loc(events):
    return next(e for e in events if e.kind == "localisation")


def test_zoo_sized_model_is_checked_exactly_everywhere(tmp_path):
    out, events, _ = _run(tmp_path, SIGNATURES, circuit=None)
    loc = _loc(events)
    assert loc.exact_all and loc.fallback is None and loc.screened == len(SIGNATURES)
    assert set(loc.verified) == set(SIGNATURES)  # what today's exact sweep covers: every head and MLP
    calls = [e.call_id for e in events if e.kind == "tool_call" and e.call_id.startswith("localise")]
    assert calls[:2] == [LOCALISE_SWEEP, f"{LOCALISE_EXACT}0"] and loc.chunks == 1
    screen = next(e for e in events if e.kind == "tool_call" and e.call_id == LOCALISE_SWEEP)
    assert screen.input["method"] == "attribution" and screen.input["ablation_method"] == "attribution"
    # kept: exact |effect| >= 10% of the gap (the fake's exact numbers), as before the screen existed
    assert set(loc.kept) == {c for c, s in SIGNATURES.items() if abs(s.get("pat", 0)) >= 0.1}
    sweep = RunView.from_run(out.run_dir).localisation()
    assert sweep.method == "exact" and set(sweep.effect_frac) == set(SIGNATURES)


def test_trusted_screen_checks_only_the_top_candidates(tmp_path):
    sig = big_model(IMPORTANT)
    out, events, _ = _run(tmp_path, sig)
    loc = _loc(events)
    n = candidate_count(54, 8)
    assert n == 24 and len(loc.verified) == n and not loc.exact_all and loc.fallback is None
    assert loc.rank_correlation is not None and loc.rank_correlation > 0.9
    assert set(loc.kept) == set(IMPORTANT)
    assert set(out.conclusions) >= set(IMPORTANT)


def test_disagreeing_screen_falls_back_to_the_exact_sweep(tmp_path):
    names = list(big_model({}))
    attr = {c: 0.5 - 0.01 * i for i, c in enumerate(reversed(names))}  # a screen ranking unrelated to the truth
    out, events, _ = _run(tmp_path, big_model(IMPORTANT, attr))
    loc = _loc(events)
    assert loc.exact_all and loc.fallback and "disagree" in loc.fallback
    assert set(loc.verified) == set(names)
    assert set(loc.kept) == set(IMPORTANT)  # the exact sweep finds them anyway


def test_underrated_component_extends_the_exact_check(tmp_path):
    names = list(big_model({}))
    attr = {c: 0.05 - 0.0005 * i for i, c in enumerate(names)}
    attr.update({"L5H1": 0.6, "L4H2": 0.4, "L3H0": 0.3, "MLP5": 0.25, "L2H7": 0.046})  # L2H7 under-rated
    exact = {c: v / 10 for c, v in attr.items()} | IMPORTANT  # elsewhere the screen ranks right
    out, events, _ = _run(tmp_path, big_model(exact, attr), max_components=5)
    loc = _loc(events)
    assert candidate_count(54, 5) == 16 and 12 <= loc.candidates.index("L2H7") < 16  # checked, in the lower half
    assert len(loc.verified) == 32 and loc.fallback and "lower half" in loc.fallback  # so 16 more were checked
    assert not loc.exact_all and loc.rank_correlation > 0.5 and "L2H7" in loc.kept


def test_chunks_fit_the_cell_limit_and_keep_what_finished(tmp_path):
    sig = big_model(IMPORTANT)
    out, events, progress = _run(tmp_path, sig, cell_timeout_s=10.0,
                                 sandbox={"per_variant": 0.5, "slow": "L3H0", "slow_s": 100.0})
    loc = _loc(events)
    results = {e.call_id: e for e in events if e.kind == "execution_result"}
    exact = [results[c] for c in loc.call_ids if c.startswith(LOCALISE_EXACT)]
    # 0.4 x 10 s at 2 variants x 0.5 s per component: chunks of 4; the chunk with the slow one is halved to 1
    assert max(len(re.search(r"components=(\[[^\]]*\])", e.code).group(1).split(",")) for e in exact) == 4
    assert [e.status for e in exact].count("timeout") == 3  # 4 -> 2 -> 1 components, each past the limit
    assert loc.failed == ["L3H0"] and "L3H0" not in loc.verified and len(loc.verified) == 23
    assert any(e.kind == "error" and "L3H0" in e.message and "--cell-timeout" in e.message for e in events)
    assert set(loc.kept) == set(IMPORTANT) - {"L3H0"}  # the finished chunks still count
    details = [p.get("detail", "") for p in progress if p.get("phase") == "localise"]
    assert any(d.startswith("exact check") for d in details)  # the live view shows the chunks' progress


def test_redundancy_check_is_one_cell_per_flagged_group_on_a_big_model(tmp_path):
    sig = big_model(IMPORTANT)
    for a, b, joint in (("L1H3", "L1H4", 0.4), ("L2H0", "L2H5", 0.3)):  # two redundant pairs
        sig[a].update(partner=b, joint=joint)
        sig[b].update(partner=a, joint=joint)
    out, events, _ = _run(tmp_path, sig, max_components=8)
    calls = [e for e in events if e.kind == "tool_call" and e.name == "redundancy_check"]
    assert calls[0].call_id == "localise-redundancy" and calls[0].input["max_groups"] == 0  # layer groups only
    assert [(c.call_id, c.input["layers"], c.input["max_candidates"]) for c in calls[1:]] == [
        ("localise-redundancy-L1", [1], 4), ("localise-redundancy-L2", [2], 4)]  # largest joint first
    assert {"L1H3", "L1H4", "L2H0"} <= set(out.conclusions) and "L2H5" not in out.conclusions  # max_components
    small = [e for e in _run(tmp_path / "s", SIGNATURES)[1] if e.kind == "tool_call" and e.name == "redundancy_check"]
    assert len(small) == 1 and small[0].input["max_groups"] is None and small[0].input["max_candidates"] is None


def test_failed_screen_falls_back_to_chunked_exact_sweep(tmp_path):
    out, events, _ = _run(tmp_path, SIGNATURES, sandbox={"screen_fails": True})
    loc = _loc(events)
    assert loc.screened == 0 and loc.exact_all and "screen failed" in loc.fallback
    # the model's shape from the start-up check (2 layers x 4 heads): its 10 heads and MLPs, 8 per first chunk
    assert loc.chunks == 2 and set(loc.verified) == set(SIGNATURES)
    assert set(loc.kept) == {c for c, s in SIGNATURES.items() if abs(s.get("pat", 0)) >= 0.1}
    assert out.status == "completed"


def test_live_view_shows_the_localisation_progress(tmp_path):
    from agent.commands.investigate import ProgressView

    _, _, progress = _run(tmp_path, big_model(IMPORTANT), cell_timeout_s=10.0, sandbox={"per_variant": 0.5})
    view = ProgressView()
    titles = []
    for info in progress:
        view.update(info)
        titles.append(view.render().renderables[0].title)
    assert titles[0].startswith("investigation — starting: model")  # the chosen threads and cell limit
    assert "investigation — localise: exact check 4/24" in titles  # chunks of 4 (see above), counted
    assert any(t.startswith("investigation — localise: redundancy") for t in titles)
    assert titles[-1].startswith("investigation — done")
