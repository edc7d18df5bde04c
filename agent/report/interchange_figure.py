"""The interchangeability matrix of an evaluation as a heat map, ordered by clusters.

Self-contained: it reads only the ``interchange`` block an evaluation event logs
(``details["interchange"]``: components, ``I_sym``, definition version) and the agent's and the
reference's clusterings (``details["agent_clusters"]``, ``details["reference_clusters"]``). The left
panel orders the components by the agent's clusters (lines between clusters), the right one by the
reference's, so a clustering the score likes shows bright blocks on the diagonal.

>>> d = {"interchange": {"components": ["L0H0", "L0H1", "L1H0"], "version": "v2",
...                      "I_sym": [[None, 0.9, 0.1], [0.9, None, 0.0], [0.1, 0.0, None]]},
...      "agent_clusters": {"prev": ["L0H0", "L0H1"], "ind": ["L1H0"]}}
>>> ordered(d["interchange"]["components"], d["agent_clusters"])
(['L0H0', 'L0H1', 'L1H0'], [2])
>>> interchange_figure(d).kind
'interchange'
"""

from __future__ import annotations

import math
from typing import Any

from agent.report.model import Figure


def ordered(components: list[str], clusters: dict[str, list[str]] | None) -> tuple[list[str], list[int]]:
    """Components in cluster order (unclustered ones last) and the boundaries between clusters."""
    order: list[str] = []
    bounds: list[int] = []
    for members in (clusters or {}).values():
        ms = [c for c in members if c in components and c not in order]
        if ms:
            order += ms
            bounds.append(len(order))
    order += [c for c in components if c not in order]
    return order, [b for b in bounds if b < len(order)]


def _grid(components: list[str], sym: list[list[float | None]], order: list[str]) -> list[list[float]]:
    at = {c: i for i, c in enumerate(components)}
    return [[math.nan if (v := sym[at[a]][at[b]]) is None else float(v) for b in order] for a in order]


def interchange_png(components: list[str], sym: list[list[float | None]], agent: dict[str, list[str]] | None,
                    reference: dict[str, list[str]] | None = None, title: str = "") -> str:
    """The heat map(s) as base64 PNG: by the agent's clusters, and by the reference's when given."""
    from agent.report.figures import _new_figure, _png_b64

    panels = [("agent clusters", agent)] + ([("reference clusters", reference)] if reference else [])
    n = len(components)
    side = min(7.0, 1.6 + 0.32 * n)
    fig = _new_figure(side * len(panels) + 0.8, side)
    im = None
    for k, (name, clusters) in enumerate(panels):
        order, bounds = ordered(components, clusters)
        ax = fig.add_subplot(1, len(panels), k + 1)
        im = ax.imshow(_grid(components, sym, order), cmap="viridis", vmin=0.0, vmax=1.0)
        ticks = range(len(order))
        ax.set_xticks(ticks, order, rotation=90, fontsize=7)
        ax.set_yticks(ticks, order, fontsize=7)
        for b in bounds:
            ax.axhline(b - 0.5, color="w", lw=1.2)
            ax.axvline(b - 0.5, color="w", lw=1.2)
        ax.set_title(f"ordered by {name}", fontsize=9)
    if im is not None:
        fig.colorbar(im, ax=fig.axes, fraction=0.046, label="I_sym")
    fig.suptitle(title or "Interchangeability I_sym", fontsize=10)
    return _png_b64(fig)


def interchange_figure(details: dict[str, Any], source_seq: int | None = None) -> Figure | None:
    """The heat map of one evaluation's ``details`` (None when it has no interchange matrix)."""
    ic = details.get("interchange") if isinstance(details, dict) else None
    if not isinstance(ic, dict) or not ic.get("components") or not ic.get("I_sym"):
        return None
    comps = [str(c) for c in ic["components"]]
    version = ic.get("version", "v1")
    agent = details.get("agent_clusters") or None
    ref = details.get("reference_clusters") or None
    title = f"Interchangeability I_sym ({version})"
    return Figure(title=title + " — agent clusters" + (" beside reference clusters" if ref else ""),
                  kind="interchange", source_seq=source_seq,
                  png_b64=interchange_png(comps, ic["I_sym"], agent, ref, title))


def interchange_text(details: dict[str, Any]) -> str | None:
    """A plain-text heat map (two decimals, ``·`` undefined) ordered by the agent's clusters, for terminals.

    >>> print(interchange_text({"interchange": {"components": ["L0H0", "L1H0"], "I_sym": [[None, 0.25], [0.25, None]]},
    ...                         "agent_clusters": {"a": ["L1H0"], "b": ["L0H0"]}}))
    I_sym ordered by the agent's clusters (| between clusters)
          L1H0 | L0H0
    L1H0     · | 0.25
    -----------------
    L0H0  0.25 |    ·
    """
    ic = details.get("interchange") if isinstance(details, dict) else None
    if not isinstance(ic, dict) or not ic.get("components") or not ic.get("I_sym"):
        return None
    comps = [str(c) for c in ic["components"]]
    order, bounds = ordered(comps, details.get("agent_clusters") or None)
    grid = _grid(comps, ic["I_sym"], order)
    w = max(4, *(len(c) for c in order))
    cut = set(bounds)

    def row(label: str, cells: list[str]) -> str:
        out = label.ljust(w)
        for j, c in enumerate(cells):
            out += (" | " if j in cut else "  ") + c.rjust(w)
        return out.rstrip()

    lines = ["I_sym ordered by the agent's clusters (| between clusters)", row("", order)]
    for i, a in enumerate(order):
        if i in cut:
            lines.append("-" * len(lines[1]))
        lines.append(row(a, ["·" if math.isnan(v) else f"{v:.2f}" for v in grid[i]]))
    return "\n".join(lines)
