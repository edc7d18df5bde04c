"""Docker backend: the kernel runs in a container (e.g. on a GPU host), built from ``sandbox/docker/Dockerfile``.

The container (see :func:`container_spec`) has no network (``network_mode="none"``), a read-only root,
a private size-capped tmpfs ``/tmp`` (and ``/dev/shm``), the workspace as its one writable volume (at
``/workspace``), read-only binds of the model folders it must read, a non-root uid, no capabilities,
``no-new-privileges``, a memory limit for the whole container (no swap), CPU and pids limits, and GPU device
requests when asked (an engine without a GPU runtime is a clear :class:`DockerUnavailable`). No port is
published: the kernel talks to the host over Jupyter's ``ipc`` transport, whose Unix sockets live in
``<workspace>/.kernel/`` and so are visible on both sides of the bind mount.

The image's tag is a content hash of the project and the build settings (:mod:`sandbox.docker_image`), so
the kernel always runs the checkout's code; a missing image is built on first use. Containers carry their
owner's pid: one left behind by a killed host process is removed when the next docker sandbox starts.

The engine is reached through ``docker.from_env()``, so ``DOCKER_HOST`` (and ``DOCKER_TLS_VERIFY``,
``DOCKER_CERT_PATH``) are honoured. Because the sockets go through the bind-mounted workspace, the
workspace path must exist on the engine's machine: run the agent on the GPU host itself (the usual
case), or on a machine sharing that path (e.g. NFS).

Running the real thing (on a machine with an engine)::

    python -m sandbox.docker_image                    # or let the backend build it on first use
    interp-agent investigate ... --sandbox docker [--gpus all]
    # or from Python:
    with make_sandbox("docker", workspace="runs/x/workspace", gpus=True) as sb:
        print(sb.execute("import torch; torch.cuda.is_available()").result)

>>> spec = container_spec("img", "/host/ws", ["python", "-m", "ipykernel_launcher"], uid=1000, gpus=True,
...                       limits=SandboxLimits(memory_gb=4, cpus=2))
>>> spec["network_mode"], spec["read_only"], spec["volumes"]
('none', True, {'/host/ws': {'bind': '/workspace', 'mode': 'rw'}})
>>> spec["mem_limit"], spec["nano_cpus"], spec["device_requests"][0].capabilities
(4294967296, 2000000000, [['gpu']])
>>> container_spec("img", "/ws", ["k"], read_only_paths=["/models/m"])["volumes"]["/models/m"]
{'bind': '/models/m', 'mode': 'ro'}
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sandbox.base import Sandbox
from sandbox.config import SandboxLimits, kernel_env
from sandbox.docker_image import DOCKERFILE as DOCKERFILE  # re-exported: the image's recipe
from sandbox.docker_image import ImageConfig, ensure_image, image_tag
from sandbox.errors import DockerUnavailable, KernelStartError
from sandbox.hostio import chown_tree

CONTAINER_WORKSPACE = "/workspace"
CONTAINER_KERNEL_DIR = "/kernel"  # only used when the socket folder cannot live in the workspace
CONTAINER_CONNECTION_FILE = "/run/interp-agent/connection.json"  # a read-only bind of a host-private file
CONTAINER_START_DIR = "/run/interp-agent"  # the kernel's cwd until the setup cells have run
KERNEL_LAUNCH = ("import os, sys\nfrom sandbox.seccomp import install\ninstall()\n"
                 "os.execv(sys.executable, [sys.executable, '-P', '-s', '-m', 'ipykernel_launcher', *sys.argv[1:]])")
"""The container's command: ``python -c KERNEL_LAUNCH <ipykernel args>`` (seccomp filter, then ipykernel)."""
LABEL = "interp-agent.sandbox"
OWNER_LABEL = "interp-agent.owner"  # "<host>:<pid>:<process start time>" of the process that ran it
NO_GPU_RUNTIME = ("could not select device driver", "unknown or invalid runtime name: nvidia")
GPU_FIX = ("install the NVIDIA Container Toolkit on the engine's host (`nvidia-ctk runtime configure "
           "--runtime=docker`, then restart dockerd), or run without --gpus")


