"""Local backend only: a memory limit for the kernel's whole process tree.

RLIMIT_AS caps each process, not their sum: six children of 800 MB each fit under ``memory_gb=1``.
Two mechanisms cap the sum:

- **cgroup v2 leaf** (:func:`make_cgroup_leaf`), when the host has a unified cgroup hierarchy whose
  ``memory`` controller this process may use: a fresh cgroup per kernel with ``memory.max`` (and
  ``memory.swap.max = 0``); the kernel's tree joins it before bubblewrap starts, and the Linux OOM killer
  enforces the limit inside the leaf only. The parent is ``$INTERP_AGENT_CGROUP`` (a folder delegated
  to this user, e.g. by ``systemd-run --user --scope -p Delegate=yes``) or, as root in the root
  cgroup, ``/sys/fs/cgroup``.
- **watchdog** (:class:`TreeWatchdog`), always on: a host thread sums the resident memory of the tree
  (RSS; PSS from ``smaps_rollup`` to confirm, so pages shared between forks count once) every 0.1 s and
  SIGKILLs the largest process while the sum is over the limit. It polls, so a burst faster than the
  poll can overshoot for up to one interval; the kernel's processes also get ``oom_score_adj = 1000``,
  so if the host itself runs out of memory the kernel is what its OOM killer takes first.

Everything read here is written by the Linux kernel about processes the sandbox may control (``comm``
is theirs to set): reads are bounded and parsed from the right.

>>> parse_stat(b"42 (a) b) c) S 7 0 0 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 999 1000 25 x")
(7, 999, 25)
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def parse_stat(raw: bytes) -> tuple[int, int, int] | None:
    """``(ppid, starttime, rss_pages)`` from ``/proc/PID/stat`` (``comm`` may hold spaces and parens)."""
    head, sep, tail = raw.rpartition(b")")
    if not sep:
        return None
    f = tail.split()
    try:
        return int(f[1]), int(f[19]), int(f[21])
    except (IndexError, ValueError):
        return None


def _read(path: str, limit: int = 4096) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


def _children(pid: int) -> list[int] | None:
    """Children of every thread of ``pid`` (``None`` when the kernel has no ``children`` files)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    kids: list[int] = []
    for tid in tids[:10_000]:
        raw = _read(f"/proc/{pid}/task/{tid}/children", 1 << 16)
        if raw is None:
            if not os.path.exists(f"/proc/{pid}/task/{tid}/children") and os.path.exists(f"/proc/{pid}/task/{tid}"):
                return None
            continue
        kids.extend(int(x) for x in raw.split() if x.isdigit())
    return kids


def _all_children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            raw = _read(f"/proc/{name}/stat")
            st = parse_stat(raw) if raw else None
            if st:
                tree.setdefault(st[0], []).append(int(name))
    return tree


def tree_pids(root: int, max_procs: int = 100_000) -> list[int]:
    """``root`` and all its descendants (iterative)."""
    out, stack, full = [], [root], None
    while stack and len(out) < max_procs:
        pid = stack.pop()
        out.append(pid)
        kids = _children(pid) if full is None else full.get(pid, [])
        if kids is None:  # no /proc/PID/task/TID/children: one scan of /proc instead
            full = _all_children()
            kids = full.get(pid, [])
        stack.extend(kids)
    return out


def pss_bytes(pid: int) -> int | None:
    """Proportional set size of ``pid`` (shared pages divided among their users), or ``None``."""
    raw = _read(f"/proc/{pid}/smaps_rollup", 1 << 14)
    if raw is None:
        return None
    for line in raw.splitlines():
        if line.startswith(b"Pss:"):
            parts = line.split()
            with contextlib.suppress(IndexError, ValueError):
                return int(parts[1]) * 1024
    return None


