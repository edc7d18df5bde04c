"""Host-side handling of data the sandboxed kernel could have written or forged (every backend).

The kernel is hostile: anything it can write (files in the workspace, Jupyter messages, its own output
streams) reaches the host only through the helpers here, which are

- **bounded**: a size cap is enforced on the host before or while reading, never by trusting the kernel;
- **link-free**: paths are opened one component at a time relative to directory descriptors with
  ``O_NOFOLLOW``, so a symlink planted anywhere on the way is refused, never followed;
- **iterative**: tree walks use an explicit stack (a 10 000-deep tree costs no recursion);
- **tolerant**: malformed data becomes a note or ``None``, never an exception in the host.

>>> as_text({"a": 1}, 20)
"{'a': 1}"
>>> as_text("x" * 50, 10)
'xxxxxxxxxx\\n[... 40 characters cut ...]'
>>> json_depth([1, [2, [3]], {"a": {"b": []}}])
4
>>> t = TailBuffer(8); t.add(b"0123456789abc"); t.text()
'56789abc'
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import threading
from collections import deque
from pathlib import Path
from typing import Any

from sandbox.errors import SandboxError


class UnsafePath(SandboxError):
    """A path the kernel could have planted: a link, a non-regular file, too large, or outside its root."""


def as_text(value: Any, limit: int) -> str:
    """``value`` as a string of at most ``limit`` characters (+ a marker): never raises."""
    if not isinstance(value, str):
        try:
            value = repr(value) if value is not None else ""
        except Exception:  # noqa: BLE001 - a hostile object's repr must not break the host
            value = f"<unprintable {type(value).__name__}>"
    if len(value) <= limit:
        return value
    return value[:limit] + f"\n[... {len(value) - limit} characters cut ...]"


def json_depth(value: Any, limit: int = 10_000) -> int:
    """Nesting depth of a JSON value (lists and dicts), computed without recursion; stops past ``limit``."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, list | dict):
            deepest = max(deepest, d)
            if deepest > limit:
                return deepest
            stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return deepest


def parse_json_capped(text: Any, max_bytes: int, max_depth: int = 64) -> tuple[Any, str | None]:
    """Parse kernel-sent JSON text: ``(value, None)`` or ``(None, why it was refused)``; never raises."""
    if not isinstance(text, str):
        return None, f"expected JSON text, got {type(text).__name__}"
    if len(text) > max_bytes:
        return None, f"{len(text)} bytes of JSON, over the {max_bytes} limit"
    try:
        value = json.loads(text)
    except (ValueError, RecursionError, MemoryError) as e:
        return None, f"not valid JSON ({type(e).__name__})"
    depth = json_depth(value, max_depth)
    if depth > max_depth:
        return None, f"nested deeper than {max_depth} levels"
    return value, None


class TailBuffer:
    """Keeps the last ``limit`` bytes written to it (thread-safe); memory never exceeds ``limit``."""

    def __init__(self, limit: int = 64 * 1024) -> None:
        self.limit, self._chunks, self._size, self.total = limit, deque(), 0, 0
        self._lock = threading.Lock()

    def add(self, data: bytes) -> None:
        with self._lock:
            self.total += len(data)
            data = data[-self.limit:]
            self._chunks.append(data)
            self._size += len(data)
            while self._size - len(self._chunks[0]) >= self.limit:
                self._size -= len(self._chunks.popleft())

    def clear(self) -> None:
        with self._lock:
            self._chunks.clear()
            self._size = 0

    def text(self) -> str:
        with self._lock:
            data = b"".join(self._chunks)[-self.limit:]
        return data.decode(errors="replace")


def drain_to_tail(fd: int, tail: TailBuffer) -> threading.Thread:
    """Start a daemon thread that reads ``fd`` (a pipe from the kernel) into ``tail`` until EOF, then closes it."""

    def pump() -> None:
        try:
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                tail.add(chunk)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)

    t = threading.Thread(target=pump, name="sandbox-output", daemon=True)
    t.start()
    return t


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_beneath(root: str | os.PathLike, rel: str | os.PathLike) -> int:
    """A read-only descriptor of the regular file ``root/rel``, opened without following any link.

    ``rel`` must be relative and stay under ``root`` (no ``..``); every component is opened with
    ``O_NOFOLLOW`` relative to its parent's descriptor. Raises :class:`UnsafePath`.
    """
    parts = Path(rel).parts
    if not parts or Path(rel).is_absolute() or any(p in ("..", "") for p in parts):
        raise UnsafePath(f"refusing path {str(rel)!r}: it must be relative to {root} without '..'")
    try:
        fd = os.open(root, _DIR_FLAGS)
    except OSError as e:
        raise UnsafePath(f"cannot open {root}: {e.strerror}") from None
    try:
        for name in parts[:-1]:
            try:
                nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                raise UnsafePath(f"refusing {str(rel)!r}: {name!r} is not a plain folder ({e.strerror})") from None
            os.close(fd)
            fd = nfd
        try:
            ffd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
        except OSError as e:
            why = "a link" if e.errno == errno.ELOOP else e.strerror
            raise UnsafePath(f"refusing {str(rel)!r}: {why}") from None
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(ffd).st_mode):
        os.close(ffd)
        raise UnsafePath(f"refusing {str(rel)!r}: not a regular file")
    return ffd


