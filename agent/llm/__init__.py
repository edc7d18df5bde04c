"""The LLM interface (:class:`LLMBackend`), its data types, and the ``claude`` backend (the Anthropic SDK).

This package knows nothing about run logs: the backends built on the log (``replay``, and the
recording wrapper) live in :mod:`agent.planners` with the ``offline`` planner. Importing this package
does not import the Anthropic SDK: :class:`ClaudeBackend` imports it when built.

- :class:`ClaudeBackend` (``agent.llm.claude``): tool use, retries with backoff (tenacity, every attempt
  counted and logged), token/USD accounting, prompt caching.
- :class:`ToolSpec` and :func:`validate_tool_input` (``agent.llm.base``): tools from pydantic models.
"""

from agent.llm.base import (
    LLMAPIError,
    LLMBackend,
    LLMConfigError,
    LLMDeadlineError,
    LLMError,
    ReplayDivergence,
    ToolSpec,
    validate_tool_input,
)
from agent.llm.claude import DEFAULT_MAX_TOKENS, DEFAULT_MODEL, ClaudeBackend
from agent.llm.pricing import PRICES, cost_usd, price_for
from agent.llm.types import (
    ContentBlock,
    LLMResponse,
    RedactedThinkingBlock,
    StopReason,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
    Usage,
    tool_result,
)

__all__ = [
    "DEFAULT_MAX_TOKENS", "DEFAULT_MODEL", "PRICES", "ClaudeBackend", "ContentBlock", "LLMAPIError", "LLMBackend", "LLMConfigError",
    "LLMDeadlineError", "LLMError", "LLMResponse", "RedactedThinkingBlock", "ReplayDivergence",
    "StopReason", "TextBlock", "ThinkingBlock", "ToolSpec", "ToolUseBlock", "Usage", "cost_usd", "price_for",
    "tool_result", "validate_tool_input",
]
