"""A full investigation driven by Claude through the real ``anthropic`` SDK against a loopback fake API.

Scripted tool_use turns, including a 429, a 500, a malformed tool input and a budget stop; the sandbox
is the scripted fake of tests/test_graph_fakes.py.
"""

from __future__ import annotations

import json

import pytest

from agent.budget import Budget
from agent.llm.claude import ClaudeBackend
from agent.log import read_events
from agent.run import RunConfig, make_backend, start_run
from tests.fake_anthropic import rate_limited, server_error, tool_turn, tool_use, turn
from tests.test_graph_fakes import fake_factory, fake_tasks

pytestmark = pytest.mark.usefixtures(fake_tasks.__name__)


def _cfg(tmp_path, **kw):
    base = dict(question="Which heads move the indirect object's name?", task="toy-ioi", model="toy-ioi",
                planner="claude", out=str(tmp_path / "runs"), n_prompts=8)
    base.update(kw)
    return RunConfig(**base)


@pytest.fixture
def claude(fake_anthropic, monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr("agent.run.make_backend", lambda cfg: ClaudeBackend(
        api_key="test", base_url=fake_anthropic.base_url, sleep=sleeps.append, max_retries=3))
    return fake_anthropic, sleeps


def test_claude_drives_full_investigation_with_retries_malformed_input_and_step_budget(tmp_path, claude):
    fake, sleeps = claude
    fake.script([
        # L1H0
        rate_limited(retry_after=0.5),
        tool_turn("ablate", {"components": ["L1H0"], "method": "mean"}, say="Start with ablation."),
        server_error(),
        tool_turn("ablate", {"components": "L1H0", "method": "average"}),  # malformed: not a list, bad method
        turn(tool_use("record_hypothesis", {"component": "L1H0", "statement": "moves IO", "status": "proposed",
                                            "prediction": "held-out DLA > 0"}),
             tool_use("logit_attribution", {"components": ["L1H0"], "prompts": "heldout"})),
        # seq 4 is the first ablation's result, seq 14 the held-out DLA: a grounded conclusion, recorded at once
        turn(tool_use("record_hypothesis", {"component": "L1H0", "hypothesis_id": "L1H0.h1", "statement": "moves IO",
                                            "status": "supported", "evidence": [14]}),
             tool_use("conclude_component", {"component": "L1H0", "role": "name mover", "confidence": 0.8,
                                             "explanation": "mean ablation removes 0.50 of the gap; it writes IO",
                                             "evidence": [4, 14]})),
        # L0H1: never concludes; the per-component step budget (4) stops it
        tool_turn("head_scores", {"heads": ["L0H1"]}),
        tool_turn("attention", {"head": "L0H1"}),
        tool_turn("ablate", {"components": ["L0H1"]}),
        tool_turn("patch", {"components": ["L0H1"], "positions": ["S2"]}),
    ])
    out = start_run(_cfg(tmp_path, circuit=["L1H0", "L0H1"], budget=Budget(max_steps=4)),
                    sandbox_factory=fake_factory())
    assert fake.responses_left == 0
    assert out.status == "completed"
    assert out.conclusions["L1H0"]["role"] == "name mover"
    assert out.conclusions["L0H1"]["role"] == "inconclusive"
    assert out.conclusions["L0H1"]["inconclusive_reason"] == "budget"

    reqs = fake.message_requests
    assert len(reqs) == 10  # 8 turns + the 429 and the 500, each retried once
    assert sleeps and sleeps[0] >= 0.5  # retry-after honoured
    # the system prompt is cached; tools are the planner's schemas
    body = reqs[1].body
    assert body["system"][0]["cache_control"]["type"] == "ephemeral"
    assert {t["name"] for t in body["tools"]} >= {"ablate", "patch", "conclude_component", "run_code"}
    # the malformed input came back to the model as a tool error, the run went on
    bad = reqs[4].body["messages"][-1]["content"][0]
    assert bad["type"] == "tool_result" and bad["is_error"] is True
    assert "components" in bad["content"] and "method" in bad["content"]
    good = reqs[2].body["messages"][-1]["content"][0]
    assert good["is_error"] is False and json.loads(good["content"])["data"]["effect_frac"] == 0.5

    events = read_events(out.run_dir)
    assert [e.seq for e in events] == list(range(len(events)))
    responses = [e for e in events if e.kind == "llm_response"]
    assert len(responses) == 8 and [r.attempts for r in responses[:2]] == [2, 2]
    assert all(r.usage.input_tokens == 100 and r.cost_usd is not None for r in responses)
    hit = [e for e in events if e.kind == "budget" and e.limit_hit]
    assert [(e.component, e.limit_hit) for e in hit] == [("L0H1", "component_steps")]
    assert sum(1 for e in events if e.kind == "error" and e.where == "tool.ablate") == 1
    assert not any(e.kind == "error" and e.where.startswith("grounding") for e in events)


def test_usd_budget_stops_the_run_and_it_still_reports(tmp_path, claude):
    fake, _ = claude
    fake.script([tool_turn("ablate", {"components": ["L1H0"]}, input_tokens=50_000, output_tokens=5_000)])
    out = start_run(_cfg(tmp_path, circuit=["L1H0", "L0H1"], budget=Budget(max_usd=0.01)),
                    sandbox_factory=fake_factory())
    assert out.status == "budget"
    assert len(fake.message_requests) == 1
    assert {c["inconclusive_reason"] for c in out.conclusions.values()} == {"budget"}
    events = read_events(out.run_dir)
    assert events[-1].kind == "run_finished" and events[-1].status == "budget"
    assert any(e.kind == "budget" and e.limit_hit == "usd" for e in events)
    assert (tmp_path / "runs" / out.run_id / "report.md").exists()


def test_claude_backend_reads_key_and_base_url_from_env(monkeypatch, fake_anthropic):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_anthropic.base_url)
    b = make_backend(RunConfig(question="q", planner="claude"))
    assert b.name == "claude" and str(b.client.base_url).startswith(fake_anthropic.base_url)
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    assert RunConfig(question="q").planner == "offline"
