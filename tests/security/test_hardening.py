"""Issue 16: the escapes and host failures an outside attack run found, one test (or more) per item, plus
other cases of the same classes. Each test names its item; the README's sandbox section counts them.

Escapes: 1 keyrings (and the seccomp filter), 2 HF token, 3 home folder, 4 host files grown from inside,
5 ``report --execute``, 6 reports following planted links. Host failures: 7 the result hand-back,
8 forged messages, 9 the connection file, 10 deep trees, 11 planted start-up files, 12 the result size,
13 error text size, 14 output floods, 15 the memory of the whole process tree.
"""

from __future__ import annotations

import base64
import ctypes
import errno
import json
import os
import platform
import time
from pathlib import Path

import pytest

from sandbox import SandboxLimits
from sandbox import local as local_mod
from tests.security.conftest import LIMITS, SECRET, alive, host_peak, run

pytestmark = [pytest.mark.security]

X86 = platform.machine() == "x86_64"
needs_local = pytest.mark.skipif(local_mod.isolation_problem() is not None,
                                 reason=f"no local isolation here ({local_mod.isolation_problem()})")


@pytest.fixture(scope="module")
def sb(make_box):
    with make_box(setup_code=["import os, sys, signal, ctypes"]) as box:
        yield box


# ---- 1. kernel keyrings, and the syscall filter ---------------------------------------------------------

@pytest.fixture
def host_session_key():
    """A session keyring in the host process holding a key with the canary (as any pam login has)."""
    if not X86:
        pytest.skip("keyctl numbers are x86_64's here")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(250, 1, b"iak-test-session") < 0:  # KEYCTL_JOIN_SESSION_KEYRING
        pytest.skip(f"cannot create a session keyring here (errno {ctypes.get_errno()})")
    payload = SECRET.encode()
    kid = libc.syscall(248, b"user", b"iak-canary", payload, len(payload), -3)  # add_key to the session keyring
    assert kid > 0, ctypes.get_errno()
    yield kid
    libc.syscall(250, 3, kid)  # KEYCTL_REVOKE
    libc.syscall(250, 1, None)  # a fresh anonymous session keyring for the rest of the tests


def test_item01_host_session_keyring_is_not_the_kernels(make_box, host_session_key):
    with make_box() as box:
        r = run(box, "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                     "try:\n    listed = 'iak-canary' in open('/proc/keys').read()\nexcept OSError:\n    listed = False\n"
                     "buf = ctypes.create_string_buffer(512)\n"
                     f"n = libc.syscall(250, 11, {host_session_key}, buf, 512)\n"  # KEYCTL_READ
                     "found = libc.syscall(250, 10, -3, b'user', b'iak-canary', 0)\n"  # KEYCTL_SEARCH the session
                     "_result = {'listed': listed, 'read': n, 'value': buf.value.decode(errors='replace'), "
                     "'search': found}")
        assert r.status == "ok", r.summary()
        assert SECRET not in json.dumps(r.data) and SECRET not in r.stdout
        assert r.data["listed"] is False and r.data["read"] == -1 and r.data["search"] == -1
        alive(box)


@pytest.mark.skipif(not X86, reason="syscall numbers are x86_64's")
def test_item01_syscalls_a_kernel_never_needs_are_filtered(sb, backend):
    # both backends: docker's kernel loads the same filter onto itself, on top of the engine's profile
    calls = {  # name: (number, args) — arguments that would *not* fail for any other reason than EPERM/ENOSYS
        "keyctl": (250, (0, -3, 1)), "add_key": (248, (b"user", b"k", b"v", 1, -3)),
        "request_key": (249, (b"user", b"k", None, 0)), "bpf": (321, (0, None, 0)),
        "perf_event_open": (298, (None, 0, -1, -1, 0)), "io_uring_setup": (425, (1, None)),
        "userfaultfd": (323, (0,)), "unshare_user": (272, (0x10000000,)), "unshare_mount": (272, (0x00020000,)),
        "setns": (308, (-1, 0)), "clone3": (435, (None, 0)), "process_vm_readv": (310, (1, None, 0, None, 0, 0)),
        "shmget": (29, (0, 1 << 20, 0o1600)),  # IPC_PRIVATE, 1 MiB, IPC_CREAT | 0600: memory no RSS counts
    }
    code = ("libc = ctypes.CDLL(None, use_errno=True)\nout = {}\n"
            f"for name, (nr, args) in {calls!r}.items():\n"
            "    ctypes.set_errno(0)\n"
            "    rc = libc.syscall(nr, *args)\n"
            "    out[name] = (rc, ctypes.get_errno())\n"
            "_result = out")
    r = run(sb, code)
    assert r.status == "ok", r.summary()
    for name, (rc, err) in r.data.items():
        assert rc == -1 and err in (errno.EPERM, errno.ENOSYS), (name, rc, errno.errorcode.get(err))
    r = run(sb, "import subprocess\nsubprocess.run(['unshare', '-U', '-r', 'true'], capture_output=True).returncode")
    assert r.result != "0"
    alive(sb)


