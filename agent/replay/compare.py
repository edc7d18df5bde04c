"""Compare a re-computed cell result with the logged one: the tolerance rules of ``replay --verify``.

The rules (documented in the README, "Replay and reports"):

- **Numbers** (anywhere in the JSON ``data`` a cell returned, recursively through lists and dicts)
  match when ``|now - logged| <= ATOL + RTOL * |logged|`` with ``RTOL = 1e-4`` and ``ATOL = 1e-6``
  (NaN matches NaN; ±inf match only themselves). Booleans and integers that are not floats are
  compared exactly, as are strings, keys and list lengths.
- **Text** (stdout, stderr, the result's repr, error name/value) matches exactly after normalising
  memory addresses (``0x7f3a...`` → ``0x…``), ISO timestamps and clock times, and durations
  (``1.23 s``, ``45ms``, ``0:00:01``). When the normalised texts still differ, they match only if
  they differ *only* in numbers that agree under the numeric tolerance above (so a printed
  ``0.123456789`` that re-computes as ``0.123456790`` is not a mismatch, but ``0.12`` vs ``0.13`` is).
- ``duration_s``, tracebacks and output file *paths* are not compared (they depend on the machine and
  the run directory); the *number and kinds* of rich outputs are.

>>> diff_values({"effect": 0.5, "heads": ["L1H0"]}, {"effect": 0.50000001, "heads": ["L1H0"]})
[]
>>> [d.path for d in diff_values({"effect": 0.5}, {"effect": 0.6})]
['data.effect']
>>> texts_match("<Tensor at 0x7f3a2b1c4d50> took 1.2 s", "<Tensor at 0x7f00deadbeef> took 0.9 s")
True
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from pydantic import BaseModel

RTOL = 1e-4
"""Relative tolerance for numbers (``replay --verify``)."""
ATOL = 1e-6
"""Absolute tolerance for numbers (``replay --verify``)."""

TEXT_FIELDS: tuple[str, ...] = ("status", "stdout", "stderr", "result", "error_name", "error_value")
"""``ExecutionResult`` fields compared as text (after normalisation)."""

_ADDR = re.compile(r"0x[0-9a-fA-F]{6,}")
_ISO_TS = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?")
_CLOCK = re.compile(r"\b\d{1,2}:\d{2}:\d{2}(?:\.\d+)?\b")
_DURATION = re.compile(r"\b\d+(?:\.\d+)?(?:e-?\d+)?\s?(?:ns|µs|us|ms|s|sec|secs|seconds|min|minutes)\b")
_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?|nan|inf")


class Mismatch(BaseModel):
    """One difference between a logged cell result and its re-computation."""

    seq: int
    """``seq`` of the logged ``execution_result`` event."""
    call: str
    """The tool call that produced the cell (``run_code``, ``ablate``...)."""
    path: str
    """Which field: ``stdout``, ``data.effects.L1H0``, ``data[3]``..."""
    logged: str
    """The logged value (shortened for display)."""
    now: str
    """The re-computed value (shortened for display)."""


class Diff(BaseModel):
    """A difference found by :func:`diff_values` (path plus both values, shortened)."""

    path: str
    logged: str
    now: str


def normalise_text(text: str | None) -> str:
    """Replace memory addresses, timestamps and durations by fixed placeholders.

    >>> normalise_text("at 0x7f1234abcd at 2026-11-02T10:00:01.5Z, 12:00:01 took 3.5 s (45ms)")
    'at 0x… at <ts>, <time> took <dur> (<dur>)'
    """
    if not text:
        return ""
    text = _ADDR.sub("0x…", text)
    text = _ISO_TS.sub("<ts>", text)
    text = _CLOCK.sub("<time>", text)
    text = _DURATION.sub("<dur>", text)
    return text


def numbers_close(logged: float, now: float, rtol: float = RTOL, atol: float = ATOL) -> bool:
    """The numeric rule: ``|now - logged| <= atol + rtol * |logged|`` (``numpy.isclose``); NaN equals NaN.

    >>> numbers_close(1.0, 1.00005), numbers_close(1.0, 1.001), numbers_close(float("nan"), float("nan"))
    (True, False, True)
    """
    return bool(np.isclose(now, logged, rtol=rtol, atol=atol, equal_nan=True))


def texts_match(logged: str | None, now: str | None, rtol: float = RTOL, atol: float = ATOL) -> bool:
    """Text rule: equal after :func:`normalise_text`, or differing only in numbers within tolerance.

    >>> texts_match("effect 0.123456789", "effect 0.123456790"), texts_match("effect 0.12", "effect 0.13")
    (True, False)
    """
    a, b = normalise_text(logged), normalise_text(now)
    if a == b:
        return True
    if _NUMBER.sub("#", a) != _NUMBER.sub("#", b):
        return False
    na, nb = _NUMBER.findall(a), _NUMBER.findall(b)
    return len(na) == len(nb) and all(numbers_close(float(x), float(y), rtol, atol) for x, y in zip(na, nb, strict=True))


def _short(v: Any, n: int = 80) -> str:
    s = v if isinstance(v, str) else repr(v)
    s = s.replace("\n", "⏎")
    return s if len(s) <= n else s[: n - 1] + "…"


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def diff_values(logged: Any, now: Any, path: str = "data", rtol: float = RTOL, atol: float = ATOL) -> list[Diff]:
    """Recursive comparison of two JSON values; returns every leaf that differs (empty when equal).

    Floats use :func:`numbers_close`; an int logged where a float re-computes (or back) compares as a
    number; strings use :func:`texts_match`.

    >>> [d.path for d in diff_values({"a": [1.0, 2.0], "b": "x"}, {"a": [1.0, 2.5], "c": "x"})]
    ['data.a[1]', 'data.b', 'data.c']
    """
    out: list[Diff] = []
    if _is_num(logged) and _is_num(now):
        if isinstance(logged, int) and isinstance(now, int):
            ok = logged == now
        else:
            ok = numbers_close(float(logged), float(now), rtol, atol)
        if not ok:
            out.append(Diff(path=path, logged=_short(logged), now=_short(now)))
    elif isinstance(logged, dict) and isinstance(now, dict):
        for key in list(logged) + [k for k in now if k not in logged]:
            sub = f"{path}.{key}"
            if key not in now:
                out.append(Diff(path=sub, logged=_short(logged[key]), now="<missing>"))
            elif key not in logged:
                out.append(Diff(path=sub, logged="<missing>", now=_short(now[key])))
            else:
                out.extend(diff_values(logged[key], now[key], sub, rtol, atol))
    elif isinstance(logged, list | tuple) and isinstance(now, list | tuple):
        if len(logged) != len(now):
            out.append(Diff(path=f"{path} (length)", logged=str(len(logged)), now=str(len(now))))
        for i, (a, b) in enumerate(zip(logged, now, strict=False)):
            out.extend(diff_values(a, b, f"{path}[{i}]", rtol, atol))
    elif isinstance(logged, str) and isinstance(now, str):
        if not texts_match(logged, now, rtol, atol):
            out.append(Diff(path=path, logged=_short(logged), now=_short(now)))
    elif logged != now:
        out.append(Diff(path=path, logged=_short(logged), now=_short(now)))
    return out


_MIME_EXT = {"image/png": "png", "image/svg+xml": "svg", "text/html": "html", "image/jpeg": "jpg"}


def _suffix(p: str) -> str:
    name = p.replace("\\", "/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def _output_kinds(outputs: Any) -> list[str]:
    """File kinds (extensions) of a cell's rich outputs: logged as paths, fresh as ``OutputFile`` dicts."""
    kinds = []
    for o in outputs or []:
        if isinstance(o, dict):
            kinds.append(_MIME_EXT.get(str(o.get("mime")), "") or _suffix(str(o.get("path", ""))))
        else:
            kinds.append(_suffix(str(o)))
    return kinds


