"""Attack suite: every case asserts the attack FAILS and the sandbox still runs ``1 + 1`` afterwards.

Most cases share one isolated sandbox (module fixture); the ones that kill or flood the kernel's
processes get their own. Run only these: ``pytest -m security``.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from pathlib import Path

import pytest

from sandbox import SandboxLimits
from tests.security.conftest import LIMITS, REPO, SECRET, alive, only, run

pytestmark = [pytest.mark.security]

HOST_HOME = Path.home()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def canary(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("canary")
    (d / "canary.txt").write_text("do not delete")
    d.chmod(0o755)  # readable by the kernel's uid: the attack must fail for want of write access, not sight
    return d


@pytest.fixture(scope="module")
def sb(make_box, canary):
    with make_box(setup_code=["import os, socket, subprocess, signal, sys"], read_only_paths=[canary]) as box:
        yield box


# ---- network --------------------------------------------------------------------------------------

def test_tcp_to_host_loopback_server(sb):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    port = srv.getsockname()[1]
    assert socket.create_connection(("127.0.0.1", port), timeout=3)  # reachable from the host itself
    srv.accept()[0].close()
    r = run(sb, f"socket.create_connection(('127.0.0.1', {port}), timeout=3)")
    srv.settimeout(0.3)
    accepted = _accept(srv)
    srv.close()
    assert r.status == "error" and r.error_name == "ConnectionRefusedError"
    assert accepted is None  # the host server never saw a connection from the kernel
    alive(sb)


def _accept(srv):
    try:
        return srv.accept()
    except TimeoutError:
        return None


def test_dns_lookup(sb):
    r = run(sb, "socket.getaddrinfo('example.com', 443)")
    assert r.status == "error" and r.error_name == "gaierror"
    alive(sb)


def test_socket_to_public_address(sb):
    r = run(sb, "socket.create_connection(('1.1.1.1', 80), timeout=3)")
    assert r.status == "error" and r.error_name in ("OSError", "TimeoutError") and "unreachable" in r.error_value
    alive(sb)


def test_curl_subprocess(sb):
    # curl where the sandbox has it (the host), else a python child (the docker image has no curl)
    r = run(sb, "import shutil\n"
                "cmd = ['curl', '-sS', '-m', '3', 'http://1.1.1.1/'] if shutil.which('curl') else [sys.executable, '-c', "
                "\"import urllib.request; urllib.request.urlopen('http://1.1.1.1/', timeout=3)\"]\n"
                "p = subprocess.run(cmd, capture_output=True, text=True)\n"
                "p.returncode, p.stderr")
    code, err = eval(r.result)
    assert code != 0 and ("resolve" in err or "connect" in err.lower() or "unreachable" in err.lower())
    alive(sb)


def test_only_a_private_loopback_interface(sb):
    assert run(sb, "socket.if_nameindex()").result == "[(1, 'lo')]"
    alive(sb)


def test_host_daemon_sockets_hidden(sb, backend):
    r = run(sb, "import stat\n"
                "socks = [os.path.join(d, f) for d, _, fs in os.walk('/run') for f in fs\n"
                "         if stat.S_ISSOCK(os.lstat(os.path.join(d, f)).st_mode)]\n"
                "os.listdir('/run'), socks, os.path.exists('/var/run/docker.sock')")
    listing, socks, docker_sock = eval(r.result)
    assert socks == [] and not docker_sock
    if backend == "local":  # only the sandbox's own read-only folder (docker: the image's own, socket-free /run)
        assert set(listing) <= {"interp-agent"}
    alive(sb)


# ---- filesystem -----------------------------------------------------------------------------------

def test_write_to_repo(sb, backend):
    target = REPO / "pwned.txt"
    r = run(sb, f"open({str(target)!r}, 'w').write('x')")
    # local: the checkout is bound read-only; docker: the host's checkout is not in the container at all
    expected = ("OSError", "PermissionError") + (("FileNotFoundError",) if backend == "docker" else ())
    assert r.status == "error" and r.error_name in expected
    assert not target.exists()
    alive(sb)


def test_modify_installed_tools_source(sb):
    src = REPO / "tools" / "components.py"
    before = _sha(src)
    r = run(sb, "import importlib.util, pathlib\n"
                "p = pathlib.Path(importlib.util.find_spec('tools').origin).parent / 'components.py'\n"
                "p.write_text(p.read_text() + '\\nPWNED = 1\\n')")
    assert r.status == "error"
    assert _sha(src) == before
    alive(sb)


def test_write_to_host_home(sb):
    r = run(sb, f"open({str(HOST_HOME / 'pwned')!r}, 'w').write('x')")
    assert r.status == "error"
    assert not (HOST_HOME / "pwned").exists()
    assert run(sb, "import os; os.environ['HOME'] == os.getcwd()").result == "True"  # $HOME is the workspace
    alive(sb)


def test_write_to_etc(sb):
    r = run(sb, "open('/etc/pwned', 'w').write('x')")
    assert r.status == "error" and r.error_name in ("OSError", "PermissionError")
    assert not Path("/etc/pwned").exists()
    alive(sb)


def test_rm_canary_outside_workspace(sb, canary):
    # both backends show read_only_paths (docker: bound read-only at the same path in the container)
    r = run(sb, f"os.path.exists({str(canary / 'canary.txt')!r}), "
                f"os.system('rm -f {canary / 'canary.txt'} 2>/dev/null')")
    visible, code = eval(r.result)
    assert visible and code != 0  # it could see the file, and rm failed
    assert (canary / "canary.txt").read_text() == "do not delete"
    alive(sb)


def test_read_parent_secrets_from_env(sb):
    r = run(sb, "import glob\nhits = [k for k, v in os.environ.items() if 'canary' in v]\n"
                "for p in glob.glob('/proc/[0-9]*/environ'):\n"
                "    try:\n"
                "        hits += [p] if b'sk-ant-canary' in open(p, 'rb').read() else []\n"
                "    except OSError:\n"
                "        pass\n"
                "hits, 'ANTHROPIC_API_KEY' in os.environ, 'HF_TOKEN' in os.environ")
    assert r.result == "([], False, False)"
    alive(sb)


def test_proc_1_environ(sb, backend):
    r = run(sb, "open('/proc/1/environ', 'rb').read()")
    assert r.status == "error" or SECRET not in (r.result or "")
    if backend == "local":
        assert r.error_name == "PermissionError"  # pid 1 is bubblewrap's init, owned by another uid
    else:  # pid 1 is the container's init, started with the kernel's own allow-listed environment
        assert r.status == "ok" and "HOME=/workspace" in r.result and "ANTHROPIC" not in r.result
    alive(sb)


def test_read_ssh_and_home_dotfiles(sb, backend):
    r = run(sb, f"sorted(os.listdir({str(HOST_HOME)!r}))")
    if backend == "docker" and r.status == "error":  # the image's own root-only home, not the host's
        assert r.error_name in ("PermissionError", "FileNotFoundError")
    else:
        listing = eval(r.result)
        assert ".ssh" not in listing and ".gitconfig" not in listing and ".claude" not in listing
    for name in (".ssh/id_rsa", ".ssh/id_ed25519", ".gitconfig", ".bashrc"):
        r = run(sb, f"open({str(HOST_HOME / name)!r}).read()")
        assert r.status == "error" and r.error_name in ("FileNotFoundError", "PermissionError"), name
    alive(sb)


def test_read_etc_shadow(sb):
    r = run(sb, "open('/etc/shadow').read()")
    assert r.status == "error" and r.error_name == "PermissionError"
    alive(sb)


def test_symlink_escape_from_workspace(sb):
    src = REPO / "tools" / "components.py"
    before = _sha(src)
    r = run(sb, f"os.symlink({str(src)!r}, 'link_to_repo')\nopen('link_to_repo', 'a').write('PWNED')")
    assert r.status == "error"
    r = run(sb, f"os.symlink({str(HOST_HOME / '.gitconfig')!r}, 'link_to_home')\nopen('link_to_home').read()")
    assert r.status == "error" and r.error_name in ("FileNotFoundError", "PermissionError")
    assert _sha(src) == before
    alive(sb)


def test_planted_link_in_outputs_is_not_followed_by_host(sb, canary):
    before = sorted(os.listdir(canary))
    r = run(sb, "import shutil\nshutil.rmtree('outputs', ignore_errors=True)\n"
                f"os.symlink({str(canary)!r}, 'outputs')\n"
                "from IPython.display import HTML, display\ndisplay(HTML('<b>x</b>'))")
    assert r.outputs == []  # the host refused to write through the link
    assert sorted(os.listdir(canary)) == before
    r = run(sb, "os.unlink('outputs')\nfrom IPython.display import HTML, display\ndisplay(HTML('<b>x</b>'))")
    assert len(r.outputs) == 1 and r.outputs[0].path.read_text() == "<b>x</b>"
    alive(sb)


def test_planted_link_at_kernel_folder_then_crash(sb, canary):
    """The host rewrites ``.kernel/`` on restart: a link planted there must be removed, never followed."""
    before = {p.name: p.stat().st_mode for p in canary.iterdir()}
    r = run(sb, "import shutil\nshutil.rmtree('.kernel', ignore_errors=True)\n"
                f"os.symlink({str(canary)!r}, '.kernel')\nos._exit(1)")
    assert r.status == "died" and r.restarted
    assert {p.name: p.stat().st_mode for p in canary.iterdir()} == before
    assert not (sb.workspace / ".kernel").is_symlink()
    alive(sb)


def test_socket_files_swapped_for_links_to_a_host_socket(sb):
    """The kernel replaces its ipc socket files by links to a host Unix socket, then drops its connections:
    the host's client must not reconnect through the links (it never reconnects)."""
    import tempfile

    evil_dir = tempfile.mkdtemp(prefix="evil-", dir="/tmp")
    evil = os.path.join(evil_dir, "s")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(evil)
    srv.listen(16)
    srv.settimeout(1.5)
    try:
        r = run(sb, "import glob, time\n"
                    "for p in glob.glob('.kernel/k-*'):\n"
                    f"    os.unlink(p); os.symlink({evil!r}, p)\n"
                    "os.kill(os.getpid(), signal.SIGKILL)")
        assert r.status == "died" and r.restarted
        assert _accept(srv) is None  # the host never connected to the planted target
    finally:
        srv.close()
        os.unlink(evil)
        os.rmdir(evil_dir)
    assert sb.kc.shell_channel.socket.getsockopt(__import__("zmq").RECONNECT_IVL) == -1
    alive(sb)