# ---- 2. the Hugging Face token ---------------------------------------------------------------------------

@needs_local
def test_item02_hf_token_beside_the_hub_cache_is_never_bound(tmp_path, monkeypatch):
    from agent.config import KernelOptions
    from agent.kernel import make_kernel, model_read_paths

    hf = tmp_path / "hf"
    model = hf / "hub" / "models--org--tiny" / "snapshots" / "abc"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (hf / "token").write_text(SECRET)
    for d in (tmp_path, hf, hf / "hub", *model.parents):
        if str(d).startswith(str(tmp_path)):
            d.chmod(0o755)
    (hf / "token").chmod(0o644)
    monkeypatch.setenv("HF_HOME", str(hf))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    ro = model_read_paths("org/tiny")
    assert ro == [str((hf / "hub" / "models--org--tiny").resolve())]  # exactly the model's folder
    with make_kernel(tmp_path / "ws", [], KernelOptions(model="org/tiny")) as box:
        r = run(box, f"import os\nos.listdir({str(model)!r}), os.path.exists({str(hf / 'token')!r})")
        assert r.result == "(['config.json'], False)", r.summary()
        r = run(box, f"open({str(hf / 'token')!r}).read()")
        assert r.status == "error" and SECRET not in r.summary(10_000)


@pytest.mark.parametrize("kind", ["local", "docker"])  # refused before any kernel or engine is reached
def test_item02_item03_credential_folders_are_refused_as_read_only_paths(tmp_path, monkeypatch, kind):
    from sandbox import SandboxError, make_sandbox

    if kind == "local" and local_mod.isolation_problem() is not None:
        pytest.skip(f"no bubblewrap here: {local_mod.isolation_problem()}")
    hf = tmp_path / "hf"
    hf.mkdir()
    monkeypatch.setenv("HF_HOME", str(hf))
    for bad in (Path.home(), hf, hf / "token", Path("/")):
        with pytest.raises(SandboxError, match="refusing to show"):
            make_sandbox(kind, workspace=tmp_path / "ws", read_only_paths=[bad])


# ---- 3. the home folder ----------------------------------------------------------------------------------

@needs_local
def test_item03_home_folder_on_the_hosts_sys_path_is_not_bound(tmp_path, monkeypatch):
    """A host started with ``python -m`` from the home folder has the home first on sys.path."""
    from sandbox import make_sandbox

    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text(SECRET)
    for d in (tmp_path, home, home / ".ssh"):
        d.chmod(0o755)
    (home / ".ssh" / "id_ed25519").chmod(0o644)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.syspath_prepend(str(home))
    with make_sandbox(workspace=tmp_path / "ws", limits=LIMITS) as box:
        r = run(box, f"import os\nos.path.exists({str(home / '.ssh')!r}), sorted(os.listdir({str(home)!r})) "
                     f"if os.path.isdir({str(home)!r}) else None")
        assert r.status == "ok" and eval(r.result)[0] is False, r.summary()
        r = run(box, f"open({str(home / '.ssh' / 'id_ed25519')!r}).read()")
        assert r.status == "error" and SECRET not in r.summary(10_000)


# ---- 4. host files grown from inside ---------------------------------------------------------------------

