"""Local backend: the kernel runs on this machine inside bubblewrap (namespaces + rlimits).

What the kernel gets (see :func:`bwrap_argv`):

- its own network namespace (only a loopback of its own: no egress, no host services), PID namespace
  (it sees itself and bwrap's init; when the sandbox stops, every process it started dies with it),
  IPC/UTS/cgroup namespaces;
- the host filesystem read-only, with home folders, ``/run`` (daemon sockets such as docker.sock) and
  ``/tmp`` hidden; the interpreter, the repository and any ``read_only_paths`` bound back read-only;
- the workspace as its only writable place (plus a private size-capped ``/tmp`` and ``/dev/shm``), and as
  cwd and HOME;
- run as root, the sandbox drops the kernel to a fresh unprivileged uid (no capabilities,
  ``no_new_privs``), so process-count limits are its own and root-only host files are unreadable;
- rlimits: address space, file size, process count, no core files, optionally CPU time;
- an allow-listed environment (:func:`sandbox.config.kernel_env`): no keys, tokens or cloud credentials.

The host side never follows a link the kernel can plant: rich outputs are written with ``O_NOFOLLOW`` /
``O_EXCL`` relative to directory descriptors, ``.kernel/`` is checked and rebuilt only while the kernel
is dead (its whole PID namespace dies with it), and the client connects to the kernel's sockets once,
with reconnection off. ``tests/security/`` holds the attack cases.

Known limits (not escapes): the workspace's total size is not capped (only each file, by RLIMIT_FSIZE);
the kernel may create nested user namespaces (no host privilege, but more kernel attack surface);
without root, bubblewrap runs in a user namespace as the calling user, so RLIMIT_NPROC counts all of
that user's processes (that mode is not exercised by the tests here, which run as root); ``gpu=True``
is untested on these CPU machines.

Bubblewrap comes from Debian's package (``apt-get install -y bubblewrap``; ``make setup`` installs it when
run as root). Without it the sandbox refuses to start unless ``unsafe_no_isolation=True``.

>>> argv = bwrap_argv(["python", "-m", "ipykernel_launcher"], workspace="/w/ws", uid=1500000000)
>>> argv[0], "--unshare-net" in argv, argv[argv.index("--chdir") + 1]
('bwrap', True, '/w/ws')
"""

from __future__ import annotations

import functools
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sandbox.base import Sandbox
from sandbox.config import SandboxLimits, kernel_env
from sandbox.errors import IsolationUnavailable, KernelStartError

REPO_ROOT = Path(__file__).resolve().parent.parent
# Hidden behind an empty tmpfs inside the sandbox (needed paths below them are bound back read-only).
MASKED = ("/root", "/home", "/run", "/tmp", "/var/tmp", "/mnt", "/media")
INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: `apt-get install -y bubblewrap`, or `make setup` as root) "
                "and allow user namespaces, or pass --unsafe-no-isolation / unsafe_no_isolation=True to run the "
                "kernel unisolated (it can then read your secrets and write anywhere you can)")


@functools.lru_cache(maxsize=1)
def isolation_problem() -> str | None:
    """Why bubblewrap isolation cannot work here, or ``None`` when it can (probed once per process).

    >>> isolation_problem() is None or isinstance(isolation_problem(), str)
    True
    """
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed"
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        return "setpriv (util-linux) is missing, needed to drop root in the sandbox"
    probe = [bwrap, "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--unshare-net", "--unshare-pid",
             "--unshare-ipc", "--die-with-parent", "--", "/bin/true"]
    try:
        r = subprocess.run(probe, capture_output=True, text=True, timeout=20, env={"PATH": "/usr/bin:/bin"})
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"bubblewrap could not run: {e}"
    if r.returncode != 0:
        return f"bubblewrap cannot create namespaces here: {r.stderr.strip()[:300]}"
    return None


def _under(path: str, masks: Sequence[str]) -> bool:
    return any(path == m or path.startswith(m.rstrip("/") + "/") for m in masks)


