"""LLM backends behind one interface (:class:`LLMBackend`): ``claude`` (the Anthropic SDK) and ``replay``.

The offline planner lives with the research loop; it is a backend of the same shape. Importing this
package does not import the Anthropic SDK: :class:`ClaudeBackend` imports it when built.

- :class:`ClaudeBackend` (``agent.llm.claude``): tool use, retries with backoff, token/USD accounting,
  prompt caching.
- :class:`ReplayBackend` (``agent.llm.replay``): the turns recorded in a run log, in order.
- :class:`RecordingBackend` (``agent.llm.recorded``): wraps a backend, logging each call (what replay reads).
- :class:`ToolSpec` and :func:`validate_tool_input` (``agent.llm.base``): tools from pydantic models.
"""

from agent.llm.base import (
    LLMAPIError,
    LLMBackend,
    LLMConfigError,
    LLMError,
    ReplayError,
    ToolSpec,
    validate_tool_input,
)
from agent.llm.claude import DEFAULT_MODEL, ClaudeBackend
from agent.llm.pricing import PRICES, cost_usd, price_for
from agent.llm.recorded import RecordingBackend
from agent.llm.replay import ReplayBackend
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
    "DEFAULT_MODEL", "PRICES", "ClaudeBackend", "ContentBlock", "LLMAPIError", "LLMBackend", "LLMConfigError",
    "LLMError", "LLMResponse", "RecordingBackend", "RedactedThinkingBlock", "ReplayBackend", "ReplayError",
    "StopReason", "TextBlock", "ThinkingBlock", "ToolSpec", "ToolUseBlock", "Usage", "cost_usd", "price_for",
    "tool_result", "validate_tool_input",
]
