"""The Claude planner under the real API's behaviour (issue 19): one test per failure the strict fake exposed.

Every investigation here drives the real ``anthropic`` SDK against :mod:`tests.fake_anthropic`, which
answers 400 to any request the real Messages API would refuse (empty messages, roles out of turn, unpaired
tool results, sampling parameters, forced tool use), so a loop that sends one fails here. The sandbox is the
scripted fake of tests/test_graph_fakes.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from agent.budget import Budget
from agent.cli import main
from agent.graph import NUDGE
from agent.llm.claude import ClaudeBackend
from agent.log import read_events
from agent.run import RunConfig, make_backend, replay_run, resume_run, run_status, start_run
from tests.fake_anthropic import check_request, overloaded, rate_limited, text, tool_turn, tool_use, turn
from tests.test_graph_fakes import Crash, fake_factory, fake_tasks

pytestmark = pytest.mark.usefixtures(fake_tasks.__name__)

REPO = str(Path(__file__).resolve().parents[1])


def _cfg(tmp_path, **kw):
    # these scripts conclude without evidence: the grounding check (tests/test_grounding.py) is not their subject
    base = dict(question="Which heads move the indirect object's name?", task="toy-ioi", model="toy-ioi",
                planner="claude", out=str(tmp_path / "runs"), n_prompts=8, circuit=["L1H0", "L0H1"],
                grounding_check=False)
    base.update(kw)
    return RunConfig(**base)


@pytest.fixture
def claude(fake_anthropic, monkeypatch):
    """The fake API, with ``agent.run.make_backend`` building a Claude backend on it (no real sleeps);
    after the test, no request may have been one the real API rejects."""
    made: list[ClaudeBackend] = []
    real = make_backend

    def make(cfg):
        if cfg.planner != "claude":
            return real(cfg)
        b = ClaudeBackend(api_key="test", base_url=fake_anthropic.base_url, sleep=lambda s: None, max_retries=2,
                          max_tokens=cfg.llm_max_tokens, stream=cfg.llm_stream)
        made.append(b)
        return b

    monkeypatch.setattr("agent.run.make_backend", make)
    fake_anthropic.made = made
    yield fake_anthropic
    assert fake_anthropic.rejected == [], "the loop sent requests the real API refuses"


def conclude(comp, role="name mover", expl="attends to IO and writes it", conf=0.8, evidence=(), id=None):
    return tool_use("conclude_component", {"component": comp, "role": role, "explanation": expl,
                                           "confidence": conf, "evidence": list(evidence)}, id)


def group(*clusters):
    return tool_turn("group_components", {"clusters": [{"name": n, "components": list(cs), "explanation": f"{n}."}
                                                       for n, cs in clusters]})


def last_user(req):
    return req.body["messages"][-1]


# ---------------------------------------------------------------------------------------------- the fake's rules


@pytest.mark.parametrize("change,why", [
    (lambda b: b["messages"].append({"role": "assistant", "content": []}) or
     b["messages"].append({"role": "user", "content": "go on"}), "non-empty content"),
    (lambda b: b["messages"].append({"role": "user", "content": "again"}), "alternate"),
    (lambda b: b["messages"].extend([{"role": "assistant", "content": [tool_use("ablate", {}, "t9")]},
                                     {"role": "user", "content": "no result"}]), "without `tool_result`"),
    (lambda b: b["messages"].extend([{"role": "assistant", "content": [text("hi")]},
                                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "zz",
                                                                   "content": "x"}]}]), "unexpected `tool_use_id`"),
    (lambda b: b.update(temperature=0.2), "sampling parameters"),
    (lambda b: b.update(top_k=5), "sampling parameters"),
    (lambda b: b.update(tool_choice={"type": "any"}), "forced tool use"),
    (lambda b: b["messages"].extend([{"role": "assistant", "content": [text("  ")]},
                                     {"role": "user", "content": "x"}]), "non-whitespace"),
])
def test_the_fake_refuses_what_the_real_api_refuses(change, why):
    body = {"model": "claude-sonnet-5-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    assert check_request(body) is None
    change(body)
    assert why in (check_request(body) or "")


# ---------------------------------------------------------------------------------------------- item 1


def test_1_an_empty_turn_is_not_sent_back_and_the_reminder_joins_the_user_message(tmp_path, claude):
    claude.script([
        turn(),                                            # L1H0: an empty assistant turn (content [])
        turn(conclude("L1H0")),
        turn(text("   ")),                                 # L0H1: whitespace only
        turn(conclude("L0H1", role="previous token", expl="attends to the previous token")),
        group(("name mover", ["L1H0"]), ("previous token", ["L0H1"])),
    ])
    out = start_run(_cfg(tmp_path), sandbox_factory=fake_factory())
    assert out.status == "completed" and claude.responses_left == 0
    reqs = claude.message_requests
    msgs = reqs[1].body["messages"]
    assert [m["role"] for m in msgs] == ["user"]  # the empty turn was not appended
    assert [b["text"] for b in msgs[0]["content"]][-1] == NUDGE
    assert {c: v["role"] for c, v in out.conclusions.items()} == {"L1H0": "name mover", "L0H1": "previous token"}


# ---------------------------------------------------------------------------------------------- items 2 and 3


def test_2_an_api_failure_pauses_the_run_and_resume_finishes_it(tmp_path, claude):
    claude.script([turn(conclude("L1H0"))] + [overloaded() for _ in range(3)])  # L0H1: fails after 3 attempts
    out = start_run(_cfg(tmp_path), sandbox_factory=fake_factory())
    assert out.status == "interrupted" and "overloaded" in out.reason
    events = read_events(out.run_dir)
    assert not any(e.kind in ("run_finished", "cluster") for e in events)
    assert [e.component for e in events if e.kind == "conclusion"] == ["L1H0"]  # L0H1 not marked inconclusive
    err = [e for e in events if e.kind == "error" and e.where == "llm.claude"]
    assert len(err) == 1 and "--max-retries" not in err[0].message and "resume" in err[0].message
    st = run_status(out.run_dir)
    assert st["state"] == "interrupted" and st["pending"] == ["L0H1"] and "overloaded" in st["reason"]

    claude.script([turn(conclude("L0H1", role="previous token")),
                   group(("name mover", ["L1H0"]), ("previous token", ["L0H1"]))])
    again = resume_run(out.run_dir, sandbox_factory=fake_factory())
    assert again.status == "completed"
    assert {c: v["role"] for c, v in again.conclusions.items()} == {"L1H0": "name mover", "L0H1": "previous token"}
    events = read_events(out.run_dir)
    assert [e.seq for e in events] == list(range(len(events)))
    asks = [e for e in events if e.kind == "llm_request" and e.component == "L0H1"]
    assert len(asks) == 1  # the request that failed is asked again, not logged twice
    assert sum(1 for e in events if e.kind == "run_finished") == 1


def test_2_a_failure_of_the_clustering_call_pauses_too(tmp_path, claude):
    claude.script([turn(conclude("L1H0")), turn(conclude("L0H1", role="previous token"))] +
                  [overloaded() for _ in range(3)])
    out = start_run(_cfg(tmp_path), sandbox_factory=fake_factory())
    assert out.status == "interrupted" and not any(e.kind == "cluster" for e in read_events(out.run_dir))
    claude.script([group(("name mover", ["L1H0"]), ("previous token", ["L0H1"]))])
    again = resume_run(out.run_dir, sandbox_factory=fake_factory())
    assert again.status == "completed" and len(again.clusters) == 2
    events = read_events(out.run_dir)
    assert sum(1 for e in events if e.kind == "llm_request" and e.component is None) == 1


def test_3_cli_exits_non_zero_with_one_line_when_paused(tmp_path, claude, capsys, monkeypatch):
    monkeypatch.setattr("agent.run.default_sandbox_factory", fake_factory())
    claude.script([overloaded() for _ in range(3)])
    code = main(["investigate", "Which heads move the indirect object's name?", "--task", "toy-ioi", "--model",
                 "toy-ioi", "--circuit", "L1H0", "--planner", "claude", "--out", str(tmp_path / "runs")])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 3
    assert len(err) == 1 and err[0].startswith("paused:") and "overloaded" in err[0] and "interp-agent resume" in err[0]


def test_3_a_rejected_key_fails_before_any_work(tmp_path, claude, capsys, monkeypatch):
    claude.valid_keys = {"the-right-key"}
    factory = fake_factory()
    monkeypatch.setattr("agent.run.default_sandbox_factory", factory)
    code = main(["investigate", "Which heads move the indirect object's name?", "--task", "toy-ioi", "--model",
                 "toy-ioi", "--circuit", "L1H0", "--planner", "claude", "--out", str(tmp_path / "runs")])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1 and "401" in err[0] and "ANTHROPIC_API_KEY" in err[0]
    assert factory.made == [] and claude.message_requests == []  # no sandbox, no Messages call
    assert [r.method for r in claude.requests] == ["GET"]  # one free request: the model's info
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").iterdir()) == []


# ---------------------------------------------------------------------------------------------- item 4


def test_4_text_sent_to_the_model_is_capped_and_has_no_host_paths(tmp_path, claude):
    boom = f"raise ValueError('x' * 300_000 + ' in {REPO}/agent/secret.py and /home/alice/data/w.bin')"
    claude.script([tool_turn("run_code", {"code": boom}), turn(conclude("L1H0")),
                   turn(conclude("L0H1", role="previous token")),
                   group(("name mover", ["L1H0"]), ("previous token", ["L0H1"]))])
    out = start_run(_cfg(tmp_path), sandbox_factory=fake_factory())
    assert out.status == "completed"
    result = last_user(claude.message_requests[1])["content"][0]
    assert result["is_error"] is True and "ValueError" in result["content"]
    assert len(result["content"]) <= 8000  # agent.llm.text.TOOL_RESULT_CHARS: ~2k tokens, not ~80k
    for req in claude.message_requests:  # what the loop wrote (the model's own turns go back as they were)
        sent = json.dumps([req.body["system"], [m for m in req.body["messages"] if m["role"] == "user"]])
        assert REPO not in sent and "/home/alice" not in sent and out.run_dir not in sent
    logged = next(e for e in read_events(out.run_dir) if e.kind == "execution_result")
    assert len(logged.error_value) > 300_000  # the log keeps the whole text


# ---------------------------------------------------------------------------------------------- item 5


def test_5_replay_verify_uses_the_logged_cell_timeout(tmp_path):
    from agent.log import ExecutionResultEvent, RunLog, RunStartedEvent, ToolCallEvent
    from agent.replay.verify import verify
    from sandbox.result import ExecutionResult

    run = tmp_path / "r"
    log = RunLog(run)
    log.append(RunStartedEvent(run_id="r", question="q", task="toy-ioi", model="toy-ioi", planner="offline",
                               config={"run": {"cell_timeout_s": 7.0}, "setup_cells": ["pass"]}))
    log.append(ToolCallEvent(call_id="c", name="run_code", input={"code": "_result = {'a': 1}"}))
    log.append(ExecutionResultEvent(call_id="c", code="_result = {'a': 1}", status="ok", data={"a": 1}))
    timeouts: list[float | None] = []

    class Recording:
        def execute(self, code, timeout=None):
            timeouts.append(timeout)
            return ExecutionResult(status="ok", data={"a": 1})

        def shutdown(self):
            pass

    report = verify(run, sandbox_factory=lambda ws, setup, opts: Recording())
    assert report.mismatches == [] and timeouts == [7.0]


# ---------------------------------------------------------------------------------------------- item 6


def test_6_the_wall_budget_bounds_a_call_in_flight(tmp_path, claude):
    def slow(body):
        time.sleep(6)
        return turn(conclude("L1H0"))

    claude.script([slow])
    t0 = time.monotonic()
    out = start_run(_cfg(tmp_path, budget=Budget(max_wall_s=1.0)), sandbox_factory=fake_factory())
    took = time.monotonic() - t0
    assert took < 4.5, took  # not the 6 s the server takes (nor 300 s x 7 attempts)
    assert out.status == "budget"
    events = read_events(out.run_dir)
    assert any(e.kind == "budget" and e.limit_hit == "wall_s" for e in events)
    assert any(e.kind == "error" and e.error_type == "LLMDeadlineError" for e in events)


def test_6_no_retry_waits_past_the_deadline(fake_anthropic):
    from agent.llm import LLMAPIError

    fake_anthropic.script([rate_limited(retry_after=30), turn(text("late"))])
    sleeps: list[float] = []
    llm = ClaudeBackend(api_key="k", base_url=fake_anthropic.base_url, sleep=sleeps.append)
    with pytest.raises(LLMAPIError, match="wall-clock budget"):  # an LLMDeadlineError
        llm.complete(system="s", messages=[{"role": "user", "content": "x"}], tools=[], timeout_s=5.0)
    assert sleeps == [] and len(fake_anthropic.message_requests) == 1


# ---------------------------------------------------------------------------------------------- item 7


def test_7_tool_inputs_are_checked_against_the_model_and_the_component(tmp_path, claude):
    from agent.actions import tool_specs

    schemas = {s.name: s.input_schema for s in tool_specs()}
    assert "pattern" in schemas["record_hypothesis"]["properties"]["component"]
    assert "pattern" in schemas["ablate"]["properties"]["components"]["items"]
    claude.script([
        turn(tool_use("record_hypothesis", {"component": "L7H3", "statement": "s"}, "h1"),
             tool_use("record_hypothesis", {"component": "L0H1", "statement": "s"}, "h2"),
             tool_use("ablate", {"components": ["L1H9"]}, "a1"),
             tool_use("attention", {"head": "MLP0"}, "a2")),
        turn(conclude("L1H0")),
        turn(conclude("L0H1", role="previous token")),
        group(("name mover", ["L1H0"]), ("previous token", ["L0H1"])),
    ])
    out = start_run(_cfg(tmp_path), sandbox_factory=fake_factory())
    results = {r["tool_use_id"]: r for r in last_user(claude.message_requests[1])["content"]}
    assert all(r["is_error"] for r in results.values())
    assert "2 layers" in results["h1"]["content"] and "you are investigating L1H0" in results["h2"]["content"]
    assert "4 heads" in results["a1"]["content"] and "not an attention head" in results["a2"]["content"]
    events = read_events(out.run_dir)
    assert not any(e.kind in ("hypothesis", "execution_result") for e in events)
    st = run_status(out.run_dir)
    assert list(st["components"]) == ["L1H0", "L0H1"] and st["pending"] == []


# ---------------------------------------------------------------------------------------------- item 8


def test_8_claude_groups_paraphrased_roles_and_replay_reproduces_it(tmp_path, claude):
    claude.script([turn(conclude("L1H0", role="Copies IO name into logits.")),
                   turn(conclude("L0H1", role="copies the IO name into the logits")),
                   group(("IO copier", ["L1H0", "L0H1"]))])
    out = start_run(_cfg(tmp_path), sandbox_factory=fake_factory())
    assert [(c["name"], c["components"]) for c in out.clusters] == [("IO copier", ["L1H0", "L0H1"])]
    req = claude.message_requests[-1].body
    assert [t["name"] for t in req["tools"]] == ["group_components"] and "tool_choice" not in req
    assert "`" not in req["tools"][0]["description"] and req["tools"][0]["description"].endswith(".")
    assert "Copies IO name into logits." in json.dumps(req["messages"])
    n = len(claude.requests)
    again = replay_run(out.run_dir, tmp_path / "replayed", sandbox_factory=fake_factory())
    assert len(claude.requests) == n  # replayed from the log: no API call
    clusters = [(e.name, e.components) for e in read_events(again) if e.kind == "cluster"]
    assert clusters == [("IO copier", ["L1H0", "L0H1"])]


def test_8_an_unusable_grouping_is_sent_back_then_labels_are_the_fallback(tmp_path, claude):
    claude.script([turn(conclude("L1H0", role="Copies IO name into logits.")),
                   turn(conclude("L0H1", role="copies the IO name into the logits")),
                   group(("movers", ["L1H0"])),               # leaves L0H1 out
                   group(("movers", ["L1H0", "L5H5"]))])      # names a component that is not concluded
    out = start_run(_cfg(tmp_path), sandbox_factory=fake_factory())
    back = last_user(claude.message_requests[-1])["content"][0]
    assert back["is_error"] and "L0H1 is in no group" in back["content"]
    # the offline fallback: normalised labels put the paraphrases together
    assert [c["components"] for c in out.clusters] == [["L1H0", "L0H1"]]
    assert any(e.kind == "error" and e.where == "cluster" for e in read_events(out.run_dir))


def test_8_offline_clustering_normalises_labels(tmp_path, monkeypatch):
    from agent.llm.types import LLMResponse, ToolUseBlock
    from tests.test_graph import Scripted

    def concl(comp, role):
        return LLMResponse(content=[ToolUseBlock(id=f"c{comp}", name="conclude_component", input={
            "component": comp, "role": role, "explanation": "x.", "confidence": 0.5})], stop_reason="tool_use")

    backend = Scripted([concl("L1H0", "Copies IO name into logits."), concl("L0H1", "copies the IO name into the logits"),
                        concl("L0H2", "Name movers")])
    monkeypatch.setattr("agent.run.make_backend", lambda cfg: backend)
    out = start_run(_cfg(tmp_path, planner="offline", circuit=["L1H0", "L0H1", "L0H2"]), sandbox_factory=fake_factory())
    assert sorted(c["components"] for c in out.clusters) == [["L0H2"], ["L1H0", "L0H1"]]


# ---------------------------------------------------------------------------------------------- item 9


def test_9_a_second_conclusion_in_one_turn_is_refused(tmp_path, claude):
    claude.script([turn(conclude("L1H0", id="c1"), conclude("L1H0", role="other", id="c2")),
                   turn(conclude("L0H1", role="previous token")),
                   group(("name mover", ["L1H0"]), ("previous token", ["L0H1"]))])
    out = start_run(_cfg(tmp_path), sandbox_factory=fake_factory())
    events = read_events(out.run_dir)
    assert [(e.component, e.role) for e in events if e.kind == "conclusion"] == \
        [("L1H0", "name mover"), ("L0H1", "previous token")]
    # the refusal went back to the model (the next request is L0H1's, so read what the log sent)
    sent = next(e for e in events if e.kind == "llm_request" and e.component == "L0H1")
    assert sent is not None
    err = next(e for e in events if e.kind == "error" and e.where == "tool.conclude_component")
    assert "already concluded" in err.message


# ---------------------------------------------------------------------------------------------- also dropped silently


def test_unknown_evidence_seqs_are_named_in_the_reply(tmp_path, claude):
    claude.script([turn(tool_use("record_hypothesis", {"component": "L1H0", "statement": "s", "evidence": [1, 999]},
                                 "h")),
                   turn(conclude("L1H0")), turn(conclude("L0H1", role="previous token")),
                   group(("name mover", ["L1H0"]), ("previous token", ["L0H1"]))])
    out = start_run(_cfg(tmp_path), sandbox_factory=fake_factory())
    reply = last_user(claude.message_requests[1])["content"][0]["content"]
    assert "999" in reply and "not in the log" in reply
    assert next(e for e in read_events(out.run_dir) if e.kind == "hypothesis").evidence == [1]


def test_a_result_over_the_size_cap_says_why_it_is_missing():
    from agent.graph.cells import tool_result_payload
    from agent.log import ExecutionResultEvent

    ev = ExecutionResultEvent(call_id="c", code="x", status="ok", data=None, seq=5,
                              stderr="[sandbox] _result is 9000000 bytes of JSON, over the 1000000 limit\n")
    text_, is_err = tool_result_payload(ev)
    assert not is_err and "over the 1000000 limit" in text_


def test_a_tool_call_cut_off_by_max_tokens_is_not_run(tmp_path, claude):
    claude.script([
        turn(tool_use("ablate", {"components": ["L1H0"]}, "ok1"), tool_use("ablate", {"components": ["L1"]}, "cut"),
             stop_reason="max_tokens"),
        turn(conclude("L1H0")), turn(conclude("L0H1", role="previous token")),
        group(("name mover", ["L1H0"]), ("previous token", ["L0H1"])),
    ])
    out = start_run(_cfg(tmp_path), sandbox_factory=fake_factory())
    results = {r["tool_use_id"]: r for r in last_user(claude.message_requests[1])["content"]}
    assert results["ok1"]["is_error"] is False
    cut = results["cut"]["content"]
    assert results["cut"]["is_error"] is True and "cut off" in cut and f"({claude.made[0].max_tokens} tokens)" in cut
    assert sum(1 for e in read_events(out.run_dir) if e.kind == "execution_result") == 1


def test_max_tokens_and_streaming_are_options(tmp_path, fake_anthropic, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_anthropic.base_url)
    # room for adaptive thinking by default, the same in the config and the backend
    assert ClaudeBackend().max_tokens == RunConfig(question="q").llm_max_tokens >= 16000
    b = make_backend(RunConfig(question="q", planner="claude", llm_max_tokens=20000, llm_stream=True))
    fake_anthropic.script([turn(text("ok"))])
    assert b.complete(system="s", messages=[{"role": "user", "content": "x"}], tools=[]).text == "ok"
    body = fake_anthropic.message_requests[0].body
    assert body["max_tokens"] == 20000 and body["stream"] is True


def test_tool_descriptions_are_whole_sentences_in_plain_text():
    from agent.actions import TOOLS, tool_specs

    specs = tool_specs()
    for s in specs:
        assert "`" not in s.description and ":func:" not in s.description, s.name
        assert s.description.endswith("."), s.name
        assert "description" not in s.input_schema  # said once, in the description
    red = next(s for s in specs if s.name == "redundancy_check").description
    assert red.endswith("(tools.experiments.redundancy).") and len(red) > len(TOOLS["redundancy_check"].__doc__.splitlines()[0])


def test_status_of_an_interrupted_run_lists_every_localised_component(tmp_path):
    with pytest.raises(Crash):
        start_run(RunConfig(question="Which heads move the indirect object's name?", task="toy-ioi", model="toy-ioi",
                            planner="offline", out=str(tmp_path / "runs"), n_prompts=8),
                  # cells: the start-up check, the localisation screen, its exact check, the redundancy check;
                  # the crash hits the first battery cell, after the components event
                  sandbox_factory=fake_factory(crash_after=4))
    (run,) = (tmp_path / "runs").iterdir()
    st = run_status(run)
    assert st["state"] == "interrupted"
    assert len(st["pending"]) >= 5 and set(st["pending"]) >= {"L1H0", "L0H1", "L0H2"}


def test_a_budget_stop_resumes_with_a_larger_budget(tmp_path, claude, capsys, monkeypatch):
    claude.script([tool_turn("ablate", {"components": ["L1H0"]}, input_tokens=50_000, output_tokens=5_000)])
    out = start_run(_cfg(tmp_path, budget=Budget(max_usd=0.01)), sandbox_factory=fake_factory())
    assert out.status == "budget"
    claude.script([turn(conclude("L1H0", evidence=[3])), turn(conclude("L0H1", role="previous token")),
                   group(("name mover", ["L1H0"]), ("previous token", ["L0H1"]))])
    monkeypatch.setattr("agent.run.default_sandbox_factory", fake_factory())
    code = main(["--json", "resume", out.run_dir, "--budget-usd", "5"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["status"] == "completed"
    assert {c: v["role"] for c, v in doc["conclusions"].items()} == {"L1H0": "name mover", "L0H1": "previous token"}
    # L1H0's conversation went on: the first request after the resume carries the ablation's result
    first = claude.message_requests[1].body["messages"]
    assert [m["role"] for m in first] == ["user", "assistant", "user"] and first[2]["content"][0]["type"] == "tool_result"
    st = run_status(out.run_dir)
    assert st["state"] == "completed" and st["pending"] == []
    assert st["clusters"] == {"name mover": ["L1H0"], "previous token": ["L0H1"]}
    events = read_events(out.run_dir)
    resumed = [e for e in events if e.kind == "run_resumed"]
    assert len(resumed) == 1 and resumed[0].reopened and resumed[0].budget["max_usd"] == 5.0
    assert [e.status for e in events if e.kind == "run_finished"] == ["budget", "completed"]
