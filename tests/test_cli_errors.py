"""Every error a user can cause prints ONE line (``error: <what> — <fix>``) and exits 2, whatever the
command; the kernel's traceback shows only under ``--debug``."""

from __future__ import annotations

import pytest

from agent.cli import main
from agent.log import RunLog, RunStartedEvent
from tests.test_investigate import _sandbox_ok


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


BAD_INPUT = {
    "demo --prompts 0": ["demo", "--prompts", "0"],
    "investigate --prompts 0": ["investigate", "which heads?", "--task", "toy-ioi", "--prompts", "0"],
    "investigate --planner": ["investigate", "which heads?", "--planner", "gpt"],
    "investigate --sandbox": ["investigate", "which heads?", "--sandbox", "vm"],
    "investigate --threshold": ["investigate", "which heads?", "--threshold", "-1"],
    "investigate --circuit": ["investigate", "which heads?", "--task", "toy-ioi", "--circuit", "L1X0"],
    "investigate --budget-usd": ["investigate", "which heads?", "--task", "toy-ioi", "--budget-usd", "-2"],
    "investigate --task": ["investigate", "which heads?", "--task", "no-such-task"],
    "investigate --device": ["investigate", "which heads?", "--task", "toy-ioi", "--device", "tpu"],
    "investigate --dtype": ["investigate", "which heads?", "--task", "toy-ioi", "--dtype", "int8"],
    "investigate --threads": ["investigate", "which heads?", "--task", "toy-ioi", "--threads", "0"],
    "investigate --cell-timeout": ["investigate", "which heads?", "--task", "toy-ioi", "--cell-timeout", "0"],
    "resume": ["resume", "no-such-run"],
    "status": ["status", "no-such-run"],
    "replay": ["replay", "no-such-run", "--verify"],
    "report": ["report", "no-such-run"],
    "eval": ["eval", "no-such-run"],
    "bench --executor": ["bench", "--executor", "threads"],
    "bench --seeds": ["bench", "--seeds", "0"],
    "tasks show": ["tasks", "show", "no-such-task"],
    "zoo list": ["zoo", "list", "extra"],
    "unknown command": ["frobnicate"],
}


@pytest.mark.parametrize("args", list(BAD_INPUT.values()), ids=list(BAD_INPUT))
def test_bad_input_is_one_line_and_exit_2(args, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    _one_error_line(capsys)


def test_a_run_without_a_task_cannot_be_evaluated(tmp_path, capsys):
    log = RunLog(tmp_path / "r")
    log.append(RunStartedEvent(run_id="r", question="q", model="toy-ioi", planner="offline"))
    assert main(["eval", str(tmp_path / "r")]) == 2
    assert "no run_started event with a task" in _one_error_line(capsys)


def test_validation_errors_of_the_models_behind_a_command_are_one_line(tmp_path, capsys, monkeypatch):
    """A value no flag range catches, but the pydantic model does, is still one line."""
    from agent.commands import investigate as inv

    def boom(**kw):
        from agent.config import RunConfig

        RunConfig(question="q", n_prompts=1)

    monkeypatch.setattr(inv, "run_with_view", lambda fn, **kw: boom(**kw))
    assert main(["investigate", "which heads?", "--task", "toy-ioi"]) == 2
    assert "invalid n_prompts" in _one_error_line(capsys)


@pytest.mark.slow
@pytest.mark.skipif(not _sandbox_ok(), reason="no sandbox isolation (bubblewrap) on this machine")
def test_a_model_that_fails_to_load_is_one_line_and_the_traceback_needs_debug(tmp_path, capsys):
    args = ["investigate", "which heads move the IO name?", "--task", "toy-ioi", "--model", str(tmp_path / "nope"),
            "--planner", "offline", "--out", str(tmp_path / "runs"), "--prompts", "4"]
    assert main(args) == 2
    line = _one_error_line(capsys)
    assert "could not load the model" in line and "nope" in line and "--debug" in line
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())  # nothing left behind
    assert main(["--debug", *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "ArchitectureError" in err


def test_json_mode_errors_are_one_line_on_stderr_and_nothing_on_stdout(capsys):
    assert main(["--json", "status", "no-such-run"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and captured.err.startswith("error: ")


def test_cuda_without_a_gpu_is_one_line(capsys, tmp_path, monkeypatch):
    import torch

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-unreachable")  # checked before the API is tried
    assert main(["investigate", "which heads?", "--task", "toy-ioi", "--device", "cuda"]) == 2
    assert "no CUDA device" in _one_error_line(capsys)
