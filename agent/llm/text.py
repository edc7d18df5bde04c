"""Text the research loop sends to a model: capped, stripped of host paths, plain.

Everything the loop writes into a conversation (tool results, error texts, the component brief, the
clustering request) goes through :func:`for_model`, so a cell that raises a 300 kB exception or prints a
traceback full of ``/home/alice/...`` paths costs a bounded number of tokens and tells the model nothing
about the host. The full text stays in the run log (``execution_result``); only the model's copy is cut.

- :func:`scrub_paths`: absolute host paths become short tags: the repository (``<repo>``), the Python
  installation and its packages (``<python>``), the temp folder (``<tmp>``), the home folder (``~``), and
  any ``extra`` roots given (a run directory → ``<run>``); any other absolute path of two or more parts
  keeps only its last two (``…/pkg/file.py``). URLs are left alone.
- :func:`cap`: at most ``limit`` characters: the head and the tail (where a traceback's error is) with a
  marker saying how much was cut.
- :func:`plain`: reStructuredText markup (``code``, :func:`x`) as plain text, whitespace collapsed (tool
  descriptions).

>>> scrub_paths('File "/home/alice/proj/agent/x.py", line 3 (see https://a.b/c/d)', extra={"/home/alice/proj": "<repo>"})
'File "<repo>/agent/x.py", line 3 (see https://a.b/c/d)'
>>> scrub_paths("open('/srv/data/secret/weights.bin') failed")
"open('…/secret/weights.bin') failed"
>>> cap("x" * 50, 30)
'xxxxxxxx… [cut 38 chars] …xxxx'
>>> len(cap("y" * 10_000, 500)) <= 500
True
>>> plain("Ablate ``components`` (see :func:`tools.experiments.ablation`).\\n   Reports `effect`.")
'Ablate components (see tools.experiments.ablation). Reports effect.'
"""

from __future__ import annotations

import os
import re
import sys
import sysconfig
import tempfile
from collections.abc import Mapping
from pathlib import Path

TOOL_RESULT_CHARS = 8000
"""The most characters of one ``tool_result`` the model gets (a cell's data is cut at 4000 before this)."""
ERROR_CHARS = 3000
"""The most characters of an error text (a cell's exception, a validation report) the model gets."""
BRIEF_CHARS = 8000
"""The most characters of a component brief (the question and task description come from the user)."""

_ABS_PATH = re.compile(r"(?<![\w.:/~<>-])/(?:[\w.@+-]+/)+[\w.@+-]*")
_RST_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")
_RST_LITERAL = re.compile(r"``([^`]*)``")
_BACKTICK = re.compile(r"`([^`]*)`")


def _roots() -> list[tuple[str, str]]:
    repo = Path(__file__).resolve().parents[2]
    roots: dict[str, str] = {str(repo): "<repo>"}
    for key in ("purelib", "platlib", "stdlib", "platstdlib"):
        p = sysconfig.get_paths().get(key)
        if p:
            roots.setdefault(str(Path(p)), "<python>")
    for p in {sys.prefix, sys.base_prefix, sys.exec_prefix}:
        roots.setdefault(str(Path(p)), "<python>")
    roots.setdefault(str(Path(tempfile.gettempdir()).resolve()), "<tmp>")
    roots.setdefault("/tmp", "<tmp>")
    home = os.environ.get("HOME")
    if home and len(home) > 1:
        roots.setdefault(str(Path(home)), "~")
    return [(k, v) for k, v in roots.items() if k not in ("/", "")]


def scrub_paths(text: str, extra: Mapping[str, str] | None = None) -> str:
    """``text`` with absolute host paths replaced by tags (see the module docstring)."""
    if not text or "/" not in text:
        return text
    pairs = [(str(k), v) for k, v in (extra or {}).items() if k and str(k) != "/"] + _roots()
    for root, tag in sorted(pairs, key=lambda kv: -len(kv[0])):
        text = re.sub(re.escape(root) + r"(?=/|\b|$)", tag, text)

    def short(m: re.Match[str]) -> str:
        parts = [p for p in m.group(0).split("/") if p]
        return "…/" + "/".join(parts[-2:]) if len(parts) > 2 else m.group(0)

    return _ABS_PATH.sub(short, text)


def cap(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters: two thirds head, one third tail, and a marker between."""
    if len(text) <= limit:
        return text
    room = max(0, limit - len(f"… [cut {len(text)} chars] …"))
    head, tail = room - room // 3, room // 3
    return text[:head] + f"… [cut {len(text) - head - tail} chars] …" + (text[-tail:] if tail else "")


def for_model(text: str, limit: int = TOOL_RESULT_CHARS, extra: Mapping[str, str] | None = None) -> str:
    """What the model gets of ``text``: host paths scrubbed, then capped at ``limit`` characters."""
    return cap(scrub_paths(text, extra), limit)


def plain(text: str) -> str:
    """reStructuredText roles and literals as plain text, whitespace (newlines included) collapsed."""
    text = _RST_ROLE.sub(r"\1", text)
    text = _RST_LITERAL.sub(r"\1", text)
    text = _BACKTICK.sub(r"\1", text)
    return " ".join(text.split())
