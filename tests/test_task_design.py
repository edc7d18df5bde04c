"""Task design by the LLM planner (issue 12, item 3): Claude, scripted through the real ``anthropic`` SDK against
the strict fake Messages API, designs the task of a question no task matches, on the ``toy-pronoun`` zoo model.

The sandbox here runs the agent's cells in-process against the real model, tools and ``evals`` (an exec()
namespace set up by the run's own setup cells), so every check and every experiment computes real numbers;
the kill -9 test at the end runs the CLI in a subprocess with the real (bubblewrap) sandbox.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import traceback
from pathlib import Path

import pytest

from agent.cli import main
from agent.framing import NoMatchingTask, frame_question
from agent.llm.claude import ClaudeBackend
from agent.log import read_events
from agent.run import RunConfig, TaskDesignError, make_backend, replay_run, resume_run, run_status, start_run
from sandbox.result import ExecutionResult
from tests.fake_anthropic import overloaded, text, tool_turn, tool_use, turn
from tests.test_graph_fakes import Crash

REPO = Path(__file__).resolve().parents[1]
QUESTION = "Which heads make the model say whether the person who acted first is a man or a woman?"
NAMES = {"he": ["John", "Tom", "Paul", "Mark", "Jack", "Dan", "Sam", "Mike", "Max", "Bob"],
         "she": ["Mary", "Anna", "Emma", "Lucy", "Sara", "Rose", "Jane", "Lily", "Kate", "Alice"]}


class InProcessSandbox:
    """Runs setup cells and cells with exec() in one namespace of this process: the real model and tools, no
    kernel. ``crash_at``: raise :class:`Crash` (the process dying) when that cell (1-based) starts."""

    isolation = "in-process (tests)"

    def __init__(self, setup: list[str], crash_at: int | None = None) -> None:
        import torch

        threads = torch.get_num_threads()
        self.ns: dict = {}
        for code in setup:
            exec(code, self.ns)  # noqa: S102 - the agent's own setup cells
        torch.set_num_threads(threads)  # the setup sets the kernel's threads; keep the test process's
        self.cells: list[str] = []
        self.crash_at = crash_at

    def execute(self, code: str, timeout: float | None = None) -> ExecutionResult:
        import torch

        self.cells.append(code)
        if self.crash_at is not None and len(self.cells) == self.crash_at:
            raise Crash(f"killed at cell {self.crash_at}")
        self.ns.pop("_result", None)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as the run's kernel does (much faster for a tiny model on a busy machine)
        try:
            exec(code, self.ns)  # noqa: S102 - the agent's own cells
        except Exception as e:  # noqa: BLE001 - a cell error is data
            return ExecutionResult(status="error", error_name=type(e).__name__, error_value=str(e),
                                   traceback=traceback.format_exception(e)[-3:])
        finally:
            torch.set_num_threads(threads)
        data = self.ns.get("_result")
        return ExecutionResult(status="ok", data=json.loads(json.dumps(data)) if data is not None else None)

    def shutdown(self) -> None:
        pass


def in_process(crash_at: int | None = None):
    """A sandbox factory of :class:`InProcessSandbox` (``.made`` lists the sandboxes with their setup)."""
    made: list[tuple[list[str], InProcessSandbox]] = []

    def factory(workspace, setup, options):
        sb = InProcessSandbox(setup, crash_at=crash_at)
        made.append((list(setup), sb))
        return sb

    factory.made = made  # type: ignore[attr-defined]
    return factory


# ---------------------------------------------------------------------------------------------- the designer


def spec(redraw: str = "S", name: str = "first-actor-gender", **change) -> dict:
    """A template spec over toy-pronoun's words; ``redraw`` is the slot the corruption re-draws."""
    gen = {"kind": "template",
           "templates": ["{S} {VERB} {O} at the {PLACE} and then", "at the {PLACE} {S} {VERB} {O} and then"],
           "slots": {"S": NAMES, "O": NAMES, "VERB": ["saw", "met", "called", "helped"],
                     "PLACE": ["store", "garden", "school", "park"]},
           "answer": "{S.group}", "wrong": "{S.other}", "corruption": {"redraw": [redraw]},
           "positions": {"S": "S", "O": "O"}}
    gen.update(change)
    return {"name": name, "description": "Which pronoun follows: the first name's gender.", "generator": gen}


