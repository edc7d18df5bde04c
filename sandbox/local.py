"""Local backend: the kernel runs on this machine inside bubblewrap (namespaces + rlimits).

What the kernel gets (see :func:`bwrap_argv`):

- its own network namespace (only a loopback of its own: no egress, no host services), PID namespace
  (it sees itself and bwrap's init; when the sandbox stops, every process it started dies with it),
  IPC/UTS/cgroup namespaces;
- the host filesystem read-only, with home folders, ``/run`` (daemon sockets such as docker.sock),
  ``/tmp``, the Hugging Face home (its ``token``) and ``/proc/keys`` hidden; bound back read-only: the
  interpreter and the folders on the kernel's own ``sys.path`` (never a home folder or one above it),
  the repository, and the exact ``read_only_paths`` given (model folders; never a home folder);
- the workspace as its only writable place (plus a private size-capped ``/tmp`` and ``/dev/shm``), and as
  HOME and (after the setup cells, which run in an empty read-only folder) cwd;
- run as root, the sandbox drops the kernel to a fresh unprivileged uid (no capabilities,
  ``no_new_privs``), so process-count limits are its own and root-only host files are unreadable;
- a fresh, empty session keyring and a seccomp filter (:mod:`sandbox.seccomp`: keyrings, namespaces,
  io_uring, bpf, perf events, ptrace, mounts... fail with EPERM);
- rlimits: address space, file size, process count, no core files, optionally CPU time; a memory limit
  for the whole process tree (:mod:`sandbox.memlimit`: a cgroup v2 leaf when the host delegates one, and
  always a host-side watchdog), and ``oom_score_adj = 1000`` so a host OOM takes the kernel first;
- an allow-listed environment (:func:`sandbox.config.kernel_env`): no keys, tokens or cloud credentials;
- its stdout/stderr (file descriptors 1 and 2) go to a pipe whose last 64 KiB the host keeps: nothing
  it writes there lands in a host file.

The host side never follows a link the kernel can plant (:mod:`sandbox.hostio`): rich outputs are
written with ``O_NOFOLLOW`` / ``O_EXCL`` relative to directory descriptors, ``.kernel/`` is removed and
rebuilt from scratch (iteratively, links unfollowed) only while the kernel is dead (its whole PID
namespace dies with it), the connection file is host-private and bound read-only, and the client connects
to the kernel's sockets once, with reconnection off. ``tests/security/`` holds the attack cases.

Known limits (not escapes): the workspace's total size is not capped (only each file, by RLIMIT_FSIZE);
without a cgroup the tree's memory is polled (0.1 s), so a fast burst can overshoot briefly; without
root, bubblewrap runs in a user namespace as the calling user, so RLIMIT_NPROC counts all of that user's
processes (that mode is not exercised by the tests here, which run as root); ``gpu=True`` is untested
on these CPU machines.

Bubblewrap comes from Debian's package (``apt-get install -y bubblewrap``; ``make setup`` installs it when
run as root). Without it the sandbox refuses to start unless ``unsafe_no_isolation=True``.

>>> argv = bwrap_argv(["python", "-m", "ipykernel_launcher"], workspace="/w/ws", uid=1500000000)
>>> argv[0], "--unshare-net" in argv, argv[argv.index("--chdir") + 1]
('bwrap', True, '/run/interp-agent')
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import platform
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
from sandbox.errors import IsolationUnavailable, KernelStartError, SandboxError
from sandbox.hostio import TailBuffer, chown_tree, drain_to_tail, remove_tree
from sandbox.memlimit import CgroupLeaf, TreeWatchdog, make_cgroup_leaf

REPO_ROOT = Path(__file__).resolve().parent.parent
# Hidden behind an empty tmpfs inside the sandbox (needed paths below them are bound back read-only).
MASKED = ("/root", "/home", "/run", "/tmp", "/var/tmp", "/mnt", "/media")
# Inside the sandbox: an empty read-only folder, the kernel's start cwd, holding the connection file.
KERNEL_RUN_DIR = "/run/interp-agent"
_KEYCTL = {"x86_64": 250, "aarch64": 219}.get(platform.machine())
_KEYCTL_JOIN_SESSION_KEYRING = 1
_libc = ctypes.CDLL(None, use_errno=True)
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
    from sandbox.seccomp import SeccompUnavailable, filter_bpf

    try:
        filter_bpf()
    except SeccompUnavailable as e:
        return f"{e}; install libseccomp2 (apt-get install -y libseccomp2) and the pyseccomp package"
    return None


def _under(path: str, masks: Sequence[str]) -> bool:
    return any(path == m or path.startswith(m.rstrip("/") + "/") for m in masks)


def home_folders() -> list[str]:
    """Folders that hold users' credentials and other runs: ``$HOME``, ``/root`` and each ``/home/*``."""
    homes = {str(Path.home()), "/root"}
    with contextlib.suppress(OSError):
        homes.update(str(p) for p in Path("/home").iterdir())
    return sorted(str(Path(h).resolve()) for h in homes if h not in ("", "/"))


