"""The sandbox's contract: results as data, deadlines, death and restart, truncation, rich outputs."""

from __future__ import annotations

import ast
import os

import pytest

from sandbox import ExecutionResult, IsolationUnavailable, SandboxError, SandboxLimits, make_sandbox
from sandbox import local as local_mod
from sandbox.config import kernel_env

needs_bwrap = pytest.mark.skipif(local_mod.isolation_problem() is not None,
                                 reason=f"no isolation here: {local_mod.isolation_problem()}")


@pytest.fixture(scope="module")
def sb(tmp_path_factory):
    ws = tmp_path_factory.mktemp("sbx") / "workspace"
    limits = SandboxLimits(output_chars=1000, interrupt_grace_s=3.0, memory_gb=4)
    with make_sandbox(workspace=ws, setup_code=["SETUP_VALUE = 41", "import json"], limits=limits) as box:
        yield box


@needs_bwrap
def test_ok_result_stdout_and_data(sb):
    r = sb.execute("print('hello'); _result = {'a': [1, 2.5], 'b': 'x'}\nSETUP_VALUE + 1")
    assert isinstance(r, ExecutionResult)
    assert (r.status, r.stdout, r.result, r.data) == ("ok", "hello\n", "42", {"a": [1, 2.5], "b": "x"})
    assert r.duration_s > 0 and r.execution_count is not None
    assert sb.execute("1").data is None  # _result is cleared after each cell
    assert sb.execute("'_result' in globals()").result == "False"


@needs_bwrap
def test_numpy_like_result_and_unserialisable(sb):
    r = sb.execute("class T:\n    def tolist(self): return [1, 2]\n_result = {'t': T()}")
    assert r.data == {"t": [1, 2]}
    r = sb.execute("_result = {'x': float('nan')}")
    assert r.status == "ok" and r.data is None and "not JSON-serialisable" in r.stderr


@needs_bwrap
def test_error_crosses_as_data(sb):
    r = sb.execute("def f():\n    raise ValueError('bad value 7')\nf()")
    assert r.status == "error" and r.error_name == "ValueError" and r.error_value == "bad value 7"
    assert any("bad value 7" in line for line in r.traceback)
    assert not any("\x1b[" in line for line in r.traceback)
    assert sb.execute("SETUP_VALUE").result == "41"  # state kept after an error


@needs_bwrap
def test_stdout_truncated_with_marker(sb):
    r = sb.execute("print('x' * 5000)")
    assert r.truncated and r.stdout.startswith("x" * 1000)
    assert "[... 4001 characters of stdout truncated (limit 1000) ...]" in r.stdout
    r = sb.execute("import sys; sys.stderr.write('e' * 1500)")
    assert r.truncated and "500 characters of stderr truncated" in r.stderr


@needs_bwrap
def test_timeout_interrupt_keeps_state(sb):
    sb.execute("kept = 'yes'")
    r = sb.execute("import time\nwhile True: time.sleep(0.01)", timeout=1.0)
    assert r.status == "timeout" and not r.restarted and r.error_name == "Timeout"
    assert sb.execute("kept").result == "'yes'"


@needs_bwrap
def test_explicit_interrupt_from_another_thread(sb):
    import threading

    timer = threading.Timer(0.5, sb.interrupt)
    timer.start()
    r = sb.execute("import time\nfor _ in range(600):\n    time.sleep(0.05)", timeout=30)
    timer.join()
    assert r.status == "error" and r.error_name == "KeyboardInterrupt" and r.duration_s < 20


@needs_bwrap
def test_oversized_result_and_long_repr(sb):
    r = sb.execute("_result = 'x' * 5_000_000")
    assert r.status == "ok" and r.data is None and "over the" in r.stderr
    r = sb.execute("'y' * 3000")
    assert r.truncated and r.result.startswith("'" + "y" * 999) and "characters of the result truncated" in r.result


@needs_bwrap
def test_rich_outputs_saved_as_files(sb):
    r = sb.execute("from IPython.display import HTML, SVG, display\n"
                   "display(HTML('<b>hi</b>'))\n"
                   "display(SVG('<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"4\" height=\"4\"/>'))")
    assert [o.mime for o in r.outputs] == ["text/html", "image/svg+xml"]
    assert r.outputs[0].path.read_text() == "<b>hi</b>"
    assert all(o.path.parent == sb.workspace / "outputs" for o in r.outputs)
    r = sb.execute("import matplotlib.pyplot as plt\nplt.plot([1, 2]); plt.show()")
    assert r.status == "ok" and [o.mime for o in r.outputs] == ["image/png"]
    assert r.outputs[0].path.read_bytes()[:4] == b"\x89PNG"


@needs_bwrap
def test_death_restarts_and_reruns_setup(sb):
    sb.execute("SETUP_VALUE = 0; scratch = 1")
    before = sb.restarts
    r = sb.execute("import os; os._exit(3)")
    assert r.status == "died" and r.restarted and r.error_name == "KernelDied"
    assert "exit code 3" in r.error_value
    assert sb.restarts == before + 1
    assert sb.execute("SETUP_VALUE").result == "41"  # setup re-ran
    assert sb.execute("scratch").status == "error"  # session state is gone
    sb.execute("SETUP_VALUE = 7")
    sb.restart()
    assert sb.restarts == before + 2 and sb.execute("SETUP_VALUE").result == "41"


