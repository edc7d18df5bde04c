"""The pieces of ``make test-docker`` (tests/docker_harness.py) that run without an engine."""

from __future__ import annotations

import subprocess
import sys

from tests import docker_harness as h


def test_check_says_why_it_cannot_run(monkeypatch, capsys):
    monkeypatch.setattr(h, "reachable", lambda host=None: False)
    monkeypatch.setattr(h.os, "geteuid", lambda: 1000)
    assert h.main(["--check"]) == 3
    assert "only root can start a private one" in capsys.readouterr().out
    monkeypatch.setattr(h.os, "geteuid", lambda: 0)
    monkeypatch.setattr(h.shutil, "which", lambda name: "/usr/bin/" + name)
    assert h.main(["--check"]) == 0
    assert "a private dockerd" in capsys.readouterr().out
    monkeypatch.setattr(h.shutil, "which", lambda name: None)  # no dockerd, no apt
    assert h.main(["--check"]) == 3
    assert "dockerd is not installed" in capsys.readouterr().out
    monkeypatch.setattr(h, "reachable", lambda host=None: True)
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/x.sock")
    assert h.main(["--check"]) == 0 and "unix:///run/x.sock" in capsys.readouterr().out


def test_no_engine_and_not_root_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.setattr(h, "reachable", lambda host=None: False)
    monkeypatch.setattr(h.os, "geteuid", lambda: 1000)
    assert h.main([]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no Docker engine answers") and " — start dockerd" in err and "\n" not in err


def test_mounts_under_deepest_first(monkeypatch, tmp_path):
    mounts = f"proc /proc proc rw 0 0\nnsfs {tmp_path}/exec/netns/default nsfs rw 0 0\n" \
             f"overlay {tmp_path}/exec/a overlay rw 0 0\nx {tmp_path}x/other ext4 rw 0 0\n"
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: __import__("io").StringIO(mounts)
                        if p == "/proc/self/mounts" else real_open(p, *a, **k))
    assert h._mounts_under(tmp_path) == [f"{tmp_path}/exec/netns/default", f"{tmp_path}/exec/a"]


def test_pids_mentioning_finds_our_children(tmp_path):
    token = str(tmp_path / "marker")
    p = subprocess.Popen([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(30)", token],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "up\n"  # exec'd: before that its cmdline is still pytest's (a loaded machine)
        assert p.pid in h._pids_mentioning(token)
    finally:
        p.kill()
        p.wait()
        p.stdout.close()
    assert p.pid not in h._pids_mentioning(token)
