"""Reading and writing ``events.jsonl``: validated, append-only, fsync'ed per event.

A process killed mid-write leaves at most a torn last line: :func:`read_events` ignores it and
:meth:`RunLog.open_existing` cuts it off before appending again. A bad line anywhere else is an
error that names the line.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.log.events import (
    EVENT_TYPES,
    EVENTS_FILE,
    KINDS,
    SCHEMA_MAJOR,
    SCHEMA_VERSION,
    Event,
    LogError,
    LogSchemaError,
    _Event,
    _now,
)


@dataclass
class _Scan:
    events: list[Any]
    good_bytes: int
    """Byte offset just past the last good line."""
    torn_tail: bool
    """True when a torn (partial, unparseable) last line was dropped."""
    needs_newline: bool
    """True when the last good line lacks its trailing newline."""


def _parse_line(raw: bytes, lineno: int, path: Path) -> Any:
    """Validate one line; raise LogSchemaError naming the line. ValueError for undecodable JSON."""
    obj = json.loads(raw.decode("utf-8"))  # ValueError on a torn or corrupt line
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    version = str(obj.get("schema_version", ""))
    try:
        major, minor = (int(x) for x in version.split("."))
    except ValueError:
        raise LogSchemaError(f"{path} line {lineno}: bad schema_version {version!r}",
                             fix="this is not an interp-agent run log, or it was edited by hand") from None
    if major > SCHEMA_MAJOR:
        raise LogSchemaError(
            f"{path} line {lineno}: schema_version {version} was written by a newer interp-agent "
            f"(this one reads {SCHEMA_MAJOR}.x)",
            fix="upgrade interp-agent (pip install -U interp-agent) to read this run")
    if major < SCHEMA_MAJOR:
        raise LogSchemaError(f"{path} line {lineno}: schema_version {version} is older than {SCHEMA_MAJOR}.x",
                             fix="read it with the interp-agent version that wrote it")
    kind = obj.get("kind")
    cls = KINDS.get(kind)  # type: ignore[arg-type]
    newer_minor = minor > int(SCHEMA_VERSION.split(".")[1])
    if cls is None:
        if newer_minor:
            raise LogSchemaError(f"{path} line {lineno}: event kind {kind!r} comes from schema {version}, newer "
                                 f"than this interp-agent's {SCHEMA_VERSION}",
                                 fix="upgrade interp-agent (pip install -U interp-agent) to read this run")
        raise LogSchemaError(f"{path} line {lineno}: unknown event kind {kind!r}",
                             fix=f"known kinds: {', '.join(KINDS)}; the log was corrupted or edited by hand")
    if newer_minor:  # a newer minor may add fields: drop the unknown ones
        obj = {k: v for k, v in obj.items() if k in cls.model_fields}
    try:
        ev = cls.model_validate(obj)
    except ValidationError as e:
        raise LogSchemaError(f"{path} line {lineno}: invalid {kind} event: {e.errors()[0]['msg']} "
                             f"at {'.'.join(str(p) for p in e.errors()[0]['loc'])}",
                             fix="the log was corrupted or edited; restore it or truncate it before this line") from e
    if ev.seq != lineno - 1 or ev.ts is None:
        raise LogSchemaError(f"{path} line {lineno}: seq {ev.seq} where {lineno - 1} was expected (events lost "
                             "or duplicated)", fix="the log was edited or two writers appended to it; restore it")
    return ev


def _scan(path: Path) -> _Scan:
    data = path.read_bytes() if path.exists() else b""
    lines = data.split(b"\n")
    # data ending in "\n" gives a last empty chunk; otherwise the last chunk lacks its newline.
    events: list[Any] = []
    offset = 0
    n = len(lines)
    for i, raw in enumerate(lines):
        is_last = i == n - 1
        if is_last and raw == b"":
            break
        lineno = i + 1
        try:
            ev = _parse_line(raw, lineno, path)
        except ValueError as e:  # JSON-level corruption (LogSchemaError is not a ValueError)
            if is_last:  # no newline after it: a write cut short by a kill
                return _Scan(events, offset, torn_tail=True, needs_newline=False)
            raise LogSchemaError(f"{path} line {lineno}: corrupt line ({e})",
                                 fix="only a torn LAST line is repaired automatically; restore the log "
                                     "from a backup, or truncate it before this line") from None
        events.append(ev)
        offset += len(raw) + (0 if is_last else 1)
        if is_last:
            return _Scan(events, offset, torn_tail=False, needs_newline=True)
    return _Scan(events, offset, torn_tail=False, needs_newline=False)


def _events_path(path: str | Path) -> Path:
    p = Path(path)
    return p / EVENTS_FILE if p.is_dir() else p


def read_events(path: str | Path) -> list[Event]:
    """Read every event of a run log (a run directory or its ``events.jsonl``), validated.

    A torn last line (a write killed midway) is ignored; any other bad line, a gap or duplicate in
    ``seq``, or a newer schema MAJOR raises :class:`LogSchemaError` naming the file and line.
    Read-only: safe on a log another process is writing.
    """
    p = _events_path(path)
    if not p.exists():
        raise LogError(f"no run log at {p}", fix="pass a run directory (with events.jsonl) or the file itself")
    return _scan(p).events


# ---------------------------------------------------------------------------------------------- writing


class RunLog:
    """An append-only run log in ``run_dir/events.jsonl``.

    ``RunLog(run_dir)`` starts a new log (refusing one that already has events, so two runs never mix);
    :meth:`open_existing` continues one for resume. Appends are serialised by a lock, and each is
    written, flushed and fsync'ed before :meth:`append` returns.
    """

    def __init__(self, run_dir: str | Path, *, _events: list[Any] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / EVENTS_FILE
        self._lock = threading.Lock()
        if _events is None:
            if self.path.exists() and self.path.stat().st_size > 0:
                raise LogError(f"{self.path} already holds events",
                               fix="use RunLog.open_existing(run_dir) to continue it (resume), or a new run dir")
            self.run_dir.mkdir(parents=True, exist_ok=True)
            new = not self.path.exists()
            self.path.touch()
            if new:
                _fsync_dir(self.run_dir)
            _events = []
        self._events: list[Any] = _events

    @classmethod
    def open_existing(cls, run_dir: str | Path) -> RunLog:
        """Open a run's log to append more (resume): cuts a torn last line off, continues ``seq``."""
        path = Path(run_dir) / EVENTS_FILE
        if not path.exists():
            raise LogError(f"no run log at {path}", fix="check the run id/directory (interp-agent status RUN)")
        scan = _scan(path)
        if scan.torn_tail or scan.needs_newline:
            with open(path, "r+b") as f:
                f.truncate(scan.good_bytes)
                if scan.needs_newline:
                    f.seek(scan.good_bytes)
                    f.write(b"\n")
                f.flush()
                os.fsync(f.fileno())
        return cls(run_dir, _events=list(scan.events))

    @property
    def next_seq(self) -> int:
        """The ``seq`` the next appended event will get."""
        return len(self._events)

    @property
    def figures_dir(self) -> Path:
        """``run_dir/figures`` (created on first use)."""
        d = self.run_dir / "figures"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def append(self, event: _Event) -> Event:
        """Validate, number, timestamp and durably write ``event``; return the stored copy.

        ``evidence`` seqs must name earlier events (else :class:`LogError`).
        """
        if not isinstance(event, EVENT_TYPES):
            raise LogError(f"cannot log a {type(event).__name__}", fix="log one of the event classes in agent.log")
        with self._lock:
            seq = len(self._events)
            for ref in getattr(event, "evidence", ()) or ():
                if not 0 <= ref < seq:
                    raise LogError(f"{event.kind} cites evidence seq {ref}, but the log has events 0..{seq - 1}",
                                   fix="cite the seq of an event already appended (the value append() returned)")
            stored = event.model_copy(update={"seq": seq, "ts": _now(), "schema_version": SCHEMA_VERSION})
            stored = type(event).model_validate(stored.model_dump())  # re-validate (model_copy does not)
            line = stored.model_dump_json() + "\n"
            with open(self.path, "ab") as f:
                f.write(line.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
            self._events.append(stored)
            return stored

    def extend(self, events: Iterable[_Event]) -> list[Event]:
        """Append several events in order; returns the stored copies."""
        return [self.append(e) for e in events]

    def events(self) -> list[Event]:
        """All events so far (in memory; equal to what :func:`read_events` returns)."""
        return list(self._events)

    def __len__(self) -> int:
        return len(self._events)

    def __repr__(self) -> str:
        return f"RunLog({str(self.run_dir)!r}, events={len(self._events)})"


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
