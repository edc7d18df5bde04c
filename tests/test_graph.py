"""The research graph with the offline planner, on a scripted sandbox (no kernel, no model).

Checks the loop's bookkeeping exactly: roles recovered from known signatures, one conclusion per
component, contiguous seqs, budgets ending components as ``inconclusive: budget``, malformed tool
input sent back as a tool error, localisation threshold, and resume after a crash mid-node.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from agent.budget import Budget
from agent.llm.types import LLMResponse, TextBlock, ToolUseBlock
from agent.log import read_events
from agent.run import RunConfig, resume_run, run_status, start_run
from tests.test_graph_fakes import EXPECTED_ROLES, SIGNATURES, Crash, fake_factory, fake_tasks

pytestmark = pytest.mark.usefixtures(fake_tasks.__name__)

CIRCUIT = list(SIGNATURES)


def _cfg(tmp_path, **kw):
    base = dict(question="Which heads move the indirect object's name?", task="toy-ioi", model="toy-ioi",
                planner="offline", out=str(tmp_path / "runs"), n_prompts=8)
    base.update(kw)
    return RunConfig(**base)


def _check_log(run_dir):
    events = read_events(run_dir)
    assert [e.seq for e in events] == list(range(len(events)))
    assert events[0].kind == "run_started" and events[-1].kind == "run_finished"
    concl = Counter(e.component for e in events if e.kind == "conclusion")
    assert all(n == 1 for n in concl.values()), concl
    calls = Counter(e.call_id for e in events if e.kind == "tool_call")
    assert all(n == 1 for n in calls.values()), calls
    results = Counter(e.call_id for e in events if e.kind == "execution_result")
    assert all(n == 1 for n in results.values()), results
    return events


def test_offline_run_recovers_planted_signatures(tmp_path):
    out = start_run(_cfg(tmp_path, circuit=CIRCUIT), sandbox_factory=fake_factory())
    assert out.status == "completed"
    roles = {c: v["role"] for c, v in out.conclusions.items()}
    assert roles == EXPECTED_ROLES
    events = _check_log(out.run_dir)
    # every experiment is a logged code cell; hypotheses were proposed then tested on held-out prompts
    hyps = [e for e in events if e.kind == "hypothesis"]
    assert {e.status for e in hyps} >= {"proposed", "supported"}
    assert any("heldout" in e.code for e in events if e.kind == "execution_result")
    # the name mover's conclusion cites real evidence events
    c = next(e for e in events if e.kind == "conclusion" and e.component == "L1H0")
    assert c.evidence and all(events[s].kind == "execution_result" for s in c.evidence)
    clusters = {e.name: e.components for e in events if e.kind == "cluster"}
    assert clusters["name mover"] == ["L1H0"] and clusters["previous token"] == ["L0H1"]
    assert (tmp_path / "runs" / out.run_id / "report.md").exists()
    st = run_status(out.run_dir)
    assert st["state"] == "completed" and st["pending"] == [] and st["done"] == len(CIRCUIT)


def test_localisation_keeps_components_above_threshold(tmp_path):
    out = start_run(_cfg(tmp_path), sandbox_factory=fake_factory())
    # patching fractions in the fake: L1H0 .45, L0H1 .3, L0H2 .2, MLP0 .15, L1H1 -.1, L0H3 .01
    events = read_events(out.run_dir)
    first_call = next(e for e in events if e.kind == "tool_call")
    assert first_call.name == "attribution_sweep" and first_call.component is None
    comps = list(out.conclusions)
    # |effect| >= 10% of the gap; later layers first, then largest effect first
    assert comps == ["L1H0", "L1H1", "L0H1", "L0H2", "MLP0"]
    assert "L0H3" not in comps


def test_localisation_keeps_redundant_pair_found_by_joint_ablation(tmp_path):
    # L0H0 and L0H3 do nothing alone (below the threshold) but ablating both removes half the gap
    sig = {**SIGNATURES,
           "L0H0": {"abl": 0.01, "pat": 0.0, "dla": 0.0, "attn": {"IO": 0.1, "S1": 0.1, "S2": 0.1},
                    "scores": {"copying": 0.0, "previous_token": 0.9, "induction": 0.0, "duplicate_token": 0.0},
                    "partner": "L0H3", "joint": 0.5},
           "L0H3": {**SIGNATURES["L0H3"], "partner": "L0H0", "joint": 0.5}}
    out = start_run(_cfg(tmp_path), sandbox_factory=fake_factory(signatures=sig))
    assert out.status == "completed"
    events = _check_log(out.run_dir)
    call = next(e for e in events if e.kind == "tool_call" and e.name == "redundancy_check")
    assert call.call_id == "localise-redundancy" and call.input["exclude"] == ["L1H0", "L0H1", "L0H2", "MLP0",
                                                                                 "L1H1"]
    assert list(out.conclusions) == ["L1H0", "L1H1", "L0H1", "L0H2", "MLP0", "L0H3", "L0H0"]  # by layer, |effect|
    l0h0, l0h3 = out.conclusions["L0H0"], out.conclusions["L0H3"]
    assert l0h0["role"] == "previous token" and "Redundant with L0H3" in l0h0["explanation"]
    assert l0h3["role"] == "indirect contributor" and "Redundant with L0H0" in l0h3["explanation"]
    # the partner is in the brief, and the joint ablation is one of the battery's logged cells
    brief = next(e for e in events if e.kind == "llm_request" and e.component == "L0H0").messages[0]["content"]
    assert "REDUNDANT WITH: L0H3" in brief
    assert any(e.kind == "execution_result" and e.component == "L0H0" and e.code.startswith("# ablate L0H0,L0H3")
               for e in events)


def test_localisation_redundancy_respects_max_components(tmp_path):
    sig = {**SIGNATURES, "L0H0": {**SIGNATURES["L0H3"], "partner": "L0H3", "joint": 0.5},
           "L0H3": {**SIGNATURES["L0H3"], "partner": "L0H0", "joint": 0.5}}
    out = start_run(_cfg(tmp_path, max_components=6), sandbox_factory=fake_factory(signatures=sig))
    assert len(out.conclusions) == 6 and "L0H0" in out.conclusions and "L0H3" not in out.conclusions
    events = read_events(out.run_dir)
    assert any(e.kind == "error" and e.where == "localise" and "L0H3 left out" in e.message for e in events)


def test_component_step_budget_ends_inconclusive_and_run_reports(tmp_path):
    out = start_run(_cfg(tmp_path, circuit=["L1H0", "L0H1"], budget=Budget(max_steps=1)),
                    sandbox_factory=fake_factory())
    assert out.status == "completed"  # a per-component limit does not stop the run
    for c in ("L1H0", "L0H1"):
        assert out.conclusions[c]["role"] == "inconclusive"
        assert out.conclusions[c]["inconclusive_reason"] == "budget"
    events = _check_log(out.run_dir)
    hits = [e for e in events if e.kind == "budget" and e.limit_hit]
    assert [e.limit_hit for e in hits] == ["component_steps", "component_steps"]


def test_run_wide_tool_call_budget_stops_remaining_components(tmp_path):
    out = start_run(_cfg(tmp_path, circuit=["L1H0", "L0H1", "L0H2"], budget=Budget(max_tool_calls=12)),
                    sandbox_factory=fake_factory())
    assert out.status == "budget"
    events = _check_log(out.run_dir)
    assert sum(1 for e in events if e.kind == "tool_call") <= 12 + 7  # a started turn finishes its calls
    assert out.conclusions["L0H2"]["inconclusive_reason"] == "budget"
    assert not any(e.kind == "llm_request" and e.component == "L0H2" for e in events)
    assert (tmp_path / "runs" / out.run_id / "report.md").exists()


class Scripted:
    """A backend replaying a fixed list of turns (to send malformed tool inputs)."""

    name = "scripted"
    model = "scripted-1"

    def __init__(self, turns):
        self.turns = list(turns)
        self.seen = []

    def complete(self, *, system, messages, tools, max_tokens=None, timeout_s=None):
        self.seen.append(list(messages))
        return self.turns.pop(0)


def test_malformed_tool_input_goes_back_as_tool_error(tmp_path, monkeypatch):
    turns = [
        LLMResponse(content=[ToolUseBlock(id="t1", name="ablate", input={"components": ["L9X9"]}),
                             ToolUseBlock(id="t2", name="no_such_tool", input={})], stop_reason="tool_use"),
        LLMResponse(content=[ToolUseBlock(id="t3", name="ablate", input={"components": ["L1H0"]})],
                    stop_reason="tool_use"),
        LLMResponse(content=[TextBlock(text="done"), ToolUseBlock(id="t4", name="conclude_component", input={
            "component": "L1H0", "role": "name mover", "explanation": "x", "confidence": 0.7,
            "evidence": [10_000]})], stop_reason="tool_use"),
        LLMResponse(content=[ToolUseBlock(id="t5", name="conclude_component", input={
            "component": "L1H0", "role": "name mover", "explanation": "x", "confidence": 0.7,
            "evidence": [10_000]})], stop_reason="tool_use"),
    ]
    backend = Scripted(turns)
    monkeypatch.setattr("agent.run.make_backend", lambda cfg: backend)
    out = start_run(_cfg(tmp_path, circuit=["L1H0"]), sandbox_factory=fake_factory())
    assert out.conclusions["L1H0"]["role"] == "name mover"
    second = backend.seen[1][-1]["content"]
    assert [b["is_error"] for b in second] == [True, True]
    assert "cannot parse component 'L9X9'" in second[0]["content"] and "unknown tool" in second[1]["content"]
    third = backend.seen[2][-1]["content"][0]
    assert third["is_error"] is False and json.loads(third["content"])["data"]["effect_frac"] == 0.5
    # the conclusion citing a seq that does not exist is sent back once, then recorded as it is
    fourth = backend.seen[3][-1]["content"][0]
    assert fourth["is_error"] is True and "evidence seq 10000 does not exist" in fourth["content"]
    events = _check_log(out.run_dir)
    c = next(e for e in events if e.kind == "conclusion")
    assert c.evidence == []  # an evidence seq that does not exist is dropped from the log, not a crash
    assert sum(1 for e in events if e.kind == "error" and e.where.startswith("tool.")) == 2
    assert sum(1 for e in events if e.kind == "error" and e.where == "grounding.conclude_component") == 1


@pytest.mark.parametrize("crash_after", [2, 5, 10, 18])
def test_resume_after_crash_matches_uninterrupted_run(tmp_path, crash_after):
    ref = start_run(_cfg(tmp_path / "ref", circuit=CIRCUIT[:3]), sandbox_factory=fake_factory())
    ref_kinds = [(e.kind, e.component) for e in read_events(ref.run_dir)]

    started = []
    with pytest.raises(Crash):
        start_run(_cfg(tmp_path, circuit=CIRCUIT[:3]), sandbox_factory=fake_factory(crash_after=crash_after),
                  on_started=started.append)
    run_dir = started[0]
    partial = read_events(run_dir)
    assert partial[-1].kind != "run_finished"
    out = resume_run(run_dir, sandbox_factory=fake_factory())
    assert out.status == "completed"
    events = _check_log(run_dir)
    assert [(e.kind, e.component) for e in events] == ref_kinds
    assert [e.model_dump(exclude={"ts"}) for e in events[: len(partial)]] == \
        [e.model_dump(exclude={"ts"}) for e in partial]
    assert {c: v["role"] for c, v in out.conclusions.items()} == {c: EXPECTED_ROLES[c] for c in CIRCUIT[:3]}


def test_resume_of_finished_run_changes_nothing(tmp_path):
    out = start_run(_cfg(tmp_path, circuit=["L0H1"]), sandbox_factory=fake_factory())
    n = len(read_events(out.run_dir))
    again = resume_run(out.run_dir, sandbox_factory=fake_factory())
    assert again.status == "completed" and len(read_events(out.run_dir)) == n


def test_replay_planner_reproduces_calls_and_conclusions(tmp_path):
    from agent.run import replay_run

    out = start_run(_cfg(tmp_path, circuit=["L1H0", "L0H2"]), sandbox_factory=fake_factory())
    new_dir = replay_run(out.run_dir, tmp_path / "replayed", sandbox_factory=fake_factory())
    a, b = read_events(out.run_dir), _check_log(new_dir)
    assert b[0].planner == "replay"
    assert [(e.name, e.input) for e in a if e.kind == "tool_call"] == \
        [(e.name, e.input) for e in b if e.kind == "tool_call"]
    assert [(e.component, e.role) for e in a if e.kind == "conclusion"] == \
        [(e.component, e.role) for e in b if e.kind == "conclusion"]


def test_localisation_uses_zero_ablation_for_constant_features(tmp_path):
    sig = {k: dict(v) for k, v in SIGNATURES.items()}
    sig["L0H3"]["zab"] = 0.4  # invisible to patching (0.01), visible to zero ablation
    out = start_run(_cfg(tmp_path, max_components=3), sandbox_factory=fake_factory(signatures=sig))
    assert list(out.conclusions) == ["L1H0", "L0H3", "L0H1"]


def test_wall_time_budget_stops_the_run(tmp_path):
    out = start_run(_cfg(tmp_path, circuit=["L1H0", "L0H1"], budget=Budget(max_wall_s=1e-6)),
                    sandbox_factory=fake_factory())
    assert out.status == "budget"
    events = _check_log(out.run_dir)
    assert not any(e.kind == "llm_request" for e in events)
    assert {c["inconclusive_reason"] for c in out.conclusions.values()} == {"budget"}
    assert [e.limit_hit for e in events if e.kind == "budget" and e.component] == ["wall_s", "wall_s"]


def test_progress_view_tracks_components_steps_and_hypotheses(tmp_path):
    from agent.commands.investigate import ProgressView

    view = ProgressView()
    start_run(_cfg(tmp_path, circuit=["L1H0", "MLP0"]), sandbox_factory=fake_factory(), on_progress=view.update)
    assert view.components == ["L1H0", "MLP0"] and set(view.done) == {"L1H0", "MLP0"}
    assert view.steps == 3 and view.tool_calls > 10 and view.hypothesis and view.phase == "done"
    from rich.console import Console

    con = Console(record=True, width=100)
    con.print(view.render())
    text = con.export_text()
    assert "L1H0" in text and "done" in text and "tool calls" in text


def test_a_run_whose_sandbox_cannot_start_leaves_nothing(tmp_path):
    from agent.run import RunError

    def broken(workspace, setup, cfg):
        raise RunError("no kernel", fix="install bubblewrap")

    with pytest.raises(RunError, match="no kernel"):
        start_run(_cfg(tmp_path, circuit=["L1H0"]), sandbox_factory=broken)
    assert list((tmp_path / "runs").iterdir()) == []


def test_a_turn_without_tools_gets_one_reminder_then_the_component_ends(tmp_path, monkeypatch):
    from agent.graph import NUDGE

    conclude = {"component": "L1H0", "role": "mover", "explanation": "x", "confidence": 0.4}
    turns = [LLMResponse(content=[TextBlock(text="I think it is a mover.")], stop_reason="end_turn"),
             LLMResponse(content=[ToolUseBlock(id="c", name="conclude_component", input=conclude)]),
             # sent back (no evidence, no tested hypothesis); the retry is recorded as it is
             LLMResponse(content=[ToolUseBlock(id="c2", name="conclude_component", input=conclude)]),
             LLMResponse(content=[TextBlock(text="no idea")], stop_reason="end_turn"),
             LLMResponse(content=[TextBlock(text="still no idea")], stop_reason="end_turn")]
    backend = Scripted(turns)
    monkeypatch.setattr("agent.run.make_backend", lambda cfg: backend)
    out = start_run(_cfg(tmp_path, circuit=["L1H0", "L0H1"]), sandbox_factory=fake_factory())
    assert backend.seen[1][-1] == {"role": "user", "content": NUDGE}
    assert out.conclusions["L1H0"]["role"] == "mover"
    assert out.conclusions["L0H1"]["inconclusive_reason"] == "planner stopped without a conclusion"
    assert len(backend.seen) == 5
    sent_back = backend.seen[2][-1]["content"][0]
    assert sent_back["is_error"] and "cites no evidence" in sent_back["content"]


def test_fake_experiments_have_the_real_signatures_and_every_tool_a_handler():
    from agent.actions import TOOLS
    from agent.graph import HANDLERS
    from tests.test_graph_fakes import FAKED, same_signature

    assert [n for n in FAKED if not same_signature(n)] == []
    assert set(HANDLERS) == set(TOOLS) and all(HANDLERS[n].input is TOOLS[n] for n in TOOLS)


def test_every_logged_experiment_result_parses_into_its_model(tmp_path):
    from agent.actions import parse_result

    out = start_run(_cfg(tmp_path), sandbox_factory=fake_factory())
    events = read_events(out.run_dir)
    names = {e.call_id: e.name for e in events if e.kind == "tool_call"}
    results = [e for e in events if e.kind == "execution_result"]
    assert results and all(e.status == "ok" for e in results)
    assert all(parse_result(names[e.call_id], e.data) is not None for e in results)
