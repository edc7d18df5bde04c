"""The sandbox's error family.

:class:`SandboxError` has the same shape as ``tools.errors.InterpAgentError`` (``what`` + ``fix``) so the
CLI prints both on one line, but lives here because ``sandbox`` imports none of the other packages.

Errors *inside* the kernel (a cell raising ``ValueError``) are never raised on the host: they come back
as data in :class:`sandbox.result.ExecutionResult` (``error_name``, ``error_value``, ``traceback``).
These classes are for failures of the sandbox itself.

>>> e = SandboxError("bubblewrap is not installed", fix="apt-get install -y bubblewrap")
>>> str(e)
'bubblewrap is not installed — apt-get install -y bubblewrap'
>>> isinstance(IsolationUnavailable("x"), SandboxError)
True
"""

from __future__ import annotations


class SandboxError(Exception):
    """Base of all sandbox failures a user can cause or fix."""

    def __init__(self, what: str, fix: str | None = None) -> None:
        self.what = what
        self.fix = fix
        super().__init__(what if not fix else f"{what} — {fix}")


class IsolationUnavailable(SandboxError):
    """The local backend cannot isolate the kernel (no bubblewrap, no namespaces) and unsafe mode is off."""


class KernelStartError(SandboxError):
    """The kernel process did not start or never answered ``kernel_info`` in time."""


class SandboxClosed(SandboxError):
    """A call on a sandbox that was shut down (or never started and cannot start)."""


class DockerUnavailable(SandboxError):
    """The Docker engine cannot be reached (``DOCKER_HOST``), or the image cannot be built."""
