"""Docker backend: the kernel runs in a container (e.g. on a GPU host), built from ``sandbox/docker/Dockerfile``.

The container (see :func:`container_spec`) has no network (``network_mode="none"``), a read-only root,
a tmpfs ``/tmp``, the workspace as its one writable volume (at ``/workspace``), no capabilities,
``no-new-privileges``, memory / CPU / pids limits, and GPU device requests when asked. No port is
published: the kernel talks to the host over Jupyter's ``ipc`` transport, whose Unix sockets live in
``<workspace>/.kernel/`` and so are visible on both sides of the bind mount.

The engine is reached through ``docker.from_env()``, so ``DOCKER_HOST`` (and ``DOCKER_TLS_VERIFY``,
``DOCKER_CERT_PATH``) are honoured. Because the sockets go through the bind-mounted workspace, the
workspace path must exist on the engine's machine: run the agent on the GPU host itself (the usual
case), or on a machine sharing that path (e.g. NFS).

Running the real thing (on a machine with an engine)::

    docker build -f sandbox/docker/Dockerfile -t interp-agent-sandbox .      # or let the backend build it
    interp-agent investigate ... --sandbox docker                             # agent side
    # or from Python:
    with make_sandbox("docker", workspace="runs/x/workspace", gpus=True) as sb:
        print(sb.execute("import torch; torch.cuda.is_available()").result)

>>> spec = container_spec("img", "/host/ws", ["python", "-m", "ipykernel_launcher"], uid=1000, gpus=True,
...                       limits=SandboxLimits(memory_gb=4, cpus=2))
>>> spec["network_mode"], spec["read_only"], spec["volumes"]
('none', True, {'/host/ws': {'bind': '/workspace', 'mode': 'rw'}})
>>> spec["mem_limit"], spec["nano_cpus"], spec["device_requests"][0].capabilities
(4294967296, 2000000000, [['gpu']])
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sandbox.base import Sandbox
from sandbox.config import SandboxLimits, kernel_env
from sandbox.errors import DockerUnavailable, KernelStartError

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = "sandbox/docker/Dockerfile"
DEFAULT_IMAGE = "interp-agent-sandbox:latest"
CONTAINER_WORKSPACE = "/workspace"
CONTAINER_KERNEL_DIR = "/kernel"  # only used when the socket folder cannot live in the workspace
LABEL = "interp-agent.sandbox"


def container_spec(image: str, workspace: str | os.PathLike, command: Sequence[str], uid: int | None = None,
                   limits: SandboxLimits | None = None, gpus: bool | int | Sequence[str] = False,
                   env: dict[str, str] | None = None, kernel_dir: str | os.PathLike | None = None,
                   name: str | None = None) -> dict[str, Any]:
    """Keyword arguments for ``client.containers.run(**spec)``: the whole isolation policy in one dict.

    ``gpus``: ``True`` for all GPUs, an int for that many, or a list of device ids.
    ``kernel_dir``: a host folder for the ipc sockets when it cannot be inside the workspace (long paths).
    """
    import docker.types

    limits = limits or SandboxLimits()
    volumes = {str(workspace): {"bind": CONTAINER_WORKSPACE, "mode": "rw"}}
    if kernel_dir is not None:
        volumes[str(kernel_dir)] = {"bind": CONTAINER_KERNEL_DIR, "mode": "rw"}
    device_requests = []
    if gpus:
        if isinstance(gpus, bool):
            device_requests.append(docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]]))
        elif isinstance(gpus, int):
            device_requests.append(docker.types.DeviceRequest(count=gpus, capabilities=[["gpu"]]))
        else:
            device_requests.append(docker.types.DeviceRequest(device_ids=list(gpus), capabilities=[["gpu"]]))
    ulimits = [docker.types.Ulimit(name="fsize", soft=limits.file_size_bytes, hard=limits.file_size_bytes),
               docker.types.Ulimit(name="core", soft=0, hard=0)]
    if limits.cpu_seconds:
        ulimits.append(docker.types.Ulimit(name="cpu", soft=limits.cpu_seconds, hard=limits.cpu_seconds + 10))
    spec: dict[str, Any] = {
        "image": image,
        "command": list(command),
        "detach": True,
        "network_mode": "none",
        "read_only": True,
        "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={limits.tmp_mb}m"},
        "volumes": volumes,
        "working_dir": CONTAINER_WORKSPACE,
        "environment": dict(env or {}),
        "mem_limit": limits.memory_bytes,
        "memswap_limit": limits.memory_bytes,
        "pids_limit": limits.processes,
        "ulimits": ulimits,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "ipc_mode": "private",
        "init": True,
        "labels": {LABEL: "1"},
        "device_requests": device_requests,
    }
    if limits.cpus:
        spec["nano_cpus"] = int(limits.cpus * 1e9)
    if uid is not None:
        spec["user"] = f"{uid}:{uid}"
    if name:
        spec["name"] = name
    return spec


class DockerSandbox(Sandbox):
    """A kernel in a Docker container. Args as :class:`sandbox.local.LocalSandbox`, plus:

    Args:
        image: image tag; built from ``sandbox/docker/Dockerfile`` when missing (``build=True``).
        gpus: ``True`` / a count / device ids, turned into a GPU device request.
        client: a ``docker.DockerClient`` (default ``docker.from_env()``, which honours ``DOCKER_HOST``).
    """

    backend = "docker"
    poll_interval_s = 0.5  # container status is an API call: poll less often than a local process

    def __init__(self, workspace: str | os.PathLike, setup_code: list[str] | None = None,
                 limits: SandboxLimits | None = None, image: str = DEFAULT_IMAGE,
                 gpus: bool | int | Sequence[str] = False, client: Any = None, build: bool = True,
                 env: dict[str, str] | None = None, uid: int | None = None) -> None:
        super().__init__(workspace, setup_code, limits, env)
        self.image = image
        self.gpus = gpus
        self.build = build
        self._client = client
        self.container: Any = None
        self._last_poll = 0.0
        self._last_alive = True
        if uid is None and os.geteuid() == 0:
            uid = random.randrange(1_500_000_000, 1_600_000_000)
        self.uid = uid if uid is not None else os.getuid()

    @property
    def isolation(self) -> str:
        return f"docker ({self.image}, network none, read-only root)"

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                import docker

                self._client = docker.from_env()
                self._client.ping()
            except Exception as e:  # the SDK raises several unrelated types here
                self._client = None
                raise DockerUnavailable(
                    f"cannot reach the Docker engine ({type(e).__name__}: {e})",
                    fix="start dockerd or point DOCKER_HOST at an engine (e.g. ssh://gpu-host), "
                        "or use the local backend") from e
        return self._client

    def ensure_image(self) -> None:
        """Build the image from ``sandbox/docker/Dockerfile`` unless the engine already has it."""
        import docker.errors

        try:
            self.client.images.get(self.image)
            return
        except docker.errors.ImageNotFound:
            if not self.build:
                raise DockerUnavailable(f"image {self.image!r} is not on the engine",
                                        fix=f"docker build -f {DOCKERFILE} -t {self.image} .") from None
        try:
            self.client.images.build(path=str(REPO_ROOT), dockerfile=DOCKERFILE, tag=self.image, rm=True)
        except docker.errors.DockerException as e:
            raise DockerUnavailable(f"building {self.image!r} failed: {e}",
                                    fix=f"run `docker build -f {DOCKERFILE} -t {self.image} .` to see why") from e

    def _prepare_workspace(self) -> None:
        if os.geteuid() == 0:
            os.chown(self.workspace, self.uid, self.uid, follow_symlinks=False)

    def _after_connection_file(self, conn: Path) -> None:
        os.chmod(conn, 0o600)
        if os.geteuid() == 0:
            os.chown(conn.parent, self.uid, self.uid, follow_symlinks=False)
            os.chown(conn, self.uid, self.uid, follow_symlinks=False)

    def _kernel_path(self, host_path: Path) -> str:
        host_path = Path(host_path)
        if host_path.is_relative_to(self.workspace):
            rel = host_path.relative_to(self.workspace).as_posix()
            return CONTAINER_WORKSPACE + ("" if rel == "." else "/" + rel)
        if self._socket_dir is not None and host_path.is_relative_to(self._socket_dir):
            rel = host_path.relative_to(self._socket_dir).as_posix()
            return CONTAINER_KERNEL_DIR + ("" if rel == "." else "/" + rel)
        raise KernelStartError(f"{host_path} is not shared with the container",
                               fix="keep the kernel's files inside the workspace")

    def spec(self, connection_file: Path) -> dict[str, Any]:
        """The container spec for this sandbox (see :func:`container_spec`)."""
        env = kernel_env(CONTAINER_WORKSPACE, extra=self.extra_env)
        env.pop("PATH", None)  # the image's PATH, not the host's
        command = ["python", "-m", "ipykernel_launcher", "-f", self._kernel_path(connection_file),
                   "--HistoryManager.hist_file=:memory:"]
        kernel_dir = None if self._socket_dir is None or self._socket_dir.is_relative_to(self.workspace) \
            else self._socket_dir
        return container_spec(self.image, self.workspace, command, uid=self.uid, limits=self.limits,
                              gpus=self.gpus, env=env, kernel_dir=kernel_dir)

    def _launch(self, connection_file: Path, info: dict[str, Any]) -> None:
        import docker.errors

        self.ensure_image()
        try:
            self.container = self.client.containers.run(**self.spec(connection_file))
        except docker.errors.DockerException as e:
            raise KernelStartError(f"the engine refused the kernel container: {e}",
                                   fix="check `docker info`, the image and GPU runtime (nvidia-container-toolkit)") from e
        self._last_alive = True
        self._last_poll = 0.0

    def _alive(self) -> bool:
        if self.container is None:
            return False
        now = time.monotonic()
        if now - self._last_poll >= self.poll_interval_s:
            self._last_poll = now
            try:
                self.container.reload()
                self._last_alive = self.container.status in ("created", "running", "restarting")
            except Exception:  # container gone (removed, engine restarted)
                self._last_alive = False
        return self._last_alive

    def _exit_reason(self) -> str:
        if self.container is None:
            return "no container"
        state = (getattr(self.container, "attrs", None) or {}).get("State", {})
        if state.get("OOMKilled"):
            return f"the container was OOM-killed (limit {self.limits.memory_gb:g} GiB)"
        code = state.get("ExitCode")
        from sandbox.local import describe_exit

        return describe_exit(code) if isinstance(code, int) else f"container status {self.container.status}"

    def _kill(self) -> None:
        container, self.container = self.container, None
        if container is not None:
            try:
                container.remove(force=True)
            except Exception:  # already gone; nothing else to clean
                pass