class TreeWatchdog:
    """Kill the largest process of ``root``'s tree while the tree's resident memory is over ``limit_bytes``.

    ``on_kill(text)`` is told what was killed and why (the sandbox adds it to the cell's stderr).
    """

    def __init__(self, root: int, limit_bytes: int, on_kill: Callable[[str], None], interval_s: float = 0.1) -> None:
        self.root, self.limit, self.on_kill, self.interval = root, limit_bytes, on_kill, interval_s
        self.kills: list[str] = []
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sandbox-memory-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if not self.check():
                    return
            except Exception:  # noqa: BLE001 - the watchdog must never take the host down
                continue

    def check(self) -> bool:
        """One poll; ``False`` once the root process is gone."""
        if not os.path.exists(f"/proc/{self.root}"):
            return False
        procs: dict[int, tuple[int, int]] = {}  # pid -> (starttime, rss bytes)
        for pid in tree_pids(self.root):
            raw = _read(f"/proc/{pid}/stat")
            st = parse_stat(raw) if raw else None
            if st:
                procs[pid] = (st[1], st[2] * PAGE)
        total = sum(r for _, r in procs.values())
        self.peak_bytes = max(self.peak_bytes, total)
        if total <= self.limit:
            return True
        sizes = {pid: pss_bytes(pid) or rss for pid, (_, rss) in procs.items()}
        total = sum(sizes.values())
        if total <= self.limit:
            return True
        victim = max((p for p in sizes if p != self.root), key=lambda p: sizes[p], default=None)
        if victim is None:
            return True
        comm = (_read(f"/proc/{victim}/comm", 64) or b"?").decode(errors="replace").strip()
        if self._kill(victim, procs[victim][0]):
            text = (f"memory limit: the kernel's processes held {total / 2**20:.0f} MiB together (limit "
                    f"{self.limit / 2**20:.0f} MiB); killed the largest, pid {victim} ({comm}, "
                    f"{sizes[victim] / 2**20:.0f} MiB)")
            self.kills.append(text)
            self.on_kill(text)
        return True

    @staticmethod
    def _kill(pid: int, starttime: int) -> bool:
        """SIGKILL ``pid`` through a pidfd, after checking it is still the process we measured."""
        try:
            pfd = os.pidfd_open(pid)
        except OSError:
            return False
        try:
            raw = _read(f"/proc/{pid}/stat")
            st = parse_stat(raw) if raw else None
            if st is None or st[1] != starttime:
                return False  # gone, and the pid reused
            signal.pidfd_send_signal(pfd, signal.SIGKILL)
            return True
        except OSError:
            return False
        finally:
            os.close(pfd)


class CgroupLeaf:
    """A cgroup v2 folder holding one kernel's processes, with ``memory.max`` set."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def procs_file(self) -> str:
        return str(self.path / "cgroup.procs")

    def oom_kills(self) -> int:
        raw = _read(str(self.path / "memory.events"), 4096) or b""
        for line in raw.splitlines():
            if line.startswith(b"oom_kill "):
                with contextlib.suppress(ValueError):
                    return int(line.split()[1])
        return 0

    def remove(self) -> None:
        """Kill what is left in the leaf and remove it (retrying while the processes exit)."""
        if (self.path / "cgroup.kill").exists():  # Linux >= 5.14
            with contextlib.suppress(OSError):
                (self.path / "cgroup.kill").write_text("1")
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.02)


def _own_cgroup() -> str | None:
    raw = _read("/proc/self/cgroup", 1 << 14) or b""
    for line in raw.decode(errors="replace").splitlines():
        if line.startswith("0::"):
            return line[3:]
    return None


def cgroup_parent(root: Path = CGROUP_ROOT) -> Path | None:
    """A cgroup v2 folder where this process may create memory-limited leaves, or ``None``."""
    if not (root / "cgroup.controllers").is_file():
        return None  # no unified hierarchy (cgroup v1 or hybrid without memory in v2)
    env = os.environ.get("INTERP_AGENT_CGROUP")
    if env:
        parent = Path(env)
    else:
        own = _own_cgroup()
        if own != "/":  # a process may not enable controllers for the cgroup it lives in
            return None
        parent = root
    try:
        if "memory" not in (parent / "cgroup.controllers").read_text().split():
            return None
        if "memory" not in (parent / "cgroup.subtree_control").read_text().split():
            (parent / "cgroup.subtree_control").write_text("+memory")
    except OSError:
        return None
    return parent if os.access(parent, os.W_OK) else None


def make_cgroup_leaf(limit_bytes: int, root: Path = CGROUP_ROOT) -> CgroupLeaf | None:
    """A fresh leaf with ``memory.max = limit_bytes`` under :func:`cgroup_parent`, or ``None``."""
    parent = cgroup_parent(root)
    if parent is None:
        return None
    leaf = parent / f"interp-agent-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        leaf.mkdir()
        (leaf / "memory.max").write_text(str(limit_bytes))
        if (leaf / "memory.swap.max").exists():
            (leaf / "memory.swap.max").write_text("0")
    except OSError:
        with contextlib.suppress(OSError):
            leaf.rmdir()
        return None
    return CgroupLeaf(leaf)