def propose(s: dict, id: str | None = None) -> dict:
    return tool_use("propose_task", s, id)


def check(proposal: int | None = None, id: str | None = None) -> dict:
    return tool_use("check_task", {} if proposal is None else {"proposal": proposal}, id)


def _brief(body: dict) -> str:
    first = body["messages"][0]["content"]
    return first if isinstance(first, str) else " ".join(b.get("text", "") for b in first if b.get("type") == "text")


def conclude_current(body: dict) -> dict:
    """The turn that concludes the component the request's brief names."""
    comp = re.search(r"^COMPONENT: (\S+)", _brief(body), re.M).group(1)
    return turn(tool_use("conclude_component", {"component": comp, "role": f"role of {comp}", "confidence": 0.6,
                                                "explanation": f"{comp} matters for the pronoun."}))


def group_all(body: dict) -> dict:
    comps = re.findall(r"^COMPONENT (\S+) \(", _brief(body), re.M)
    return tool_turn("group_components", {"clusters": [{"name": c, "components": [c], "explanation": f"{c}."}
                                                       for c in comps]})


def investigation(n: int = 2) -> list:
    return [conclude_current] * n + [group_all]


@pytest.fixture(autouse=True)
def _one_model_load(monkeypatch):
    """The setup cells' ``load_any_model`` loads toy-pronoun once per test (the experiments never change it)."""
    import functools

    import evals.zoo

    monkeypatch.setattr(evals.zoo, "load_any_model", functools.lru_cache(maxsize=2)(evals.zoo.load_any_model))


@pytest.fixture
def claude(fake_anthropic, monkeypatch):
    """The fake API with ``agent.run.make_backend`` building a Claude backend on it; after the test no request
    may have been one the real API refuses."""
    real = make_backend

    def make(cfg):
        if cfg.planner != "claude":
            return real(cfg)
        return ClaudeBackend(api_key="test", base_url=fake_anthropic.base_url, sleep=lambda s: None, max_retries=1,
                             max_tokens=cfg.llm_max_tokens)

    monkeypatch.setattr("agent.run.make_backend", make)
    yield fake_anthropic
    assert fake_anthropic.rejected == [], "the loop sent requests the real API refuses"


def _cfg(tmp_path, **kw) -> RunConfig:
    base = dict(question=QUESTION, model="toy-pronoun", planner="claude", out=str(tmp_path / "runs"), n_prompts=8,
                max_components=2, budget={"max_steps": 3},
                grounding_check=False)  # the scripted conclusions cite nothing; grounding has its own tests
    base.update(kw)
    return RunConfig(**base)


def _results(req) -> dict:
    return {b["tool_use_id"]: b for b in req.body["messages"][-1]["content"] if b.get("type") == "tool_result"}


# ---------------------------------------------------------------------------------------------- the tests


def test_the_question_matches_no_task():
    with pytest.raises(NoMatchingTask):
        frame_question(QUESTION)


