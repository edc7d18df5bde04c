"""LLM backends: the real anthropic SDK against the loopback fake, replay, recording, tool validation."""

from __future__ import annotations

import random
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from agent.llm import (
    ClaudeBackend,
    LLMAPIError,
    LLMConfigError,
    ReplayDivergence,
    TextBlock,
    ThinkingBlock,
    ToolSpec,
    ToolUseBlock,
    cost_usd,
    tool_result,
    validate_tool_input,
)
from agent.log import RunLog, read_events
from agent.planners.recording import RecordingBackend
from agent.planners.replay import ReplayBackend
from tests.fake_anthropic import (
    api_error,
    overloaded,
    rate_limited,
    raw_response,
    server_error,
    stream_error,
    text,
    text_turn,
    tool_turn,
    tool_use,
    turn,
)
from tools.errors import InterpAgentError


class Ablate(BaseModel):
    """Mean-ablate one component and report the metric change."""

    component: str = Field(description="component to ablate, e.g. L1H0")
    method: Literal["mean", "zero", "resample"] = "mean"
    n_prompts: int = Field(32, ge=1, le=512)


class Finish(BaseModel):
    summary: str


TOOLS = [ToolSpec.from_model("ablate", "Ablate one component.", Ablate),
         ToolSpec.from_model("finish", "End the investigation.", Finish)]
SYSTEM = "You are an interpretability researcher. " * 20


def backend(fake, sleeps=None, **kw) -> ClaudeBackend:
    return ClaudeBackend(kw.pop("model", "claude-sonnet-5-5"), api_key="sk-test", base_url=fake.base_url,
                         sleep=(sleeps.append if sleeps is not None else (lambda s: None)),
                         rng=random.Random(0), **kw)


def run_loop(llm, first: str = "Which heads move names?", max_turns: int = 10):
    """A minimal tool loop: validate each call, answer with a tool_result (is_error on bad input)."""
    messages = [{"role": "user", "content": first}]
    results = []
    for _ in range(max_turns):
        r = llm.complete(system=SYSTEM, messages=messages, tools=TOOLS)
        results.append(r)
        messages.append(r.assistant_message())
        if r.stop_reason != "tool_use":
            break
        answers = []
        for call in r.tool_uses:
            spec = next(t for t in TOOLS if t.name == call.name)
            args, err = validate_tool_input(spec, call.input)
            answers.append(tool_result(call.id, err, is_error=True) if args is None
                           else tool_result(call.id, f"ok {call.name}: {args.model_dump()}"))
        messages.append({"role": "user", "content": answers})
    return messages, results


def test_tool_use_round_trip(fake_anthropic):
    fake_anthropic.script([
        tool_turn("ablate", {"component": "L1H0"}, id="toolu_1", say="Let me ablate L1H0."),
        tool_turn("finish", {"summary": "L1H0 moves names"}, id="toolu_2"),
        text_turn("All done."),
    ])
    llm = backend(fake_anthropic)
    messages, results = run_loop(llm)
    assert [r.stop_reason for r in results] == ["tool_use", "tool_use", "end_turn"]
    assert results[0].content == [TextBlock(text="Let me ablate L1H0."),
                                  ToolUseBlock(id="toolu_1", name="ablate", input={"component": "L1H0"})]
    assert results[-1].text == "All done." and all(r.attempts == 1 for r in results)
    reqs = fake_anthropic.message_requests
    assert len(reqs) == 3 and fake_anthropic.responses_left == 0
    # the second request carries the assistant tool_use turn and our tool_result, ids matching
    m = reqs[1].body["messages"]
    assert [x["role"] for x in m] == ["user", "assistant", "user"]
    assert m[1]["content"][1]["type"] == "tool_use" and m[1]["content"][1]["id"] == "toolu_1"
    tr = m[2]["content"][0]
    assert tr["type"] == "tool_result" and tr["tool_use_id"] == "toolu_1" and tr["is_error"] is False
    assert "ok ablate: {'component': 'L1H0', 'method': 'mean'" in tr["content"]
    # request shape: model, max_tokens, tools with schemas from the pydantic models, key sent
    b = reqs[0].body
    assert b["model"] == "claude-sonnet-5-5" and b["max_tokens"] == 16000
    assert [t["name"] for t in b["tools"]] == ["ablate", "finish"]
    assert b["tools"][0]["input_schema"]["properties"]["method"]["enum"] == ["mean", "zero", "resample"]
    assert reqs[0].api_key == "sk-test" and "anthropic-version" in reqs[0].headers
    assert messages[0] == {"role": "user", "content": "Which heads move names?"}  # caller's list untouched


