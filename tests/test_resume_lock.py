"""A run being written (its lock held) cannot be resumed by a second process; status says "running"."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.run import RunConfig, RunError, resume_run, run_lock, run_status, start_run
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
        with pytest.raises(RunError, match="being written by another process"):
            resume_run(run_dir, sandbox_factory=fake_factory())
    assert resume_run(run_dir, sandbox_factory=fake_factory()).status == "completed"
