"""The HTML report: ONE self-contained file (inline CSS, figures as base64 ``data:`` URIs, no script, no
CDN, no external request), so it opens offline and can be mailed as is.

>>> from agent.report.model import RunSummary, ComponentRow
>>> s = RunSummary(run_id="r1", question="Which heads move names?",
...                components=[ComponentRow(component="L1H0", role="name <mover>", confidence=0.9)])
>>> page = render_html(s)
>>> "<td>name &lt;mover&gt;</td>" in page, "http://" in page or "https://" in page
(True, False)
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from agent.report.markdown import fmt_num
from agent.report.model import RunSummary

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1b1f23;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #444;padding-bottom:.2em}
h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #c8c8c8;padding:.3em .55em;vertical-align:top;text-align:left}
th{background:#f0f0f0}
code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.92em}
.meta td:first-child{font-weight:600;white-space:nowrap}
.status-supported{color:#1a7f37;font-weight:600}.status-refuted{color:#b42318;font-weight:600}
.status-proposed{color:#6b6b6b}.status-inconclusive{color:#9a6700}
figure{display:inline-block;margin:.6em 1em .6em 0;vertical-align:top}
figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.85em;color:#555;max-width:520px}
.note{color:#6b6b6b;font-size:.9em}
.pill{display:inline-block;background:#eef;border-radius:8px;padding:0 .45em;margin:0 .15em;font-size:.9em}
"""


def _e(v: object) -> str:
    return escape(str(v), quote=True)


def _seqs(seqs: list[int]) -> str:
    return ", ".join(f"#{s}" for s in seqs) if seqs else "—"


def render_html(s: RunSummary) -> str:
    """The whole report as one HTML document (str)."""
    p: list[str] = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                    f"<title>interp-agent report — {_e(s.run_id)}</title>", f"<style>{CSS}</style></head><body>",
                    f"<h1>Investigation report — <span class=mono>{_e(s.run_id)}</span></h1>"]
    fp = f" <span class=mono>(fingerprint {_e(s.model_fingerprint[:16])})</span>" if s.model_fingerprint else ""
    rows = [("Question", _e(s.question or "—")),
            ("Task", _e(s.task or "—") + (f" — {_e(s.task_description)}" if s.task_description else "")),
            ("Model", _e(s.model or "—") + fp),
            ("Planner / seed", f"{_e(s.planner or '—')} / {_e(s.seed if s.seed is not None else '—')}"),
            ("Status", _e(s.status)), ("Started", _e(s.started or "—"))]
    p.append('<table class="meta" id="meta">' + "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows)
             + "</table>")

    p.append('<h2 id="circuit-h">Circuit</h2><p id="circuit">' + (
        " ".join(f'<span class="pill mono">{_e(c)}</span>' for c in s.circuit) or "No circuit recorded.") + "</p>")

    p.append('<h2 id="components-h">Components</h2>')
    if s.components:
        p.append('<table id="components"><thead><tr><th>component</th><th>role</th><th>confidence</th>'
                 "<th>key numbers</th><th>explanation</th><th>evidence</th></tr></thead><tbody>")
        for c in s.components:
            nums = "<br>".join(f"{_e(k)}: <b>{_e(fmt_num(v))}</b>" for k, v in c.numbers.items()) or "—"
            conf = f"{c.confidence:.2f}" if c.confidence is not None else "—"
            p.append(f'<tr><td class="mono">{_e(c.component)}</td><td>{_e(c.role)}</td><td>{conf}</td>'
                     f"<td>{nums}</td><td>{_e(c.explanation or '—')}</td><td>{_seqs(c.evidence)}</td></tr>")
        p.append("</tbody></table>")
    else:
        p.append("<p>No component was concluded.</p>")

    p.append('<h2 id="clusters-h">Clusters</h2>')
    if s.clusters:
        p.append('<table id="clusters"><tr><th>cluster</th><th>members</th><th>explanation</th></tr>' + "".join(
            f"<tr><td>{_e(c.name)}</td><td class=mono>{_e(', '.join(c.members))}</td><td>{_e(c.explanation or '—')}"
            "</td></tr>" for c in s.clusters) + "</table>")
    else:
        p.append("<p>No clusters recorded.</p>")

    p.append('<h2 id="hypotheses-h">Hypotheses timeline</h2>')
    if s.hypotheses:
        p.append('<table id="hypotheses"><tr><th>id</th><th>component</th><th>statement</th><th>timeline</th>'
                 "</tr>")
        for h in s.hypotheses:
            steps = " → ".join(
                f'<span class="status-{_e(st.status)}">{_e(st.status)}</span> (#{st.seq}'
                + (f"; decided by {_seqs(st.evidence)}" if st.evidence else "") + ")" for st in h.steps)
            p.append(f"<tr><td class=mono>{_e(h.id)}</td><td class=mono>{_e(h.component or '—')}</td>"
                     f"<td>{_e(h.statement)}</td><td>{steps}</td></tr>")
        p.append("</table>")
    else:
        p.append("<p>No hypotheses recorded.</p>")

    b = s.budget
    wall = f"{b.wall_s:.1f} s" if b.wall_s is not None else "—"
    p.append('<h2 id="budget-h">Budget used</h2><table id="budget"><tr><th>steps</th><th>tool calls</th>'
             "<th>input tokens</th><th>output tokens</th><th>USD</th><th>wall time</th></tr>"
             f"<tr><td>{b.steps}</td><td>{b.tool_calls}</td><td>{b.input_tokens}</td><td>{b.output_tokens}</td>"
             f"<td>${b.usd:.4f}</td><td>{wall}</td></tr></table>")

    if s.evaluation:
        p.append('<h2 id="evaluation-h">Evaluation</h2><table id="evaluation"><tr><th>score</th><th>value</th></tr>'
                 + "".join(f"<tr><td>{_e(k)}</td><td>{_e(fmt_num(v) if isinstance(v, int | float) or v is None else v)}</td>"
                           "</tr>" for k, v in s.evaluation.items()) + "</table>")

    p.append('<h2 id="figures-h">Figures</h2>')
    if s.figures:
        for f in s.figures:
            p.append(f'<figure><img alt="{_e(f.kind)}" src="data:image/png;base64,{f.png_b64}">'
                     f"<figcaption>{_e(f.title)}</figcaption></figure>")
    else:
        p.append("<p>No figure could be computed from the logged data.</p>")

    if s.notes:
        p.append('<h2 id="notes-h">Notes</h2><ul class="note">' + "".join(f"<li>{_e(n)}</li>" for n in s.notes)
                 + "</ul>")
    p.append(f'<p class="note">{len(s.cells)} code cells were executed; <code>interp-agent replay {_e(s.run_id)} '
             "--verify</code> re-runs them and checks every number.</p></body></html>")
    return "\n".join(p)


def write_html(s: RunSummary, run_dir: Path) -> Path:
    """Write ``report.html`` into ``run_dir``; return its path."""
    path = run_dir / "report.html"
    path.write_text(render_html(s), encoding="utf-8")
    return path
