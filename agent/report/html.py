"""The HTML report: ONE self-contained file (inline CSS, figures as base64 ``data:`` URIs, no script, no
CDN, no external request), so it opens offline and can be mailed as is. Rendered from
``templates/report.html.j2`` with Jinja2's autoescaping: every logged text is escaped.

>>> from agent.report.model import RunSummary, ComponentRow
>>> s = RunSummary(run_id="r1", question="Which heads move names?",
...                components=[ComponentRow(component="L1H0", role="name <mover>", confidence=0.9)])
>>> page = render_html(s)
>>> "<td>name &lt;mover&gt;</td>" in page, "http://" in page or "https://" in page
(True, False)
"""

from __future__ import annotations

from pathlib import Path

from agent.report.model import RunSummary
from agent.report.render import render

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
mark.ungrounded{background:#ffd7d5;color:#b42318;font-weight:600}td.ok{color:#1a7f37}td.bad{color:#b42318}
.pill{display:inline-block;background:#eef;border-radius:8px;padding:0 .45em;margin:0 .15em;font-size:.9em}
"""


def render_html(s: RunSummary) -> str:
    """The whole report as one HTML document (str)."""
    return render("report.html.j2", s=s, css=CSS)


def write_html(s: RunSummary, run_dir: Path) -> Path:
    """Write ``report.html`` into ``run_dir``; return its path."""
    path = run_dir / "report.html"
    path.write_text(render_html(s), encoding="utf-8")
    return path