def test_item04_kernel_fds_1_and_2_are_no_host_file(sb):
    r = run(sb, "import stat, sys\nchunk = b'x' * (4 << 20)\n"
                "fds = sorted({1, 2, sys.stdout.fileno(), sys.stderr.fileno(), sys.__stdout__.fileno(), "
                "sys.__stderr__.fileno()})\n"
                "for fd in [f for f in fds if f not in (1, 2)]:  # 1 and 2 are ipykernel's capture pipes\n"
                "    for _ in range(8):\n"
                "        try:\n            os.write(fd, chunk)\n        except OSError:\n            break\n"
                "info = []\n"
                "for fd in fds:\n"
                "    st = os.fstat(fd)\n"
                "    info.append((fd, stat.S_ISREG(st.st_mode), st.st_size, os.readlink(f'/proc/self/fd/{fd}')))\n"
                "_result = info", timeout=60)
    assert r.status == "ok", r.summary()
    ws = str(sb._kernel_path(sb.workspace))
    for fd, regular, size, target in r.data:
        # a regular file may only be one inside the workspace (the kernel's own, capped by RLIMIT_FSIZE)
        assert not regular or (target.startswith(ws + "/") and size <= LIMITS.file_size_bytes), (fd, size, target)
    alive(sb)


# ---- 5. report --execute ---------------------------------------------------------------------------------

@needs_local
def test_item05_report_execute_runs_logged_code_in_the_sandbox(tmp_path):
    import nbformat

    from agent.report.model import CellRecord, RunSummary
    from agent.report.notebook import build_notebook, execute_notebook

    pwned = tmp_path / "pwned"
    code = ("import os, pathlib\nprint('KEY=' + str(os.environ.get('ANTHROPIC_API_KEY')))\n"
            f"try:\n    pathlib.Path({str(pwned)!r}).write_text('x')\nexcept OSError as e:\n    print('refused', e)")
    s = RunSummary(run_id="r", question="q", cells=[CellRecord(seq=1, call="run_code", code=code,
                                                               result={"status": "ok"})])
    path = tmp_path / "report.ipynb"
    nbformat.write(build_notebook(s), str(path))
    nb = execute_notebook(path, timeout_s=120)
    text = json.dumps(nb)
    assert "KEY=None" in text and SECRET not in text
    assert not pwned.exists()


# ---- 6. reports follow no link the run planted -------------------------------------------------------------

def test_item06_reports_do_not_embed_files_the_kernel_linked(tmp_path):
    from agent.report.model import CellRecord, RunSummary
    from agent.report.notebook import build_notebook
    from agent.report.summary import collect_figures

    host_only = tmp_path / "host-only.png"
    host_only.write_bytes(b"\x89PNG\r\n" + SECRET.encode())
    run_dir = tmp_path / "run"
    outs = run_dir / "workspace" / "outputs"
    outs.mkdir(parents=True)
    (outs / "out-1.png").symlink_to(host_only)  # a figure replaced by a link
    (run_dir / "workspace" / "linked").symlink_to(outs)  # a folder reached through a link
    big = outs / "out-3.png"
    with open(big, "wb") as f:  # a sparse 1 GiB "figure"
        f.truncate(1 << 30)
    os.mkfifo(outs / "out-4.png")  # a FIFO: reading it would hang the report
    rels = ["workspace/outputs/out-1.png", "workspace/linked/out-1.png", "workspace/outputs/out-3.png",
            "workspace/outputs/out-4.png", "../host-only.png", str(host_only)]
    cells = [CellRecord(seq=1, call="run_code", code="x", result={"status": "ok", "outputs": rels})]
    b64 = base64.b64encode(host_only.read_bytes()).decode()
    nb = build_notebook(RunSummary(run_id="r", question="q", run_dir=str(run_dir), cells=cells))
    assert b64 not in json.dumps(nb) and "image/png" not in json.dumps(nb)
    figs, notes = collect_figures(run_dir, cells)
    assert figs == [] and sum("skipped" in n for n in notes) == len(rels)
    (outs / "out-2.png").write_bytes(b"\x89PNG real")  # a plain file is still embedded
    figs, _ = collect_figures(run_dir, [CellRecord(seq=2, call="run_code", code="x",
                                                   result={"status": "ok", "outputs": ["workspace/outputs/out-2.png"]})])
    assert len(figs) == 1


# ---- 7. the result hand-back helper redefined ----------------------------------------------------------------

