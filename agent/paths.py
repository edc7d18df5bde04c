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
