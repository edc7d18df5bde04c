"""The run log: round trips, durability (fsync), torn tails, corruption, schema versions, resume."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from agent import log as L
from agent.llm.types import TextBlock, ToolUseBlock, Usage
from tools.errors import ComponentError, InterpAgentError


def one_of_each() -> list[L._Event]:
    """One event of every kind, with non-default values in every field."""
    return [
        L.RunStartedEvent(run_id="r1", question="which heads move names?", task="ioi", model="toy-ioi",
                          model_fingerprint="ab" * 32, planner="claude", llm_model="claude-x", seed=3,
                          circuit=["L1H0", " MLP0"], config={"budget": {"usd": 1.5}}, versions=L.collect_versions(),
                          isolation="bwrap"),
        L.LLMRequestEvent(backend="claude", model="claude-x", system_sha256=L.sha256_text("sys"), n_messages=1,
                          messages=[{"role": "user", "content": "go"}], tools=["ablate", "finish"], max_tokens=99),
        L.LLMResponseEvent(backend="claude", model="claude-x",
                           content=[TextBlock(text="plan"), ToolUseBlock(id="t1", name="ablate",
                                                                         input={"component": "L1H0"})],
                           stop_reason="tool_use", usage=Usage(input_tokens=10, output_tokens=4,
                                                               cache_read_input_tokens=100,
                                                               cache_creation_input_tokens=7),
                           cost_usd=0.0123, latency_s=0.5, attempts=2),
        L.ToolCallEvent(call_id="t1", name="ablate", input={"component": "L1H0"}, component="L1H0"),
        L.ExecutionResultEvent(call_id="t1", code="ablate(...)", status="error", stdout="o", stderr="e",
                               result="1.5", data={"effect": [1.0, None]}, outputs=["figures/a.png"],
                               error_name="ValueError", error_value="bad", traceback="Traceback...",
                               duration_s=0.25, component="L1H0"),
        L.HypothesisEvent(hypothesis_id="h1", component="L1H0", statement="moves IO", status="supported",
                          evidence=[4], prediction="ablating drops logit diff by >50%"),
        L.ConclusionEvent(component="L1H0", role="name mover", explanation="copies IO", confidence=0.9,
                          evidence=[4, 5], inconclusive_reason=None),
        L.ClusterEvent(name="movers", components=["L1H0", "L1H1"], explanation="both copy"),
        L.BudgetEvent(steps=3, tool_calls=2, input_tokens=117, output_tokens=4, usd=0.0123, wall_s=1.5,
                      limit_hit="usd", component="L1H0"),
        L.ErrorEvent(where="tool.ablate", message="bad input", recoverable=True, error_type="ValidationError"),
        L.EvaluationEvent(evaluator="reference", scores={"precision": 1.0, "recall": None}, details={"n": 2}),
        L.ComponentsEvent(components=["L1H0", "mlp0".upper()], source="localisation"),
        L.RunResumedEvent(budget={"max_usd": 2.0}, reopened=True, reason="new budget: max_usd=2.0"),
        L.FramingEvent(status="accepted", task="t", spec={"name": "t"}, file="task.yaml", setup_cells=["x = 1"],
                       attempts=[L.DesignAttempt(proposal=1, call_id="p1", valid=False, error="bad"),
                                 L.DesignAttempt(proposal=2, call_id="p2", valid=True, spec={"name": "t"}, check_seq=4,
                                                 usable=True, reasons=[], gap=2.5, accuracy=1.0, flips=0.9)],
                       steps=2, reason=""),
        L.LocalisationEvent(screened=12, candidates=["L1H0", "MLP0"], verified=["L1H0", "MLP0"],
                            rank_correlation=0.9, exact_all=True, chunks=1, kept=["L1H0"],
                            call_ids=["localise-sweep", "localise-exact-0"]),
        L.RunFinishedEvent(status="completed", summary="done"),
    ]


def test_every_kind_round_trips(tmp_path):
    events = one_of_each()
    assert {e.kind for e in events} == set(L.KINDS)  # the list above really covers every kind
    log = L.RunLog(tmp_path / "run")
    stored = log.extend(events)
    assert [e.seq for e in stored] == list(range(len(events)))
    back = L.read_events(tmp_path / "run")
    assert back == stored == log.events()
    for orig, b in zip(events, back, strict=True):
        assert type(b) is type(orig)
        assert b.model_dump(exclude={"seq", "ts"}) == orig.model_dump(exclude={"seq", "ts"})
        assert b.ts.tzinfo is not None and b.schema_version == L.SCHEMA_VERSION
    assert back[0].circuit == ["L1H0", "MLP0"]  # canonicalised
    lines = (tmp_path / "run" / "events.jsonl").read_text().splitlines()
    assert len(lines) == len(events) and all(json.loads(x)["kind"] for x in lines)


def test_append_validates_and_numbers(tmp_path):
    log = L.RunLog(tmp_path / "r")
    with pytest.raises(ValidationError):
        L.ConclusionEvent(component="L1H0", role="x", explanation="y", confidence=1.5)
    with pytest.raises((ValidationError, ComponentError)):
        L.ToolCallEvent(call_id="c", name="n", component="head 3")
    with pytest.raises(ValidationError):
        L.ToolCallEvent(call_id="c", name="n", bogus=1)  # extra fields refused
    with pytest.raises(L.LogError, match="evidence seq 0"):
        log.append(L.HypothesisEvent(hypothesis_id="h", component="L0H0", statement="s", status="proposed",
                                     evidence=[0]))
    assert len(log) == 0 and (tmp_path / "r" / "events.jsonl").read_text() == ""
    ev = L.ToolCallEvent(call_id="c", name="n", seq=41)  # a caller's seq is overwritten
    assert log.append(ev).seq == 0 and ev.seq == 41  # and the caller's object is untouched


def test_fsync_after_each_flushed_append(tmp_path, monkeypatch):
    path = tmp_path / "r" / "events.jsonl"
    log = L.RunLog(tmp_path / "r")
    seen: list[int] = []
    real = os.fsync

    def spy(fd):
        seen.append(len(path.read_text().splitlines()))  # the line is already flushed when fsync runs
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    for i in range(3):
        log.append(L.ErrorEvent(where="w", message=f"m{i}"))
    assert seen == [1, 2, 3]


def test_new_log_refuses_existing_events(tmp_path):
    L.RunLog(tmp_path / "r").append(L.ErrorEvent(where="w", message="m"))
    with pytest.raises(L.LogError, match="open_existing"):
        L.RunLog(tmp_path / "r")


def _write_three(run_dir) -> bytes:
    log = L.RunLog(run_dir)
    for i in range(3):
        log.append(L.ErrorEvent(where="w", message=f"m{i}"))
    return (run_dir / "events.jsonl").read_bytes()


def test_truncated_last_line_is_tolerated(tmp_path):
    data = _write_three(tmp_path / "r")
    lines = data.split(b"\n")
    # cut the third line midway, also inside a multi-byte character
    torn = b"\n".join(lines[:2]) + b"\n" + lines[2][: len(lines[2]) // 2]
    (tmp_path / "r" / "events.jsonl").write_bytes(torn)
    assert [e.message for e in L.read_events(tmp_path / "r")] == ["m0", "m1"]
    (tmp_path / "r" / "events.jsonl").write_bytes(b"\n".join(lines[:2]) + b"\n" + '{"message": "\u00e9'.encode()[:-1])
    assert len(L.read_events(tmp_path / "r")) == 2


def test_corrupt_middle_line_names_the_line(tmp_path):
    data = _write_three(tmp_path / "r")
    lines = data.split(b"\n")
    lines[1] = lines[1][:20]
    (tmp_path / "r" / "events.jsonl").write_bytes(b"\n".join(lines))
    with pytest.raises(L.LogSchemaError, match=r"line 2: corrupt") as ei:
        L.read_events(tmp_path / "r")
    assert isinstance(ei.value, InterpAgentError) and "truncate" in str(ei.value)
    with pytest.raises(L.LogSchemaError, match="line 2"):
        L.RunLog.open_existing(tmp_path / "r")  # resume refuses too, and does not "repair" it
    assert (tmp_path / "r" / "events.jsonl").read_bytes() == b"\n".join(lines)


def test_invalid_middle_event_names_line_and_field(tmp_path):
    data = _write_three(tmp_path / "r")
    lines = data.split(b"\n")
    obj = json.loads(lines[1])
    obj["recoverable"] = "maybe"
    lines[1] = json.dumps(obj).encode()
    (tmp_path / "r" / "events.jsonl").write_bytes(b"\n".join(lines))
    with pytest.raises(L.LogSchemaError, match=r"line 2: invalid error event.*recoverable"):
        L.read_events(tmp_path / "r")


def test_seq_gap_or_duplicate_is_an_error(tmp_path):
    data = _write_three(tmp_path / "r")
    lines = data.split(b"\n")
    dup = b"\n".join([lines[0], lines[1], lines[1], lines[2]]) + b"\n"
    (tmp_path / "r" / "events.jsonl").write_bytes(dup)
    with pytest.raises(L.LogSchemaError, match=r"line 3: seq 1 where 2 was expected"):
        L.read_events(tmp_path / "r")


@pytest.mark.parametrize("version,ok", [("2.0", False), ("1.7", True), ("0.9", False), ("x", False)])
def test_schema_versions(tmp_path, version, ok):
    data = _write_three(tmp_path / "r")
    lines = data.split(b"\n")
    obj = json.loads(lines[1])
    obj["schema_version"] = version
    obj["a_field_from_the_future"] = 1
    lines[1] = json.dumps(obj).encode()
    (tmp_path / "r" / "events.jsonl").write_bytes(b"\n".join(lines))
    if ok:
        assert [e.seq for e in L.read_events(tmp_path / "r")] == [0, 1, 2]
        return
    with pytest.raises(L.LogSchemaError, match=r"line 2") as ei:
        L.read_events(tmp_path / "r")
    if version == "2.0":
        assert "newer interp-agent" in str(ei.value) and "upgrade" in str(ei.value)


def test_unknown_kind_is_refused(tmp_path):
    data = _write_three(tmp_path / "r")
    lines = data.split(b"\n")
    obj = json.loads(lines[0])
    obj["kind"] = "telepathy"
    lines[0] = json.dumps(obj).encode()
    (tmp_path / "r" / "events.jsonl").write_bytes(b"\n".join(lines))
    with pytest.raises(L.LogSchemaError, match=r"line 1: unknown event kind 'telepathy'"):
        L.read_events(tmp_path / "r")
    obj["schema_version"] = "1.4"  # a kind added by a newer minor version: say to upgrade
    lines[0] = json.dumps(obj).encode()
    (tmp_path / "r" / "events.jsonl").write_bytes(b"\n".join(lines))
    with pytest.raises(L.LogSchemaError, match=r"line 1: event kind 'telepathy' comes from schema 1.4.*upgrade"):
        L.read_events(tmp_path / "r")


@pytest.mark.parametrize("cut", ["torn", "no_newline", "clean"])
def test_resume_continues_seq_without_duplicates(tmp_path, cut):
    run = tmp_path / "r"
    data = _write_three(run)
    lines = data.split(b"\n")
    if cut == "torn":
        data = b"\n".join(lines[:2]) + b"\n" + lines[2][:-7]  # third event lost mid-write
    elif cut == "no_newline":
        data = data[:-1]  # complete third event, newline never written
    (run / "events.jsonl").write_bytes(data)
    log = L.RunLog.open_existing(run)
    kept = 2 if cut == "torn" else 3
    assert log.next_seq == kept
    log.append(L.ErrorEvent(where="w", message="after resume"))
    log.append(L.RunFinishedEvent(status="completed"))
    back = L.read_events(run)
    assert [e.seq for e in back] == list(range(kept + 2))
    assert [e.message for e in back if isinstance(e, L.ErrorEvent)] == [f"m{i}" for i in range(kept)] + ["after resume"]
    assert (run / "events.jsonl").read_bytes().endswith(b"\n")
    assert back[-1].kind == "run_finished" and back[-1].status == "completed"


def test_missing_log_errors(tmp_path):
    with pytest.raises(L.LogError, match="no run log"):
        L.read_events(tmp_path / "nope")
    with pytest.raises(L.LogError, match="no run log"):
        L.RunLog.open_existing(tmp_path / "nope")


def test_derived_views(tmp_path):
    log = L.RunLog(tmp_path / "r")
    log.append(L.RunStartedEvent(run_id="r", question="q", model="m", planner="offline"))
    log.append(L.HypothesisEvent(hypothesis_id="a", component="L0H1", statement="s", status="proposed"))
    log.append(L.HypothesisEvent(hypothesis_id="b", component="L0H1", statement="t", status="proposed"))
    log.append(L.HypothesisEvent(hypothesis_id="a", component="L0H1", statement="s", status="refuted",
                                 evidence=[1]))
    log.append(L.ConclusionEvent(component="L0H1", role="first", explanation="", confidence=0.2))
    log.append(L.ConclusionEvent(component="L0H1", role="second", explanation="", confidence=0.7))
    log.append(L.ConclusionEvent(component="MLP0", role="mlp", explanation="", confidence=0.5))
    log.append(L.ClusterEvent(name="c", components=["L0H1"]))
    log.append(L.LLMResponseEvent(backend="b", model="m", usage=Usage(input_tokens=3, output_tokens=2),
                                  cost_usd=0.5))
    log.append(L.LLMResponseEvent(backend="b", model="m", usage=Usage(input_tokens=1), cost_usd=None))
    from agent.view import RunView

    v = RunView.from_run(tmp_path / "r")
    hyps = v.latest_hypotheses()
    assert list(hyps) == ["a", "b"] and hyps["a"].status == "refuted" and hyps["b"].status == "proposed"
    assert v.conclusions["L0H1"].role == "second" and set(v.conclusions) == {"L0H1", "MLP0"}
    assert v.clusters["c"].components == ["L0H1"]
    assert v.started.planner == "offline" and v.finished is None and v.state == "interrupted"
    u = v.usage
    assert (u.steps, u.input_tokens, u.output_tokens, u.usd, u.tokens) == (2, 4, 2, 0.5, 6)


def test_run_ids_sort_by_time_and_are_unique():
    ids = [L.new_run_id() for _ in range(50)]
    assert len(set(ids)) == 50
    stamp = datetime.strptime(ids[0][:15], "%Y%m%d-%H%M%S").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60


def test_execution_result_from_object():
    class R:  # duck-typed like sandbox.ExecutionResult
        def __init__(self):
            self.status, self.stdout, self.stderr, self.result = "ok", "hi", "", "3"
            self.data, self.outputs, self.duration_s = {"x": 1}, [os.path.join("figures", "f.png")], 0.1
            self.error_name = self.error_value = self.traceback = None

    ev = L.ExecutionResultEvent.from_result("c1", "print('hi')", R(), component="MLP0")
    assert (ev.status, ev.stdout, ev.data, ev.outputs, ev.component) == ("ok", "hi", {"x": 1},
                                                                          ["figures/f.png"], "MLP0")


WRITER = """
import sys
from agent.log import ErrorEvent, RunLog
log = RunLog(sys.argv[1])
i = 0
while True:  # large events make a kill inside write() likely to tear the last line
    log.append(ErrorEvent(where="writer", message=str(i) + "x" * (50_000 + 7919 * i % 100_000)))
    i += 1