def test_item07_redefined_result_helper(make_box):
    with make_box() as box:
        for ret in ("12345", "['x']", "'[' * 100000", "'{\"a\": ' * 5000", "'\"' + 'x' * 5_000_000 + '\"'",
                    "type('S', (str,), {'__repr__': lambda s: 1/0})('x')"):
            r = run(box, f"def __sandbox_take_result__(*a, **k):\n    return {ret}\n_result = 1")
            assert r.status in ("ok", "error") and r.data is None, (ret, r.summary())  # data, never a host crash
        box.restart()  # the last helper breaks every later cell of this kernel (its own doing)
        alive(box)


def test_item07_a_forged_hand_back_is_read_in_linear_memory(backend):
    # 16 MB of concatenated string literals: ast.literal_eval of it took ~500 MiB of host memory; the hand-back
    # is now one JSON string literal read by json.loads, and this text is refused before it is parsed
    res = host_peak(backend, "class F:\n    def __repr__(self):\n        return \"'x'\" + \" 'x'\" * 4_000_000\n"
                             "def __sandbox_take_result__(*a, **k):\n    return F()\n_result = 1", limits=LIMITS)
    assert res["alive"] and res["status"] == "ok" and "hand-back" in res["stderr"], res
    assert res["peak_mb"] - res["base_mb"] < 150, res


def test_item07_replay_verify_survives_a_failing_sandbox(tmp_path_factory):
    from agent.replay import verify
    from tests.test_replay_helpers import recorded_run_dir

    run_dir = recorded_run_dir(tmp_path_factory)

    class Broken:
        def shutdown(self):
            pass

        def execute(self, code, timeout=None):
            raise TypeError("the kernel sent something the host could not parse")

    rep = verify(run_dir, sandbox_factory=lambda ws, setup, unsafe: Broken())
    assert rep.cells and rep.mismatches  # every cell reported, nothing raised


# ---- 8. forged messages -------------------------------------------------------------------------------------

FORGE = ("k = get_ipython().kernel\n"
         "def forge(kind, content):\n"
         "    k.session.send(k.iopub_socket, kind, content, parent=k.get_parent(), ident=k._topic(kind))\n")


@pytest.mark.parametrize("attack", [
    "from IPython.display import publish_display_data\npublish_display_data({'image/png': '!!!not base64!!!'})",
    "from IPython.display import publish_display_data\npublish_display_data({'image/png': 12, 'text/html': None})",
    FORGE + "forge('error', {'ename': {'a': 1}, 'evalue': ['x'] * 3, 'traceback': 5})",
    FORGE + "forge('error', {'ename': 'E', 'evalue': 'v', 'traceback': [1, None, {'x': 2}]})",
    FORGE + "forge('execute_input', {'code': 1, 'execution_count': 'seven'})",
    FORGE + "forge('stream', {'name': 'stdout', 'text': 12345})",
    FORGE + "forge('display_data', {'data': [1, 2], 'metadata': 3})",
    FORGE + "forge('execute_result', {'data': {'text/plain': {'x': 1}}, 'execution_count': None})",
    FORGE + "forge('stream', ['not', 'a', 'dict'])",
], ids=["bad-base64", "non-text-mime", "error-types", "traceback-items", "execution-count", "stream-text",
        "data-list", "plain-dict", "content-list"])
def test_item08_forged_messages_come_back_as_data(sb, attack):
    r = run(sb, attack)
    assert r.status in ("ok", "error"), r.summary()
    assert isinstance(r.stdout, str) and isinstance(r.error_value, str | None)
    assert all(isinstance(t, str) for t in r.traceback)
    assert r.execution_count is None or isinstance(r.execution_count, int)
    alive(sb)


# ---- 9. the connection file and socket folder ------------------------------------------------------------------

