"""interp-agent: sandbox — an isolated Jupyter kernel for the agent's code.

One interface, two backends: ``local`` (bubblewrap namespaces + rlimits on this machine) and ``docker``
(a container, e.g. on a GPU host). The agent only calls :func:`make_sandbox` and the
:class:`Sandbox` methods; kernel errors come back as data in :class:`ExecutionResult`.

>>> "make_sandbox" in __all__ and "ExecutionResult" in __all__
True
"""

from __future__ import annotations

import os
from typing import Any, Literal

from sandbox.base import Sandbox
from sandbox.config import SandboxLimits
from sandbox.errors import IsolationUnavailable, KernelStartError, SandboxError
from sandbox.local import LocalSandbox
from sandbox.result import ExecutionResult, OutputFile

__all__ = ["Sandbox", "LocalSandbox", "DockerSandbox", "make_sandbox", "ExecutionResult", "OutputFile",
           "SandboxLimits", "SandboxError", "IsolationUnavailable", "KernelStartError"]


def make_sandbox(backend: Literal["local", "docker"] = "local", workspace: str | os.PathLike | None = None,
                 setup_code: list[str] | None = None, unsafe_no_isolation: bool = False,
                 limits: SandboxLimits | None = None, **options: Any) -> Sandbox:
    """Build (not start) a sandbox; use it as a context manager, which starts it and always shuts it down.

    ``options`` go to the backend (:class:`LocalSandbox`: ``read_only_paths``, ``gpu``, ``env``, ``python``;
    :class:`DockerSandbox`: ``image``, ``gpus``, ``client``...). ``unsafe_no_isolation`` (the CLI's
    ``--unsafe-no-isolation``) only applies to ``local``; log :attr:`Sandbox.isolation` in the run.

    >>> make_sandbox("lxc", workspace="/tmp/ws")
    Traceback (most recent call last):
    ...
    sandbox.errors.SandboxError: unknown sandbox backend 'lxc' — use 'local' or 'docker'
    """
    if backend == "local":
        return LocalSandbox(workspace, setup_code, limits, unsafe_no_isolation=unsafe_no_isolation, **options)
    if backend == "docker":
        from sandbox.docker_backend import DockerSandbox

        return DockerSandbox(workspace, setup_code, limits, **options)
    raise SandboxError(f"unknown sandbox backend {backend!r}", fix="use 'local' or 'docker'")


def __getattr__(name: str) -> Any:  # DockerSandbox imports the docker SDK lazily
    if name == "DockerSandbox":
        from sandbox.docker_backend import DockerSandbox

        return DockerSandbox
    raise AttributeError(name)
