"""Where runs and logs live: ``$INTERP_AGENT_HOME`` (default ``~/.interp-agent``), ``runs/`` under it."""

from __future__ import annotations

import os
from pathlib import Path


def home_dir() -> Path:
    """The project home: ``$INTERP_AGENT_HOME`` or ``~/.interp-agent`` (created on first use)."""
    raw = os.environ.get("INTERP_AGENT_HOME") or str(Path.home() / ".interp-agent")
    path = Path(raw).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir(out: str | Path | None = None) -> Path:
    """Directory holding run directories: ``out`` when given (per-command ``--out``), else ``home/runs``."""
    path = Path(out).expanduser() if out else home_dir() / "runs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_run(run: str | Path, out: str | Path | None = None) -> Path:
    """A run directory from a path, a run id under the runs directory, or ``last`` (the newest run).

    >>> import tempfile; d = Path(tempfile.mkdtemp()); (d / "r1").mkdir(); _ = (d / "r1" / "events.jsonl").write_text("")
    >>> resolve_run("last", out=d).name, resolve_run("r1", out=d).name
    ('r1', 'r1')
    """
    from tools.errors import InterpAgentError

    p = Path(run).expanduser()
    if (p / "events.jsonl").is_file():
        return p
    root = runs_dir(out)
    if str(run) == "last":
        runs = sorted(d for d in root.iterdir() if (d / "events.jsonl").is_file())
        if not runs:
            raise InterpAgentError(f"no runs under {root}", fix="run `interp-agent investigate ...` first, or pass --out")
        return runs[-1]
    cand = root / str(run)
    if (cand / "events.jsonl").is_file():
        return cand
    raise InterpAgentError(f"no run {str(run)!r} (no events.jsonl at {p} or {cand})",
                           fix=f"pass a run directory, a run id from {root} (see --out), or 'last'")