def hf_home() -> str:
    """The Hugging Face home (``$HF_HOME``, default ``~/.cache/huggingface``): holds the ``token`` file."""
    return str(Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface").expanduser().resolve())


def checked_read_only_paths(paths: Sequence[str | os.PathLike], extra_env: dict[str, str]) -> list[str]:
    """``paths`` as strings, refusing any :func:`forbidden_bind` names (both backends). Hub names resolve under
    the host's hub cache path (set in ``extra_env``); only the models bound in ``paths`` are there."""
    out = [str(p) for p in paths]
    for p in out:
        why = forbidden_bind(p)
        if why:
            raise SandboxError(f"refusing to show {p} to the kernel: it is {why}",
                               fix="pass the exact model or tokenizer folder (e.g. .../hub/models--org--name)")
    hub = os.environ.get("HF_HUB_CACHE") or str(Path(hf_home()) / "hub")
    if os.path.isdir(hub):
        extra_env.setdefault("HF_HUB_CACHE", hub)
    return out


def forbidden_bind(path: str) -> str | None:
    """Why ``path`` must never be bound into the kernel, or ``None``: the root, a home folder or a folder
    above one, the Hugging Face home or a folder above it, or a token file.

    >>> forbidden_bind("/")
    'the root folder'
    >>> forbidden_bind(str(Path.home()))
    'a home folder (or a folder above one)'
    """
    p = str(Path(path).resolve())
    if p == "/":
        return "the root folder"
    if any(h == p or h.startswith(p.rstrip("/") + "/") for h in home_folders()):
        return "a home folder (or a folder above one)"
    hf = hf_home()
    if hf == p or hf.startswith(p.rstrip("/") + "/"):
        return "the Hugging Face home (it holds the token)"
    token = os.environ.get("HF_TOKEN_PATH")
    if Path(p).name == "token" or (token and str(Path(token).resolve()) == p):
        return "a token file"
    return None


@functools.lru_cache(maxsize=4)
def kernel_sys_path(python: str) -> tuple[str, ...]:
    """The folders on the kernel's ``sys.path`` (its interpreter, site-packages, ``.pth`` entries, the
    repository), asked from that interpreter started as the kernel is (``-P -s``)."""
    code = "import sys, json; print(json.dumps(sys.path))"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), "PYTHONNOUSERSITE": "1"}
    try:
        r = subprocess.run([python, "-P", "-s", "-c", code], capture_output=True, text=True, timeout=60, env=env,
                           cwd="/")
        paths = json.loads(r.stdout) if r.returncode == 0 else []
    except (OSError, subprocess.TimeoutExpired, ValueError):
        paths = []
    return tuple(p for p in paths if isinstance(p, str) and p and os.path.isdir(p))


def _runtime_paths(python: str | None = None) -> list[str]:
    """Paths the kernel's python needs: the venv, the base interpreter, the repository, its ``sys.path``.

    A ``sys.path`` entry that is a home folder or above one is left out: a host started from the home
    folder (``python -m ...``) has it first on *its* ``sys.path``, never on the kernel's.
    """
    exe = Path(python or sys.executable)
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, str(exe.resolve().parent.parent), str(REPO_ROOT)}
    paths.update(kernel_sys_path(str(exe)))
    out = sorted(str(Path(p).resolve()) for p in paths if p)
    return [p for p in out if forbidden_bind(p) is None]


