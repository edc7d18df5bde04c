"""Docker backend with the engine boundary mocked: the container spec, image build, and the ipc connection.

The fake engine runs the container's command in bubblewrap with the spec's volumes bound at their
container paths, so the kernel really listens on ``/workspace/.kernel/...`` and the host really connects
through the shared workspace, as with a real engine.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from unittest import mock

import docker
import docker.errors
import pytest

from sandbox import SandboxLimits, docker_image, make_sandbox
from sandbox import local as local_mod
from sandbox.docker_backend import (
    CONTAINER_CONNECTION_FILE,
    CONTAINER_WORKSPACE,
    DOCKERFILE,
    KERNEL_LAUNCH,
    LABEL,
    OWNER_LABEL,
    DockerSandbox,
    container_spec,
    owner_label,
    reap_orphans,
)
from sandbox.docker_image import EXTRA_DIR, ImageConfig, context_files, image_tag, write_context
from sandbox.errors import DockerUnavailable
from tests.backends import docker_client, requires_docker


def test_spec_isolation_policy(tmp_path):
    spec = container_spec("img:1", tmp_path, ["python", "-m", "ipykernel_launcher"], uid=1234,
                          limits=SandboxLimits(memory_gb=3, processes=100, tmp_mb=64, cpus=1.5),
                          gpus=["0", "2"], env={"HOME": "/workspace"})
    assert spec["network_mode"] == "none" and spec["read_only"] is True
    assert spec["volumes"] == {str(tmp_path): {"bind": "/workspace", "mode": "rw"}}  # the one writable volume
    assert spec["tmpfs"] == {"/tmp": "rw,nosuid,nodev,size=64m"}
    assert spec["mem_limit"] == spec["memswap_limit"] == 3 * 1024**3
    assert spec["nano_cpus"] == 1_500_000_000 and spec["pids_limit"] == 100
    assert spec["cap_drop"] == ["ALL"] and spec["security_opt"] == ["no-new-privileges"]
    assert spec["user"] == "1234:1234" and "ports" not in spec
    (req,) = spec["device_requests"]
    assert req.device_ids == ["0", "2"] and req.capabilities == [["gpu"]]
    assert {u.name for u in spec["ulimits"]} == {"fsize", "core", "cpu"}  # no RLIMIT_DATA when GPUs are asked
    assert {u.name: u.hard for u in container_spec("i", tmp_path, ["k"], limits=SandboxLimits(memory_gb=3))["ulimits"]
            }["data"] == 3 * 1024**3
    assert container_spec("i", tmp_path, ["k"])["device_requests"] == []
    assert container_spec("i", tmp_path, ["k"], gpus=True)["device_requests"][0].count == -1


def test_sandbox_spec_uses_container_paths_and_clean_env(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-canary")
    sb = DockerSandbox(tmp_path / "ws", client=mock.MagicMock(), uid=1000)
    sb.workspace.mkdir()
    sb._socket_folder()
    conn = sb._connection_file(sb._socket_dir)
    assert not conn.is_relative_to(sb.workspace)  # host-private: the kernel cannot rewrite it
    spec = sb.spec(conn)
    assert spec["command"][:5] == ["python", "-P", "-s", "-c", KERNEL_LAUNCH] and "install()" in KERNEL_LAUNCH
    assert spec["command"][-3:] == ["-f", CONTAINER_CONNECTION_FILE, "--HistoryManager.hist_file=:memory:"]
    assert spec["volumes"][str(conn)] == {"bind": CONTAINER_CONNECTION_FILE, "mode": "ro"}
    assert spec["working_dir"] == "/run/interp-agent"  # not the workspace: nothing planted there runs at start
    assert spec["environment"]["HOME"] == CONTAINER_WORKSPACE
    assert "ANTHROPIC_API_KEY" not in spec["environment"] and "PATH" not in spec["environment"]
    assert sb.isolation.startswith("docker")


def test_engine_unreachable_is_a_sandbox_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")
    boom = mock.Mock(side_effect=docker.errors.DockerException("Error while fetching server API version"))
    monkeypatch.setattr(docker, "from_env", boom)
    with pytest.raises(DockerUnavailable, match="DOCKER_HOST"):
        make_sandbox("docker", workspace=tmp_path).start()
    boom.assert_called_once_with()  # from_env: DOCKER_HOST is honoured by the SDK


def _capture_build(client):
    """Make ``client.api.build`` record its kwargs and the names in the context tar it was sent."""
    seen = {}

    def build(**kw):
        seen.update(kw)
        with tarfile.open(fileobj=kw["fileobj"]) as tar:
            seen["names"] = tar.getnames()
        return iter([{"stream": "Step 1/1 : FROM x\n"}, {"stream": "Successfully built 0\n"}])

    client.api.build.side_effect = build
    return seen


def test_missing_image_is_built_from_repo_dockerfile(tmp_path):
    client = mock.MagicMock()
    client.images.get.side_effect = docker.errors.ImageNotFound("nope")
    seen = _capture_build(client)
    lines = []
    sb = DockerSandbox(tmp_path, client=client, image="x:1", on_build_log=lines.append,
                       image_config=ImageConfig(base="local/py311", torch_index=""))
    assert sb.ensure_image() == "x:1"
    assert seen["dockerfile"] == DOCKERFILE and seen["tag"] == "x:1" and seen["custom_context"] is True
    assert seen["buildargs"]["BASE"] == "local/py311" and seen["buildargs"]["TORCH_INDEX"] == ""
    names = seen["names"]
    assert DOCKERFILE in names and "tools/__init__.py" in names and "pyproject.toml" in names
    assert not any(".venv" in n or "__pycache__" in n or n.endswith(".pyc") or n.startswith("tests/") for n in names)
    assert lines == ["Step 1/1 : FROM x", "Successfully built 0"]
    client.images.get.side_effect = docker.errors.ImageNotFound("nope")
    with pytest.raises(DockerUnavailable, match="python -m sandbox.docker_image"):
        DockerSandbox(tmp_path, client=client, image="x:1", build=False).ensure_image()


def _fake_root(tmp_path):
    root = tmp_path / "repo"
    (root / "sandbox" / "docker").mkdir(parents=True)
    (root / DOCKERFILE).write_text("FROM scratch\n")
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (root / "tools").mkdir()
    (root / "tools" / "a.py").write_text("A = 1\n")
    (root / "tools" / "__pycache__").mkdir()
    (root / "tools" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"junk")
    return root


def test_image_tag_is_a_hash_of_the_context_and_build_args(tmp_path):
    root = _fake_root(tmp_path)
    cfg = ImageConfig()
    tag = image_tag(cfg, root)
    assert tag.startswith("interp-agent-sandbox:") and len(tag.split(":")[1]) == 16
    os.utime(root / "tools" / "a.py", (1, 1))  # times are not content
    (root / "tools" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"other junk")  # nor caches
    assert image_tag(cfg, root) == tag
    assert image_tag(cfg.model_copy(update={"torch_spec": "torch==2.6.0"}), root) != tag
    assert image_tag(cfg.model_copy(update={"base": "local/bookworm"}), root) != tag
    assert image_tag(cfg.model_copy(update={"image": "mine:1"}), root) == "mine:1"
    (root / "tools" / "a.py").write_text("A = 2\n")
    assert image_tag(cfg, root) != tag


def test_ca_bundle_wheels_and_constraints_enter_the_context(tmp_path):
    root = _fake_root(tmp_path)
    ca = tmp_path / "proxy.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl").write_bytes(b"PK")
    pins = tmp_path / "pins.txt"
    pins.write_text("numpy==2.4.6\n")
    cfg = ImageConfig.from_env({"INTERP_AGENT_DOCKER_CA_BUNDLE": str(ca), "INTERP_AGENT_DOCKER_WHEELS": str(wheels),
                                "INTERP_AGENT_DOCKER_CONSTRAINTS": str(pins), "INTERP_AGENT_DOCKER_BUILD_NETWORK": "host"})
    names = dict(context_files(cfg, root))
    assert names[f"{EXTRA_DIR}/build-ca.pem"] == ca and names[f"{EXTRA_DIR}/constraints.txt"] == pins
    assert f"{EXTRA_DIR}/wheels/torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl" in names
    assert "tools/__pycache__/a.cpython-311.pyc" not in names and cfg.network == "host"
    assert image_tag(cfg, root) != image_tag(ImageConfig(), root)
    buf = io.BytesIO()
    assert write_context(buf, cfg, root) == len(names)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        assert {m.uid for m in tar.getmembers()} == {0} and {m.mtime for m in tar.getmembers()} == {0}
    with pytest.raises(DockerUnavailable, match="INTERP_AGENT_DOCKER_CA_BUNDLE"):
        context_files(cfg.model_copy(update={"ca_bundle": tmp_path / "missing.pem"}), root)
    with pytest.raises(DockerUnavailable, match="INTERP_AGENT_DOCKER_WHEELS"):
        context_files(cfg.model_copy(update={"wheels": (tmp_path / "nope.whl",)}), root)


def test_failed_build_is_a_sandbox_error_with_its_last_lines(tmp_path):
    client = mock.MagicMock()
    client.images.get.side_effect = docker.errors.ImageNotFound("nope")
    client.api.build.return_value = iter([{"stream": "Step 9/19 : RUN pip install torch\n"},
                                          {"stream": "ERROR: CERTIFICATE_VERIFY_FAILED\n"},
                                          {"error": "The command returned a non-zero code: 1"}])
    with pytest.raises(DockerUnavailable, match="CERTIFICATE_VERIFY_FAILED.*non-zero code.*CA_BUNDLE"):
        DockerSandbox(tmp_path, client=client, image="x:1").ensure_image()


def test_dockerfile_defaults_and_non_root_user():
    text = (Path(docker_image.REPO_ROOT) / DOCKERFILE).read_text()
    assert "ARG BASE=python:3.11-slim" in text
    assert 'ARG TORCH_SPEC="torch==2.13.0"' in text and "ARG TORCH_INDEX=" in text
    final = text.rsplit("FROM ${BASE}", 1)[1]
    assert "USER 65534:65534" in final and "extra" not in final.split("COPY --from=src")[0]


def test_gpus_on_an_engine_without_gpu_runtime_is_a_clear_error(tmp_path):
    client = mock.MagicMock()
    client.containers.list.return_value = []
    client.containers.run.side_effect = docker.errors.APIError(
        "500 Server Error", explanation='could not select device driver "" with capabilities: [[gpu]]')
    sb = DockerSandbox(tmp_path / "ws", client=client, image="x:1", gpus=True, uid=1000)
    with pytest.raises(DockerUnavailable, match="no GPU runtime.*NVIDIA Container Toolkit"):
        sb.start()
    name = client.containers.run.call_args.kwargs["name"]
    client.containers.get.assert_called_with(name)  # the created-but-not-started container is removed
    client.containers.get.return_value.remove.assert_called_with(force=True)
    assert client.containers.run.call_args.kwargs["device_requests"][0].count == -1


def test_exit_reason_trusts_oom_killed_only_for_a_sigkill_exit(tmp_path):
    sb = DockerSandbox(tmp_path, client=mock.MagicMock(), image="x:1", uid=1000,
                       limits=SandboxLimits(memory_gb=2))
    sb.container = mock.MagicMock()
    sb.container.logs.return_value = b"Traceback ...\nMemoryError\n"
    sb.container.attrs = {"State": {"OOMKilled": True, "ExitCode": 137}}
    assert sb._exit_reason().startswith("the kernel was OOM-killed: the container's memory limit (2 GiB)")
    sb.container.attrs = {"State": {"OOMKilled": True, "ExitCode": 7}}  # a child was OOM-killed earlier
    assert sb._exit_reason().startswith("exit code 7") and "last output: Traceback ... | MemoryError" in sb._exit_reason()


def test_orphans_of_dead_owners_are_reaped(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()

    def container(owner):
        c = mock.MagicMock()
        c.labels = {LABEL: "1", OWNER_LABEL: owner}
        return c

    mine, orphan = container(owner_label()), container(owner_label(dead.pid).rsplit(":", 1)[0] + ":1")
    elsewhere = container("another-host:1:1")
    client = mock.MagicMock()
    client.containers.list.return_value = [mine, orphan, elsewhere]
    reap_orphans(client)
    assert client.containers.list.call_args.kwargs["filters"] == {"label": LABEL}
    orphan.remove.assert_called_once_with(force=True)
    mine.remove.assert_not_called()
    elsewhere.remove.assert_not_called()


class _FakeContainer:
    def __init__(self, proc):
        self.proc, self.status, self.attrs, self.removed = proc, "running", {"State": {}}, False

    def reload(self):
        code = self.proc.poll()
        if code is not None:
            self.status = "exited"
            self.attrs = {"State": {"ExitCode": code, "OOMKilled": False}}

    def remove(self, force=False):
        self.proc.kill()
        self.proc.wait()
        self.removed = True


class _FakeEngine:
    """``client.containers.run(**spec)`` → the command in bwrap, volumes bound at their container paths."""

    def __init__(self):
        self.specs, self._containers = [], []
        self.images = mock.MagicMock()

    @property
    def containers(self):  # the SDK's ``client.containers`` collection
        return self

    def list(self, **filters):  # no orphans on this fake engine
        return []

    def run(self, **spec):
        self.specs.append(spec)
        argv = ["bwrap"]
        for top in sorted(os.listdir("/")):  # an image-like root: the host's top-level folders, read-only
            path = "/" + top
            if os.path.islink(path):
                argv += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path) and top not in ("proc", "dev", "tmp", "sys"):
                argv += ["--ro-bind", path, path]
        argv += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--tmpfs", "/run", "--dir", "/run/interp-agent"]
        # The image would carry python and the project; here they are the host's. A checkout (and its
        # .venv) under /tmp, as in a CI clone there, is hidden by the tmpfs: bind it back read-only.
        for keep in {os.path.realpath(sys.prefix), str(Path(__file__).resolve().parents[1])}:
            if keep.startswith("/tmp/"):
                argv += ["--ro-bind", keep, keep]
        for host, v in spec["volumes"].items():
            argv += ["--ro-bind" if v["mode"] == "ro" else "--bind", host, v["bind"]]
        argv += ["--unshare-net", "--unshare-pid", "--die-with-parent", "--chdir", spec["working_dir"], "--"]
        command = [sys.executable if spec["command"][0] == "python" else spec["command"][0], *spec["command"][1:]]
        env = dict(spec["environment"], PATH=os.environ.get("PATH", "/usr/bin:/bin"))
        proc = subprocess.Popen(argv + command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        c = _FakeContainer(proc)
        self._containers.append(c)
        return c


@pytest.mark.skipif(local_mod.isolation_problem() is not None, reason="the fake engine needs bubblewrap")
def test_kernel_connects_over_ipc_through_the_workspace(tmp_path):
    engine = _FakeEngine()
    ws = tmp_path / "ws"
    with make_sandbox("docker", workspace=ws, client=engine, setup_code=["x = 20"], uid=0) as sb:
        r = sb.execute("import os; x + 1, os.getcwd()")
        assert r.result == "(21, '/workspace')"
        assert {p.name[:2] for p in (ws / ".kernel").iterdir()} == {"k-"}  # sockets live in the workspace
        r = sb.execute("import os; os._exit(5)")
        assert r.status == "died" and r.restarted and "exit code 5" in r.error_value
        assert engine._containers[0].removed and len(engine.specs) == 2
        assert sb.execute("x").result == "20"
    assert all(c.removed for c in engine._containers)


# ---- against a real engine (make test-docker) ------------------------------------------------------------

REAL_LIMITS = SandboxLimits(memory_gb=1.5, processes=64, tmp_mb=64, cpus=1.0, file_size_gb=0.05)
# Every place the kernel might try to write, and the only ones where it may.
WRITE_PROBES = ["/", "/etc", "/usr", "/usr/local/bin", "/opt/venv", "/opt/interp-agent/tools", "/var/tmp", "/root",
                "/home", "/run", "/srv", "/mnt", "/workspace", "/tmp", "/dev/shm"]
WRITABLE = {"/workspace", "/tmp", "/dev/shm"}
PROBE_CELL = """
import os, json
out = {}
for d in %r:
    try:
        with open(os.path.join(d, '.probe-%%d' %% os.getpid()), 'w') as f:
            f.write('x')
        os.remove(f.name)
        out[d] = True
    except OSError as e:
        out[d] = e.strerror
