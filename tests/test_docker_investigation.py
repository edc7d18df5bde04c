"""The toy-IOI investigation end to end on both backends (``make test-docker``): same cells, same numbers,
same conclusions and report; ``replay --verify`` passes on the docker run in docker and, across backends,
in the local sandbox.

Runs through the CLI (``python -m agent --json``), offline planner, as a user would.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent.replay.compare import ATOL, RTOL, compare_results
from agent.view import RunView
from sandbox import local as local_mod
from tests.backends import docker_client, requires_docker

pytestmark = [
    requires_docker,
    pytest.mark.skipif(local_mod.isolation_problem() is not None, reason="the local backend needs bubblewrap"),
]

QUESTION = "Which heads move the indirect object's name in IOI?"
ARGS = ["--task", "toy-ioi", "--planner", "offline", "--prompts", "16", "--max-steps", "6", "--seed", "0"]
REPO = Path(__file__).resolve().parent.parent


def cli(*args: str, home: Path, ok: bool = True) -> dict:
    env = dict(os.environ, INTERP_AGENT_HOME=str(home), HF_HUB_OFFLINE="1")
    env.pop("ANTHROPIC_API_KEY", None)
    r = subprocess.run([sys.executable, "-m", "agent", "--json", *args], capture_output=True, text=True, env=env,
                       cwd=REPO, timeout=900)
    assert (r.returncode == 0) == ok, f"rc {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    docker_client()
    home = tmp_path_factory.mktemp("home")
    out = tmp_path_factory.mktemp("runs")
    return {b: cli("investigate", QUESTION, *ARGS, "--sandbox", b, "--out", str(out), home=home) | {"home": home}
            for b in ("local", "docker")}


def _report_sections(md: str) -> str:
    """The report's research content (components, clusters, hypotheses), without run ids, dates or timings."""
    keep = re.split(r"^## ", md, flags=re.M)
    return "\n".join(s for s in keep if s.split("\n", 1)[0] in ("Circuit", "Components", "Clusters", "Hypotheses timeline"))


def test_same_cells_numbers_and_conclusions_on_both_backends(runs):
    local, dock = runs["local"], runs["docker"]
    assert local["status"] == dock["status"] == "completed"
    assert dock["conclusions"] == local["conclusions"] and dock["clusters"] == local["clusters"]
    views = {b: RunView.from_run(r["run_dir"]) for b, r in runs.items()}
    started = {b: v.started for b, v in views.items()}
    assert started["docker"].isolation.startswith("docker (interp-agent-sandbox:")
    assert started["local"].isolation.startswith("bubblewrap")
    assert started["docker"].config["run"]["sandbox"] == "docker"
    assert started["docker"].model_fingerprint == started["local"].model_fingerprint  # same weights loaded
    cells = {b: v.cells for b, v in views.items()}
    assert [c.code for c in cells["docker"]] == [c.code for c in cells["local"]]  # the same experiments...
    assert len(cells["local"]) > 20
    mismatches = [m for a, b in zip(cells["local"], cells["docker"], strict=True)
                  for m in compare_results(a.seq, a.call, a.result, b.result, RTOL, ATOL)]
    assert mismatches == []  # ...with the same numbers, within replay's tolerance


def test_replay_verify_in_docker_and_across_backends(runs):
    dock = runs["docker"]
    same = cli("replay", dock["run_dir"], "--verify", home=dock["home"])["verify"]
    assert same["ok"] and same["cells"] > 20 and same["mismatches"] == []
    cross = cli("replay", dock["run_dir"], "--verify", "--sandbox", "local", home=dock["home"])["verify"]
    assert cross["ok"] and cross["cells"] == same["cells"] and cross["mismatches"] == []


def test_reports_say_the_same_on_both_backends(runs):
    md = {}
    for b, r in runs.items():
        written = cli("report", r["run_dir"], "--md", home=r["home"])["written"]
        md[b] = Path(next(p for p in written if p.endswith(".md"))).read_text()
    sections = {b: _report_sections(t) for b, t in md.items()}
    assert "| L1H1 | name mover |" in sections["local"]
    assert sections["docker"] == sections["local"]
