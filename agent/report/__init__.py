"""Reports of a run, derived from its log only: Markdown, one self-contained HTML file, a Jupyter notebook.

``write_reports(run_dir)`` is what the research loop calls at the end of a run, and what
``interp-agent report RUN`` runs:

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
from agent.report.markdown import render_markdown, write_markdown
from agent.report.model import RunSummary
from agent.report.notebook import build_notebook, execute_notebook, write_notebook
from agent.report.summary import recompute_attention, summarise

__all__ = ["RunSummary", "summarise", "write_reports", "render_markdown", "render_html", "build_notebook",
           "execute_notebook"]


def write_reports(run_dir: str | Path, md: bool = True, html: bool = False, notebook: bool = False,
                  summary: RunSummary | None = None, attention: bool = False) -> list[Path]:
    """Write the asked reports (``report.md``, ``report.html``, ``report.ipynb``) into ``run_dir``.

    Reads only ``run_dir/events.jsonl`` and files the run wrote beside it. Returns the paths written,
    in that order. ``attention=True`` also re-computes the concluded heads' attention patterns in a
    sandbox (:func:`agent.report.summary.recompute_attention`) for the figures.
    """
    run_dir = Path(run_dir)
    s = summary if summary is not None else summarise(run_dir, figures=md or html)
    if attention and (md or html):
        recompute_attention(s)
    out: list[Path] = []
    if md:
        out.append(write_markdown(s, run_dir))
    if html:
        out.append(write_html(s, run_dir))
    if notebook:
        out.append(write_notebook(s, run_dir))
    return out
