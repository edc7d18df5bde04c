"""LLM backends behind one interface (:class:`LLMBackend`): ``claude`` (the Anthropic SDK) and ``replay``.

The offline planner lives with the research loop; it is a backend of the same shape. Importing this
package does not import the Anthropic SDK: :class:`ClaudeBackend` imports it when built.
"""

from agent.llm.types import ContentBlock, LLMResponse, StopReason, TextBlock, ToolUseBlock, Usage, tool_result

__all__ = ["ContentBlock", "LLMResponse", "StopReason", "TextBlock", "ToolUseBlock", "Usage", "tool_result"]