def test_designer_revises_a_task_without_gap_then_the_investigation_runs_on_it(tmp_path, claude, capsys,
                                                                                  monkeypatch):
    claude.script([
        turn(text("The subject's gender decides the pronoun; first try corrupting the object."),
             propose(spec(redraw="O"), "p1"), check(id="c1")),
        turn(propose(spec(redraw="S"), "p2"), check(2, "c2")),
        *investigation(),
    ])
    factory = in_process()
    out = start_run(_cfg(tmp_path), sandbox_factory=factory)
    assert out.status == "completed" and claude.responses_left == 0
    run = Path(out.run_dir)
    reqs = claude.message_requests
    # the designer saw the question, the model's facts (its whole vocabulary: a word-level toy) and the rules
    first = reqs[0].body
    brief = _brief(first)
    assert QUESTION in brief and "2 layers x 4 heads" in brief and "VOCABULARY (every token" in brief
    assert "she" in brief.split("VOCABULARY")[1] and "woman → [<unk>] (not one known token)" in brief
    assert "redraw" in first["system"][0]["text"] and "noise floor" in first["system"][0]["text"]
    assert [t["name"] for t in first["tools"]] == ["propose_task", "check_task", "tokenize"]
    assert "tool_choice" not in first
    # proposal 1: valid, but the model ignores the object: the check fails on the gap, and says so
    r1 = _results(reqs[1])
    assert r1["p1"]["is_error"] is False and "Proposal 1" in r1["p1"]["content"]
    assert "FAILED" in r1["c1"]["content"] and "noise floor" in r1["c1"]["content"]
    # the investigation went on, on the designed task, in a kernel restarted with it
    events = read_events(run)
    fr = [e for e in events if e.kind == "framing"]
    assert len(fr) == 1 and fr[0].status == "accepted" and fr[0].task == "first-actor-gender"
    assert [(a.proposal, a.valid, a.usable) for a in fr[0].attempts] == [(1, True, False), (2, True, True)]
    assert abs(fr[0].attempts[0].gap) < 0.1 and fr[0].attempts[1].gap > 5 and fr[0].attempts[1].accuracy == 1.0
    setups = [s for s, _ in factory.made]
    assert len(setups) == 2 and "batches" not in setups[0][1] and setups[1] == fr[0].setup_cells
    assert "first-actor-gender" in fr[0].setup_cells[1]
    seqs = {e.seq: e.kind for e in events}
    loc = next(e for e in events if e.kind == "execution_result" and e.call_id == "localise-sweep")
    assert loc.seq > fr[0].seq and loc.status == "ok"
    assert seqs[fr[0].attempts[1].check_seq] == "execution_result"
    assert len(out.conclusions) == 2 and {c["role"] for c in out.conclusions.values()} != {"inconclusive"}
    # task.yaml holds the accepted spec, loadable as a task file
    from evals.tasks import TaskSpec, load_task

    assert load_task(run / "task.yaml") == TaskSpec.model_validate(fr[0].spec)
    assert load_task(run / "task.yaml").model == "toy-pronoun"
    assert main(["tasks", "check", str(run / "task.yaml"), "--model", "toy-pronoun"]) == 0
    assert run_status(run)["state"] == "completed" and read_events(run)[0].task is None
    # status, report and eval read the designed task from the log
    st = run_status(run)
    assert st["task"] == "first-actor-gender" and st["design"]["state"] == "accepted" and st["design"]["proposals"] == 2
    report = (run / "report.md").read_text()
    assert "## Task design" in report and "task.yaml" in report and "Which pronoun follows" in report
    from agent.bench.evaluate import evaluate_run

    ev = evaluate_run(run, n_null=10, cache=False)
    assert ev["details"]["task"] == "first-actor-gender" and ev["scores"]["faith_agent"] is not None

    # replay --verify re-executes every cell (the designer's included) and every number re-computes
    import importlib

    from agent.replay import planner_replay

    monkeypatch.setattr(importlib.import_module("agent.replay.verify"), "default_sandbox_factory", in_process())
    capsys.readouterr()
    assert main(["--json", "replay", str(run), "--verify"]) == 0
    rep = json.loads(capsys.readouterr().out)["verify"]
    assert rep["ok"] and rep["mismatches"] == [], rep["mismatches"]
    assert rep["cells"] == sum(1 for e in events if e.kind == "execution_result") >= 5
    # --planner-replay: the loop re-runs on the logged turns (no API call): same calls, same design, same roles
    n = len(claude.requests)
    pr = planner_replay(run, out_dir=tmp_path / "again",
                        runner=lambda run_dir, out_dir: replay_run(run_dir, out_dir, sandbox_factory=in_process()))
    assert pr.ok, pr.differences
    assert len(claude.requests) == n and pr.calls_now == pr.calls_logged
    again = read_events(pr.new_run_dir)
    assert next(e for e in again if e.kind == "framing").spec == fr[0].spec
    # the replay planner, given the run, designs again by itself (no --design-task needed)
    replayed = start_run(RunConfig(question=QUESTION, model="toy-pronoun", planner="replay", replay_from=str(run),
                                   out=str(tmp_path / "again2"), n_prompts=8, max_components=2,
                                   budget={"max_steps": 3}, grounding_check=False), sandbox_factory=in_process())
    assert replayed.status == "completed" and len(claude.requests) == n
    # task.yaml is a task file: the offline planner investigates it with --task FILE (no design, no API call)
    monkeypatch.setattr("agent.run.default_sandbox_factory", in_process())
    capsys.readouterr()
    assert main(["--json", "investigate", QUESTION, "--task", str(run / "task.yaml"), "--planner", "offline",
                 "--out", str(tmp_path / "offline"), "--prompts", "8", "--max-components", "2",
                 "--max-steps", "3"]) == 0
    assert len(claude.requests) == n
    (off,) = (tmp_path / "offline").iterdir()
    off_events = read_events(off)
    assert off_events[0].task == str((run / "task.yaml").resolve())  # a spec file is logged by its path
    assert not any(e.kind == "framing" for e in off_events) and run_status(off)["state"] == "completed"
    assert next(e for e in off_events if e.kind == "components").components == \
        next(e for e in events if e.kind == "components").components  # the same task: the same localisation


