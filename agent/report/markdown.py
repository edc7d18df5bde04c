"""The Markdown report: the run as a story a researcher reads top to bottom (``templates/report.md.j2``).

Figures are written as PNG files beside the report (``report_figures/``) and linked relatively, so the
Markdown stays small; the HTML report embeds the same figures.

>>> from agent.report.model import RunSummary, ComponentRow
>>> s = RunSummary(run_id="r1", question="Which heads move names?", circuit=["L1H0"],
...                components=[ComponentRow(component="L1H0", role="name mover", confidence=0.9,
...                                         numbers={"ablation effect": -1.25})])
>>> md = render_markdown(s)
>>> "| L1H0 | name mover | 0.90 | ablation effect −1.25 |" in md
True
"""

from __future__ import annotations

import base64
from pathlib import Path

from agent.report.model import RunSummary
from agent.report.render import md_cell, render
from agent.view import RunView


def render_markdown(s: RunSummary, figure_paths: list[str] | None = None) -> str:
    """The whole report as Markdown. ``figure_paths`` (relative) replace embedded figures when given."""
    return render("report.md.j2", s=s, figure_paths=figure_paths or [])


def write_markdown(s: RunSummary, run_dir: Path) -> Path:
    """Write ``report.md`` (and its figures under ``report_figures/``) into ``run_dir``; return the path."""
    fig_dir = run_dir / "report_figures"
    rel: list[str] = []
    for old in fig_dir.glob("fig*.png") if fig_dir.is_dir() else []:  # figures of an earlier report
        old.unlink()
    if s.figures:
        fig_dir.mkdir(exist_ok=True)
        for i, f in enumerate(s.figures):
            p = fig_dir / f"fig{i:02d}_{f.kind}.png"
            p.write_bytes(base64.b64decode(f.png_b64))
            rel.append(f"report_figures/{p.name}")
    path = run_dir / "report.md"
    path.write_text(render_markdown(s, rel), encoding="utf-8")
    return path


def write_plain_markdown(run_dir: Path, note: str = "") -> Path:
    """A minimal ``report.md`` (question, conclusions, clusters, status) for when the full renderer fails."""
    v = RunView.from_run(run_dir)
    st = v.started
    lines = [f"# Investigation {v.run_id}", ""]
    if st:
        lines += [f"**Question:** {st.question}  ", f"**Task:** {st.task} · **Model:** {st.model} · "
                  f"**Planner:** {st.planner}", ""]
    lines += ["| component | role | confidence | explanation |", "|---|---|---|---|"]
    lines += [f"| {c} | {md_cell(e.role)} | {e.confidence:.2f} | {md_cell(e.explanation)} |"
              for c, e in v.conclusions.items()]
    lines += ["", "## Clusters", ""]
    lines += [f"- **{n}**: {', '.join(e.components)} — {e.explanation}" for n, e in v.clusters.items()]
    if v.finished:
        lines += ["", f"**Status:** {v.finished.status}. {v.finished.summary}"]
    if note:
        lines += ["", note]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
