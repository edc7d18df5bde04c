"""Errors of the task library (their own module so ``spec`` and ``generators`` both import it, not each other)."""

from __future__ import annotations

from tools.errors import InterpAgentError


class TaskSpecError(InterpAgentError, ValueError):
    """A task spec file that is missing, unparsable or invalid, or a task name that does not exist."""


class TokenizationError(InterpAgentError, ValueError):
    """A prompt that the given tokenizer cannot split as the task needs (e.g. a name that is two tokens)."""