def test_a_malformed_proposal_comes_back_as_an_error_result(tmp_path, claude):
    bad = spec(answer="{SUBJ.group}")  # a slot that does not exist
    bad["name"] = "Bad Name!"
    claude.script([
        turn(propose(bad, "p1"), check(id="c1")),
        turn(propose({"name": "x", "generator": {"kind": "template"}}, "p2")),  # fields missing
        turn(propose(spec(), "p3"), check(id="c3")),
        *investigation(),
    ])
    out = start_run(_cfg(tmp_path), sandbox_factory=in_process())
    assert out.status == "completed"
    r = _results(claude.message_requests[1])
    assert r["p1"]["is_error"] and "Proposal 1 is not a valid task spec" in r["p1"]["content"]
    assert "name" in r["p1"]["content"] and "pattern" in r["p1"]["content"]
    assert r["c1"]["is_error"] and "no valid proposal" in r["c1"]["content"]
    r2 = _results(claude.message_requests[2])["p2"]
    assert r2["is_error"] and "description" in r2["content"] and "generator.template.templates" in r2["content"]
    events = read_events(out.run_dir)
    fr = next(e for e in events if e.kind == "framing")
    assert [(a.proposal, a.valid) for a in fr.attempts] == [(1, False), (2, False), (3, True)]
    assert fr.attempts[0].error and fr.attempts[0].spec is None
    assert sum(1 for e in events if e.kind == "error" and e.where in ("tool.propose_task", "tool.check_task")) == 3
    assert sum(1 for e in events if e.kind == "execution_result" and e.call_id.startswith("toolu")) == 0
    assert sum(1 for e in events if e.kind == "execution_result" and e.call_id == "c3") == 1


def test_an_exhausted_framing_budget_is_one_line_exit_2_and_nothing_half_run(tmp_path, claude, capsys, monkeypatch):
    monkeypatch.setattr("agent.run.default_sandbox_factory", in_process())
    claude.script([
        turn(propose(spec(redraw="O"), "p1"), check(id="c1")),
        turn(propose(spec(redraw="VERB"), "p2"), check(id="c2")),
    ])
    out = tmp_path / "runs"
    code = main(["investigate", QUESTION, "--model", "toy-pronoun", "--planner", "claude", "--design-steps", "2",
                 "--out", str(out)])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: task design failed: no proposal passed the check within 2 planner turns")
    assert "2 proposal(s)" in err[0] and "noise floor" in err[0] and "--design-steps" in err[0]
    (run,) = out.iterdir()
    assert str(run) in err[0]
    events = read_events(run)
    # the log keeps every attempt and ends the run; nothing was localised or investigated, no task file
    assert [e.kind for e in events[-3:]] == ["framing", "budget", "run_finished"]
    assert events[-3].status == "failed" and len(events[-3].attempts) == 2
    assert events[-1].status == "error" and "Task design failed" in events[-1].summary
    assert not any(e.kind in ("components", "conclusion", "cluster") for e in events)
    assert not any(getattr(e, "call_id", "").startswith("localise") for e in events)
    assert not (run / "task.yaml").exists() and not (run / "report.md").exists()
    assert len(claude.message_requests) == 2
    st = run_status(run)
    assert st["state"] == "error" and st["design"]["state"] == "failed" and st["design"]["proposals"] == 2
    assert main(["status", str(run)]) == 0
    assert "task design: failed: no proposal passed the check" in capsys.readouterr().out
    # resume says the same and does nothing more
    with pytest.raises(TaskDesignError, match="task design failed"):
        resume_run(run, sandbox_factory=in_process())
    assert len(read_events(run)) == len(events)