def container_spec(image: str, workspace: str | os.PathLike, command: Sequence[str], uid: int | None = None,
                   limits: SandboxLimits | None = None, gpus: bool | int | Sequence[str] = False,
                   env: dict[str, str] | None = None, kernel_dir: str | os.PathLike | None = None,
                   name: str | None = None, read_only_paths: Sequence[str | os.PathLike] = (),
                   labels: dict[str, str] | None = None,
                   connection_file: str | os.PathLike | None = None) -> dict[str, Any]:
    """Keyword arguments for ``client.containers.run(**spec)``: the whole isolation policy in one dict.

    ``gpus``: ``True`` for all GPUs, an int for that many, or a list of device ids.
    ``kernel_dir``: a host folder for the ipc sockets when it cannot be inside the workspace (long paths).
    ``read_only_paths``: host folders the kernel may read, bound read-only at the same path.
    ``connection_file``: the host-private connection file, bound read-only at ``/run/interp-agent/``.
    """
    import docker.types

    limits = limits or SandboxLimits()
    volumes = {str(p): {"bind": str(p), "mode": "ro"} for p in read_only_paths}
    volumes[str(workspace)] = {"bind": CONTAINER_WORKSPACE, "mode": "rw"}
    if kernel_dir is not None:
        volumes[str(kernel_dir)] = {"bind": CONTAINER_KERNEL_DIR, "mode": "rw"}
    if connection_file is not None:
        volumes[str(connection_file)] = {"bind": CONTAINER_CONNECTION_FILE, "mode": "ro"}
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
    if not gpus:  # per process, as the local backend's RLIMIT_AS: an oversized allocation is a MemoryError in the
        # cell (state kept), not an OOM kill; the cgroup limit caps all processes together. CUDA maps too much.
        ulimits.append(docker.types.Ulimit(name="data", soft=limits.memory_bytes, hard=limits.memory_bytes))
    if limits.cpu_seconds:
        ulimits.append(docker.types.Ulimit(name="cpu", soft=limits.cpu_seconds, hard=limits.cpu_seconds + 10))
    spec: dict[str, Any] = {
        "image": image,
        "command": list(command),
        "detach": True,
        "network_mode": "none",
        "read_only": True,
        "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={limits.tmp_mb}m"},
        "shm_size": f"{limits.tmp_mb}m",
        "volumes": volumes,
        "working_dir": CONTAINER_START_DIR,  # read-only and empty of the kernel's files: nothing planted runs
        "environment": dict(env or {}),
        "mem_limit": limits.memory_bytes,
        "memswap_limit": limits.memory_bytes,
        "pids_limit": limits.processes,
        "ulimits": ulimits,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "ipc_mode": "private",
        "init": True,
        "labels": {LABEL: "1", **(labels or {})},
        "device_requests": device_requests,
    }
    if limits.cpus:
        spec["nano_cpus"] = int(limits.cpus * 1e9)
    if uid is not None:
        spec["user"] = f"{uid}:{uid}"
    if name:
        spec["name"] = name
    return spec


def _start_time(pid: int) -> str | None:
    """A process's start time (clock ticks since boot) from ``/proc``: a pid with another start time is another process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def owner_label(pid: int | None = None) -> str:
    """``<host>:<pid>:<start time>`` naming the process that owns a container."""
    pid = pid or os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_time(pid)}"


def owner_alive(label: str) -> bool:
    """Whether the owner named by :func:`owner_label` still runs (owners on other hosts count as alive)."""
    host, _, rest = label.partition(":")
    pid, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    return _start_time(int(pid)) == start


def reap_orphans(client: Any) -> list[str]:
    """Remove this host's sandbox containers whose owner process is gone (a host killed with -9); their names."""
    removed = []
    for c in client.containers.list(all=True, filters={"label": LABEL}):
        owner = (c.labels or {}).get(OWNER_LABEL)
        if owner and not owner_alive(owner):
            with contextlib.suppress(Exception):  # raced with another reaper, or already gone
                c.remove(force=True)
                removed.append(c.name)
    return removed