def read_beneath(root: str | os.PathLike, rel: str | os.PathLike, max_bytes: int) -> bytes:
    """The bytes of the regular file ``root/rel`` (see :func:`open_beneath`), refusing more than ``max_bytes``.

    >>> import tempfile; d = tempfile.mkdtemp(); _ = open(f"{d}/a.txt", "w").write("hi")
    >>> read_beneath(d, "a.txt", 10)
    b'hi'
    >>> os.symlink("/etc/passwd", f"{d}/l")
    >>> read_beneath(d, "l", 10)
    Traceback (most recent call last):
    ...
    sandbox.hostio.UnsafePath: refusing 'l': a link
    """
    fd = open_beneath(root, rel)
    try:
        size = os.fstat(fd).st_size
        if size > max_bytes:
            raise UnsafePath(f"refusing {str(rel)!r}: {size} bytes, over the {max_bytes} limit")
        chunks, n = [], 0
        while n <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - n))
            if not chunk:
                break
            chunks.append(chunk)
            n += len(chunk)
        if n > max_bytes:  # it grew while we read
            raise UnsafePath(f"refusing {str(rel)!r}: over the {max_bytes} limit")
        return b"".join(chunks)
    finally:
        os.close(fd)


def is_plain_file_beneath(root: str | os.PathLike, rel: str | os.PathLike) -> bool:
    """Whether ``root/rel`` is a regular file reached without any link (no exception)."""
    try:
        os.close(open_beneath(root, rel))
        return True
    except UnsafePath:
        return False


def chown_tree(root: str | os.PathLike, uid: int, gid: int) -> None:
    """Give ``root`` and everything under it to ``uid:gid`` without following links; tolerant and iterative.

    Sub-trees whose folder already belongs to ``uid`` are skipped (the kernel made them), so a restart
    costs little however many files the kernel wrote.
    """
    with contextlib.suppress(OSError):
        os.chown(root, uid, gid, follow_symlinks=False)
    stack = [os.fspath(root)]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except OSError:
            continue
        with it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                    if st.st_uid != uid or st.st_gid != gid:
                        os.chown(entry.path, uid, gid, follow_symlinks=False)
                    elif stat.S_ISDIR(st.st_mode):
                        continue  # the kernel's own folder: all of it is the kernel's
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)


def remove_tree(path: str | os.PathLike) -> None:
    """Delete ``path`` (a file, a link or a folder tree of any depth) without following links; no recursion.

    Works on trees deeper than ``PATH_MAX`` (descriptors relative to each folder, one per level of the
    current branch); what cannot be removed is left, silently.
    """
    path = os.path.abspath(os.fspath(path))
    try:
        st = os.lstat(path)
    except OSError:
        return
    if not stat.S_ISDIR(st.st_mode):
        with contextlib.suppress(OSError):
            os.unlink(path)
        return
    parent, name = os.path.split(path)
    try:
        top = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    fds: list[int] = []
    names: list[str] = []
    failed: set[tuple[int, int]] = set()
    try:
        try:
            fds.append(os.open(name, _DIR_FLAGS, dir_fd=top))
            names.append(name)
        except OSError:
            return
        while fds:
            fd = fds[-1]
            sub = None
            try:
                with os.scandir(fd) as it:
                    for entry in it:
                        try:
                            est = entry.stat(follow_symlinks=False)
                        except OSError:
                            continue
                        if stat.S_ISDIR(est.st_mode):
                            if (est.st_dev, est.st_ino) not in failed:
                                sub = (entry.name, (est.st_dev, est.st_ino))
                                break
                        else:
                            with contextlib.suppress(OSError):
                                os.unlink(entry.name, dir_fd=fd)
            except OSError:
                pass
            if sub is not None:
                try:
                    fds.append(os.open(sub[0], _DIR_FLAGS, dir_fd=fd))
                    names.append(sub[0])
                except OSError:
                    failed.add(sub[1])
                continue
            os.close(fds.pop())
            child = names.pop()
            try:
                os.rmdir(child, dir_fd=fds[-1] if fds else top)
            except OSError:
                with contextlib.suppress(OSError):
                    cst = os.stat(child, dir_fd=fds[-1] if fds else top, follow_symlinks=False)
                    failed.add((cst.st_dev, cst.st_ino))
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        os.close(top)
