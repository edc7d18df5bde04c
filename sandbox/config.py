"""Limits and the kernel's environment (an allow-list: secrets never reach the kernel).

>>> limits = SandboxLimits(memory_gb=4)
>>> limits.memory_bytes
4294967296
>>> env = kernel_env(workspace="/w", parent={"PATH": "/usr/bin", "ANTHROPIC_API_KEY": "sk-x", "AWS_SECRET": "y"})
>>> sorted(k for k in env if "KEY" in k or "AWS" in k)
[]
>>> env["HOME"], env["HF_HUB_OFFLINE"]
('/w', '1')
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sandbox.errors import SandboxError

GiB = 1024**3
MiB = 1024**2


class SandboxLimits(BaseModel):
    """Resource limits of one kernel. Every field is a hard limit enforced outside the kernel's control."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    memory_gb: float = Field(8.0, gt=0)
    """Memory of the kernel, in GiB: the address-space limit (RLIMIT_AS) of each of its processes, and the
    resident memory of all of them together (local: a cgroup v2 ``memory.max`` when the host delegates
    one, else a host-side watchdog that kills the largest process of the tree; Docker: the container's
    ``mem_limit``). torch imports under 2 GiB of virtual memory; models need their weights on top."""
    file_size_gb: float = Field(2.0, gt=0)
    """Largest file the kernel may write (RLIMIT_FSIZE), in GiB."""
    processes: int = Field(256, ge=16)
    """Processes + threads of the kernel's user (RLIMIT_NPROC; Docker: ``pids_limit``)."""
    cpu_seconds: int | None = Field(6 * 3600, ge=1)
    """CPU seconds of one kernel process's life (RLIMIT_CPU): a backstop against a runaway that escapes the
    per-cell wall clock (e.g. a background process). Past it SIGXCPU kills the process; a dead kernel is
    reported as ``died`` and restarted with a fresh budget. ``None`` turns it off."""
    tmp_mb: int = Field(512, ge=16)
    """Size of the kernel's private ``/tmp`` (a tmpfs), in MiB."""
    cell_timeout_s: float = Field(600.0, gt=0)
    """Default wall-clock deadline of one cell, in seconds (``execute(timeout=...)`` overrides it)."""
    interrupt_grace_s: float = Field(2.0, gt=0)
    """Seconds to wait after an interrupt before restarting a kernel that ignores it."""
    start_timeout_s: float = Field(60.0, gt=0)
    """Seconds the kernel has to answer ``kernel_info`` after launch."""
    output_chars: int = Field(100_000, ge=100)
    """Characters of stdout (and, separately, stderr) kept per cell; the rest is cut with a marker."""
    flood_chars: int = Field(20_000_000, ge=1000)
    """Output (characters) after which a cell is interrupted as a flood."""
    output_file_bytes: int = Field(16 * MiB, ge=1024)
    """Largest rich output (PNG/SVG/HTML) the host saves; bigger ones are dropped with a note in stderr
    (the host writes them, so the kernel's file-size limit does not apply)."""
    output_files: int = Field(64, ge=1)
    """Most rich outputs saved per cell; the rest are dropped with a note."""
    result_bytes: int = Field(4 * MiB, ge=1024)
    """Largest JSON ``_result`` accepted, in bytes (checked on the host)."""
    message_bytes: int = Field(32 * MiB, ge=64 * 1024)
    """Largest single message the host accepts from the kernel (zmq's MAXMSGSIZE): a bigger one drops the
    connection before the host allocates it, and the kernel is restarted. Must hold the largest rich
    output (base64) and ``_result``."""
    cpus: float | None = Field(None, gt=0)
    """Docker only: CPU quota (``nano_cpus``), in CPUs."""

    @model_validator(mode="after")
    def _messages_hold_outputs(self) -> SandboxLimits:
        need = max(self.output_file_bytes * 4 // 3, 4 * self.result_bytes) + MiB
        if self.message_bytes < need:
            raise ValueError(f"message_bytes={self.message_bytes} cannot carry a rich output of output_file_bytes="
                             f"{self.output_file_bytes} (base64) or a _result of result_bytes={self.result_bytes}: "
                             f"raise it to at least {need}")
        return self

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gb * GiB)

    @property
    def file_size_bytes(self) -> int:
        return int(self.file_size_gb * GiB)


# Variables passed through from the parent when set; everything else is dropped.
ENV_PASSTHROUGH: tuple[str, ...] = (
    "PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
    "HF_HUB_CACHE", "TRANSFORMERS_CACHE",
)
_SECRET = re.compile(
    r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH|COOKIE|SESSION)|^(AWS|GOOGLE|GCP|AZURE|ANTHROPIC|OPENAI|HF_TOKEN|"
    r"GITHUB|GH_|SSH_|DOCKER_|KUBE)", re.IGNORECASE)


def looks_secret(name: str) -> bool:
    """Whether an environment variable name looks like a credential.

    >>> [looks_secret(n) for n in ("ANTHROPIC_API_KEY", "HF_TOKEN", "AWS_REGION", "PATH", "LANG")]
    [True, True, True, False, False]
    """
    return bool(_SECRET.search(name))


def kernel_env(workspace: str | os.PathLike, parent: Mapping[str, str] | None = None,
               extra: Mapping[str, str] | None = None, pythonpath: str | None = None) -> dict[str, str]:
    """The kernel's whole environment: an allow-list of the parent's variables plus fixed settings.

    ``extra`` adds caller variables; a name that looks like a credential is refused with a
    :class:`SandboxError` (pass data to the kernel through files or setup code, never secrets).
    """
    parent = os.environ if parent is None else parent
    env = {k: parent[k] for k in ENV_PASSTHROUGH if k in parent and not looks_secret(k)}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.setdefault("LANG", "C.UTF-8")
    ws = os.fspath(workspace)
    env.update({
        "HOME": ws,
        "USER": "sandbox",  # the kernel's uid has no passwd entry: getpass.getuser() reads these first
        "LOGNAME": "sandbox",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "MPLCONFIGDIR": "/tmp/matplotlib",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "IPYTHONDIR": "/tmp/ipython",
        "PYTHONDONTWRITEBYTECODE": "1",
        # Nothing under HOME (the workspace, which the kernel writes) is read at start-up: no user
        # site-packages, no Jupyter config or data folders there.
        "PYTHONNOUSERSITE": "1",
        "JUPYTER_CONFIG_DIR": "/tmp/jupyter/config",
        "JUPYTER_DATA_DIR": "/tmp/jupyter/data",
        "JUPYTER_RUNTIME_DIR": "/tmp/jupyter/runtime",
        "PYTHONUNBUFFERED": "1",
        "XDG_CACHE_HOME": "/tmp/cache",
    })
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    for k, v in (extra or {}).items():
        if looks_secret(k):
            raise SandboxError(f"refusing to pass environment variable {k!r} into the sandbox: it looks like a "
                               "credential", fix="the kernel must never hold secrets; pass data via files or setup_code")
        env[k] = v
    return env