def test_system_prompt_and_tools_carry_cache_control(fake_anthropic):
    fake_anthropic.script([text_turn("ok"), text_turn("ok")])
    llm = backend(fake_anthropic)
    msgs = [{"role": "user", "content": "hi"}]
    llm.complete(system=SYSTEM, messages=msgs, tools=TOOLS)
    b = fake_anthropic.message_requests[0].body
    assert b["system"] == [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}]
    assert b["tools"][-1]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in b["tools"][0]
    assert b["messages"][-1]["content"] == [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]
    assert msgs == [{"role": "user", "content": "hi"}]
    backend(fake_anthropic, cache_conversation=False).complete(system=SYSTEM, messages=msgs, tools=TOOLS)
    b2 = fake_anthropic.message_requests[1].body
    assert b2["messages"] == msgs and b2["system"][0]["cache_control"] == {"type": "ephemeral"}


def test_usage_and_cost_accounting(fake_anthropic):
    fake_anthropic.script([
        tool_turn("ablate", {"component": "L0H0"}, input_tokens=1000, output_tokens=200,
                  cache_creation_input_tokens=5000),
        text_turn("done", input_tokens=300, output_tokens=50, cache_read_input_tokens=5000),
    ])
    llm = backend(fake_anthropic)
    _, (r1, r2) = run_loop(llm)
    assert (r1.usage.input_tokens, r1.usage.output_tokens, r1.usage.cache_creation_input_tokens) == (1000, 200, 5000)
    assert r2.usage.cache_read_input_tokens == 5000
    # Sonnet 5.5: $2 in, $10 out, cache write 1.25x in, cache read 0.1x in (per million tokens)
    assert r1.cost_usd == pytest.approx((1000 * 2 + 200 * 10 + 5000 * 2.5) / 1e6)
    assert r2.cost_usd == pytest.approx((300 * 2 + 50 * 10 + 5000 * 0.2) / 1e6)
    t = llm.totals
    assert (t.calls, t.attempts, t.retries) == (2, 2, 0)
    assert (t.input_tokens, t.output_tokens, t.cache_read_input_tokens, t.cache_creation_input_tokens) == \
        (1300, 250, 5000, 5000)
    assert t.usd == pytest.approx(r1.cost_usd + r2.cost_usd) and not t.usd_unknown


def test_unknown_model_costs_none_not_crash(fake_anthropic):
    fake_anthropic.script([text_turn("hi", model="claude-future-9")])
    llm = backend(fake_anthropic, model="claude-future-9")
    r = llm.complete(system="s", messages=[{"role": "user", "content": "x"}], tools=[])
    assert r.cost_usd is None and r.usage.input_tokens == 100 and llm.totals.usd_unknown
    assert cost_usd("claude-sonnet-4-5-20250929", input_tokens=10**6, output_tokens=0) == pytest.approx(3.0)


def test_429_then_success_honours_retry_after(fake_anthropic):
    fake_anthropic.script([rate_limited(retry_after=7), text_turn("ok")])
    sleeps: list[float] = []
    llm = backend(fake_anthropic, sleeps)
    r = llm.complete(system="s", messages=[{"role": "user", "content": "x"}], tools=TOOLS)
    assert r.text == "ok" and r.attempts == 2
    assert len(fake_anthropic.message_requests) == 2
    assert sleeps == [7.0] and (llm.totals.attempts, llm.totals.retries) == (2, 1)
    # the retried request is identical
    assert fake_anthropic.message_requests[0].body == fake_anthropic.message_requests[1].body


def test_every_failed_attempt_is_counted_and_logged(fake_anthropic, caplog):
    fake_anthropic.script([server_error(), overloaded(), text_turn("ok")])
    sleeps: list[float] = []
    with caplog.at_level("WARNING", logger="agent.llm.claude"):
        r = backend(fake_anthropic, sleeps).complete(system="s", messages=[{"role": "user", "content": "x"}],
                                                     tools=[])
    llm_lines = [rec.getMessage() for rec in caplog.records if rec.name == "agent.llm.claude"]
    assert r.attempts == 3 and len(llm_lines) == 2
    assert "attempt 1 failed" in llm_lines[0] and "attempt 2 failed" in llm_lines[1]
    assert all(f"retrying in {s:.1f} s" in line for s, line in zip(sleeps, llm_lines, strict=True))