def test_design_needs_a_model_and_a_planner_that_can_design(tmp_path, capsys):
    code = main(["investigate", QUESTION, "--planner", "offline", "--design-task", "--model", "toy-pronoun",
                 "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "cannot design a task" in err and "--task FILE" in err
    code = main(["investigate", QUESTION, "--planner", "offline", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "cannot map the question to a task" in err and "--planner claude" in err
    with pytest.raises(Exception, match="needs the model"):
        start_run(_cfg(tmp_path, model=None, design_task=True), sandbox_factory=in_process())
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").iterdir()) == []


def test_when_the_planner_designs_the_task():
    from agent.run import RunError, frame

    def fr(**kw):
        return frame(RunConfig(**{"question": QUESTION, "planner": "claude", "model": "toy-pronoun", **kw}))

    assert fr().design and fr().task == ""  # claude, and no task matches: design
    ioi = "Which heads move the indirect object's name?"
    assert not fr(question=ioi).design and fr(question=ioi).task == "toy-ioi"  # a task matches: keywords
    d = fr(question=ioi, design_task=True, model=None)  # --design-task: design even so, on the matched task's model
    assert d.design and d.model == "toy-ioi"
    assert fr(task="toy-pronoun").task == "toy-pronoun"
    with pytest.raises(RunError, match="both say where the task comes from"):
        fr(task="toy-pronoun", design_task=True)
    with pytest.raises(RunError, match="cannot design a task"):
        fr(planner="offline", design_task=True)
    with pytest.raises(NoMatchingTask):
        fr(planner="offline")
    assert fr(planner="replay", replay_from="x", design_task=True).design  # a designed run's replay designs again


def test_planner_replay_names_a_different_design():
    from agent.log import FramingEvent
    from agent.replay.planner import compare_runs

    a = [FramingEvent(status="accepted", task="t", spec={"name": "t", "x": 1})]
    assert compare_runs(a, a) == []
    assert compare_runs(a, [FramingEvent(status="accepted", task="t", spec={"name": "t", "x": 2})]) == \
        ["task design: logged accepted 't' vs now accepted 't' (the accepted specs differ)"]
    assert compare_runs(a, [FramingEvent(status="failed", reason="r")]) == \
        ["task design: logged accepted 't' vs now failed None"]


def test_an_api_failure_during_design_pauses_and_resume_designs_on(tmp_path, claude):
    claude.script([turn(propose(spec(redraw="O"), "p1"), check(id="c1")), overloaded(), overloaded()])
    out = start_run(_cfg(tmp_path), sandbox_factory=in_process())
    assert out.status == "interrupted" and "overloaded" in out.reason
    events = read_events(out.run_dir)
    assert not any(e.kind in ("framing", "run_finished") for e in events)
    assert run_status(out.run_dir)["design"]["state"] == "designing"
    claude.script([turn(propose(spec(redraw="S"), "p2"), check(id="c2")), *investigation()])
    again = resume_run(out.run_dir, sandbox_factory=in_process())
    assert again.status == "completed"
    events = read_events(out.run_dir)
    assert sum(1 for e in events if e.kind == "llm_request" and "propose_task" in e.tools) == 2
    assert [a.usable for a in next(e for e in events if e.kind == "framing").attempts] == [False, True]


def test_resume_after_a_kill_during_framing_repeats_and_loses_nothing(tmp_path, claude):
    claude.script([
        turn(propose(spec(redraw="O"), "p1"), check(id="c1")),
        turn(propose(spec(redraw="S"), "p2"), check(id="c2")),  # its check is cell 4: the process dies there
    ])
    started: list[Path] = []
    # cells: 1 start-up check, 2 the model's facts, 3 check of proposal 1, 4 check of proposal 2
    with pytest.raises(Crash):
        start_run(_cfg(tmp_path), sandbox_factory=in_process(crash_at=4), on_started=started.append)
    run = started[0]
    before = read_events(run)
    assert before[-1].kind == "tool_call" and before[-1].call_id == "c2"
    assert run_status(run)["design"] == {"state": "designing", "proposals": 2, "task": None, "file": None,
                                         "reason": None}
    claude.script(investigation())
    out = resume_run(run, sandbox_factory=in_process())
    assert out.status == "completed" and claude.responses_left == 0
    events = read_events(run)
    assert [e.model_dump(exclude={"ts"}) for e in events[: len(before)]] == \
        [e.model_dump(exclude={"ts"}) for e in before]
    assert [e.seq for e in events] == list(range(len(events)))
    # the second design turn was not asked again (3 design requests in all: 2 before the kill, none after)
    design_reqs = [e for e in events if e.kind == "llm_request" and "propose_task" in e.tools]
    assert len(design_reqs) == 2 and len(claude.message_requests) == 2 + 3
    assert [e.call_id for e in events if e.kind == "execution_result" and e.call_id.startswith("c")] == ["c1", "c2"]
    fr = next(e for e in events if e.kind == "framing")
    assert fr.status == "accepted" and [a.usable for a in fr.attempts] == [False, True]
    assert (run / "task.yaml").exists()


@pytest.mark.slow
def test_kill_9_of_the_cli_during_framing_then_resume(tmp_path, claude):
    from tests.test_investigate import _sandbox_ok

    if not _sandbox_ok():
        pytest.skip("no sandbox isolation (bubblewrap) on this machine")
    asked = threading.Event()
    release = threading.Event()

    def blocked(body):  # the second design turn: the CLI waits here until it is killed
        asked.set()
        release.wait(60)
        return turn(text("too late"))

    claude.script([turn(propose(spec(redraw="O"), "p1"), check(id="c1")), blocked])
    out = tmp_path / "runs"
    env = {**os.environ, "ANTHROPIC_API_KEY": "test", "ANTHROPIC_BASE_URL": claude.base_url,
           "HF_HUB_OFFLINE": "1", "INTERP_AGENT_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([sys.executable, "-m", "agent", "investigate", QUESTION, "--model", "toy-pronoun",
                             "--planner", "claude", "--out", str(out), "--prompts", "8", "--max-components", "2",
                             "--no-grounding-check"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        assert asked.wait(180), proc.stderr.read()[-3000:] if proc.poll() is not None else "no second design turn"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        release.set()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    (run,) = [p for p in out.iterdir() if (p / "events.jsonl").exists()]
    before = read_events(run)
    assert before[-1].kind == "llm_request" and not any(e.kind == "framing" for e in before)
    claude.script([turn(propose(spec(redraw="S"), "p2"), check(id="c2")), *investigation()])
    out = resume_run(run, sandbox_factory=in_process())  # the log and checkpoints are what the killed CLI left
    assert out.status == "completed"
    events = read_events(run)
    assert [e.model_dump(exclude={"ts"}) for e in events[: len(before)]] == \
        [e.model_dump(exclude={"ts"}) for e in before]
    assert sum(1 for e in events if e.kind == "llm_request" and "propose_task" in e.tools) == 2  # asked once again
    fr = next(e for e in events if e.kind == "framing")
    assert fr.status == "accepted" and [a.usable for a in fr.attempts] == [False, True]