class DockerSandbox(Sandbox):
    """A kernel in a Docker container. Args as :class:`sandbox.local.LocalSandbox`, plus:

    Args:
        image: image tag; default the content-hash tag of :mod:`sandbox.docker_image` (its settings from the
            ``INTERP_AGENT_DOCKER_*`` environment, or ``image_config``). Built when missing (``build=True``).
        gpus: ``True`` / a count / device ids, turned into a GPU device request.
        client: a ``docker.DockerClient`` (default ``docker.from_env()``, which honours ``DOCKER_HOST``).
        read_only_paths: host folders bound read-only at the same path: exact model / tokenizer folders;
            home folders, the Hugging Face home and tokens are refused, as by the local backend.
        uid: the container's user (default: a fresh unprivileged uid on a root host, else the caller's).
    """

    backend = "docker"
    poll_interval_s = 0.5  # container status is an API call: poll less often than a local process

    def __init__(self, workspace: str | os.PathLike, setup_code: list[str] | None = None,
                 limits: SandboxLimits | None = None, image: str | None = None,
                 gpus: bool | int | Sequence[str] = False, client: Any = None, build: bool = True,
                 env: dict[str, str] | None = None, uid: int | None = None,
                 read_only_paths: Sequence[str | os.PathLike] = (), image_config: ImageConfig | None = None,
                 on_build_log: Any = None) -> None:
        super().__init__(workspace, setup_code, limits, env)
        self.image_config = image_config or ImageConfig.from_env()
        if image:
            self.image_config = self.image_config.model_copy(update={"image": image})
        self.gpus = gpus
        self.build = build
        self.on_build_log = on_build_log
        self._client = client
        self._image: str | None = None
        self._conn_dir: Path | None = None
        self.container: Any = None
        self._last_poll = 0.0
        self._last_alive = True
        from sandbox.local import checked_read_only_paths

        self.read_only_paths = checked_read_only_paths([Path(p).resolve() for p in read_only_paths], self.extra_env)
        if uid is None and os.geteuid() == 0:
            uid = random.randrange(1_500_000_000, 1_600_000_000)
        self.uid = uid if uid is not None else os.getuid()

    @property
    def image(self) -> str:
        """The image tag the kernel runs in (hashing the build context once)."""
        if self._image is None:
            self._image = image_tag(self.image_config)
        return self._image

    @property
    def isolation(self) -> str:
        return f"docker ({self.image}, network none, read-only root, uid {self.uid})"

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

    def ensure_image(self) -> str:
        """The image's tag, built from ``sandbox/docker/Dockerfile`` first when the engine lacks it."""
        self._image = ensure_image(self.client, self.image_config.model_copy(update={"image": self.image}),
                                   build=self.build, on_log=self.on_build_log)
        return self._image

    def _prepare_workspace(self) -> None:
        if os.geteuid() == 0:
            chown_tree(self.workspace, self.uid, self.uid)

    def _socket_folder(self) -> Path:
        sdir = super()._socket_folder()  # rebuilt from scratch (the container, with every kernel process, is gone)
        if os.geteuid() == 0:
            os.chown(sdir, self.uid, self.uid, follow_symlinks=False)
        return sdir

    def _connection_file(self, sdir: Path) -> Path:
        if self._conn_dir is None:  # host-private (0700); the container sees a read-only bind of the file
            self._conn_dir = Path(tempfile.mkdtemp(prefix="iak-conn-"))
        return self._conn_dir / "connection.json"

    def _after_connection_file(self, conn: Path) -> None:
        os.chmod(conn, 0o400)
        if os.geteuid() == 0:
            os.chown(conn, self.uid, self.uid, follow_symlinks=False)

    def shutdown(self) -> None:
        super().shutdown()
        if self._conn_dir is not None:
            shutil.rmtree(self._conn_dir, ignore_errors=True)
            self._conn_dir = None

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
        # -P: the start folder is not on sys.path; -s: no user site-packages (HOME is the workspace). The kernel
        # starts in a read-only folder and enters the workspace after the setup cells (Sandbox._boot). It loads
        # the local backend's seccomp filter onto itself first (KERNEL_LAUNCH), on top of the engine's profile.
        command = ["python", "-P", "-s", "-c", KERNEL_LAUNCH, "-f", CONTAINER_CONNECTION_FILE,
                   "--HistoryManager.hist_file=:memory:"]
        kernel_dir = None if self._socket_dir is None or self._socket_dir.is_relative_to(self.workspace) \
            else self._socket_dir
        return container_spec(self.image, self.workspace, command, uid=self.uid, limits=self.limits,
                              gpus=self.gpus, env=env, kernel_dir=kernel_dir, read_only_paths=self.read_only_paths,
                              labels={OWNER_LABEL: owner_label()}, connection_file=connection_file)

    def _launch(self, connection_file: Path, info: dict[str, Any]) -> None:
        import docker.errors

        self.ensure_image()
        reap_orphans(self.client)
        spec = self.spec(connection_file)
        spec["name"] = f"interp-agent-{uuid.uuid4().hex[:12]}"
        try:
            self.container = self.client.containers.run(**spec)
        except docker.errors.DockerException as e:
            with contextlib.suppress(Exception):  # created but not started (e.g. no GPU runtime): remove it
                self.client.containers.get(spec["name"]).remove(force=True)
            why = getattr(e, "explanation", None) or str(e)
            if self.gpus and any(m in str(e) for m in NO_GPU_RUNTIME):
                raise DockerUnavailable(f"GPUs were requested but the Docker engine has no GPU runtime ({why})",
                                        fix=GPU_FIX) from e
            raise KernelStartError(f"the engine refused the kernel container: {why}",
                                   fix="check `docker info` and the image") from e
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
        code = state.get("ExitCode")
        # OOMKilled stays set once any process of the container was OOM-killed: trust it for a SIGKILL exit only.
        if state.get("OOMKilled") and code in (137, None):
            return (f"the kernel was OOM-killed: the container's memory limit ({self.limits.memory_gb:g} GiB) "
                    "is for all its processes")
        from sandbox.local import describe_exit

        reason = describe_exit(code) if isinstance(code, int) else f"container status {self.container.status}"
        tail = self._log_tail()
        return reason + (f"; last output: {tail}" if tail else "")

    def _log_tail(self, n: int = 400) -> str:
        """The end of the container's output (hostile text: bounded, undecodable bytes replaced)."""
        try:
            raw = self.container.logs(tail=20)
        except Exception:  # the container is gone
            return ""
        if not isinstance(raw, bytes | bytearray):
            return ""
        return bytes(raw[-n:]).decode(errors="replace").strip().replace("\n", " | ")

    def _kill(self) -> None:
        container, self.container = self.container, None
        if container is not None:
            try:
                container.remove(force=True)
            except Exception:  # already gone; nothing else to clean
                pass