def compare_results(seq: int, call: str, logged: dict[str, Any], now: dict[str, Any],
                    rtol: float = RTOL, atol: float = ATOL) -> list[Mismatch]:
    """Compare two ``ExecutionResult`` dumps under the rules above; one :class:`Mismatch` per difference.

    >>> a = {"status": "ok", "stdout": "x at 0x7f0000aaaa\\n", "data": {"effect": 1.5}}
    >>> b = {"status": "ok", "stdout": "x at 0x7f0000bbbb\\n", "data": {"effect": 1.7}}
    >>> [(m.seq, m.path, m.logged, m.now) for m in compare_results(7, "ablate", a, b)]
    [(7, 'data.effect', '1.5', '1.7')]
    """
    out: list[Mismatch] = []
    for f in TEXT_FIELDS:
        a, b = logged.get(f), now.get(f)
        if (a or "") == (b or ""):
            continue
        if not texts_match(str(a or ""), str(b or ""), rtol, atol):
            out.append(Mismatch(seq=seq, call=call, path=f, logged=_short(a or ""), now=_short(b or "")))
    for d in diff_values(logged.get("data"), now.get("data"), "data", rtol, atol):
        out.append(Mismatch(seq=seq, call=call, path=d.path, logged=d.logged, now=d.now))
    ka, kb = _output_kinds(logged.get("outputs")), _output_kinds(now.get("outputs"))
    if ka != kb:
        out.append(Mismatch(seq=seq, call=call, path="outputs", logged=_short(ka), now=_short(kb)))
    return out
