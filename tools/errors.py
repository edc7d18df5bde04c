"""The project's error family.

Every error a user can cause (a bad component name, an unknown architecture, a malformed task file,
a run log from another schema version...) is an :class:`InterpAgentError`. Its message says what went
wrong and its ``fix`` says how to fix it; the CLI prints both on one line and exits with code 2, with
no traceback. Anything else escaping is a bug, and shows a traceback only with ``--debug``.

This module lives in ``tools`` because ``tools`` is the bottom layer: ``agent`` and ``evals`` import
it from here. ``sandbox`` keeps its own :class:`sandbox.errors.SandboxError` with the same shape so
that it imports nothing of the others.
"""

from __future__ import annotations


class InterpAgentError(Exception):
    """Base of all user-facing errors.

    >>> e = InterpAgentError("no such component 'L9X9'", fix="use L{layer}H{head}, e.g. L9H9")
    >>> str(e)
    "no such component 'L9X9' — use L{layer}H{head}, e.g. L9H9"
    """

    def __init__(self, what: str, fix: str | None = None) -> None:
        self.what = what
        self.fix = fix
        super().__init__(what if not fix else f"{what} — {fix}")


class ComponentError(InterpAgentError, ValueError):
    """A component name that does not parse, or names a site the model lacks."""


class ArchitectureError(InterpAgentError):
    """A model whose architecture has no adapter, or lacks a requested site."""


class BatchError(InterpAgentError, ValueError):
    """A task batch whose tensors do not fit together (shapes, lengths, positions)."""


class InterventionError(InterpAgentError, ValueError):
    """An intervention that cannot be applied as asked (NaN vector, wrong shape, ...)."""
