"""A run logged before issue 14 (the experiments moved out of strings into ``tools.experiments``) still
replays: ``replay --verify`` re-executes its logged cells (old kernel helpers ``_tojson`` / ``_base``,
defined by its own logged setup cells) and ``--planner-replay`` re-runs the loop on its LLM turns; its
logged results parse into the new result models, and its report comes out as the old code wrote it.

``tests/data/run-v1.0-toy-ioi/events.jsonl`` was written by commit 4f2a1ff with::

    interp-agent --json investigate "Which heads move the indirect object's name in IOI?" --task toy-ioi \\
        --model toy-ioi --planner offline --prompts 8 --max-components 3 --out DIR

(localisation sweep, redundancy check, then ablate / patch / path_patch / attention / logit_attribution /
head_scores cells for L1H1, L0H1 and L0H2).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agent.cli import main
from tests.test_investigate import _sandbox_ok

OLD_RUN = Path(__file__).parent / "data" / "run-v1.0-toy-ioi"



@pytest.fixture
def old_run(tmp_path) -> Path:
    dst = tmp_path / "runs" / "old-run"
    dst.parent.mkdir()
    shutil.copytree(OLD_RUN, dst)
    return dst


def test_old_run_report_is_the_one_the_old_code_wrote(old_run):
    """The typed results and the Jinja2 templates give back, byte for byte, the report.md written in 4f2a1ff."""
    from agent.report import write_reports

    (path,) = write_reports(old_run, md=True)
    assert path.read_text() == (OLD_RUN / "report.md").read_text()


def test_old_run_results_parse_into_the_result_models(old_run):
    from agent.view import RunView

    cells = RunView.from_run(old_run).cells
    assert len(cells) == 32 and all(c.typed() is not None for c in cells), [c.call for c in cells if not c.typed()]


@pytest.mark.slow
@pytest.mark.skipif(not _sandbox_ok(), reason="no sandbox isolation (bubblewrap) on this machine")
def test_old_run_verifies(old_run, capsys):
    code = main(["--json", "replay", str(old_run), "--verify"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out["verify"]["mismatches"]
    assert out["verify"]["cells"] == 32 and out["verify"]["mismatches"] == []


@pytest.mark.slow
@pytest.mark.skipif(not _sandbox_ok(), reason="no sandbox isolation (bubblewrap) on this machine")
def test_old_run_planner_replay_makes_the_same_calls_and_conclusions(old_run, tmp_path, capsys):
    code = main(["--json", "replay", str(old_run), "--planner-replay", "--out", str(tmp_path / "again")])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out["planner_replay"]["differences"]
    assert out["planner_replay"]["calls_logged"] == out["planner_replay"]["calls_now"] == 41
