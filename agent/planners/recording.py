"""Wrap any backend so that every call is written to the run log (what :class:`ReplayBackend` reads).

Each call appends an ``llm_request`` (messages added since the previous call, system prompt hash,
tool names) before calling, then an ``llm_response`` (blocks, usage, cost, latency); a failure appends
an ``error`` event and re-raises. Wrapping guarantees the log has exactly what replay needs.

>>> import tempfile
>>> from agent.log import RunLog
>>> from agent.planners.replay import ReplayBackend
>>> from agent.llm.types import LLMResponse, TextBlock
>>> class Echo:
...     name, model = "offline", "echo"
...     def complete(self, *, system, messages, tools, max_tokens=None, timeout_s=None):
...         return LLMResponse(content=[TextBlock(text=str(len(messages)))], stop_reason="end_turn")
>>> log = RunLog(tempfile.mkdtemp())
>>> llm = RecordingBackend(Echo(), log)
>>> llm.complete(system="s", messages=[{"role": "user", "content": "hi"}], tools=[]).text
'1'
>>> [e.kind for e in log.events()]
['llm_request', 'llm_response']
>>> ReplayBackend(log.events()).complete(system="s", messages=[{"role": "user", "content": "hi"}], tools=[]).text
'1'
"""

from __future__ import annotations

from typing import Any

from agent.llm.base import LLMBackend, ToolSpec
from agent.llm.types import LLMResponse
from agent.log import ErrorEvent, LLMRequestEvent, LLMResponseEvent, sha256_text


class RecordingBackend:
    """An :class:`LLMBackend` that logs every call of ``inner`` to ``log`` (an :class:`agent.log.RunLog`)."""

    def __init__(self, inner: LLMBackend, log: Any, *, component: str | None = None) -> None:
        self.inner = inner
        self.log = log
        self.name = inner.name
        self.model = inner.model
        self.component = component
        """Component the calls are about (set it per investigation sub-loop), logged on each event."""
        self._sent = 0  # messages already logged (the conversation grows by appending)

    def complete(self, *, system: str, messages: list[dict[str, Any]], tools: list[ToolSpec],
                 max_tokens: int | None = None, timeout_s: float | None = None) -> LLMResponse:
        delta = messages[self._sent:] if len(messages) >= self._sent else list(messages)
        self.log.append(LLMRequestEvent(backend=self.name, model=self.model, system_sha256=sha256_text(system),
                                        n_messages=len(messages), messages=delta, tools=[t.name for t in tools],
                                        max_tokens=max_tokens, component=self.component))
        self._sent = len(messages)
        try:
            r = self.inner.complete(system=system, messages=messages, tools=tools, max_tokens=max_tokens,
                                    timeout_s=timeout_s)
        except Exception as e:
            self.log.append(ErrorEvent(where=f"llm.{self.name}", message=str(e), recoverable=False,
                                       error_type=type(e).__name__, component=self.component))
            raise
        self.log.append(LLMResponseEvent(backend=self.name, model=r.model or self.model, content=r.content,
                                         stop_reason=r.stop_reason, usage=r.usage, cost_usd=r.cost_usd,
                                         latency_s=r.latency_s, attempts=r.attempts, component=self.component))
        return r

    def reset_conversation(self) -> None:
        """Call when starting a new conversation (e.g. the next component) so deltas restart at 0."""
        self._sent = 0
