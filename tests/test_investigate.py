"""End to end through the CLI: the real sandbox kernel, the real tools, a tiny GPT-2 over the toy-IOI words.

Also: kill -9 of the CLI mid-run, then ``resume``: no event lost or duplicated.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from agent.cli import main
from agent.log import read_events

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def _sandbox_ok() -> bool:
    try:
        from sandbox.local import isolation_problem
    except ImportError:
        return False
    return isolation_problem() is None


@pytest.fixture(scope="module")
def tiny_ioi(tmp_path_factory) -> str:
    """A random-init 2-layer GPT-2 whose word tokenizer covers the toy-IOI task (files world-readable)."""
    import torch
    from transformers import AutoModelForCausalLM

    from evals.tasks import load_task
    from tools.tiny import tiny_config, word_tokenizer

    tok = word_tokenizer(load_task("toy-ioi").vocabulary())
    path = tmp_path_factory.mktemp("tiny-ioi")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("gpt2", vocab_size=len(tok)), attn_implementation="eager")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    for f in path.iterdir():  # the kernel runs as another user: save_pretrained writes 0600 weights
        f.chmod(0o644)
    path.chmod(0o755)
    return str(path)


def _run_dirs(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if (p / "events.jsonl").exists()) if out.exists() else []


def _check_complete(run_dir: Path) -> list:
    events = read_events(run_dir)
    assert [e.seq for e in events] == list(range(len(events)))
    assert sum(1 for e in events if e.kind == "run_started") == 1
    assert sum(1 for e in events if e.kind == "run_finished") == 1 and events[-1].kind == "run_finished"
    for kind, key in (("tool_call", "call_id"), ("execution_result", "call_id"), ("llm_response", "seq")):
        n = Counter(getattr(e, key) for e in events if e.kind == kind)
        assert all(v == 1 for v in n.values()), (kind, n)
    concl = Counter(e.component for e in events if e.kind == "conclusion")
    assert concl and all(v == 1 for v in concl.values()), concl
    if events[0].planner == "offline":  # the offline planner's conclusions are grounded the first time
        from agent.view import RunView

        assert not [e.message for e in events if e.kind == "error" and e.where.startswith("grounding")]
        g = RunView.from_run(run_dir).grounding()
        assert g.scores()["ground_rate"] == 1.0, {c.component: c.problems for c in g.claims if c.problems}
    return events


@pytest.mark.skipif(not _sandbox_ok(), reason="no sandbox isolation (bubblewrap) on this machine")
def test_investigate_localises_and_reports_through_the_cli(tiny_ioi, tmp_path, capsys):
    out = tmp_path / "runs"
    code = main(["--json", "investigate", "Which heads move the indirect object's name?", "--model", tiny_ioi,
                 "--task", "toy-ioi", "--planner", "offline", "--out", str(out), "--prompts", "8",
                 "--max-components", "2", "--threshold", "0"])
    res = json.loads(capsys.readouterr().out)
    assert code == 0, res
    assert res["status"] == "completed" and len(res["conclusions"]) == 2
    run_dir = Path(res["run_dir"])
    events = _check_complete(run_dir)
    sweep = next(e for e in events if e.kind == "execution_result")
    assert sweep.status == "ok" and "tools.experiments.sweep(" in sweep.code and len(sweep.code.splitlines()) == 2
    # every experiment ran for real in the kernel (numbers came back)
    results = [e for e in events if e.kind == "execution_result"]
    assert all(e.status == "ok" and e.data for e in results), [(e.seq, e.error_value) for e in results]
    assert events[0].isolation and events[0].model_fingerprint
    assert (run_dir / "report.md").read_text().count("|") > 10
    code = main(["--json", "status", str(run_dir)])
    st = json.loads(capsys.readouterr().out)
    assert code == 0 and st["state"] == "completed" and st["pending"] == [] and st["done"] == 2


def test_unmappable_question_lists_tasks(capsys, tmp_path):
    code = main(["investigate", "what is the capital of France?", "--planner", "offline", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "toy-ioi" in err and "--task" in err


@pytest.mark.skipif(not _sandbox_ok(), reason="no sandbox isolation (bubblewrap) on this machine")
def test_kill_9_mid_run_then_resume_loses_and_duplicates_nothing(tiny_ioi, tmp_path):
    out = tmp_path / "runs"
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    env["HF_HUB_OFFLINE"] = "1"
    cmd = [sys.executable, "-m", "agent", "investigate", "Which heads move the indirect object's name?",
           "--model", tiny_ioi, "--task", "toy-ioi", "--planner", "offline", "--out", str(out), "--prompts", "8",
           "--circuit", "L1H0,L0H1,MLP0"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 240
    killed_at = None
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            dirs = _run_dirs(out)
            if dirs:
                n = (dirs[0] / "events.jsonl").read_bytes().count(b"\n")
                if n >= 14:  # inside the first component's sub-loop
                    os.killpg(proc.pid, signal.SIGKILL)
                    killed_at = n
                    break
            time.sleep(0.05)
    finally:
        if proc.poll() is None and killed_at is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert killed_at is not None, f"the run ended or stalled before the kill: {proc.stderr.read()[-2000:]!r}"
    run_dir = _run_dirs(out)[0]
    before = read_events(run_dir)
    assert before[-1].kind != "run_finished"
    res = subprocess.run([sys.executable, "-m", "agent", "--json", "resume", str(run_dir)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    events = _check_complete(run_dir)
    assert [e.model_dump(exclude={"ts"}) for e in events[: len(before)]] == \
        [e.model_dump(exclude={"ts"}) for e in before]
    assert {e.component for e in events if e.kind == "conclusion"} == {"L1H0", "L0H1", "MLP0"}
    assert json.loads(res.stdout)["status"] == "completed"