def test_retry_after_is_capped(fake_anthropic):
    fake_anthropic.script([rate_limited(retry_after=3600), text_turn("ok")])
    sleeps: list[float] = []
    backend(fake_anthropic, sleeps, max_delay=30).complete(system="s", messages=[{"role": "user", "content": "x"}],
                                                           tools=[])
    assert sleeps == [30]


@pytest.mark.parametrize("failure", [server_error, overloaded, lambda: rate_limited(None),
                                     lambda: api_error(503, "api_error", "unavailable")])
def test_transient_errors_then_success_use_exponential_backoff(fake_anthropic, failure):
    fake_anthropic.script([failure(), failure(), failure(), text_turn("ok")])
    sleeps: list[float] = []
    r = backend(fake_anthropic, sleeps, base_delay=1.0).complete(
        system="s", messages=[{"role": "user", "content": "x"}], tools=[])
    assert r.text == "ok" and r.attempts == 4 and len(fake_anthropic.message_requests) == 4
    assert len(sleeps) == 3
    for k, s in enumerate(sleeps):  # full jitter in [0.5, 1] x base * 2^k
        assert 0.5 * 2**k <= s <= 1.0 * 2**k


@pytest.mark.parametrize("failure,etype,status", [(overloaded, "overloaded_error", 529),
                                                  (server_error, "api_error", 500)])
def test_gives_up_after_max_retries_with_clear_error(fake_anthropic, failure, etype, status):
    fake_anthropic.script([failure() for _ in range(10)])
    llm = backend(fake_anthropic, max_retries=3)
    with pytest.raises(LLMAPIError) as ei:
        llm.complete(system="s", messages=[{"role": "user", "content": "x"}], tools=[])
    e = ei.value
    assert isinstance(e, InterpAgentError)
    assert (e.attempts, e.status_code, e.error_type) == (4, status, etype)
    assert "after 4 attempts" in str(e) and etype in str(e) and "--planner offline" in str(e)
    assert len(fake_anthropic.message_requests) == 4 and fake_anthropic.responses_left == 6


@pytest.mark.parametrize("status,etype,hint", [(401, "authentication_error", "ANTHROPIC_API_KEY"),
                                               (404, "not_found_error", "--model"),
                                               (400, "invalid_request_error", "--debug")])
def test_non_retryable_errors_fail_at_once(fake_anthropic, status, etype, hint):
    fake_anthropic.script([api_error(status, etype, "nope"), text_turn("never")])
    with pytest.raises(LLMAPIError) as ei:
        backend(fake_anthropic).complete(system="s", messages=[{"role": "user", "content": "x"}], tools=[])
    assert ei.value.status_code == status and ei.value.attempts == 1 and hint in str(ei.value)
    assert len(fake_anthropic.message_requests) == 1


def test_connection_refused_is_retried_then_reported():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    llm = ClaudeBackend(api_key="k", base_url=f"http://127.0.0.1:{port}", max_retries=2, sleep=lambda s: None)
    with pytest.raises(LLMAPIError, match="after 3 attempts.*cannot reach"):
        llm.complete(system="s", messages=[{"role": "user", "content": "x"}], tools=[])
    assert llm.totals.attempts == 3


def test_backends_satisfy_the_protocol(fake_anthropic):
    from agent.llm import LLMBackend

    assert isinstance(backend(fake_anthropic), LLMBackend) and isinstance(ReplayBackend([]), LLMBackend)
    assert backend(fake_anthropic).name == "claude" and ReplayBackend([]).name == "replay"


def test_backend_closes_its_client(fake_anthropic):
    fake_anthropic.script([text_turn("a")])
    with backend(fake_anthropic) as llm:
        assert llm.complete(system="s", messages=[{"role": "user", "content": "x"}], tools=[]).text == "a"
    assert llm.client.is_closed()