@needs_bwrap
def test_death_between_cells_restarts_before_the_next(sb):
    r = sb.execute("import threading, os, time\n"
                   "threading.Thread(target=lambda: (time.sleep(0.3), os._exit(7)), daemon=True).start()")
    assert r.status == "ok"
    import time

    time.sleep(1.5)
    r = sb.execute("SETUP_VALUE")
    assert (r.status, r.result, r.restarted) == ("ok", "41", True)  # the innocent cell ran, on a fresh kernel
    assert "exit code 7" in r.stderr


@needs_bwrap
def test_isolation_string_and_environment(sb):
    assert sb.isolation.startswith("bubblewrap")
    r = sb.execute("import os; sorted(os.environ)")
    names = set(eval(r.result))
    allowed = set(kernel_env("/w", parent=os.environ, pythonpath="x")) | {  # + what IPython/ipykernel set themselves
        "CLICOLOR", "CLICOLOR_FORCE", "FORCE_COLOR", "GIT_PAGER", "PAGER", "PWD", "TERM", "PYDEVD_USE_FRAME_EVAL"}
    assert names <= allowed, names - allowed
    assert sb.execute("import os; os.environ['HOME'] == os.getcwd()").result == "True"
    assert sb.execute("import getpass; getpass.getuser()").result == "'sandbox'"  # torch's caches need it


def test_setup_failure_is_a_start_error(tmp_path):
    box = make_sandbox(workspace=tmp_path / "ws", setup_code=["raise RuntimeError('no model')"],
                       unsafe_no_isolation=True)
    with pytest.raises(SandboxError, match="setup cell 0 failed"):
        box.start()
    assert box.kc is None and not box._alive()  # a failed start tears the kernel down


def test_refuses_without_isolation(tmp_path, monkeypatch):
    monkeypatch.setattr(local_mod, "isolation_problem", lambda: "bubblewrap (bwrap) is not installed")
    with pytest.raises(IsolationUnavailable, match="apt-get install -y bubblewrap") as e:
        make_sandbox(workspace=tmp_path)
    assert "--unsafe-no-isolation" in str(e.value)
    box = make_sandbox(workspace=tmp_path, unsafe_no_isolation=True)
    assert box.isolation == "none (unsafe)"


def test_unsafe_mode_still_scrubs_env(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-canary")
    with make_sandbox(workspace=tmp_path / "ws", unsafe_no_isolation=True) as box:
        r = box.execute("import os; os.environ.get('ANTHROPIC_API_KEY'), os.getcwd()")
        assert ast.literal_eval(r.result) == (None, str(tmp_path / "ws"))  # IPython wraps long reprs


def test_kernel_env_refuses_secret_extras():
    with pytest.raises(SandboxError, match="looks like a credential"):
        kernel_env("/w", parent={}, extra={"GITHUB_TOKEN": "x"})
    assert kernel_env("/w", parent={}, extra={"MY_FLAG": "1"})["MY_FLAG"] == "1"


def test_closed_sandbox_refuses(tmp_path):
    box = make_sandbox(workspace=tmp_path, unsafe_no_isolation=True)
    box.shutdown()
    with pytest.raises(SandboxError, match="shut down"):
        box.execute("1")


def test_bwrap_argv_policy(tmp_path):
    argv = local_mod.bwrap_argv(["k"], tmp_path, uid=1_500_000_001, limits=SandboxLimits(memory_gb=2))
    for flag in ("--unshare-net", "--unshare-pid", "--die-with-parent", "--new-session", "--no-new-privs"):
        assert flag in argv
    for masked in ("/root", "/run", "/tmp"):
        assert argv[argv.index(masked) - 1] == "--tmpfs"
    assert ["--bind", str(tmp_path), str(tmp_path)] == argv[argv.index(str(tmp_path)) - 1:][:3]
    assert f"--as={2 * 1024 ** 3}" in argv and "--reuid=1500000001" in argv
    assert os.path.basename(argv[-1]) == "k"
    gpu = local_mod.bwrap_argv(["k"], tmp_path, uid=None, gpu=True)
    assert not [a for a in gpu if a.startswith("--as=")] and "--fsize=" in " ".join(gpu)


@needs_bwrap
@pytest.mark.slow
def test_kernel_imports_project_and_loads_a_model(tiny_model_dirs, tmp_path):
    path = tiny_model_dirs["gpt2"]
    os.chmod(os.path.dirname(path), 0o755)  # pytest's temp dirs are 0700; the kernel runs as another uid
    for root, _dirs, files in os.walk(path):
        os.chmod(root, 0o755)
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)
    setup = ["import tools.components, torch",
             f"from transformers import AutoModelForCausalLM\nmodel = AutoModelForCausalLM.from_pretrained({path!r})"]
    with make_sandbox(workspace=tmp_path / "ws", setup_code=setup, read_only_paths=[path]) as box:
        r = box.execute("str(tools.components.Component.parse('L1H2')), model.config.n_layer")
        assert r.result == "('L1H2', 2)", r.summary()


def test_workspace_must_be_dedicated(tmp_path):
    for bad in (None, "/", local_mod.REPO_ROOT, local_mod.REPO_ROOT.parent, os.path.expanduser("~")):
        with pytest.raises(SandboxError, match="workspace"):
            make_sandbox(workspace=bad, unsafe_no_isolation=True)
    assert make_sandbox(workspace=tmp_path / "ws", unsafe_no_isolation=True).workspace == tmp_path / "ws"