def test_rich_output_flood_is_capped_on_the_host(sb):
    """The host writes rich outputs itself (no RLIMIT_FSIZE there): their size and number are capped."""
    r = run(sb, "from IPython.display import HTML, display\n"
                "display(HTML('<p>' + 'x' * (3 << 19) + '</p>'))\n"
                "for i in range(50):\n    display(HTML(f'<i>{i}</i>'))")
    assert r.status == "ok" and len(r.outputs) == LIMITS.output_files
    assert all(o.bytes < LIMITS.output_file_bytes for o in r.outputs)
    assert "dropped (limit 1048576)" in r.stderr and "beyond 8 in one cell" in r.stderr
    alive(sb)


def test_file_of_10_gb(sb):
    r = run(sb, "with open('big.bin', 'wb') as f:\n"
                "    chunk = b'\\0' * (64 << 20)\n"
                "    for _ in range(160):\n"
                "        f.write(chunk)")
    assert r.status == "error" and "File too large" in r.error_value
    size = (sb.workspace / "big.bin").stat().st_size
    assert size <= LIMITS.file_size_bytes
    run(sb, "os.remove('big.bin')")
    alive(sb)


def test_fill_tmp(sb):
    r = run(sb, "n = 0\nwith open('/tmp/fill', 'wb') as f:\n"
                "    while n < (1 << 30):\n"
                "        n += f.write(b'\\0' * (8 << 20))\n"
                "        f.flush()")
    assert r.status == "error" and "No space left" in r.error_value
    assert not Path("/tmp/fill").exists()  # the kernel's /tmp is private
    run(sb, "os.remove('/tmp/fill')")
    alive(sb)


