"""The Jinja2 environment of the reports: templates in ``agent/report/templates/``, HTML autoescaped.

Filters shared by the Markdown and HTML templates: ``num`` (:func:`fmt_num`), ``seqs`` (``#3, #7``),
``key_numbers`` (``name value; ...``), ``grounding`` (:func:`grounding_md`) and, for Markdown,
``marked`` (an explanation with its ungrounded numbers flagged) and ``cell`` (one line, ``|`` escaped).

>>> environment().from_string("{{ x }} {{ -0.5 | num }}").render(x="<b>")
'&lt;b&gt; −0.5'
"""

from __future__ import annotations

from functools import cache
from typing import Any

import jinja2


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
    """``name value`` pairs joined with ``; ``.

    >>> key_numbers({"ablation effect": -1.25, "top attention": "IO (0.70)"})
    'ablation effect −1.25; top attention IO (0.70)'
    """
    return "; ".join(f"{k} {fmt_num(v)}" for k, v in numbers.items()) or "—"


def marked_md(parts: list[tuple[str, bool]]) -> str:
    """An explanation for Markdown with each ungrounded number in bold and flagged.

    >>> marked_md([("DLA ", False), ("0.99", True), (" of clean", False)])
    'DLA **0.99** (ungrounded) of clean'
    """
    return "".join(f"**{t}** (ungrounded)" if bad else t for t, bad in parts)


def grounding_md(problems: list[str] | None) -> str:
    """A conclusion's grounding for a table cell: ``✓``, ``—`` (not checked) or ``✗`` and the problems.

    >>> grounding_md([]), grounding_md(None), grounding_md(["seq 9 does not exist"])
    ('✓', '—', '✗ seq 9 does not exist')
    """
    if problems is None:
        return "—"
    return "✗ " + " ".join(f"({i}) {p}" if len(problems) > 1 else p for i, p in enumerate(problems, 1)) \
        if problems else "✓"


def seqs(values: list[int]) -> str:
    """Event seqs as ``#3, #7`` (``—`` for none)."""
    return ", ".join(f"#{s}" for s in values) if values else "—"


def md_cell(text: Any) -> str:
    """A Markdown table cell: one line, ``|`` escaped, ``—`` when empty."""
    return " ".join(str(text).split()).replace("|", "\\|") or "—"


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("agent.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html.j2"]), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    env.filters.update(num=fmt_num, seqs=seqs, key_numbers=key_numbers, cell=md_cell, marked=marked_md,
                       grounding=grounding_md)
    return env


def render(template: str, **context: Any) -> str:
    """Render one of the report templates."""
    return environment().get_template(template).render(**context)
