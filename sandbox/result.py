"""The typed result of one cell: :class:`ExecutionResult` and :class:`OutputFile`.

Kernel errors cross the boundary as data: the exception's class name, its message and the
traceback lines (ANSI colour codes stripped), never a rebuilt exception object.

A cell can hand a JSON value back to the host by assigning ``_result``::

    _result = {"logit_diff": 3.2, "top_heads": ["L9H6", "L9H9"]}

It arrives as ``ExecutionResult.data`` (``None`` when the cell did not assign it; the name is cleared
after every cell so a value never leaks into the next one).

>>> r = ExecutionResult(status="ok", stdout="hi\\n", result="2", data={"x": 1}, duration_s=0.01)
>>> r.ok, r.data["x"]
(True, 1)
>>> print(r.summary())
[ok 0.01s]
hi
Out: 2
_result: {"x": 1}
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["ok", "error", "timeout", "died"]

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def strip_ansi(text: str) -> str:
    """Remove terminal colour codes (IPython colours its tracebacks).

    >>> strip_ansi("\\x1b[0;31mValueError\\x1b[0m: bad")
    'ValueError: bad'
    """
    return _ANSI.sub("", text)


class OutputFile(BaseModel):
    """A rich output (figure, HTML table...) saved as a file in the run's workspace."""

    model_config = ConfigDict(frozen=True)

    path: Path
    """Absolute path on the host, inside the workspace's ``outputs/`` folder."""
    mime: str
    """MIME type it came as: ``image/png``, ``image/svg+xml`` or ``text/html``."""
    bytes: int
    """Size of the saved file in bytes."""


class ExecutionResult(BaseModel):
    """What one cell did. ``status`` says how it ended:

    - ``ok``: ran to the end;
    - ``error``: raised (``error_name``/``error_value``/``traceback`` say what);
    - ``timeout``: passed its wall-clock deadline and was interrupted (``restarted`` tells whether the
      kernel also had to be restarted because it ignored the interrupt; then setup cells were re-run);
    - ``died``: the kernel process died (segfault, OOM-kill, ``os._exit``, ``kill -9``); the sandbox
      restarted it and re-ran the setup cells, so the next cell works but the session's variables are gone.
    """

    model_config = ConfigDict(extra="forbid")

    status: Status
    """How the cell ended (see the class docstring)."""
    stdout: str = ""
    """Captured standard output, truncated with a ``[... N characters truncated ...]`` marker."""
    stderr: str = ""
    """Captured standard error, truncated the same way."""
    result: str | None = None
    """``text/plain`` repr of the cell's last expression (``Out[n]``), if any."""
    data: Any = None
    """The JSON value the cell assigned to ``_result``, or ``None``."""
    outputs: list[OutputFile] = Field(default_factory=list)
    """Rich outputs (PNG/SVG/HTML) saved as files in the workspace."""
    error_name: str | None = None
    """Exception class name (``ValueError``), or ``Timeout`` / ``KernelDied`` for those statuses."""
    error_value: str | None = None
    """Exception message, or what happened to the kernel."""
    traceback: list[str] = Field(default_factory=list)
    """Traceback lines, colour codes stripped."""
    duration_s: float = 0.0
    """Wall-clock seconds from sending the cell to its end (restart time included)."""
    truncated: bool = False
    """Whether any output was cut."""
    restarted: bool = False
    """Whether the kernel was restarted as a consequence of this cell (then setup cells were re-run)."""
    execution_count: int | None = None
    """The kernel's ``In[n]`` counter for this cell, when known."""

    @property
    def ok(self) -> bool:
        """``status == "ok"``."""
        return self.status == "ok"

    def summary(self, limit: int = 2000) -> str:
        """A compact text rendering for an LLM transcript or a log line (at most ``limit`` characters)."""
        parts = [f"[{self.status} {self.duration_s:.2f}s{' restarted' if self.restarted else ''}]"]
        if self.stdout:
            parts.append(self.stdout.rstrip("\n"))
        if self.stderr:
            parts.append("stderr: " + self.stderr.rstrip("\n"))
        if self.result is not None:
            parts.append(f"Out: {self.result}")
        if self.data is not None:
            parts.append("_result: " + json.dumps(self.data)[:limit])
        parts.extend(f"output: {o.path} ({o.mime})" for o in self.outputs)
        if self.error_name:
            tb = "\n".join(self.traceback[-3:]) if self.status == "error" else ""
            parts.append(f"{self.error_name}: {self.error_value}" + (f"\n{tb}" if tb else ""))
        text = "\n".join(parts)
        return text if len(text) <= limit else text[: limit - 40] + f"\n[... {len(text) - limit + 40} chars cut]"
