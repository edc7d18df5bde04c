"""Plain data types of the LLM interface, shared by the backends and the run log.

Nothing here imports an SDK: :mod:`agent.log` imports these types to record LLM turns, and the
Anthropic SDK is imported only by :class:`agent.llm.claude.ClaudeBackend` when it is built.

Messages follow the Anthropic Messages format: ``{"role": "user"|"assistant", "content": str | [block]}``
with blocks ``{"type": "text", "text": ...}``, ``{"type": "tool_use", "id", "name", "input"}`` and
``{"type": "tool_result", "tool_use_id", "content", "is_error"}``.

>>> r = LLMResponse(content=[TextBlock(text="look at L1H0"),
...                          ToolUseBlock(id="t1", name="ablate", input={"component": "L1H0"})],
...                 stop_reason="tool_use", model="fake", usage=Usage(input_tokens=10, output_tokens=5))
>>> [b.type for b in r.content], r.text, [t.name for t in r.tool_uses]
(['text', 'tool_use'], 'look at L1H0', ['ablate'])
>>> r.assistant_message()["content"][1]
{'type': 'tool_use', 'id': 't1', 'name': 'ablate', 'input': {'component': 'L1H0'}}
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class TextBlock(_Data):
    """A text block of an assistant turn."""

    type: Literal["text"] = "text"
    text: str
    """The text the model wrote."""


class ToolUseBlock(_Data):
    """A tool call requested by the model; answer it with a ``tool_result`` block with the same ``id``."""

    type: Literal["tool_use"] = "tool_use"
    id: str
    """The call id chosen by the API (``toolu_...``); a ``tool_result`` must echo it as ``tool_use_id``."""
    name: str
    """The tool's name, one of the :class:`ToolSpec` names sent with the request."""
    input: Any = Field(default_factory=dict)
    """The tool's arguments as the model wrote them (normally a JSON object): NOT validated (see
    ``validate_tool_input``)."""


class ThinkingBlock(_Data):
    """The model's visible reasoning (adaptive/extended thinking). Send it back unchanged in the next request."""

    type: Literal["thinking"] = "thinking"
    thinking: str
    """The reasoning text."""
    signature: str = ""
    """Opaque signature the API checks when the block is sent back."""


class RedactedThinkingBlock(_Data):
    """Encrypted reasoning. Send it back unchanged in the next request."""

    type: Literal["redacted_thinking"] = "redacted_thinking"
    data: str
    """Opaque encrypted payload."""


ContentBlock = Annotated[TextBlock | ToolUseBlock | ThinkingBlock | RedactedThinkingBlock,
                         Field(discriminator="type")]
"""One block of an assistant turn."""

StopReason = Literal["end_turn", "tool_use", "max_tokens", "stop_sequence", "pause_turn", "refusal"]
"""Why the model stopped: ``end_turn`` (done), ``tool_use`` (wants tool results), ``max_tokens`` (cut)."""


class Usage(_Data):
    """Token counts of one response, as billed."""

    input_tokens: int = Field(0, ge=0)
    """Uncached input tokens (tokens)."""
    output_tokens: int = Field(0, ge=0)
    """Generated tokens (tokens)."""
    cache_read_input_tokens: int = Field(0, ge=0)
    """Input tokens served from the prompt cache (tokens; billed at ~0.1x input)."""
    cache_creation_input_tokens: int = Field(0, ge=0)
    """Input tokens written to the prompt cache (tokens; billed at ~1.25x input)."""

    @property
    def total_input_tokens(self) -> int:
        """All input tokens, cached or not.

        >>> Usage(input_tokens=3, cache_read_input_tokens=100, cache_creation_input_tokens=7).total_input_tokens
        110
        """
        return self.input_tokens + self.cache_read_input_tokens + self.cache_creation_input_tokens


class LLMResponse(_Data):
    """One assistant turn returned by an :class:`~agent.llm.base.LLMBackend`."""

    content: list[ContentBlock] = Field(default_factory=list)
    """The turn's blocks, in order."""
    stop_reason: StopReason | None = None
    """Why generation stopped (None when the backend does not say)."""
    usage: Usage = Field(default_factory=Usage)
    """Token counts for this call."""
    cost_usd: float | None = None
    """Price of this call in US dollars from the price table; None when the model's price is unknown."""
    model: str = ""
    """The model id that answered."""
    latency_s: float = 0.0
    """Wall time of the call including retries (seconds)."""
    attempts: int = 1
    """HTTP attempts made (1 = no retry)."""

    @property
    def text(self) -> str:
        """All text blocks joined by newlines."""
        return "\n".join(b.text for b in self.content if isinstance(b, TextBlock))

    @property
    def tool_uses(self) -> list[ToolUseBlock]:
        """The tool calls of this turn, in order."""
        return [b for b in self.content if isinstance(b, ToolUseBlock)]

    def assistant_message(self) -> dict[str, Any]:
        """This turn as an Anthropic ``assistant`` message to append to the conversation."""
        return {"role": "assistant", "content": [b.model_dump() for b in self.content]}


def tool_result(tool_use_id: str, content: str | list[dict[str, Any]], *, is_error: bool = False) -> dict[str, Any]:
    """A ``tool_result`` content block answering the ``tool_use`` block with id ``tool_use_id``.

    >>> tool_result("t1", "bad input", is_error=True)
    {'type': 'tool_result', 'tool_use_id': 't1', 'content': 'bad input', 'is_error': True}
    """
    return {"type": "tool_result", "tool_use_id": tool_use_id, "content": content, "is_error": is_error}