for f in ('/etc/hosts', '/etc/hostname', '/etc/resolv.conf', '/etc/passwd'):
    try:
        open(f, 'a').close()
        out[f] = True
    except OSError as e:
        out[f] = e.strerror
st = dict(line.split(':\\t', 1) for line in open('/proc/self/status').read().splitlines() if ':\\t' in line)
cg = next((p for p in ('/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory/memory.limit_in_bytes') if os.path.exists(p)), None)
_result = {'writable': out, 'uid': os.getuid(), 'gid': os.getgid(), 'cap_eff': st['CapEff'].strip(),
           'no_new_privs': st.get('NoNewPrivs', '').strip(), 'cgroup_memory': open(cg).read().strip() if cg else None,
           'home': os.environ['HOME'], 'cwd': os.getcwd(), 'ifaces': [n for _, n in __import__('socket').if_nameindex()]}
"""


@pytest.fixture(scope="module")
def real_box(tmp_path_factory):
    docker_client()
    ro = tmp_path_factory.mktemp("models")
    (ro / "weights.txt").write_text("w")
    ro.chmod(0o755)
    ws = tmp_path_factory.mktemp("real") / "ws"
    with make_sandbox("docker", workspace=ws, limits=REAL_LIMITS, read_only_paths=[ro]) as sb:
        yield sb, ro


@requires_docker
def test_real_container_keeps_the_isolation_promises(real_box):
    sb, ro = real_box
    r = sb.execute(PROBE_CELL % (WRITE_PROBES + [str(ro)]), timeout=60)
    assert r.status == "ok", r.summary()
    d = r.data
    writable = {p for p, ok in d["writable"].items() if ok is True}
    assert writable == WRITABLE, d["writable"]  # read-only root: only the workspace, /tmp and /dev/shm
    assert d["writable"][str(ro)] == "Read-only file system"  # the model folder is bound read-only
    assert d["uid"] == d["gid"] == sb.uid and sb.uid != 0  # a non-root uid
    assert d["cap_eff"] == "0000000000000000" and d["no_new_privs"] == "1"
    assert d["ifaces"] == ["lo"]  # network none
    assert d["home"] == d["cwd"] == CONTAINER_WORKSPACE
    assert int(d["cgroup_memory"]) == REAL_LIMITS.memory_bytes  # the limit is the container's cgroup
    attrs = sb.container.attrs["HostConfig"]
    assert attrs["NetworkMode"] == "none" and attrs["ReadonlyRootfs"] is True and attrs["CapDrop"] == ["ALL"]
    assert attrs["Memory"] == attrs["MemorySwap"] == REAL_LIMITS.memory_bytes
    assert attrs["PidsLimit"] == REAL_LIMITS.processes and attrs["NanoCpus"] == 1_000_000_000
    assert attrs["PortBindings"] in (None, {}) and "no-new-privileges" in attrs["SecurityOpt"]
    assert sb.isolation.startswith("docker (interp-agent-sandbox:") and f"uid {sb.uid}" in sb.isolation
    r = sb.execute("import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=3)", timeout=30)
    assert r.status == "error" and "unreachable" in r.error_value


@requires_docker
def test_real_memory_limit_is_for_the_whole_container(real_box):
    """Two children of 0.9 GiB each under a 1.5 GiB limit: one is OOM-killed (a per-process RLIMIT_AS of
    1.5 GiB would let both live)."""
    sb, _ = real_box
    r = sb.execute("import subprocess, sys\n"
                   "hog = 'import time; b = bytearray(b\"x\" * (900 << 20)); time.sleep(4)'\n"
                   "ps = [subprocess.Popen([sys.executable, '-c', hog]) for _ in range(2)]\n"
                   "_result = [p.wait() for p in ps]", timeout=120)
    if r.status == "ok":
        assert -9 in r.data, r.data  # SIGKILL from the cgroup's OOM killer
    else:  # the OOM killer chose the kernel itself: it was restarted
        assert r.status == "died" and r.restarted and ("OOM" in r.error_value or "SIGKILL" in r.error_value)
    assert sb.execute("1 + 1").result == "2"


@requires_docker
def test_real_outputs_results_and_restart(real_box):
    sb, _ = real_box
    r = sb.execute("x = 41\n_result = {'x': x + 1}\nfrom IPython.display import HTML, display\ndisplay(HTML('<b>hi</b>'))")
    assert r.data == {"x": 42} and len(r.outputs) == 1 and r.outputs[0].path.read_text() == "<b>hi</b>"
    first = sb.container.id
    r = sb.execute("import os; os._exit(7)")
    assert r.status == "died" and r.restarted and "exit code 7" in r.error_value
    assert sb.container.id != first and sb.execute("'x' in dir()").result == "False"  # a fresh container
    r = sb.execute("while True:\n    pass", timeout=2)
    assert r.status == "timeout" and sb.execute("1 + 1").result == "2"


@requires_docker
def test_real_container_removed_on_shutdown_and_orphans_reaped(tmp_path):
    client = docker_client()
    code = ("import os, sys, time\nfrom sandbox import make_sandbox\n"
            f"sb = make_sandbox('docker', workspace={str(tmp_path / 'orphan')!r}).start()\n"
            "print(sb.container.name, flush=True)\ntime.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=str(docker_image.REPO_ROOT))
    try:
        name = proc.stdout.readline().strip()
        assert name.startswith("interp-agent-") and client.containers.get(name).status == "running"
    finally:
        proc.kill()  # the owner dies without shutting its sandbox down
        proc.wait()
    assert client.containers.get(name).status == "running"  # left behind...
    with make_sandbox("docker", workspace=tmp_path / "next") as sb:  # ...until the next docker sandbox starts
        mine = sb.container.name
        names = {c.name for c in client.containers.list(all=True)}
        assert name not in names and mine in names
    assert mine not in {c.name for c in client.containers.list(all=True)}  # shutdown removes its container


@requires_docker
def test_real_gpu_request_without_runtime(tmp_path):
    client = docker_client()
    if "nvidia" in (client.info().get("Runtimes") or {}):
        pytest.skip("this engine has an nvidia runtime: the no-GPU error path cannot be exercised here")
    before = {c.id for c in client.containers.list(all=True)}
    with pytest.raises(DockerUnavailable, match="no GPU runtime.*NVIDIA Container Toolkit"):
        make_sandbox("docker", workspace=tmp_path / "ws", gpus=True).start()
    assert {c.id for c in client.containers.list(all=True)} == before  # nothing left behind


# ---- the agent side: --sandbox docker, --gpus, replay on the run's backend ---------------------------------


def test_make_kernel_passes_model_binds_and_gpus_to_docker(tmp_path):
    from agent.config import KernelOptions
    from agent.kernel import make_kernel

    model = tmp_path / "my-model"
    model.mkdir()
    sb = make_kernel(tmp_path / "ws", ["x = 1"], KernelOptions(model=str(model), sandbox="docker", gpus="0,1"))
    assert isinstance(sb, DockerSandbox) and sb.gpus == ["0", "1"] and str(model) in sb.read_only_paths
    assert sb.on_build_log is not None  # a first build reports its steps on stderr
    with pytest.raises(ValueError, match="cannot read --gpus"):
        KernelOptions(sandbox="docker", gpus="two")


def test_replay_and_reports_use_the_logged_backend():
    from types import SimpleNamespace

    from agent.config import KernelOptions, SandboxKind

    started = SimpleNamespace(model="toy-ioi", config={"run": {"sandbox": "docker", "gpus": "all"}})
    k = KernelOptions.logged(started, unsafe_no_isolation=False)
    assert (k.model, k.sandbox, k.gpus) == ("toy-ioi", SandboxKind.DOCKER, "all")
    assert KernelOptions.logged(started, sandbox="local").sandbox == SandboxKind.LOCAL  # replay --sandbox local
    old = SimpleNamespace(model="toy-ioi", config={"setup_cells": []})  # logged before runs recorded a sandbox
    assert KernelOptions.logged(old).sandbox == SandboxKind.LOCAL and KernelOptions.logged(old).gpus is None