@pytest.mark.parametrize("plant", [
    "import shutil\nshutil.rmtree('.kernel/connection.json', ignore_errors=True)\n"
    "with contextlib.suppress(OSError):\n    os.unlink('.kernel/connection.json')\nos.makedirs('.kernel/connection.json/x')",
    "import glob\nfor p in glob.glob('.kernel/k-*'):\n    os.unlink(p); os.makedirs(p + '/deep/er')",
    "import shutil\nshutil.rmtree('.kernel', ignore_errors=True)\nopen('.kernel', 'w').write('not a folder')",
    "os.chdir('.kernel')\nfor _ in range(1100):\n    os.mkdir('d'); os.chdir('d')",
], ids=["connection-file-is-a-folder", "sockets-are-folders", "kernel-folder-is-a-file", "deep-kernel-folder"])
def test_item09_restart_ignores_what_the_kernel_left_in_its_socket_folder(make_box, deep_ws, plant):
    with make_box(deep_ws, setup_code=["import os"]) as sb:
        r = run(sb, "import contextlib\n" + plant + "\nos._exit(1)")
        assert r.status == "died" and r.restarted, r.summary()
        alive(sb)
        r = run(sb, "os._exit(1)")  # and again: nothing stays broken
        assert r.status == "died" and r.restarted, r.summary()
        alive(sb)


# ---- 10. deep trees in the workspace -----------------------------------------------------------------------------

@pytest.fixture
def deep_ws():
    """A workspace removed iteratively afterwards (pytest's own clean-up recurses and would crash on it).
    Its path is short, so that the kernel's sockets live in its ``.kernel`` folder (a long workspace
    path, e.g. under pytest-xdist, puts them in a private /tmp folder the plants below would miss)."""
    import tempfile

    from sandbox.hostio import remove_tree

    ws = Path(tempfile.mkdtemp(prefix="ws-", dir="/tmp"))
    yield ws / "workspace"
    remove_tree(ws)


def test_item10_deep_workspace_trees_do_not_break_restarts(make_box, deep_ws):
    with make_box(deep_ws) as box:
        r = run(box, "import os\nbase = os.getcwd()\nfor name, depth in (('a', 1100), ('b', 2100)):  # past the recursion limit; past PATH_MAX\n"
                     "    os.chdir(base)\n    os.mkdir(name); os.chdir(name)\n"
                     "    for _ in range(depth):\n        os.mkdir('d'); os.chdir('d')\n"
                     "    os.symlink('/etc', 'etc-link')\nos.chdir(base)\nos._exit(1)", timeout=60)
        assert r.status == "died" and r.restarted, r.summary()
        alive(box)
        for _ in range(2):
            r = run(box, "import os\nos._exit(1)")
            assert r.status == "died" and r.restarted, r.summary()
            alive(box)
        assert not os.path.islink("/etc") and os.path.isdir("/etc")


# ---- 11. files planted for the next start --------------------------------------------------------------------------

def test_item11_planted_startup_files_are_not_run_by_a_restart(make_box):
    evil = "import os\nos._exit(3)\n"
    with make_box(setup_code=["import json"]) as box:
        plant = {
            "ipykernel_launcher.py": evil, "tornado.py": evil, "zmq.py": evil, "traitlets.py": evil,
            "json.py": evil, "sitecustomize.py": evil, "usercustomize.py": evil,
            "ipython_kernel_config.py": evil, "ipython_config.py": evil, "jupyter_config.py": evil,
            ".jupyter/ipython_kernel_config.py": evil, ".jupyter/jupyter_config.py": evil,
            ".ipython/profile_default/startup/00-evil.py": evil,
            ".ipython/profile_default/ipython_kernel_config.py": evil,
            f".local/lib/python{os.sys.version_info.major}.{os.sys.version_info.minor}/site-packages/evil.pth":
                "import os; os._exit(3)\n",
        }
        r = run(box, f"import os, pathlib\nfor rel, text in {plant!r}.items():\n"
                     "    p = pathlib.Path(rel); p.parent.mkdir(parents=True, exist_ok=True); p.write_text(text)\n"
                     "os._exit(1)")
        assert r.status == "died", r.summary()
        assert r.restarted, r.summary()
        t0 = time.monotonic()
        alive(box)
        r = run(box, "os._exit(1)" if False else "import os\nos._exit(1)")
        assert r.status == "died" and r.restarted and time.monotonic() - t0 < 30, r.summary()
        alive(box)
        r = run(box, "import json, os\njson.__file__.startswith(os.getcwd())")
        assert r.result == "False"


# ---- 12. the result size, enforced on the host ---------------------------------------------------------------

