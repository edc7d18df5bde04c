"""The Markdown report: the run as a story a researcher reads top to bottom.

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

from pathlib import Path

from agent.report.model import RunSummary


def fmt_num(v: float | str | None, digits: int = 3) -> str:
    """A number for humans: ``3`` significant digits, a real minus sign; strings pass through.

    >>> fmt_num(-0.0123456), fmt_num(1234.5), fmt_num("IO"), fmt_num(None)
    ('−0.0123', '1.23e+03', 'IO', '—')
    """
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    s = f"{v:.{digits}g}"
    return s.replace("-", "−", 1) if s.startswith("-") else s


def key_numbers(numbers: dict[str, float | str]) -> str:
    """``name value`` pairs joined with ``; ``."""
    return "; ".join(f"{k} {fmt_num(v)}" for k, v in numbers.items()) or "—"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|") or "—"


def _seqs(seqs: list[int]) -> str:
    return ", ".join(f"#{s}" for s in seqs) if seqs else "—"


def render_markdown(s: RunSummary, figure_paths: list[str] | None = None) -> str:
    """The whole report as Markdown. ``figure_paths`` (relative) replace embedded figures when given."""
    out: list[str] = [f"# Investigation report — {s.run_id}", ""]
    out += [f"**Question:** {s.question or '—'}", ""]
    task = s.task or "—"
    out += [f"**Task:** {task}" + (f" — {s.task_description}" if s.task_description else ""), ""]
    model = s.model or "—"
    if s.model_fingerprint:
        model += f" (fingerprint `{s.model_fingerprint[:16]}`)"
    out += [f"**Model:** {model}", ""]
    out += [f"**Planner:** {s.planner or '—'} · **seed:** {s.seed if s.seed is not None else '—'} · "
            f"**status:** {s.status}" + (f" · **started:** {s.started}" if s.started else ""), ""]

    out += ["## Circuit", "", ", ".join(f"`{c}`" for c in s.circuit) if s.circuit else "No circuit recorded.", ""]

    out += ["## Components", ""]
    if s.components:
        out += ["| component | role | confidence | key numbers | explanation | evidence |",
                "|---|---|---|---|---|---|"]
        for c in s.components:
            conf = f"{c.confidence:.2f}" if c.confidence is not None else "—"
            out.append(f"| {c.component} | {_cell(c.role)} | {conf} | {_cell(key_numbers(c.numbers))} | "
                       f"{_cell(c.explanation)} | {_seqs(c.evidence)} |")
    else:
        out.append("No component was concluded.")
    out.append("")

    out += ["## Clusters", ""]
    if s.clusters:
        for cl in s.clusters:
            out.append(f"- **{cl.name}**: {', '.join(f'`{m}`' for m in cl.members)}"
                       + (f" — {cl.explanation}" if cl.explanation else ""))
    else:
        out.append("No clusters recorded.")
    out.append("")

    out += ["## Hypotheses timeline", ""]
    if s.hypotheses:
        for h in s.hypotheses:
            steps = " → ".join(
                f"{st.status} (event #{st.seq}" + (f"; decided by {_seqs(st.evidence)}" if st.evidence else "") + ")"
                for st in h.steps)
            who = f" [{h.component}]" if h.component else ""
            out.append(f"- **{h.id}**{who} {h.statement} — {steps or 'proposed'}")
    else:
        out.append("No hypotheses recorded.")
    out.append("")

    b = s.budget
    out += ["## Budget used", "",
            "| steps | tool calls | input tokens | output tokens | USD | wall time |", "|---|---|---|---|---|---|",
            f"| {b.steps} | {b.tool_calls} | {b.input_tokens} | {b.output_tokens} | ${b.usd:.4f} | "
            + (f"{b.wall_s:.1f} s" if b.wall_s is not None else "—") + " |", ""]

    if s.evaluation:
        out += ["## Evaluation", "", "| score | value |", "|---|---|"]
        for k, v in s.evaluation.items():
            out.append(f"| {k} | {_cell(fmt_num(v) if isinstance(v, int | float) or v is None else str(v))} |")
        out.append("")

    out += ["## Figures", ""]
    if s.figures:
        paths = figure_paths or []
        for i, f in enumerate(s.figures):
            src = paths[i] if i < len(paths) else f"data:image/png;base64,{f.png_b64}"
            out += [f"**{f.title}**", "", f"![{f.kind}]({src})", ""]
    else:
        out += ["No figure could be computed from the logged data.", ""]

    if s.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in s.notes] + [""]
    out += [f"_{len(s.cells)} code cells were executed; `interp-agent replay {s.run_id} --verify` re-runs them "
            "and checks every number._", ""]
    return "\n".join(out)


def write_markdown(s: RunSummary, run_dir: Path) -> Path:
    """Write ``report.md`` (and its figures under ``report_figures/``) into ``run_dir``; return the path."""
    import base64

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