"""


@pytest.mark.slow
def test_kill_9_mid_append_then_resume_loses_and_duplicates_nothing(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(run)], cwd=os.getcwd())
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            p = run / "events.jsonl"
            if p.exists() and p.stat().st_size > 1_000_000:  # ~10+ events written
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    before = L.read_events(run)
    assert len(before) >= 10 and [e.seq for e in before] == list(range(len(before)))
    assert [e.message.split("x")[0] for e in before] == [str(i) for i in range(len(before))]
    log = L.RunLog.open_existing(run)  # cuts a torn tail, if the kill left one
    assert (run / "events.jsonl").read_bytes().endswith(b"\n")
    assert log.next_seq == len(before)
    log.append(L.RunFinishedEvent(status="interrupted"))
    after = L.read_events(run)
    assert [e.seq for e in after] == list(range(len(before) + 1)) and after[:-1] == before


def test_execution_result_from_real_sandbox_result(tmp_path):
    """The sandbox's own ExecutionResult (traceback as lines, outputs as OutputFile) converts, dumped or not."""
    from sandbox.result import ExecutionResult, OutputFile

    fig = tmp_path / "run" / "workspace" / "outputs" / "attn.png"
    res = ExecutionResult(status="error", stdout="s", traceback=["Traceback (most recent call last):", "KeyError: 3"],
                          error_name="KeyError", error_value="3",
                          outputs=[OutputFile(path=fig, mime="image/png", bytes=10),
                                   OutputFile(path=tmp_path / "elsewhere.png", mime="image/png", bytes=1)])
    for r in (res, res.model_dump(), res.model_dump(mode="json")):
        ev = L.ExecutionResultEvent.from_result("c1", "plot()", r, run_dir=tmp_path / "run", component="L0H0")
        assert ev.traceback == "Traceback (most recent call last):\nKeyError: 3"
        assert ev.outputs == ["workspace/outputs/attn.png", (tmp_path / "elsewhere.png").as_posix()]
        assert (ev.status, ev.error_name, ev.component) == ("error", "KeyError", "L0H0")
    ok = L.ExecutionResultEvent.from_result("c2", "1", ExecutionResult(status="ok", result="1"))
    assert ok.traceback is None and ok.outputs == [] and ok.result == "1"
