"""Figures for reports, computed from the data logged by cells: attention patterns and patching maps.

Everything renders with matplotlib's Agg canvas (no display, no pyplot global state) to PNG bytes,
returned base64-encoded so the HTML report can embed them as ``data:`` URIs.

What is recognised in a cell's JSON ``data`` (searched recursively):

- an **attention pattern**: a square ``[T, T]`` matrix of numbers (or ``[H, T, T]``: one panel per
  head, at most 4) under a key containing ``attn``, ``attention`` or ``pattern``; token labels from a
  sibling ``tokens`` / ``labels`` list when present;
- a **patching / ablation map**: a dict whose keys are component names (``L1H0``, ``MLP0``...) and whose
  values are numbers — heads are drawn as a layer × head grid, other components as a bar chart; or
  values that are equal-length lists (one number per position) — drawn as component × position.

>>> figs = figures_from_data({"effects": {"L0H0": 0.1, "L0H1": -0.2, "L1H0": 0.9, "L1H1": 0.0}}, 12, "patch")
>>> [(f.kind, f.source_seq) for f in figs]
[('patching', 12)]
>>> figs[0].png_b64[:8]
'iVBORw0K'
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

from agent.report.model import Figure
from tools.components import Component, Kind
from tools.errors import ComponentError

MAX_FIGURES_PER_CELL = 3
_ATTN_KEYS = ("attn", "attention", "pattern")


def _new_figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(w, h), dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png_b64(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))


def _matrix(v: Any) -> list[list[float]] | None:
    """``v`` as a rectangular numeric matrix, or None."""
    if not isinstance(v, list) or not v or not all(isinstance(r, list) and r for r in v):
        return None
    n = len(v[0])
    if any(len(r) != n or not all(_is_num(x) for x in r) for r in v):
        return None
    return [[float(x) for x in r] for r in v]


def _components(keys: list[str]) -> list[Component] | None:
    try:
        return [Component.parse(k) for k in keys]
    except ComponentError:
        return None


def attention_figure(pattern: list[list[float]] | list[list[list[float]]], title: str,
                     tokens: list[str] | None = None) -> str:
    """A heat map of one attention pattern ``[T, T]`` (or up to 4 heads ``[H, T, T]``); PNG base64."""
    panels = pattern if _matrix(pattern) is None else [pattern]
    panels = [p for p in panels if _matrix(p) is not None][:4]
    fig = _new_figure(3.2 * len(panels) + 0.6, 3.4)
    for i, p in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        im = ax.imshow(p, cmap="Blues", vmin=0.0, vmax=max(1e-9, max(max(r) for r in p)))
        t = len(p)
        if tokens and len(tokens) == t and t <= 24:
            ax.set_xticks(range(t), tokens, rotation=90, fontsize=7)
            ax.set_yticks(range(t), tokens, fontsize=7)
        ax.set_xlabel("key (attended to)")
        ax.set_ylabel("query")
        if len(panels) > 1:
            ax.set_title(f"head {i}", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(title, fontsize=10)
    return _png_b64(fig)


def component_map_figure(values: dict[str, float], title: str) -> str:
    """Heads as a layer × head grid (other components as bars); diverging colours around 0. PNG base64."""
    comps = {Component.parse(k): float(v) for k, v in values.items()}
    heads = {c: v for c, v in comps.items() if c.kind is Kind.HEAD}
    others = {c: v for c, v in comps.items() if c.kind is not Kind.HEAD}
    vmax = max(1e-9, max(abs(v) for v in comps.values()))
    n_panels = (1 if heads else 0) + (1 if others else 0)
    fig = _new_figure(4.2 * n_panels + 0.4, 3.4)
    k = 1
    if heads:
        n_layers = max(c.layer for c in heads) + 1
        n_heads = max(c.head or 0 for c in heads) + 1
        grid = [[math.nan] * n_heads for _ in range(n_layers)]
        for c, v in heads.items():
            grid[c.layer][c.head or 0] = v
        ax = fig.add_subplot(1, n_panels, k)
        k += 1
        im = ax.imshow(grid, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_xticks(range(n_heads))
        ax.set_yticks(range(n_layers))
        if n_layers * n_heads <= 64:
            for c, v in heads.items():
                ax.text(c.head or 0, c.layer, f"{v:.2g}", ha="center", va="center", fontsize=7)
        fig.colorbar(im, ax=ax, fraction=0.046)
    if others:
        ax = fig.add_subplot(1, n_panels, k)
        names = [str(c) for c in sorted(others)]
        ax.barh(names, [others[c] for c in sorted(others)], color=["#b2182b" if others[c] > 0 else "#2166ac"
                                                                      for c in sorted(others)])
        ax.axvline(0, color="k", lw=0.5)
        ax.invert_yaxis()
    fig.suptitle(title, fontsize=10)
    return _png_b64(fig)


def position_map_figure(values: dict[str, list[float]], title: str, positions: list[str] | None = None) -> str:
    """Component × position heat map (e.g. per-position patching); PNG base64."""
    names = list(values)
    grid = [list(map(float, values[n])) for n in names]
    vmax = max(1e-9, max(abs(x) for r in grid for x in r))
    fig = _new_figure(4.8, 0.3 * len(names) + 1.6)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(grid, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
    ax.set_yticks(range(len(names)), names, fontsize=7)
    t = len(grid[0])
    if positions and len(positions) == t:
        ax.set_xticks(range(t), positions, rotation=90, fontsize=7)
    ax.set_xlabel("position")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(title, fontsize=10)
    return _png_b64(fig)


def figures_from_data(data: Any, seq: int | None, call: str) -> list[Figure]:
    """Every figure recognisable in one cell's logged ``data`` (see the module docstring)."""
    found: list[Figure] = []

    def walk(v: Any, path: str, parent: dict[str, Any] | None) -> None:
        if len(found) >= MAX_FIGURES_PER_CELL:
            return
        key = path.rsplit(".", 1)[-1].lower()
        where = f"{call} (event {seq}){': ' + path if path else ''}"
        if isinstance(v, list) and any(a in key for a in _ATTN_KEYS):
            m = _matrix(v)
            heads = [x for x in v if _matrix(x) is not None] if m is None else []
            square = (m is not None and len(m) == len(m[0])) or (
                bool(heads) and len(heads) == len(v) and all(len(h) == len(h[0]) for h in heads))
            if square:
                tokens = None
                for tk in ("tokens", "labels", "str_tokens"):
                    if parent and isinstance(parent.get(tk), list):
                        tokens = [str(t) for t in parent[tk]]
                found.append(Figure(title=f"Attention pattern — {where}", kind="attention", source_seq=seq,
                                    png_b64=attention_figure(m if m is not None else heads, where, tokens)))
                return
        if isinstance(v, dict):
            comps = _components([str(k) for k in v]) if len(v) >= 2 else None
            if comps is not None:
                vals = list(v.values())
                if all(_is_num(x) for x in vals):
                    found.append(Figure(title=f"Effect by component — {where}", kind="patching", source_seq=seq,
                                        png_b64=component_map_figure({k: float(x) for k, x in v.items()}, where)))
                    return
                rows = [x for x in vals if isinstance(x, list) and x and all(_is_num(y) for y in x)]
                if len(rows) == len(vals) and len({len(r) for r in rows}) == 1:
                    pos = parent.get("positions") if parent else None
                    pos = [str(p) for p in pos] if isinstance(pos, list) else None
                    found.append(Figure(title=f"Effect by component and position — {where}", kind="patching",
                                        source_seq=seq, png_b64=position_map_figure(v, where, pos)))
                    return
            for k, x in v.items():
                walk(x, f"{path}.{k}" if path else str(k), v)

    walk(data, "", None)
    return found