def _runtime_paths() -> list[str]:
    """Paths the kernel's python needs: the venv, the base interpreter, the repository."""
    exe = Path(sys.executable)
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, str(exe.resolve().parent.parent), str(REPO_ROOT)}
    for p in sys.path:  # editable installs or PYTHONPATH entries
        if p and os.path.isdir(p):
            paths.add(p)
    return sorted(str(Path(p).resolve()) for p in paths if p)


def bwrap_argv(command: Sequence[str], workspace: str | os.PathLike, uid: int | None,
               limits: SandboxLimits | None = None, read_only_paths: Sequence[str | os.PathLike] = (),
               writable_paths: Sequence[str | os.PathLike] = (), gpu: bool = False) -> list[str]:
    """The full command line that runs ``command`` isolated: ``bwrap ... -- [setpriv ...] prlimit ... --``.

    ``uid``: when set (the host runs as root) the kernel drops to this unprivileged uid/gid; ``None``
    runs bubblewrap unprivileged in a user namespace as the calling user.

    >>> a = bwrap_argv(["k"], "/tmp/ws", uid=None, limits=SandboxLimits(memory_gb=1, processes=64, cpu_seconds=60))
    >>> a[a.index("--") + 1:]
    ['prlimit', '--as=1073741824', '--fsize=2147483648', '--nproc=64', '--core=0', '--cpu=60:70', '--', 'k']
    >>> a.index("/tmp") < a.index("/tmp/ws")  # the private /tmp is mounted before the workspace bind
    True
    """
    limits = limits or SandboxLimits()
    ws = str(Path(workspace))
    argv = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
            # POSIX semaphores / shared memory (multiprocessing) need a writable /dev/shm: private and capped
            "--perms", "1777", "--size", str(limits.tmp_mb * 1024 * 1024), "--tmpfs", "/dev/shm"]
    masks = list(MASKED)
    home = str(Path.home())
    if home not in ("/", "") and not _under(home, masks):
        masks.append(home)
    for m in masks:
        if os.path.isdir(m) or m == "/tmp":
            if m == "/tmp":
                argv += ["--perms", "1777", "--size", str(limits.tmp_mb * 1024 * 1024)]
            argv += ["--tmpfs", m]
    ro = sorted({str(Path(p).resolve()) for p in [*_runtime_paths(), *map(str, read_only_paths)]})
    ro = [p for p in ro if _under(p, masks) and os.path.exists(p)]
    ro = [p for p in ro if not _under(os.path.dirname(p), ro)]  # nested in another bind already
    rw = [ws, *map(str, writable_paths)]
    # bubblewrap creates missing mount points 0700: make the parents traversable for the kernel's uid.
    parents: set[str] = set()
    for p in ro + rw:
        for a in Path(p).parents:
            if _under(str(a), masks) and str(a) not in masks:
                parents.add(str(a))
    for a in sorted(parents, key=lambda s: s.count("/")):
        argv += ["--perms", "0755", "--dir", a]
    for p in ro:
        argv += ["--ro-bind", p, p]
    for p in rw:
        argv += ["--bind", p, p]
    if gpu:
        for dev in sorted(Path("/dev").glob("nvidia*")):
            argv += ["--dev-bind", str(dev), str(dev)]
    argv += ["--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
             "--hostname", "sandbox", "--die-with-parent", "--new-session", "--chdir", ws]
    if uid is not None:
        argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    argv.append("--")
    if uid is not None:
        argv += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
                 "--bounding-set=-all", "--no-new-privs", "--"]
    # CUDA reserves far more virtual address space than it uses: RLIMIT_AS would break cuInit.
    argv += ["prlimit"] + ([] if gpu else [f"--as={limits.memory_bytes}"])
    argv += [f"--fsize={limits.file_size_bytes}", f"--nproc={limits.processes}", "--core=0"]
    if limits.cpu_seconds:
        argv.append(f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + 10}")  # SIGXCPU, then SIGKILL 10 s on
    argv += ["--", *command]
    return argv


