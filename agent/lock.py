"""The run lock: one process writes a run at a time, and a reader can tell a running run from a dead one.

``run_dir/run.lock`` is held with an advisory ``flock`` while a process writes the run; the kernel
releases it when the process dies, even by ``kill -9``, so ``resume`` can tell a run that is still
being written (refused) from one that was interrupted.

>>> import tempfile
>>> d = Path(tempfile.mkdtemp())
>>> with run_lock(d):
...     is_running(d)   # a flock taken by this process on another descriptor conflicts too
True
>>> is_running(d)
False
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tools.errors import InterpAgentError

LOCK = "run.lock"


class RunLockedError(InterpAgentError):
    """A run that another process is writing."""


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/run.lock`` while this process writes the run (:class:`RunLockedError` if taken)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    f = open(run_dir / LOCK, "a+")  # noqa: SIM115 - closed in finally
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid = f.read().strip() or "?"
            raise RunLockedError(f"run {run_dir.name} is being written by another process (pid {pid})",
                                 fix="wait for it to finish (interp-agent status RUN), or stop it and then resume"
                                 ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield
    finally:
        f.close()


def is_running(run_dir: Path) -> bool:
    """True while another process (or another descriptor of this one) holds the run's lock."""
    p = run_dir / LOCK
    if not p.exists():
        return False
    with open(p) as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False