def bwrap_argv(command: Sequence[str], workspace: str | os.PathLike, uid: int | None,
               limits: SandboxLimits | None = None, read_only_paths: Sequence[str | os.PathLike] = (),
               writable_paths: Sequence[str | os.PathLike] = (), gpu: bool = False,
               connection_file: str | os.PathLike | None = None, seccomp_fd: int | None = None,
               python: str | None = None) -> list[str]:
    """The full command line that runs ``command`` isolated: ``bwrap ... -- [setpriv ...] prlimit ... --``.

    ``uid``: when set (the host runs as root) the kernel drops to this unprivileged uid/gid; ``None``
    runs bubblewrap unprivileged in a user namespace as the calling user. ``connection_file`` (a host
    file) is bound read-only at ``/run/interp-agent/connection.json``, the kernel's start cwd;
    ``seccomp_fd`` is passed as ``--seccomp``. ``read_only_paths`` that :func:`forbidden_bind` names
    raise :class:`SandboxError`.

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
    for p in map(str, read_only_paths):
        why = forbidden_bind(p)
        if why:
            raise SandboxError(f"refusing to show {p} to the kernel: it is {why}",
                               fix="pass the exact model or tokenizer folder (e.g. .../hub/models--org--name)")
    masks = list(MASKED)
    for extra in (str(Path.home()), hf_home()):
        if extra not in ("/", "") and not _under(extra, masks):
            masks.append(extra)
    for m in masks:
        if os.path.isdir(m) or m == "/tmp":
            if m == "/tmp":
                argv += ["--perms", "1777", "--size", str(limits.tmp_mb * 1024 * 1024)]
            argv += ["--tmpfs", m]
    # The host's kernel keyrings are listed in /proc/keys (the keyring syscalls are also filtered).
    argv += ["--ro-bind", "/dev/null", "/proc/keys", "--ro-bind", "/dev/null", "/proc/key-users"]
    ro = sorted({str(Path(p).resolve()) for p in [*_runtime_paths(python), *map(str, read_only_paths)]})
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
    argv += ["--perms", "0755", "--dir", KERNEL_RUN_DIR]
    if connection_file is not None:
        argv += ["--ro-bind", str(connection_file), KERNEL_RUN_DIR + "/connection.json"]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    argv += ["--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
             "--hostname", "sandbox", "--die-with-parent", "--new-session", "--chdir", KERNEL_RUN_DIR]
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
        read_only_paths: extra host paths the kernel may read: exact model / tokenizer folders (e.g. one
            ``hub/models--org--name``), never a home folder, the Hugging Face home or a token (refused).
            On a root host the kernel runs as another uid: these must be world-readable (``chmod -R o+rX``).
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
        self.read_only_paths = checked_read_only_paths(read_only_paths, self.extra_env)
        self.gpu = gpu
        self.python = python or sys.executable
        self._proc: subprocess.Popen | None = None
        self._tail = TailBuffer(64 * 1024)
        self._uid: int | None = None
        self._conn_dir: Path | None = None
        self._watchdog: TreeWatchdog | None = None
        self._cgroup: CgroupLeaf | None = None
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
        if self._uid is not None:
            chown_tree(self.workspace, self._uid, self._uid)

    def _socket_folder(self) -> Path:
        sdir = super()._socket_folder()  # rebuilt from scratch (the kernel is dead: its PID namespace died)
        if self._uid is not None:
            os.chown(sdir, self._uid, self._uid, follow_symlinks=False)
            os.chmod(sdir, 0o700)
        return sdir

    def _connection_file(self, sdir: Path) -> Path:
        if self._conn_dir is None:  # host-private (0700); the kernel sees a read-only bind of the file
            self._conn_dir = Path(tempfile.mkdtemp(prefix="iak-conn-"))
        return self._conn_dir / "connection.json"

    def _after_connection_file(self, conn: Path) -> None:
        os.chmod(conn, 0o400 if not self.unsafe else 0o600)
        if self._uid is not None:
            os.chown(conn, self._uid, self._uid, follow_symlinks=False)

    def _kernel_connection_path(self, conn: Path) -> str:
        return str(conn) if self.unsafe else KERNEL_RUN_DIR + "/connection.json"

    def _command(self, connection_file: Path) -> list[str]:
        # -P: the start folder is not put on sys.path; -s: no user site-packages (HOME is the workspace).
        return [self.python, "-P", "-s", "-m", "ipykernel_launcher", "-f", self._kernel_connection_path(connection_file),
                "--IPKernelApp.capture_fd_output=True", "--HistoryManager.hist_file=:memory:"]

    def _launch(self, connection_file: Path, info: dict[str, Any]) -> None:
        env = kernel_env(self.workspace, extra=self.extra_env, pythonpath=str(REPO_ROOT))
        cmd = self._command(connection_file)
        self._tail.clear()
        lim, gpu, unsafe = self.limits, self.gpu, self.unsafe
        self._cgroup = None if gpu else make_cgroup_leaf(lim.memory_bytes)
        procs_file = self._cgroup.procs_file if self._cgroup is not None else None
        seccomp_fd = None
        if unsafe:
            argv = cmd
            cwd = str(connection_file.parent)  # host-private and empty but for the connection file
        else:
            from sandbox.seccomp import filter_fd

            seccomp_fd = filter_fd()
            writable = [] if self._socket_dir is None or self._socket_dir.is_relative_to(self.workspace) \
                else [self._socket_dir]
            argv = bwrap_argv(cmd, self.workspace, self._uid, self.limits, self.read_only_paths, writable, self.gpu,
                              connection_file=connection_file, seccomp_fd=seccomp_fd, python=self.python)
            cwd = "/"

        def preexec() -> None:  # runs in the child before exec: plain system calls only
            if _KEYCTL is not None:  # a fresh, empty session keyring: the host's keys are not the kernel's
                _libc.syscall(_KEYCTL, _KEYCTL_JOIN_SESSION_KEYRING, None)
            fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
            os.write(fd, b"1000")
            os.close(fd)
            if procs_file is not None:
                fd = os.open(procs_file, os.O_WRONLY)
                os.write(fd, b"0")
                os.close(fd)
            if unsafe:
                if not gpu:
                    resource.setrlimit(resource.RLIMIT_AS, (lim.memory_bytes, lim.memory_bytes))
                resource.setrlimit(resource.RLIMIT_FSIZE, (lim.file_size_bytes, lim.file_size_bytes))
                resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
                if lim.cpu_seconds:
                    resource.setrlimit(resource.RLIMIT_CPU, (lim.cpu_seconds, lim.cpu_seconds + 10))

        rfd, wfd = os.pipe()  # the kernel's fd 1 and 2: a pipe whose tail the host keeps, never a host file
        try:
            self._proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=wfd,
                                          stderr=wfd, start_new_session=True, preexec_fn=preexec,
                                          pass_fds=(seccomp_fd,) if seccomp_fd is not None else ())
        except (OSError, subprocess.SubprocessError) as e:
            os.close(rfd)
            if self._cgroup is not None:
                self._cgroup.remove()
            raise KernelStartError(f"could not launch the kernel: {e}", fix=INSTALL_HINT) from e
        finally:
            os.close(wfd)
            if seccomp_fd is not None:
                os.close(seccomp_fd)
        drain_to_tail(rfd, self._tail)
        self._watchdog = None if gpu else TreeWatchdog(self._proc.pid, lim.memory_bytes, self._host_note)

    def _alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _exit_reason(self) -> str:
        if self._proc is None:
            return "never started"
        reason = describe_exit(self._proc.poll())
        if self._watchdog is not None and self._watchdog.kills:
            reason += f"; {self._watchdog.kills[-1]}"
        if self._cgroup is not None and self._cgroup.oom_kills():
            reason += f"; the cgroup memory limit ({self.limits.memory_gb:g} GiB) OOM-killed a process"
        tail = self._log_tail()
        return reason + (f"; last output: {tail}" if tail else "")

    def _booted(self) -> None:
        self._tail.clear()  # the start-up banner is noise in a death report

    def _log_tail(self, n: int = 400) -> str:
        return self._tail.text()[-n:].strip().replace("\n", " | ")

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
        if self._watchdog is not None:
            self._watchdog.stop()
        if self._cgroup is not None:
            self._cgroup.remove()
            self._cgroup = None
        if self._conn_dir is not None:  # a fresh one per launch
            remove_tree(self._conn_dir)
            self._conn_dir = None
