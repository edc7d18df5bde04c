"""Budgets of an investigation: per-component steps, total tool calls, tokens, USD and wall time.

A :class:`Budget` holds the limits (``None`` = unlimited); a :class:`BudgetUsage` holds the counters.
Counters are pure data carried in the graph state and derived from logged events (LLM usage, tool
calls), so a resumed run counts exactly what the log says was spent. :func:`exceeded` names the first
limit that is hit, or returns ``None``.

=================  ===========  ============================================================
limit              scope        effect when hit
=================  ===========  ============================================================
``max_steps``      component    that component ends as ``inconclusive: budget``; the run goes on
``max_tool_calls`` run          the current and every remaining component end ``inconclusive: budget``
``max_tokens``     run          same (input + output tokens of all LLM responses)
``max_usd``        run          same (sum of ``cost_usd``; unknown costs count as 0)
``max_wall_s``     run          same (seconds of active run time, pauses between kill and resume excluded)
=================  ===========  ============================================================

In every case the run still clusters and reports what it has, and the log gets a ``budget`` event.

>>> b = Budget(max_steps=3, max_usd=1.0)
>>> u = BudgetUsage(steps=3, usd=0.2)
>>> exceeded(b, u)
'component_steps'
>>> exceeded(b, u.model_copy(update={"steps": 1, "usd": 1.5}))
'usd'
>>> exceeded(b, BudgetUsage()) is None
True
>>> is_run_wide("usd"), is_run_wide("component_steps")
(True, False)
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from tools.errors import InterpAgentError


class Budget(BaseModel):
    """Limits of one run. ``None`` means no limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_steps: int | None = Field(12, ge=1)
    """Planner steps (LLM turns) per component."""
    max_tool_calls: int | None = Field(None, ge=1)
    """Tool calls over the whole run (every tool_use block counts, valid or not)."""
    max_tokens: int | None = Field(None, ge=1)
    """Input + output tokens over the whole run."""
    max_usd: float | None = Field(None, ge=0)
    """US dollars over the whole run (from each response's ``cost_usd``)."""
    max_wall_s: float | None = Field(None, gt=0)
    """Seconds of active wall time over the whole run."""


class BudgetUsage(BaseModel):
    """What a run (and its current component) has used so far."""

    model_config = ConfigDict(extra="forbid")

    steps: int = 0
    """Planner steps of the *current* component (reset per component)."""
    tool_calls: int = 0
    """Tool calls over the run."""
    input_tokens: int = 0
    output_tokens: int = 0
    usd: float = 0.0
    wall_s: float = 0.0
    """Active seconds over the run (kept up to date by the loop)."""

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


RUN_WIDE = ("tool_calls", "tokens", "usd", "wall_s")


def is_run_wide(limit: str) -> bool:
    """True for limits that end the whole investigation (not just one component)."""
    return limit in RUN_WIDE


LIMIT_NAMES = {"max_steps": "component_steps", "max_tool_calls": "tool_calls", "max_tokens": "tokens",
               "max_usd": "usd", "max_wall_s": "wall_s"}
"""Budget field → the ``limit_hit`` name used in the log's ``budget`` events."""


def exceeded(budget: Budget, usage: BudgetUsage) -> str | None:
    """The name of the first limit that ``usage`` has reached, else ``None`` (checked run-wide first).

    Names are the log's ``limit_hit`` values: ``component_steps``, ``tool_calls``, ``tokens``, ``usd``,
    ``wall_s``.
    """
    checks = [
        ("max_tool_calls", usage.tool_calls),
        ("max_tokens", usage.tokens),
        ("max_usd", usage.usd),
        ("max_wall_s", usage.wall_s),
        ("max_steps", usage.steps),
    ]
    for name, used in checks:
        limit = getattr(budget, name)
        if limit is not None and used >= limit:
            return LIMIT_NAMES[name]
    return None


def parse_budget(max_steps: int | None = None, max_usd: float | None = None, max_tool_calls: int | None = None,
                 max_tokens: int | None = None, max_wall_s: float | None = None) -> Budget:
    """Build a :class:`Budget` from CLI values, raising a one-line error for nonsense ones.

    >>> parse_budget(max_steps=5).max_steps
    5
    >>> try:
    ...     parse_budget(max_usd=-1)
    ... except BudgetError as e:
    ...     print(e)
    invalid budget: max_usd=-1 — give a non-negative number (e.g. --budget-usd 2.5)
    """
    values = dict(max_steps=max_steps, max_usd=max_usd, max_tool_calls=max_tool_calls, max_tokens=max_tokens,
                  max_wall_s=max_wall_s)
    given = {k: v for k, v in values.items() if v is not None}
    for k, v in given.items():
        if v < 0 or (k != "max_usd" and v == 0):
            raise BudgetError(f"invalid budget: {k}={v}", fix="give a non-negative number (e.g. --budget-usd 2.5)"
                              if k == "max_usd" else f"give a positive number for {k}")
    return Budget(**given)


class BudgetError(InterpAgentError, ValueError):
    """A budget limit that makes no sense (negative, zero steps)."""
