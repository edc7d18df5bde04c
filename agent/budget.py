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
``interp-agent resume RUN --budget-usd X`` (or another larger run-wide limit) continues a run a run-wide
limit stopped (see :func:`agent.run.resume_run`); the limits count what the run spent before.

>>> b = Budget(max_steps=3, max_usd=1.0)
>>> u = BudgetUsage(steps=3, usd=0.2)
>>> exceeded(b, u)
<Limit.COMPONENT_STEPS: 'component_steps'>
>>> exceeded(b, u.model_copy(update={"steps": 1, "usd": 1.5})) == "usd"
True
>>> exceeded(b, BudgetUsage()) is None
True
>>> Limit.USD.run_wide, Limit.COMPONENT_STEPS.run_wide
(True, False)
"""

from __future__ import annotations

from enum import StrEnum

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


class Limit(StrEnum):
    """A budget limit that was reached: the ``limit_hit`` value of the log's ``budget`` events."""

    COMPONENT_STEPS = "component_steps"
    """``max_steps``: the current component's planner steps."""
    TOOL_CALLS = "tool_calls"
    """``max_tool_calls``, over the run."""
    TOKENS = "tokens"
    """``max_tokens``, over the run."""
    USD = "usd"
    """``max_usd``, over the run."""
    WALL_S = "wall_s"
    """``max_wall_s``, over the run."""
    STEPS = "steps"
    """Run-level planner steps (accepted in logs; no budget field sets it)."""

    @property
    def run_wide(self) -> bool:
        """True for limits that end the whole investigation (not just one component)."""
        return self is not Limit.COMPONENT_STEPS


FIELDS: dict[str, Limit] = {"max_tool_calls": Limit.TOOL_CALLS, "max_tokens": Limit.TOKENS, "max_usd": Limit.USD,
                            "max_wall_s": Limit.WALL_S, "max_steps": Limit.COMPONENT_STEPS}
"""Budget field → its :class:`Limit`, in the order :func:`exceeded` checks them (run-wide first)."""


def exceeded(budget: Budget, usage: BudgetUsage) -> Limit | None:
    """The first limit that ``usage`` has reached, else ``None`` (checked run-wide first)."""
    used = {"max_tool_calls": usage.tool_calls, "max_tokens": usage.tokens, "max_usd": usage.usd,
            "max_wall_s": usage.wall_s, "max_steps": usage.steps}
    for name, limit in FIELDS.items():
        cap = getattr(budget, name)
        if cap is not None and used[name] >= cap:
            return limit
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
