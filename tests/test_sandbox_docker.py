"""Docker backend with the engine boundary mocked: the container spec, image build, and the ipc connection.

The fake engine runs the container's command in bubblewrap with the spec's volumes bound at their
container paths, so the kernel really listens on ``/workspace/.kernel/...`` and the host really connects
through the shared workspace, as with a real engine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import docker
import docker.errors
import pytest

from sandbox import SandboxLimits, make_sandbox
from sandbox import local as local_mod
from sandbox.docker_backend import CONTAINER_WORKSPACE, DOCKERFILE, DockerSandbox, container_spec
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


def test_missing_image_is_built_from_repo_dockerfile(tmp_path):
    client = mock.MagicMock()
    client.images.get.side_effect = docker.errors.ImageNotFound("nope")
    DockerSandbox(tmp_path, client=client, image="x:1").ensure_image()
    kwargs = client.images.build.call_args.kwargs
    assert kwargs["dockerfile"] == DOCKERFILE and kwargs["tag"] == "x:1"
    assert os.path.exists(os.path.join(kwargs["path"], DOCKERFILE))
    client.images.get.side_effect = docker.errors.ImageNotFound("nope")
    with pytest.raises(DockerUnavailable, match="docker build"):
        DockerSandbox(tmp_path, client=client, image="x:1", build=False).ensure_image()


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