def test_item12_result_size_limit_is_enforced_on_the_host(sb):
    r = run(sb, "__sandbox_take_result__.__defaults__ = (10 ** 12,)\n"
                f"_result = 'x' * {LIMITS.result_bytes + 10}")
    assert r.status == "ok" and r.data is None and "_result was dropped" in r.stderr, r.summary()
    r = run(sb, "_result = {'ok': 1}")
    assert r.data == {"ok": 1}
    r = run(sb, "__sandbox_take_result__.__defaults__ = (10 ** 12,)\n_result = [[[[[[[[[[1]]]]]]]]]] * 2\n"
                "x = _result\nfor _ in range(200):\n    x = [x]\n_result = x")
    assert r.data is None and "deeper" in r.stderr, r.summary()
    alive(sb)


def test_item12_200mb_result_does_not_reach_the_host(backend):
    res = host_peak(backend, "__sandbox_take_result__.__defaults__ = (10 ** 12,)\n_result = 'x' * 200_000_000",
                    limits=LIMITS)
    assert res["alive"], res
    assert res["peak_mb"] - res["base_mb"] < 150, res


# ---- 13. error text size -----------------------------------------------------------------------------------------

def test_item13_error_value_and_traceback_are_capped(sb):
    r = run(sb, "raise ValueError('v' * 3_000_000)")
    assert r.status == "error" and r.error_name == "ValueError"
    assert len(r.error_value) < LIMITS.output_chars + 200
    assert sum(map(len, r.traceback)) < 2 * LIMITS.output_chars + 200
    r = run(sb, FORGE + "forge('error', {'ename': 'N' * 1_000_000, 'evalue': 'v', 'traceback': []})")
    assert len(r.error_name or "") < 1000
    alive(sb)


def test_item13_120mb_exception_does_not_reach_the_host(backend):
    res = host_peak(backend, "raise ValueError('x' * 120_000_000)")  # main: the host peaked ~915 MiB above
    assert res["alive"], res
    assert res["peak_mb"] - res["base_mb"] < 150, res


# ---- 14. output floods of any message type ---------------------------------------------------------------------

def test_item14_rich_display_flood_is_interrupted(sb):
    r = run(sb, "from IPython.display import display\nimport time\n"
                "for i in range(400):\n    display({'text/plain': 'y' * 100_000}, raw=True)\n    time.sleep(0.005)\n"
                "_result = 'finished'", timeout=60)
    assert r.data is None and "interrupted" in (r.error_value or "") + r.stderr, r.summary()
    alive(sb)


@pytest.mark.parametrize("size_mb,count", [(60, 30), (12, 60)])
def test_item14_display_flood_keeps_host_memory_bounded(backend, size_mb, count):
    res = host_peak(backend, "from IPython.display import display\n"
                             f"s = 'z' * ({size_mb} << 20)\nfor i in range({count}):\n"
                             "    display({'text/plain': s}, raw=True)")
    assert res["alive"], res
    assert res["peak_mb"] - res["base_mb"] < 150, res


# ---- 15. memory of the whole process tree ------------------------------------------------------------------------

def test_item15_memory_limit_covers_the_process_tree(make_box, backend):
    limits = SandboxLimits(memory_gb=1, processes=64, interrupt_grace_s=1.0)
    with make_box(limits=limits) as box:
        r = run(box, "import subprocess, sys, time\n"
                     "code = 'b = bytes(400 << 20) + b\"x\"; import time; time.sleep(60)'\n"
                     "ps = [subprocess.Popen([sys.executable, '-c', code.replace('bytes(400 << 20)', "
                     "'b\"y\" * (400 << 20)')]) for _ in range(4)]\n"
                     "time.sleep(6)\n_result = [p.poll() for p in ps]\n"
                     "for p in ps:\n    p.kill()", timeout=60)
        assert r.status == "ok", r.summary()
        states = r.data
        killed = [s for s in states if s is not None]
        assert killed and all(s == -9 for s in killed), states  # SIGKILLed, by the watchdog or the OOM killer
        assert len(states) - len(killed) <= 2, states  # what survived fits in 1 GiB (4 x 400 MiB did not)
        if backend == "local":
            assert "memory limit" in r.stderr
        alive(box)
