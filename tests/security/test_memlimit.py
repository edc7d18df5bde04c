"""The local backend's tree memory limit (issue 16 item 15) piece by piece: the cgroup v2 leaf against a
fake cgroup folder (no host here delegates a v2 memory controller), the watchdog against a real tree of
host processes, and the host-side helpers' bounds."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbox import hostio, memlimit

pytestmark = [pytest.mark.security]


def _fake_cgroup_root(tmp_path, controllers="cpu memory pids", subtree=""):
    root = tmp_path / "cgroup"
    parent = root / "delegated"
    parent.mkdir(parents=True)
    (root / "cgroup.controllers").write_text(controllers)
    (parent / "cgroup.controllers").write_text(controllers)
    (parent / "cgroup.subtree_control").write_text(subtree)
    return root, parent


def test_cgroup_leaf_in_a_delegated_parent(tmp_path, monkeypatch):
    root, parent = _fake_cgroup_root(tmp_path)
    monkeypatch.setenv("INTERP_AGENT_CGROUP", str(parent))
    leaf = memlimit.make_cgroup_leaf(1 << 30, root=root)
    assert leaf is not None and leaf.path.parent == parent
    assert (parent / "cgroup.subtree_control").read_text() == "+memory"  # the controller was enabled
    assert (leaf.path / "memory.max").read_text() == str(1 << 30)
    assert leaf.procs_file == str(leaf.path / "cgroup.procs")
    (leaf.path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n")
    assert leaf.oom_kills() == 2
    for f in leaf.path.iterdir():  # a real cgroupfs removes its files itself
        f.unlink()
    leaf.remove()
    assert not leaf.path.exists()


@pytest.mark.parametrize("case", ["no-unified-hierarchy", "no-memory-controller", "not-root-cgroup"])
def test_no_cgroup_leaf_means_the_watchdog_alone(tmp_path, monkeypatch, case):
    root, parent = _fake_cgroup_root(tmp_path, controllers="cpu pids" if case == "no-memory-controller" else
                                     "cpu memory pids")
    if case == "no-unified-hierarchy":
        (root / "cgroup.controllers").unlink()
    if case == "not-root-cgroup":
        monkeypatch.delenv("INTERP_AGENT_CGROUP", raising=False)
        monkeypatch.setattr(memlimit, "_own_cgroup", lambda: "/user.slice/session-1.scope")
    else:
        monkeypatch.setenv("INTERP_AGENT_CGROUP", str(parent))
    assert memlimit.make_cgroup_leaf(1 << 30, root=root) is None


def test_this_host_has_no_v2_memory_controller_or_uses_it():
    """Documents which mechanism the suite exercised here (the README states it)."""
    leaf = memlimit.make_cgroup_leaf(1 << 30)
    if leaf is not None:
        leaf.remove()
    assert leaf is None or leaf.path.is_relative_to(memlimit.CGROUP_ROOT)


def test_watchdog_kills_the_largest_process_of_the_tree():
    hog = "b = b'x' * ({mb} << 20); import time; time.sleep(30)"
    parent = subprocess.Popen([sys.executable, "-c",
                               "import subprocess, sys, time\n"
                               f"ps = [subprocess.Popen([sys.executable, '-c', c]) for c in "
                               f"{[hog.format(mb=m) for m in (60, 120)]!r}]\n"
                               "time.sleep(30)"])
    notes: list[str] = []

    def rss() -> dict[int, int]:
        out = {}
        for pid in memlimit.tree_pids(parent.pid):
            with contextlib.suppress(OSError):
                out[pid] = memlimit.parse_stat(Path(f"/proc/{pid}/stat").read_bytes())[2] * memlimit.PAGE
        return out

    try:
        deadline = time.monotonic() + 30  # a loaded machine: wait until both children hold their memory
        while time.monotonic() < deadline:
            kids = sorted(list(rss().items())[1:], key=lambda kv: kv[1])
            if len(kids) == 2 and kids[0][1] > 55 << 20 and kids[1][1] > 115 << 20:
                break
            time.sleep(0.05)
        assert len(kids) == 2 and kids[1][1] > 115 << 20, kids
        dog = memlimit.TreeWatchdog(parent.pid, 150 << 20, notes.append, interval_s=0.05)
        deadline = time.monotonic() + 10
        while not notes and time.monotonic() < deadline:
            time.sleep(0.05)
        dog.stop()
        assert notes and "memory limit" in notes[0] and "killed the largest" in notes[0]
        assert dog.peak_bytes > 150 << 20
        deadline = time.monotonic() + 10  # the killed child's memory is freed as it exits, not at the signal
        while sum(rss().values()) >= 150 << 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        left = rss()
        assert len(notes) == 1 and sum(left.values()) < 150 << 20, left  # one kill (the 120 MiB child) was enough
        assert sorted(left.values())[-1] > 55 << 20  # the 60 MiB child lives on
    finally:
        for pid in memlimit.tree_pids(parent.pid)[::-1]:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        parent.wait()


def test_tail_buffer_and_json_bounds():
    t = hostio.TailBuffer(1000)
    for _ in range(10_000):
        t.add(b"y" * 997)
    assert len(t.text()) == 1000 and t.total == 9_970_000
    assert hostio.parse_json_capped("[" * 100_000, 10**6)[0] is None
    assert hostio.parse_json_capped("[" * 70 + "]" * 70, 10**6)[1] == "nested deeper than 64 levels"
    assert hostio.parse_json_capped('{"a": [1, 2]}', 100) == ({"a": [1, 2]}, None)
    assert hostio.parse_json_capped('"' + "x" * 200 + '"', 100)[1] == "202 bytes of JSON, over the 100 limit"


def test_read_beneath_refuses_links_fifos_and_big_files(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "ok.png").write_bytes(b"png")
    (tmp_path / "link").symlink_to(tmp_path / "d")
    (tmp_path / "d" / "l.png").symlink_to(tmp_path / "d" / "ok.png")
    os.mkfifo(tmp_path / "d" / "fifo")
    with open(tmp_path / "d" / "big", "wb") as f:
        f.truncate(10_000)
    assert hostio.read_beneath(tmp_path, "d/ok.png", 10) == b"png"
    for rel, why in [("link/ok.png", "not a plain folder"), ("d/l.png", "a link"), ("d/fifo", "not a regular file"),
                     ("d/big", "over the 100 limit"), ("../x", "without '..'"), ("/etc/passwd", "without '..'")]:
        with pytest.raises(hostio.UnsafePath, match=why):
            hostio.read_beneath(tmp_path, rel, 100)
