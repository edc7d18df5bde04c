"""What every command prints with: the global flags (:data:`STATE`), the consoles, :func:`emit` for
results (JSON under ``--json``), and :func:`error_line` for errors (one line, whatever the error)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import typer
from rich.console import Console


@dataclass
class CLIState:
    """Global flags, set by the root callback and read by commands."""

    json: bool = False
    debug: bool = False


STATE = CLIState()
console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # an error stays one line, whatever the width


def emit(data: Any, table: Any = None) -> None:
    """Print ``data`` as JSON under ``--json``, else ``table`` (a rich renderable) or ``data``."""
    if STATE.json:
        typer.echo(json.dumps(data, indent=2, default=str))
    elif table is not None:
        console.print(table)
    else:
        console.print(data)


def error_line(e: BaseException) -> str:
    """A project error as ONE line, ``<what> — <fix>``: a multi-line ``what`` (a kernel traceback, a
    validation dump) keeps its first line; ``--debug`` shows the rest.

    >>> from tools.errors import InterpAgentError
    >>> error_line(InterpAgentError("setup cell 1 failed\\nTraceback ...\\n  line 3", fix="check --model"))
    'setup cell 1 failed (more with --debug) — check --model'
    """
    what = str(getattr(e, "what", None) or e)
    fix = getattr(e, "fix", None)
    lines = [ln for ln in what.splitlines() if ln.strip()] or [type(e).__name__]
    head = lines[0].strip() + (" (more with --debug)" if len(lines) > 1 else "")
    return f"{head} — {' '.join(str(fix).split())}" if fix else head