def test_fill_dev_shm_and_semaphores_work(sb):
    r = run(sb, "with open('/dev/shm/fill', 'wb') as f:\n"
                "    for _ in range(128):\n"
                "        f.write(b'\\0' * (8 << 20)); f.flush()")
    assert r.status == "error" and "No space left" in r.error_value
    run(sb, "os.remove('/dev/shm/fill')")
    r = run(sb, "import multiprocessing\nlock = multiprocessing.Lock()\nlock.acquire(), lock.release()")
    assert r.status == "ok", r.summary()  # a private /dev/shm, but a working one
    alive(sb)


# ---- resources ------------------------------------------------------------------------------------

def test_memory_bomb(sb):
    r = run(sb, "import numpy\nhog = []\nwhile True:\n    hog.append(numpy.empty(256 << 20, dtype=numpy.uint8))")
    assert r.status == "error" and r.error_name == "MemoryError"
    run(sb, "del hog")
    r = run(sb, "x = bytearray(50 << 30)")
    assert r.status == "error" and r.error_name == "MemoryError"
    alive(sb)


def test_raise_rlimits(sb, backend):
    r = run(sb, "import resource\nsoft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)\n"
                "resource.setrlimit(resource.RLIMIT_FSIZE, (hard + 1, hard + 1))")
    assert r.status == "error" and r.error_name == "ValueError"
    only(backend, "local", reason="memory and processes are capped by the container's cgroup (see "
                                  "test_memory_bomb, test_fork_bomb), not by RLIMIT_AS / RLIMIT_NPROC")
    r = run(sb, "import resource\n"
                "resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))")
    assert r.status == "error" and r.error_name == "ValueError"
    r = run(sb, "import resource\nsoft, hard = resource.getrlimit(resource.RLIMIT_NPROC)\n"
                "resource.setrlimit(resource.RLIMIT_NPROC, (hard + 1, hard + 1))")
    assert r.status == "error" and r.error_name == "ValueError"
    r = run(sb, "import resource\nresource.getrlimit(resource.RLIMIT_AS)[1]")
    assert int(r.result) == LIMITS.memory_bytes
    alive(sb)