def test_missing_key_is_one_clear_error(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(LLMConfigError) as ei:
        ClaudeBackend()
    assert isinstance(ei.value, InterpAgentError)
    assert "ANTHROPIC_API_KEY" in str(ei.value) and "--planner offline" in str(ei.value)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-env")
    assert ClaudeBackend().model == "claude-sonnet-5-5"


def test_malformed_tool_input_goes_back_as_tool_error(fake_anthropic):
    fake_anthropic.script([
        tool_turn("ablate", {"component": "L1H0", "method": "avg", "n_prompts": 0}, id="bad"),
        tool_turn("ablate", "L1H0", id="worse"),  # not even an object
        tool_turn("ablate", {"component": "L1H0"}, id="good"),
        text_turn("fixed"),
    ])
    messages, results = run_loop(backend(fake_anthropic))
    assert results[-1].text == "fixed"
    reqs = fake_anthropic.message_requests
    err1 = reqs[1].body["messages"][-1]["content"][0]
    assert err1["tool_use_id"] == "bad" and err1["is_error"] is True
    assert "method" in err1["content"] and "n_prompts" in err1["content"] and '(got "avg")' in err1["content"]
    assert "2 problems" in err1["content"]
    err2 = reqs[2].body["messages"][-1]["content"][0]
    assert err2["is_error"] is True and "expected a JSON object" in err2["content"]
    ok = reqs[3].body["messages"][-1]["content"][0]
    assert ok["is_error"] is False and ok["tool_use_id"] == "good"


def test_parallel_tool_calls_and_thinking_blocks_pass_back(fake_anthropic):
    thinking = {"type": "thinking", "thinking": "ablate both", "signature": "sig123"}
    fake_anthropic.script([
        turn(thinking, tool_use("ablate", {"component": "L0H0"}, "a"), tool_use("ablate", {"component": "L0H1"}, "b")),
        text_turn("done"),
    ])
    messages, results = run_loop(backend(fake_anthropic))
    assert results[0].content[0] == ThinkingBlock(thinking="ablate both", signature="sig123")
    assert results[0].text == "" and [t.id for t in results[0].tool_uses] == ["a", "b"]
    sent = fake_anthropic.message_requests[1].body["messages"]
    assert sent[1]["content"][0] == thinking  # passed back unchanged, as the API requires
    assert [b["tool_use_id"] for b in sent[2]["content"]] == ["a", "b"]


@pytest.mark.parametrize("body,what", [(b"<html>bad gateway</html>", "unexpected response"),
                                       (b'{"type": "message"}', "malformed response")])
def test_unparseable_success_body_is_a_project_error(fake_anthropic, body, what):
    fake_anthropic.script([raw_response(200, body)])
    with pytest.raises(LLMAPIError, match=what):
        backend(fake_anthropic).complete(system="s", messages=[{"role": "user", "content": "x"}], tools=[])


def test_script_exhausted_fails_fast(fake_anthropic):
    with pytest.raises(LLMAPIError, match="script exhausted"):
        backend(fake_anthropic).complete(system="s", messages=[{"role": "user", "content": "x"}], tools=[])


def test_streaming_through_the_fake(fake_anthropic):
    """The fake also serves SSE, for a loop that streams; checked with the SDK's own stream parser."""
    fake_anthropic.script([turn(text("thinking aloud"), tool_use("ablate", {"component": "MLP0"}, "s1"))])
    llm = backend(fake_anthropic)
    with llm.client.messages.stream(model=llm.model, max_tokens=100, messages=[{"role": "user", "content": "x"}],
                                    tools=[t.to_api() for t in TOOLS]) as stream:
        msg = stream.get_final_message()
    assert msg.content[0].text == "thinking aloud"
    assert (msg.content[1].name, msg.content[1].input) == ("ablate", {"component": "MLP0"})
    assert msg.stop_reason == "tool_use" and msg.usage.output_tokens == 20


# ---------------------------------------------------------------------------------------------- record + replay


def test_record_then_replay_reproduces_the_conversation(fake_anthropic, tmp_path):
    fake_anthropic.script([rate_limited(0), tool_turn("ablate", {"component": "L1H0"}, id="t1"),
                           tool_turn("ablate", {"component": "L1H0", "method": "avg"}, id="t2"),
                           text_turn("done")])
    log = RunLog(tmp_path / "run")
    live_msgs, live = run_loop(RecordingBackend(backend(fake_anthropic), log, component="L1H0"))
    evs = read_events(tmp_path / "run")
    assert [e.kind for e in evs] == ["llm_request", "llm_response"] * 3
    assert [e.n_messages for e in evs if e.kind == "llm_request"] == [1, 3, 5]
    assert [len(e.messages) for e in evs if e.kind == "llm_request"] == [1, 2, 2]  # deltas only
    assert evs[1].attempts == 2 and evs[1].component == "L1H0" and evs[1].cost_usd > 0

    n_requests = len(fake_anthropic.requests)
    replay = ReplayBackend(tmp_path / "run")
    assert replay.model == "claude-sonnet-5-5" and replay.remaining == 3
    replay_msgs, replayed = run_loop(replay)
    assert len(fake_anthropic.requests) == n_requests  # no API call
    assert replay_msgs == live_msgs
    assert [r.model_dump(exclude={"latency_s"}) for r in replayed] == \
        [r.model_dump(exclude={"latency_s"}) for r in live]
    with pytest.raises(ReplayDivergence, match=r"3 recorded LLM turn\(s\); call #4"):
        replay.complete(system=SYSTEM, messages=replay_msgs, tools=TOOLS)


def test_replay_detects_divergence(tmp_path, fake_anthropic):
    fake_anthropic.script([text_turn("a")])
    log = RunLog(tmp_path / "r")
    RecordingBackend(backend(fake_anthropic), log).complete(system="sys", messages=[{"role": "user", "content": "x"}],
                                                            tools=TOOLS)
    two = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    with pytest.raises(ReplayDivergence, match="recorded request had 1 messages, this one has 2"):
        ReplayBackend(log.events()).complete(system="sys", messages=two, tools=TOOLS)
    strict = ReplayBackend(log.events(), strict=True)
    with pytest.raises(ReplayDivergence, match="system prompt differs"):
        strict.complete(system="other", messages=two[:1], tools=TOOLS)
    assert ReplayBackend(log.events(), strict=True).complete(system="sys", messages=two[:1], tools=TOOLS).text == "a"


def test_recording_logs_failures(tmp_path, fake_anthropic):
    fake_anthropic.script([api_error(401, "authentication_error", "invalid x-api-key")])
    log = RunLog(tmp_path / "r")
    with pytest.raises(LLMAPIError):
        RecordingBackend(backend(fake_anthropic), log).complete(system="s", messages=[{"role": "user", "content": "x"}],
                                                                tools=[])
    kinds = [e.kind for e in read_events(tmp_path / "r")]
    assert kinds == ["llm_request", "error"]
    err = log.events()[1]
    assert err.where == "llm.claude" and err.error_type == "LLMAPIError" and "401" in err.message


def test_tool_spec_rules():
    spec = TOOLS[0]
    api = spec.to_api()
    assert set(api) == {"name", "description", "input_schema"} and api["input_schema"]["type"] == "object"
    assert api["input_schema"]["required"] == ["component"] and "title" not in api["input_schema"]
    assert spec.model is Ablate
    with pytest.raises(ValueError):
        ToolSpec(name="has space", description="d", input_schema={"type": "object"})
    raw = ToolSpec(name="raw", description="d", input_schema={"type": "object"})
    with pytest.raises(LLMConfigError, match="from_model"):
        validate_tool_input(raw, {})
    args, err = validate_tool_input(Ablate, {"component": "L2H3", "n_prompts": "8"})
    assert err == "" and args == Ablate(component="L2H3", n_prompts=8)
    args, err = validate_tool_input(Ablate, {})
    assert args is None and "component: Field required" in err and "(got" not in err


def test_streaming_backend_round_trip_and_midstream_overload(fake_anthropic):
    fake_anthropic.script([
        tool_turn("ablate", {"component": "L1H0", "method": "zero"}, id="s1", say="streaming"),
        stream_error("overloaded_error"),
        text_turn("done", output_tokens=7),
    ])
    sleeps: list[float] = []
    llm = backend(fake_anthropic, sleeps, stream=True)
    messages, results = run_loop(llm)
    assert all(r.body.get("stream") is True for r in fake_anthropic.message_requests)
    assert results[0].content == [TextBlock(text="streaming"),
                                  ToolUseBlock(id="s1", name="ablate", input={"component": "L1H0", "method": "zero"})]
    assert results[1].text == "done" and results[1].attempts == 2 and results[1].usage.output_tokens == 7
    assert len(sleeps) == 1 and llm.totals.retries == 1
    assert messages[2]["content"][0]["tool_use_id"] == "s1"
