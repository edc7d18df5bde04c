"""Benchmark results: ``results.jsonl`` (one line per finished cell; resumable), and the summary tables
(``results.csv``, ``summary.csv``, ``results.md``: mean ± std over seeds per task, planner and naming)."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from agent.bench.models import CellResult


def read_results(out: str | Path) -> dict[str, CellResult]:
    """Finished cells by key from ``out/results.jsonl`` (later lines win; a torn last line is ignored)."""
    path = Path(out) / "results.jsonl"
    res: dict[str, CellResult] = {}
    if not path.exists():
        return res
    for line in path.read_text().splitlines():
        try:
            r = CellResult.model_validate_json(line)
        except ValueError:
            continue
        res[r.key] = r
    return res


def append_result(out: Path, r: CellResult) -> None:
    """Append one finished cell to ``out/results.jsonl`` (fsync'ed)."""
    with open(out / "results.jsonl", "a") as f:
        f.write(r.model_dump_json() + "\n")
        f.flush()
        os.fsync(f.fileno())


TABLE_COLUMNS: list[tuple[str, str]] = [
    ("ic_auc_agent", "IC AUC agent"), ("ic_auc_reference", "IC AUC reference"), ("ic_null_agent", "IC AUC random"),
    ("rep_f1", "rep F1"), ("rep_ari", "rep ARI"), ("gt_f1", "GT F1"), ("gt_ari", "GT ARI"),
    ("faith_agent", "faithfulness"), ("faith_curve_area", "faith. curve area"), ("ground_rate", "grounded"),
    ("ground_ungrounded_numbers", "ungrounded nums"), ("ground_bad_citations", "bad cites"),
    ("ground_untested", "untested"), ("ground_undecided", "undecided hyps"), ("cost_steps", "steps"),
    ("cost_tokens", "tokens"), ("cost_usd", "USD"), ("cost_wall_s", "wall s"),
]
"""Columns of the summary table: (score name, header)."""


def _mean_std(vals: list[float]) -> tuple[float, float] | None:
    vals = [v for v in vals if v is not None and not math.isnan(v)]
    if not vals:
        return None
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return m, sd


DIGITS: dict[str, int] = {"ground_ungrounded_numbers": 1, "ground_bad_citations": 1, "ground_untested": 1,
                          "ground_undecided": 1, "cost_steps": 0, "cost_tool_calls": 0, "cost_tokens": 0, "cost_usd": 4, "cost_wall_s": 1}
"""Decimals per score in the Markdown table (default 3)."""


def _fmt(ms: tuple[float, float] | None, n: int, digits: int = 3) -> str:
    """``mean ± std`` (just the mean for one seed; ``–`` when undefined).

    >>> _fmt((0.625, 0.1768), 2), _fmt((21.0, 0.0), 1, 0), _fmt(None, 3)
    ('0.625 ± 0.177', '21', '–')
    """
    if ms is None:
        return "–"
    m, sd = ms
    return f"{m:.{digits}f}" if n <= 1 else f"{m:.{digits}f} ± {sd:.{digits}f}"


def _task_label(task: str) -> str:
    """A task name as shown in tables: a spec file path shows as its stem."""
    p = Path(task)
    return p.stem if p.suffix in (".yaml", ".yml", ".json") else task


def aggregate(results: Iterable[CellResult]) -> list[dict[str, Any]]:
    """Rows of mean/std per (task, planner, permuted) over seeds, ok cells only.

    ``n`` counts the cells; a score undefined in a cell (e.g. the interchangeability AUC of an
    all-singleton clustering) is left out of that score's mean.
    """
    groups: dict[tuple[str, str, bool], list[CellResult]] = {}
    for r in results:
        if r.status == "ok":
            groups.setdefault((r.task, r.planner, r.permuted), []).append(r)
    rows = []
    for (task, planner, perm), rs in sorted(groups.items()):
        row: dict[str, Any] = {"task": task, "planner": planner, "names": "permuted" if perm else "original",
                               "n": len(rs)}
        for k, _ in TABLE_COLUMNS:
            ms = _mean_std([r.scores.get(k) for r in rs])
            row[f"{k}_mean"], row[f"{k}_std"] = (ms if ms else (None, None))
        rows.append(row)
    return rows


def memorization_gaps(rows: list[dict[str, Any]],
                      keys: Sequence[str] = ("rep_f1", "gt_f1", "ic_auc_agent", "faith_agent")) -> list[dict[str, Any]]:
    """Original − permuted mean score per (task, planner): a large drop flags recall instead of research."""
    by = {(r["task"], r["planner"], r["names"]): r for r in rows}
    out = []
    for (task, planner, names), r in by.items():
        p = by.get((task, planner, "permuted"))
        if names != "original" or p is None:
            continue
        gap = {"task": task, "planner": planner}
        for k in keys:
            a, b = r.get(f"{k}_mean"), p.get(f"{k}_mean")
            gap[k] = None if a is None or b is None else a - b
        out.append(gap)
    return out


def markdown_table(rows: list[dict[str, Any]], gaps: list[dict[str, Any]] | None = None) -> str:
    """The summary as Markdown (mean ± std over seeds)."""
    head = ["task", "planner", "names", "n"] + [h for _, h in TABLE_COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [_task_label(r["task"]), r["planner"], r["names"], str(r["n"])]
        for k, _ in TABLE_COLUMNS:
            m = r.get(f"{k}_mean")
            cells.append(_fmt(None if m is None else (m, r.get(f"{k}_std") or 0.0), r["n"], DIGITS.get(k, 3)))
        lines.append("| " + " | ".join(cells) + " |")
    if gaps:
        keys = [k for k in gaps[0] if k not in ("task", "planner")]
        lines += ["", "Memorization control (original − permuted names):", "",
                  "| task | planner | " + " | ".join(keys) + " |", "|" + "---|" * (2 + len(keys))]
        for g in gaps:
            lines.append(f"| {_task_label(g['task'])} | {g['planner']} | "
                         + " | ".join("–" if g[k] is None else f"{g[k]:+.3f}" for k in keys) + " |")
    return "\n".join(lines) + "\n"


def write_tables(out: str | Path, results: dict[str, CellResult]) -> tuple[Path, Path, str]:
    """Write ``results.csv`` (one row per cell), ``summary.csv`` and ``results.md``; return (csv, md, markdown)."""
    out = Path(out)
    cells = sorted(results.values(), key=lambda r: r.key)
    score_keys = sorted({k for r in cells for k in r.scores})
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["task", "planner", "seed", "names", "status", "note", "run_dir", "wall_s", *score_keys])
        for r in cells:
            w.writerow([r.task, r.planner, r.seed, "permuted" if r.permuted else "original", r.status, r.note,
                        r.run_dir or "", f"{r.wall_s:.1f}", *["" if r.scores.get(k) is None else r.scores[k]
                                                               for k in score_keys]])
    rows = aggregate(cells)
    if rows:
        with open(out / "summary.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    md = markdown_table(rows, memorization_gaps(rows))
    (out / "results.md").write_text(md)
    return out / "results.csv", out / "results.md", md