def test_setuid_and_mount(sb):
    r = run(sb, "os.setuid(0)")
    assert r.status == "error" and r.error_name == "PermissionError"
    r = run(sb, "os.system('mount -t tmpfs none /mnt 2>/dev/null')")
    assert r.result != "0"
    alive(sb)


def test_infinite_loop(sb):
    r = run(sb, "while True:\n    pass", timeout=1.5)
    assert r.status == "timeout" and not r.restarted
    alive(sb)


def test_infinite_output(sb):
    r = run(sb, "while True:\n    print('x' * 1000)", timeout=60)
    assert r.status == "error" and r.truncated and "interrupted" in r.error_value
    assert len(r.stdout) < LIMITS.output_chars + 200
    alive(sb)


def test_fast_print_loop_keeps_the_connection(make_box):
    """ipykernel batches stdout every 0.2 s, however large; the bootstrap's stream cap flushes past 1 MiB so no
    batch outgrows message_bytes (2 MiB here) and breaks the connection. Checks the kernel's own ipykernel
    (the docker image's, too) takes the hook, on the second cell as on the first (IPython re-binds write)."""
    small = LIMITS.model_copy(update={"message_bytes": 2 << 20, "output_file_bytes": 1024, "result_bytes": 1024,
                                      "flood_chars": 200_000_000})
    with make_box(limits=small, setup_code=["import sys"]) as box:
        for _ in range(2):
            r = run(box, "line = 'x' * 1000 + '\\n'\nfor _ in range(30_000):\n    sys.stdout.write(line)\n"
                         "_result = type(sys.stdout)._sandbox_capped", timeout=120)
            assert (r.status, r.data, r.restarted) == ("ok", True, False), r.summary()
            assert r.truncated and len(r.stdout) < small.output_chars + 200
        alive(box)


def test_ignores_sigint_never_returns(sb):
    r = run(sb, "signal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass", timeout=1.5)
    assert r.status == "timeout" and r.restarted
    alive(sb)


# ---- processes ------------------------------------------------------------------------------------

def test_os_exit(sb):
    r = run(sb, "os._exit(0)")
    assert r.status == "died" and r.restarted
    alive(sb)


def test_kill_9_own_kernel(sb):
    r = run(sb, "os.kill(os.getpid(), signal.SIGKILL)")
    assert r.status == "died" and "SIGKILL" in r.error_value
    alive(sb)


def test_segfault(sb):
    r = run(sb, "import ctypes\nctypes.string_at(0)")
    assert r.status == "died" and r.restarted
    alive(sb)


