"""The ``replay`` backend: answers with the LLM turns recorded in a run log, calling no API.

Each :meth:`ReplayBackend.complete` returns the next recorded ``llm_response`` (usage and cost as
recorded, so budgets replay identically). When the log also holds the matching ``llm_request``, the
call is checked loosely against it (same number of messages; with ``strict=True`` also the same
system prompt hash and tool names): a mismatch means the run diverged from the recording, and
:class:`~agent.llm.base.ReplayDivergence` says so instead of feeding answers to the wrong questions.

>>> from agent.log import LLMRequestEvent, LLMResponseEvent
>>> from agent.llm.types import TextBlock
>>> evs = [LLMRequestEvent(backend="claude", model="m", system_sha256="x", n_messages=1, seq=0),
...        LLMResponseEvent(backend="claude", model="m", content=[TextBlock(text="done")],
...                         stop_reason="end_turn", seq=1)]
>>> r = ReplayBackend(evs)
>>> r.complete(system="s", messages=[{"role": "user", "content": "go"}], tools=[]).text
'done'
>>> r.remaining
0
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.llm.base import ReplayDivergence, ToolSpec
from agent.llm.types import LLMResponse
from agent.log import LLMRequestEvent, LLMResponseEvent, read_events, sha256_text


class ReplayBackend:
    """Replays recorded ``llm_response`` events in order. ``events``: a list of events or a run dir."""

    name = "replay"

    def __init__(self, events: Sequence[Any] | str | Path, *, strict: bool = False) -> None:
        if isinstance(events, str | Path):
            events = read_events(events)
        self._sha = sha256_text
        self.strict = strict
        self._pairs: list[tuple[Any, Any]] = []  # (request event | None, response event)
        pending: Any = None
        for e in events:
            if isinstance(e, LLMRequestEvent):
                pending = e
            elif isinstance(e, LLMResponseEvent):
                self._pairs.append((pending, e))
                pending = None
        self._next = 0
        self.model = self._pairs[0][1].model if self._pairs else "replay"

    @property
    def remaining(self) -> int:
        """Recorded turns not yet replayed."""
        return len(self._pairs) - self._next

    def complete(self, *, system: str, messages: list[dict[str, Any]], tools: list[ToolSpec],
                 max_tokens: int | None = None, timeout_s: float | None = None) -> LLMResponse:
        """The next recorded turn; :class:`ReplayDivergence` when the log is exhausted or the call diverges."""
        k = self._next
        if k >= len(self._pairs):
            raise ReplayDivergence(
                f"the run log holds {len(self._pairs)} recorded LLM turn(s); call #{k + 1} has no recording",
                fix="the replayed run went further than the recorded one (its code or inputs changed); "
                    "replay with the same version and config, or continue with --planner claude|offline")
        req, resp = self._pairs[k]
        if req is not None:
            problems = []
            if req.n_messages != len(messages):
                problems.append(f"recorded request had {req.n_messages} messages, this one has {len(messages)}")
            if self.strict and req.system_sha256 != self._sha(system):
                problems.append("the system prompt differs")
            if self.strict and req.tools and req.tools != [t.name for t in tools]:
                problems.append(f"tools differ ({req.tools} recorded)")
            if problems:
                raise ReplayDivergence(f"replay diverged at LLM call #{k + 1} (log seq {req.seq}): {'; '.join(problems)}",
                                  fix="replay with the interp-agent version and config that recorded the run")
        self._next += 1
        return LLMResponse(content=list(resp.content), stop_reason=resp.stop_reason, usage=resp.usage,
                           cost_usd=resp.cost_usd, model=resp.model, latency_s=resp.latency_s,
                           attempts=resp.attempts)
