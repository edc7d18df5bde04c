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
    CONTAINER_WORKSPACE,
    DOCKERFILE,
    LABEL,
    OWNER_LABEL,
    DockerSandbox,
    container_spec,
    owner_label,
    reap_orphans,
)
from sandbox.docker_image import EXTRA_DIR, ImageConfig, context_files, image_tag, write_context
from sandbox.errors import DockerUnavailable


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
    assert {u.name for u in spec["ulimits"]} == {"fsize", "core", "cpu"}
    assert container_spec("i", tmp_path, ["k"])["device_requests"] == []
    assert container_spec("i", tmp_path, ["k"], gpus=True)["device_requests"][0].count == -1


def test_sandbox_spec_uses_container_paths_and_clean_env(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-canary")
    sb = DockerSandbox(tmp_path / "ws", client=mock.MagicMock(), uid=1000)
    sb.workspace.mkdir()
    conn = sb._socket_folder() / "connection.json"
    spec = sb.spec(conn)
    assert spec["command"][-2] == "/workspace/.kernel/connection.json"
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
        argv += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
        # The image would carry python and the project; here they are the host's. A checkout (and its
        # .venv) under /tmp, as in a CI clone there, is hidden by the tmpfs: bind it back read-only.
        for keep in {os.path.realpath(sys.prefix), str(Path(__file__).resolve().parents[1])}:
            if keep.startswith("/tmp/"):
                argv += ["--ro-bind", keep, keep]
        for host, v in spec["volumes"].items():
            argv += ["--bind", host, v["bind"]]
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
        assert {p.name[:2] for p in (ws / ".kernel").iterdir()} >= {"k-", "co"}  # sockets live in the workspace
        r = sb.execute("import os; os._exit(5)")
        assert r.status == "died" and r.restarted and "exit code 5" in r.error_value
        assert engine._containers[0].removed and len(engine.specs) == 2
        assert sb.execute("x").result == "20"
    assert all(c.removed for c in engine._containers)