def _outside_pids(sb, backend) -> str:
    """PIDs outside the sandbox the kernel might aim at: the host process, and for ``local`` bubblewrap's init
    and the kernel's parent. A container's pid 1 and the kernel's parent are its own init (docker-init, as the
    kernel's uid, inside the container): stopping it only stops the sandbox, so only the host is aimed at."""
    if backend == "docker":
        r = run(sb, "open('/proc/1/cmdline', 'rb').read().split(b'\\0')[0], os.getppid()")
        assert r.result == "(b'/sbin/docker-init', 1)", r.result
        return f"({os.getpid()},)"
    return f"(os.getppid(), 1, {os.getpid()})"


def test_signals_to_parent_and_host(sb, backend):
    pids = _outside_pids(sb, backend)
    r = run(sb, f"out = []\nfor pid in {pids}:\n"
                "    try:\n        os.kill(pid, signal.SIGTERM); out.append('sent')\n"
                "    except OSError as e:\n        out.append(type(e).__name__)\nout")
    assert r.status == "ok" and "sent" not in r.result, r.result
    alive(sb)


def test_ptrace_host_process(sb, backend):
    pids = _outside_pids(sb, backend)
    r = run(sb, "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                f"[libc.ptrace(16, pid, 0, 0) for pid in {pids}]")  # PTRACE_ATTACH
    assert r.status == "ok" and set(eval(r.result)) == {-1}, r.result
    alive(sb)


def test_host_processes_invisible(sb):
    r = run(sb, "sorted(int(p) for p in os.listdir('/proc') if p.isdigit())")
    assert len(eval(r.result)) <= 4  # bwrap's init + the kernel (+ the listing's own helpers)
    alive(sb)


def _host_pids_with(token: str) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if token.encode() in (p / "cmdline").read_bytes():
                    pids.append(int(p.name))
            except OSError:
                pass
    return pids


def test_background_process_reaped_after_shutdown(make_box, tmp_path):
    token = f"{time.time_ns() % 10**9}.5"
    with make_box(tmp_path / "ws") as box:
        r = box.execute("import subprocess, os\n"
                        f"p = subprocess.Popen(['sleep', '{token}'], start_new_session=True)\n"
                        f"q = subprocess.Popen(['sh', '-c', 'nohup sleep {token} >/dev/null 2>&1 &'])\n"
                        "q.wait()\nopen('bg.pid', 'w').write(str(p.pid))")
        assert r.status == "ok" and (tmp_path / "ws" / "bg.pid").read_text().isdigit()
        assert len(_host_pids_with(token)) >= 2  # they really run...
        alive(box)
    deadline = time.monotonic() + 5
    while _host_pids_with(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _host_pids_with(token) == []  # ...and are gone after shutdown


def test_fork_bomb(make_box, tmp_path):
    limits = SandboxLimits(processes=48, memory_gb=2, interrupt_grace_s=1.0)
    with make_box(tmp_path / "ws", limits=limits) as box:
        uid = box.uid
        r = box.execute("import os\nos.system(\"bash -c ':(){ :|:& };:' 2>/dev/null\")", timeout=10)
        assert r.status in ("ok", "timeout")
        time.sleep(1)
        if uid is not None:  # its processes are capped by RLIMIT_NPROC
            assert len(_host_pids_of_uid(uid)) <= limits.processes + 2
        alive(box)
    deadline = time.monotonic() + 5
    while uid is not None and _host_pids_of_uid(uid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if uid is not None:
        assert _host_pids_of_uid(uid) == []


def _host_pids_of_uid(uid: int) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                status = (p / "status").read_text()
            except OSError:
                continue
            line = next((ln for ln in status.splitlines() if ln.startswith("Uid:")), "")
            if line.split()[1:2] == [str(uid)]:
                pids.append(int(p.name))
    return pids


def test_cpu_time_limit_kills_and_restarts(make_box, tmp_path):
    limits = SandboxLimits(cpu_seconds=3, interrupt_grace_s=1.0)
    with make_box(tmp_path / "ws", limits=limits) as box:
        r = box.execute("import threading\n"
                        "def spin():\n    while True:\n        pass\n"
                        "threading.Thread(target=spin, daemon=True).start()\n"  # burns CPU after the cell ends
                        "import time\ntime.sleep(60)", timeout=60)
        assert r.status == "died" and "SIGXCPU" in r.error_value and r.restarted
        alive(box)
