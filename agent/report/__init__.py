"""Reports of a run, derived from its log only: Markdown, one self-contained HTML file, a Jupyter notebook.

``write_reports(run_dir)`` is what ``interp-agent report RUN`` runs; :func:`write_summary_report` is what the
research loop calls at the end of a run (``report.md``, with a plain fallback that cannot fail):

>>> import tempfile
>>> from agent.log import RunLog, RunStartedEvent, ConclusionEvent
>>> d = Path(tempfile.mkdtemp()) / "run1"
>>> log = RunLog(d)
>>> _ = log.append(RunStartedEvent(run_id="run1", question="q?", model="toy-ioi", planner="offline"))
>>> _ = log.append(ConclusionEvent(component="L1H0", role="name mover", explanation="e", confidence=0.7))
>>> [p.name for p in write_reports(d, md=True, html=True)]
['report.md', 'report.html']
"""

from __future__ import annotations

from pathlib import Path

from agent.report.html import render_html, write_html
from agent.report.markdown import render_markdown, write_markdown, write_plain_markdown
from agent.report.model import RunSummary
from agent.report.notebook import build_notebook, execute_notebook, write_notebook
from agent.report.summary import build_summary

__all__ = ["RunSummary", "build_notebook", "build_summary", "execute_notebook", "render_html", "render_markdown",
           "write_reports", "write_summary_report"]


def write_reports(run_dir: str | Path, md: bool = True, html: bool = False, notebook: bool = False,
                  summary: RunSummary | None = None) -> list[Path]:
    """Write the asked reports (``report.md``, ``report.html``, ``report.ipynb``) into ``run_dir``.

    Reads only ``run_dir/events.jsonl`` and files the run wrote beside it (or takes a ready ``summary``,
    e.g. with re-computed attention figures added). Returns the paths written, in that order.
    """
    run_dir = Path(run_dir)
    s = summary if summary is not None else build_summary(run_dir, figures=md or html)
    out: list[Path] = []
    if md:
        out.append(write_markdown(s, run_dir))
    if html:
        out.append(write_html(s, run_dir))
    if notebook:
        out.append(write_notebook(s, run_dir))
    return out


def write_summary_report(run_dir: str | Path) -> Path:
    """Write ``report.md`` for a run from its log; if the full renderer fails, a plain table that says why."""
    run_dir = Path(run_dir)
    try:
        return write_reports(run_dir, md=True)[0]
    except Exception as e:  # noqa: BLE001 - the plain summary below still says what the run found
        return write_plain_markdown(run_dir, f"(the full renderer failed: {type(e).__name__}: {e})")
