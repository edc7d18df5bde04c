"""A run being written (its lock held) cannot be resumed by a second process; status says "running"."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.kernel import KernelError
from agent.lock import RunLockedError, run_lock
from agent.run import RunConfig, resume_run, run_status, start_run
from tests.test_graph_fakes import Crash, fake_factory, fake_tasks

pytestmark = pytest.mark.usefixtures(fake_tasks.__name__)


def test_resume_refuses_a_run_still_being_written(tmp_path):
    cfg = RunConfig(question="q", task="toy-ioi", model="toy-ioi", planner="offline", out=str(tmp_path),
                    n_prompts=8, circuit=["L1H0"])
    started: list[Path] = []
    with pytest.raises(Crash):
        start_run(cfg, sandbox_factory=fake_factory(crash_after=3), on_started=started.append)
    run_dir = started[0]
    assert run_status(run_dir)["state"] == "interrupted"
    with run_lock(run_dir):  # as if another process were still writing it
        assert run_status(run_dir)["state"] == "running"
        with pytest.raises(RunLockedError, match="being written by another process"):
            resume_run(run_dir, sandbox_factory=fake_factory())
    assert resume_run(run_dir, sandbox_factory=fake_factory()).status == "completed"


class ExecSandbox:
    """Runs cells with exec() in a fresh namespace (a kernel without tools), crashing after N cells."""

    isolation = "exec (tests)"

    def __init__(self, crash_at: int | None = None):
        from tools.components import Component
        from tools.errors import ComponentError

        class M:
            n_layers, n_heads = 2, 4

            def fingerprint(self):
                return "0" * 64

            def check(self, c):
                if c.layer >= self.n_layers or (c.head is not None and c.head >= self.n_heads):
                    raise ComponentError(f"{c} is out of range")
                return c

        import tools

        self.ns = {"model": M(), "Component": Component, "tools": tools}
        self.n = 0
        self.crash_at = crash_at

    def execute(self, code, timeout=None):
        from tests.test_graph_fakes import FakeResult

        self.n += 1
        if self.crash_at is not None and self.n == self.crash_at:
            raise Crash("killed")
        self.ns.pop("_result", None)
        try:
            exec(code, self.ns)
        except Exception as e:  # noqa: BLE001 - a cell error is data
            return FakeResult(status="error", error_name=type(e).__name__, error_value=str(e))
        return FakeResult(data=self.ns.get("_result"))

    def shutdown(self):
        pass


def test_resume_restores_kernel_state_of_the_unfinished_component(tmp_path, monkeypatch):
    from agent.llm.types import LLMResponse, ToolUseBlock
    from agent.log import read_events

    turns = [
        LLMResponse(content=[ToolUseBlock(id="a", name="run_code", input={"code": "x = 41"})]),
        LLMResponse(content=[ToolUseBlock(id="b", name="run_code", input={"code": "_result = {'x': x + 1}"})]),
        LLMResponse(content=[ToolUseBlock(id="c", name="conclude_component", input={
            "component": "L1H0", "role": "name mover", "explanation": "e", "confidence": 0.5})]),
        # the grounding check sends the ungrounded conclusion back once; the retry is recorded
        LLMResponse(content=[ToolUseBlock(id="c2", name="conclude_component", input={
            "component": "L1H0", "role": "name mover", "explanation": "e", "confidence": 0.5})]),
    ]

    class Scripted:
        name, model = "scripted", "s"

        def complete(self, *, system, messages, tools, max_tokens=None, timeout_s=None):
            return turns[sum(1 for m in messages if m["role"] == "assistant")]

    monkeypatch.setattr("agent.run.make_backend", lambda cfg: Scripted())
    cfg = RunConfig(question="q", task="toy-ioi", model="toy-ioi", planner="offline", out=str(tmp_path),
                    n_prompts=8, circuit=["L1H0"])
    started: list[Path] = []
    with pytest.raises(Crash):  # cells: 1 the start-up check, 2 x = 41, 3 the cell using x: killed
        start_run(cfg, sandbox_factory=lambda w, s, c: ExecSandbox(crash_at=3), on_started=started.append)
    out = resume_run(started[0], sandbox_factory=lambda w, s, c: ExecSandbox())
    assert out.conclusions["L1H0"]["role"] == "name mover"
    res = [e for e in read_events(started[0]) if e.kind == "execution_result"]
    assert [(e.call_id, e.status, e.data) for e in res] == [("a", "ok", None), ("b", "ok", {"x": 42})]


def test_circuit_components_the_model_lacks_are_refused_before_the_run(tmp_path):
    cfg = RunConfig(question="q", task="toy-ioi", model="toy-ioi", planner="offline", out=str(tmp_path),
                    n_prompts=8, circuit=["L1H0", "L9H9", "L1H0"])
    with pytest.raises(KernelError, match="L9H9") as e:
        start_run(cfg, sandbox_factory=lambda w, s, c: ExecSandbox())
    assert "2 layers x 4 heads" in str(e.value)
    assert list(tmp_path.iterdir()) == []
