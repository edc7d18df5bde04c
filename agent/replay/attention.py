"""``report --attention``: re-compute the concluded heads' attention patterns in a fresh sandbox.

Reports are derived from the log only; this is the one report feature that re-executes code, so it lives
with replay: the run's logged setup cells, then one call to :func:`tools.experiments.attention_pattern`.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from agent.kernel import SandboxFactory, default_sandbox_factory
from agent.report.figures import figures_from_data
from agent.report.model import Figure, RunSummary
from tools.components import Component, Kind
from tools.experiments import AttentionPatterns


def attention_cell(heads: list[str]) -> str:
    """The cell run after the setup cells: the heads' patterns on the first main prompt.

    >>> attention_cell(["L1H0"])
    "_result = tools.experiments.attention_pattern(model, batch, ['L1H0']).model_dump(mode='json')"
    """
    return f"_result = tools.experiments.attention_pattern(model, batch, {heads!r}).model_dump(mode='json')"


def recompute_attention(s: RunSummary, max_heads: int = 4, sandbox_factory: SandboxFactory | None = None
                        ) -> list[Figure]:
    """Draw each concluded head's attention pattern on the first prompt, re-computed from the run's setup
    cells; the figures go first in ``s.figures`` (a note in ``s.notes`` says why when it cannot)."""
    heads = [str(c) for c in (Component.parse(r.component) for r in s.components) if c.kind is Kind.HEAD]
    heads = heads[:max_heads]
    if not heads or not s.setup_cells:
        s.notes.append("attention patterns not re-computed: " + ("no concluded head" if not heads else
                                                                   "the log records no setup cells"))
        return []
    factory = sandbox_factory or default_sandbox_factory
    ws = Path(tempfile.mkdtemp(prefix="report-attn-"))
    sb = None
    try:
        sb = factory(ws, s.setup_cells, s.kernel)
        res = sb.execute(attention_cell(heads), timeout=300)
    finally:
        if sb is not None:
            sb.shutdown()
        shutil.rmtree(ws, ignore_errors=True)
    pats = None
    if res.status == "ok":
        try:
            pats = AttentionPatterns.model_validate(res.data)
        except ValueError:
            pats = None
    if pats is None:
        s.notes.append(f"attention patterns could not be re-computed: {res.error_name}: {res.error_value}")
        return []
    figs = []
    for name, p in pats.patterns.items():
        figs.extend(f.model_copy(update={"title": f"Attention pattern of {name} on the first prompt "
                                                  "(re-computed from the run's setup cells)"})
                    for f in figures_from_data(p.model_dump(), None, name))
    s.figures = figs + s.figures
    s.notes = [n for n in s.notes if not n.startswith("No attention pattern was logged")]
    return figs
