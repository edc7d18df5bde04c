"""Reports of a recorded run: Markdown, one self-contained HTML file (rendered in headless Chromium), and a
notebook that runs top to bottom in a fresh kernel."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.cli import main
from agent.log import RunLog, RunStartedEvent
from agent.report import build_summary, write_reports
from agent.report.notebook import execute_notebook
from tests.test_replay_helpers import fresh_copy, recorded_run_dir

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return recorded_run_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def reports(run_dir, tmp_path_factory) -> dict[str, Path]:
    d = fresh_copy(run_dir, tmp_path_factory.mktemp("reports"))
    paths = write_reports(d, md=True, html=True, notebook=True)
    return {p.suffix: p for p in paths}


def test_summary_from_the_log(run_dir):
    s = build_summary(run_dir)
    assert s.status == "completed" and s.circuit == ["L1H0", "L0H1"]
    row = {c.component: c for c in s.components}
    assert row["L1H0"].role == "induction-ish mover" and row["L1H0"].evidence
    # key numbers come from the cited experiments' logged data
    assert set(row["L1H0"].numbers) >= {"ablation effect", "top attention"}
    assert row["L0H1"].role == "inconclusive (budget)"
    h1 = next(h for h in s.hypotheses if h.id == "h1")
    assert [st.status for st in h1.steps] == ["proposed", "refuted"] and h1.steps[-1].evidence
    assert s.evaluation == {"precision": 1.0, "recall": 0.5, "f1": None}
    assert s.usage.steps == 6 and s.usage.wall_s and s.usage.wall_s > 0
    kinds = sorted(f.kind for f in s.figures)
    assert kinds == ["attention", "logged", "patching"], kinds


def test_markdown_report(reports):
    md = reports[".md"].read_text()
    for heading in ("## Circuit", "## Components", "## Clusters", "## Hypotheses timeline", "## Budget used",
                    "## Evaluation", "## Figures"):
        assert heading in md
    assert "| L1H0 | induction-ish mover | 0.60 |" in md
    assert "refuted (event #" in md and "decided by #" in md
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (reports[".md"].parent / link).is_file(), link


def test_html_is_self_contained(reports):
    page = reports[".html"].read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "external resource"
    assert "<script" not in page and "<link" not in page
    assert page.count('src="data:image/png;base64,') == 3
    assert '<table id="components">' in page


def test_report_survives_missing_data(tmp_path):
    d = tmp_path / "bare"
    log = RunLog(d)
    log.append(RunStartedEvent(run_id="bare", question="q?", model="m", planner="offline"))
    paths = write_reports(d, md=True, html=True, notebook=True)
    assert [p.name for p in paths] == ["report.md", "report.html", "report.ipynb"]
    md = paths[0].read_text()
    assert "No component was concluded." in md and "No patching sweep was logged" in md


@pytest.mark.skipif(__import__("sandbox.local").local.isolation_problem() is not None,
                    reason="report --execute needs the isolated sandbox (apt-get install -y bubblewrap)")
def test_notebook_runs_top_to_bottom(reports):
    """``--execute`` runs the cells in an isolated sandbox (as another uid): the model must be world-readable,
    as ``check_model_readable`` demands of an isolated run (``save_pretrained`` writes weights 0600)."""
    import json

    model = Path(json.loads(reports[".ipynb"].read_text())["metadata"]["interp_agent"]["model"])
    for f in model.iterdir():
        f.chmod(0o644)
    nb = execute_notebook(reports[".ipynb"], timeout_s=300)
    code = [c for c in nb.cells if c.cell_type == "code"]
    tagged = [c for c in code if "raises-exception" in c.metadata.get("tags", [])]
    assert len(tagged) == 1  # the logged 1 / 0 cell still raises, and only it
    for c in code:
        if c not in tagged:
            assert not [o for o in c.outputs if o.output_type == "error"], c.source
    md = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "Hypothesis h1" in md and "Conclusion: L1H0" in md


def test_report_cli_writes_all_three(run_dir, tmp_path, capsys):
    d = fresh_copy(run_dir, tmp_path)
    assert main(["report", str(d)]) == 0
    out = capsys.readouterr().out
    for name in ("report.md", "report.html", "report.ipynb"):
        assert (d / name).is_file() and name in out


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install -y chromium; "
                                              "`make setup` tries it when run as root)")
def test_html_renders_in_headless_chromium(reports, tmp_path):
    url = reports[".html"].resolve().as_uri()
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = re.sub(r"<[^>]+>", " ", dom.stdout)
    assert "Components" in text and "induction-ish mover" in text and "L1H0" in text
    assert re.search(r"L0H1\s+inconclusive \(budget\)", text)
    shot = tmp_path / "report.png"
    res = subprocess.run([CHROMIUM, *flags, "--window-size=1200,1400", f"--screenshot={shot}", url],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000  # a blank page compresses to a few KB
    print(f"screenshot of the HTML report: {shot}")