def _hf_hub_cache() -> str | None:
    """The host's Hugging Face hub cache folder, if it exists (``HF_HUB_CACHE`` or ``$HF_HOME/hub``)."""
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.join(Path.home(), ".cache", "huggingface"), "hub")
    return hub if os.path.isdir(hub) else None


def describe_exit(code: int | None) -> str:
    """Say how a process ended from its return code.

    >>> describe_exit(-9)
    'killed by signal 9 (SIGKILL): kill -9 or the out-of-memory killer'
    >>> describe_exit(137)
    'killed by signal 9 (SIGKILL): kill -9 or the out-of-memory killer'
    >>> describe_exit(3)
    'exit code 3 (os._exit or sys.exit in the kernel)'
    """
    if code is None:
        return "still running"
    sig = -code if code < 0 else code - 128 if code > 128 else None
    if sig:
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        hint = {9: ": kill -9 or the out-of-memory killer", 11: ": a segmentation fault",
                6: ": an abort (often a C extension)", 24: ": the CPU-time limit"}.get(sig, "")
        return f"killed by signal {sig} ({name}){hint}"
    return f"exit code {code} (os._exit or sys.exit in the kernel)"


class LocalSandbox(Sandbox):
    """A kernel on this machine, isolated with bubblewrap (or, only when asked, not at all).

    Args:
        workspace: the run's folder; the kernel's cwd, HOME and only writable place.
        setup_code: cells run on every start and restart (imports, model loading, task data).
        limits: resource limits (:class:`sandbox.config.SandboxLimits`).
        unsafe_no_isolation: run the kernel as a plain child process (scrubbed environment and rlimits
            only). Without it a missing bubblewrap raises :class:`IsolationUnavailable`.
        read_only_paths: extra host paths the kernel may read (e.g. a model folder under a home dir). On
            a root host the kernel runs as another uid: these must be world-readable (``chmod -R o+rX``).
        gpu: expose ``/dev/nvidia*`` to the kernel. CUDA needs an unlimited address space, so the
            memory limit (RLIMIT_AS) is then off: prefer the docker backend (a cgroup memory limit) on GPUs.
        env: extra environment variables (names that look like credentials are refused).
        python: the kernel's interpreter (default: this one, whose packages include ``tools`` and torch).
    """

    backend = "local"

    def __init__(self, workspace: str | os.PathLike, setup_code: list[str] | None = None,
                 limits: SandboxLimits | None = None, unsafe_no_isolation: bool = False,
                 read_only_paths: Sequence[str | os.PathLike] = (), gpu: bool = False,
                 env: dict[str, str] | None = None, python: str | None = None) -> None:
        super().__init__(workspace, setup_code, limits, env)
        self.unsafe = unsafe_no_isolation
        self.read_only_paths = [str(p) for p in read_only_paths]
        hub = _hf_hub_cache()
        if hub is not None:  # models the user already has; never the token file beside it
            self.read_only_paths.append(hub)
            self.extra_env.setdefault("HF_HUB_CACHE", hub)
        self.gpu = gpu
        self.python = python or sys.executable
        self._proc: subprocess.Popen | None = None
        self._log: Any = None
        self._uid: int | None = None
        if not self.unsafe:
            problem = isolation_problem()
            if problem:
                raise IsolationUnavailable(f"cannot isolate the kernel: {problem}", fix=INSTALL_HINT)
            if os.geteuid() == 0:
                # A fresh uid per sandbox: process limits are its own, root-only files stay unreadable.
                self._uid = random.randrange(1_500_000_000, 1_600_000_000)

    @property
    def isolation(self) -> str:
        if self.unsafe:
            return "none (unsafe)"
        return "bubblewrap" + (f" (uid {self._uid})" if self._uid is not None else " (user namespace)")

    @property
    def uid(self) -> int | None:
        """The unprivileged uid the kernel runs as (root hosts), or ``None``."""
        return self._uid

    def _prepare_workspace(self) -> None:
        if self._uid is None:
            return
        os.chown(self.workspace, self._uid, self._uid, follow_symlinks=False)
        for root, dirs, files in os.walk(self.workspace):  # never follows links
            for name in dirs + files:
                os.chown(os.path.join(root, name), self._uid, self._uid, follow_symlinks=False)

    def _socket_folder(self) -> Path:
        # The kernel is dead whenever this runs (all its processes die with its PID namespace), so the
        # checks below cannot race it: a link or file planted at ".kernel" is removed, never followed.
        cand = self.workspace / ".kernel"
        if self._socket_dir == cand and (cand.is_symlink() or not cand.is_dir()):
            if cand.is_symlink() or cand.is_file():
                cand.unlink()
            else:
                shutil.rmtree(cand, ignore_errors=True)
            self._socket_dir = None
        sdir = super()._socket_folder()
        if self._uid is not None:
            os.chown(sdir, self._uid, self._uid, follow_symlinks=False)
            os.chmod(sdir, 0o700)
        return sdir

    def _after_connection_file(self, conn: Path) -> None:
        os.chmod(conn, 0o600)
        if self._uid is not None:
            os.chown(conn, self._uid, self._uid, follow_symlinks=False)

    def _command(self, connection_file: Path) -> list[str]:
        return [self.python, "-m", "ipykernel_launcher", "-f", str(connection_file),
                "--IPKernelApp.capture_fd_output=True", "--HistoryManager.hist_file=:memory:"]

    def _launch(self, connection_file: Path, info: dict[str, Any]) -> None:
        env = kernel_env(self.workspace, extra=self.extra_env, pythonpath=str(REPO_ROOT))
        cmd = self._command(connection_file)
        self._log_mark = 0
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (host-private: the kernel cannot plant a link)
        preexec = None
        if self.unsafe:
            argv = cmd
            lim, gpu = self.limits, self.gpu

            def preexec() -> None:  # runs in the child before exec
                if not gpu:
                    resource.setrlimit(resource.RLIMIT_AS, (lim.memory_bytes, lim.memory_bytes))
                resource.setrlimit(resource.RLIMIT_FSIZE, (lim.file_size_bytes, lim.file_size_bytes))
                resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
                if lim.cpu_seconds:
                    resource.setrlimit(resource.RLIMIT_CPU, (lim.cpu_seconds, lim.cpu_seconds + 10))
        else:
            writable = [] if self._socket_dir is None or self._socket_dir.is_relative_to(self.workspace) \
                else [self._socket_dir]
            argv = bwrap_argv(cmd, self.workspace, self._uid, self.limits, self.read_only_paths, writable, self.gpu)
        try:
            self._proc = subprocess.Popen(argv, env=env, cwd=self.workspace, stdin=subprocess.DEVNULL,
                                          stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
                                          preexec_fn=preexec)
        except OSError as e:
            raise KernelStartError(f"could not launch the kernel: {e}", fix=INSTALL_HINT) from e

    def _alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _exit_reason(self) -> str:
        if self._proc is None:
            return "never started"
        reason = describe_exit(self._proc.poll())
        tail = self._log_tail()
        return reason + (f"; last output: {tail}" if tail else "")

    def _booted(self) -> None:
        if self._log is not None:  # the start-up banner is noise in a death report
            self._log.seek(0, os.SEEK_END)
            self._log_mark = self._log.tell()

    def _log_tail(self, n: int = 400) -> str:
        if self._log is None:
            return ""
        try:
            self._log.seek(0, os.SEEK_END)
            size = self._log.tell()
            self._log.seek(max(getattr(self, "_log_mark", 0), size - n))
            return self._log.read().decode(errors="replace").strip().replace("\n", " | ")
        except (OSError, ValueError):
            return ""

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # bwrap leads its group; --die-with-parent does the rest
                except (ProcessLookupError, PermissionError):
                    proc.kill()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self._log is not None:
            self._log.close()
            self._log = None
