"""The ``claude`` backend: the official ``anthropic`` SDK with tool use, retries, accounting and caching.

- **Retries** by ``tenacity`` around single SDK calls (the client is built with ``max_retries=0``), so
  every attempt is visible: counted in :attr:`ClaudeBackend.totals` (attempts, retries, each wait and
  error) and logged on the ``agent.llm.claude`` logger; the response's ``attempts`` goes into the run log.
  429, 408, 409, 5xx and 529 ``overloaded_error`` (and connection errors) are retried with exponential
  backoff and full jitter, ``min(max_delay, base_delay * 2**k) * U(0.5, 1)``; a ``retry-after`` /
  ``retry-after-ms`` header, when present, is honoured instead (capped at ``max_delay``). Other errors
  (400, 401, 403, 404...) fail at once with a message saying what to fix.
- **Accounting**: tokens from the response ``usage`` (input, output, cache read, cache write) and USD
  from :mod:`agent.llm.pricing` (None for an unknown model). :attr:`ClaudeBackend.totals` sums them.
- **Prompt caching**: ``cache_control: {"type": "ephemeral"}`` on the system block and on the last
  tool (so the tools + system prefix is cached), and, with ``cache_conversation=True`` (default), on the
  last block of the last message so each turn reads the earlier turns from the cache.
- **Output room**: ``max_tokens`` defaults to :data:`DEFAULT_MAX_TOKENS` (16000): Claude 5 models think
  adaptively by default and the thinking counts against ``max_tokens``, so 4096 cut turns short.
  ``stream=True`` streams each response (needed for very large ``max_tokens``).
- **A deadline**: ``complete(..., timeout_s=T)`` ends within about ``T`` seconds, retries included: each
  attempt's HTTP timeout is at most what is left, no backoff sleeps past it, and a call still unfinished
  then raises :class:`LLMDeadlineError` (the loop passes what is left of the run's ``--max-wall-s``).
- **Start-up check**: :meth:`ClaudeBackend.check` makes one free request (``GET /v1/models/{model}``) so a
  wrong key or model id is found before any work, not after the sandbox and the localisation ran.

The SDK is imported when a backend is built, not when this module is imported.

>>> ClaudeBackend(api_key="")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
agent.llm.base.LLMConfigError: ANTHROPIC_API_KEY is not set — export ANTHROPIC_API_KEY=... or use --planner offline ...
"""

from __future__ import annotations

import copy
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tenacity import RetryCallState, Retrying, retry_if_exception

from agent.llm.base import LLMAPIError, LLMConfigError, LLMDeadlineError, ToolSpec
from agent.llm.pricing import cost_usd
from agent.llm.types import (
    LLMResponse,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
    Usage,
)

log = logging.getLogger(__name__)

DEFAULT_MODEL = "claude-sonnet-5-5"
"""The default model: Claude Sonnet 5.5 (current Sonnet as of 2026-11; $2 / $10 per million tokens)."""
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
"""HTTP statuses retried (any other 5xx too)."""
EPHEMERAL = {"type": "ephemeral"}
DEFAULT_MAX_TOKENS = 16000
"""Output tokens per call (thinking included): room for adaptive thinking plus a turn of tool calls."""


@dataclass
class Totals:
    """Running sums over a backend's calls."""

    calls: int = 0
    """Successful calls."""
    attempts: int = 0
    """HTTP attempts, failed ones included."""
    retries: int = 0
    """Attempts that failed and were retried."""
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    usd: float = 0.0
    """Spend (US dollars); calls of unknown price add 0 and set ``usd_unknown``."""
    usd_unknown: bool = False
    sleeps: list[float] = field(default_factory=list)
    """Each backoff wait (seconds), in order."""
    errors: list[str] = field(default_factory=list)
    """Each failed attempt that was retried: its error, in order."""


class ClaudeBackend:
    """Claude through the Messages API with tool use.

    ``api_key`` defaults to ``$ANTHROPIC_API_KEY``; ``base_url`` to the SDK default (or
    ``$ANTHROPIC_BASE_URL``). ``max_retries`` counts retries after the first attempt. ``max_tokens`` is
    the output limit of each call (thinking included). ``stream=True`` streams each response
    (server-sent events; needed for very large ``max_tokens``) and returns the same final turn; an error
    event mid-stream (e.g. ``overloaded_error``) is retried like an HTTP one. ``timeout`` bounds one HTTP
    attempt (seconds). ``sleep`` and ``rng`` are injectable so tests need not wait.
    """

    name = "claude"

    def __init__(self, model: str = DEFAULT_MODEL, *, api_key: str | None = None, base_url: str | None = None,
                 max_retries: int = 6, base_delay: float = 1.0, max_delay: float = 60.0,
                 timeout: float = 300.0, cache_conversation: bool = True, stream: bool = False,
                 max_tokens: int = DEFAULT_MAX_TOKENS, sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None) -> None:
        key = os.environ.get("ANTHROPIC_API_KEY") if api_key is None else api_key
        if not key:
            raise LLMConfigError("ANTHROPIC_API_KEY is not set",
                                 fix="export ANTHROPIC_API_KEY=... or use --planner offline "
                                     "(the deterministic offline researcher needs no key)")
        if max_retries < 0:
            raise LLMConfigError(f"max_retries must be >= 0, got {max_retries}", fix="pass 0 to disable retries")
        if max_tokens < 1:
            raise LLMConfigError(f"max_tokens must be >= 1, got {max_tokens}",
                                 fix=f"pass a positive --llm-max-tokens (default {DEFAULT_MAX_TOKENS})")
        import anthropic  # the SDK is only needed here

        self._anthropic = anthropic
        self.model = model
        self.max_retries = max_retries
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.cache_conversation = cache_conversation
        self.stream = stream
        self.max_tokens = max_tokens
        self.timeout = timeout
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.totals = Totals()
        self.client = anthropic.Anthropic(api_key=key, base_url=base_url, max_retries=0, timeout=timeout)

    def close(self) -> None:
        """Close the HTTP connection pool (the backend can still be garbage-collected without this)."""
        self.client.close()

    def __enter__(self) -> ClaudeBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ClaudeBackend(model={self.model!r}, base_url={str(self.client.base_url)!r})"

    # ------------------------------------------------------------------------------------------ request

    def build_request(self, *, system: str, messages: list[dict[str, Any]], tools: list[ToolSpec],
                      max_tokens: int | None = None) -> dict[str, Any]:
        """The keyword arguments of ``messages.create`` (with the cache breakpoints); inputs untouched."""
        req: dict[str, Any] = {"model": self.model, "max_tokens": max_tokens or self.max_tokens}
        if system:
            req["system"] = [{"type": "text", "text": system, "cache_control": EPHEMERAL}]
        if tools:
            api_tools = [t.to_api() for t in tools]
            api_tools[-1] = {**api_tools[-1], "cache_control": EPHEMERAL}
            req["tools"] = api_tools
        msgs = copy.deepcopy(messages)
        if self.cache_conversation and msgs:
            last = msgs[-1]
            content = last.get("content")
            if isinstance(content, str) and content:
                last["content"] = [{"type": "text", "text": content, "cache_control": EPHEMERAL}]
            elif isinstance(content, list) and content and isinstance(content[-1], dict) and \
                    content[-1].get("type") in ("text", "tool_result", "tool_use", "image", "document"):
                content[-1] = {**content[-1], "cache_control": EPHEMERAL}
        req["messages"] = msgs
        return req

    # ------------------------------------------------------------------------------------------ call

    def check(self) -> None:
        """One free request (``GET /v1/models/{model}``) proving the key works and the model exists.

        Raises :class:`LLMAPIError` with the fix (a rejected key: 401; an unknown model id: 404); transient
        failures are retried as for :meth:`complete`.
        """
        self._retrying(lambda timeout: self.client.models.retrieve(self.model, timeout=timeout), None,
                       gave_up="wait until the API answers again and rerun, or use --planner offline")

    def complete(self, *, system: str, messages: list[dict[str, Any]], tools: list[ToolSpec],
                 max_tokens: int | None = None, timeout_s: float | None = None) -> LLMResponse:
        """One assistant turn. Retries transient failures (tenacity); raises :class:`LLMAPIError` for good.

        ``max_tokens``: this call's output limit (default: the backend's). ``timeout_s``: finish within this
        many seconds, retries included, else raise :class:`LLMDeadlineError`.
        """
        req = self.build_request(system=system, messages=messages, tools=tools, max_tokens=max_tokens)
        start = time.monotonic()
        msg, attempts = self._retrying(lambda timeout: self._send(req, timeout, start + timeout_s
                                                                  if timeout_s is not None else None), timeout_s)
        try:
            resp = self._to_response(msg, latency_s=time.monotonic() - start, attempts=attempts)
        except (TypeError, AttributeError, ValueError) as e:  # a 200 whose body is not a Message
            raise LLMAPIError(f"malformed response from the Claude API ({type(e).__name__}: {e})",
                              fix="check ANTHROPIC_BASE_URL points at the Messages API; rerun with --debug",
                              attempts=attempts) from e
        self._account(resp)
        return resp

    def _retrying(self, call: Callable[[float], Any], timeout_s: float | None,
                  gave_up: str = "wait until the API answers again, then `interp-agent resume RUN` continues the run "
                                 "(or use --planner offline)") -> tuple[Any, int]:
        """``call(http_timeout)`` with retries; returns ``(its value, attempts)``. Within ``timeout_s`` if given:
        each attempt's HTTP timeout is what is left, and no retry starts (or sleeps) past the deadline.
        ``gave_up``: the fix of the error raised when the retries are exhausted."""
        deadline = time.monotonic() + timeout_s if timeout_s is not None else None
        out_of_time = False

        def stop(state: RetryCallState) -> bool:
            nonlocal out_of_time
            if state.attempt_number > self.max_retries:
                return True
            out_of_time = deadline is not None and time.monotonic() + (state.upcoming_sleep or 0.0) >= deadline
            return out_of_time

        retrying = Retrying(stop=stop, wait=self._wait,
                            retry=retry_if_exception(lambda e: self._classify(e, 0)[0]), sleep=self._sleep,
                            before_sleep=self._record_retry, reraise=True)
        try:
            for attempt in retrying:
                with attempt:
                    self.totals.attempts += 1
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise LLMDeadlineError(
                            f"the run's wall-clock budget ran out during a Claude API call "
                            f"({timeout_s:.0f} s were left)", fix="raise --max-wall-s")
                    value = call(self.timeout if left is None else max(0.001, min(self.timeout, left)))
        except LLMDeadlineError:
            raise
        except Exception as e:  # classify; anything not from the SDK propagates unchanged
            n = retrying.statistics.get("attempt_number", 1)
            retry, failure = self._classify(e, n)
            if failure is None:
                raise
            if retry and (out_of_time or (deadline is not None and time.monotonic() >= deadline)):
                raise LLMDeadlineError(
                    f"the run's wall-clock budget ran out during a Claude API call after {n} attempt(s); last "
                    f"error: {failure.what}", fix="raise --max-wall-s", status_code=failure.status_code,
                    error_type=failure.error_type, attempts=n) from e
            if not retry:
                raise failure from e
            raise LLMAPIError(
                f"Claude API failed after {n} attempts; last error: {failure.what}", fix=gave_up,
                status_code=failure.status_code, error_type=failure.error_type, attempts=n) from e
        return value, retrying.statistics["attempt_number"]

    def _send(self, req: dict[str, Any], timeout: float, deadline: float | None) -> Any:
        """One HTTP attempt (streamed or not); the SDK's own retries are off (``max_retries=0``). ``timeout``
        bounds the attempt's connect and each read; a stream also stops at ``deadline`` (a monotonic time)."""
        if self.stream:
            with self.client.messages.stream(**req, timeout=timeout) as s:
                for _ in s:
                    if deadline is not None and time.monotonic() > deadline:
                        raise self._anthropic.APITimeoutError(request=s.response.request)
                return s.get_final_message()
        return self.client.messages.create(**req, timeout=timeout)

    def _wait(self, state: RetryCallState) -> float:
        """Seconds before the next attempt: the server's ``retry-after``, else backoff with jitter."""
        e = state.outcome.exception()  # type: ignore[union-attr]
        response = getattr(e, "response", None) if isinstance(e, self._anthropic.APIStatusError) else None
        delay = self._retry_after(response.headers) if response is not None else None
        return delay if delay is not None else self._backoff(state.attempt_number)

    def _record_retry(self, state: RetryCallState) -> None:
        """Every failed attempt that will be retried: counted, its wait kept, and logged (``agent.llm.claude``)."""
        e = state.outcome.exception()  # type: ignore[union-attr]
        wait = state.next_action.sleep if state.next_action else 0.0  # type: ignore[union-attr]
        self.totals.retries += 1
        self.totals.sleeps.append(wait)
        self.totals.errors.append(f"{type(e).__name__}: {e}"[:300])
        log.warning("Claude API attempt %d failed (%s: %s); retrying in %.1f s", state.attempt_number,
                    type(e).__name__, str(e)[:200], wait)

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter for the wait after failed attempt number ``attempt`` (1-based)."""
        return min(self.max_delay, self.base_delay * 2 ** (attempt - 1)) * self._rng.uniform(0.5, 1.0)

    def _classify(self, e: BaseException, attempt: int) -> tuple[bool, LLMAPIError | None]:
        """(retry?, the error to raise); error None for a non-SDK exception."""
        a = self._anthropic
        if isinstance(e, a.APIStatusError):
            status = e.status_code
            etype = getattr(e, "type", None)
            api_msg = getattr(e, "api_message", None) or str(e)
            what = f"HTTP {status} {etype or ''}: {api_msg}".replace("  ", " ")
            retry = status in RETRYABLE_STATUS or status >= 500 or etype == "overloaded_error"
            fix = {
                401: "check ANTHROPIC_API_KEY (it was rejected), or use --planner offline",
                403: "the API key lacks permission for this model or feature; check the key or the model",
                404: f"unknown model {self.model!r} or endpoint; pass a current model id with --model",
                400: "the request was malformed; rerun with --debug and report it",
            }.get(status, "see the message; use --planner offline to work without the API")
            return retry, LLMAPIError(f"Claude API error: {what}", fix=fix, status_code=status, error_type=etype,
                                      attempts=attempt)
        if isinstance(e, a.APIConnectionError):  # includes APITimeoutError
            return True, LLMAPIError(f"cannot reach the Claude API at {self.client.base_url}: {e}",
                                     fix="check the network / ANTHROPIC_BASE_URL, or use --planner offline",
                                     attempts=attempt)
        if isinstance(e, a.APIError | ValueError):  # a body that does not parse (JSONDecodeError is a ValueError)
            return False, LLMAPIError(f"unexpected response from the Claude API ({type(e).__name__}: {e})",
                                      fix="rerun with --debug and report it, or use --planner offline",
                                      attempts=attempt)
        return False, None

    def _retry_after(self, headers: Any) -> float | None:
        """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds), capped at ``max_delay``."""
        for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
            raw = headers.get(name) if headers is not None else None
            if raw is None:
                continue
            try:
                v = float(raw) * scale
            except ValueError:
                continue
            if v >= 0:
                return min(v, self.max_delay)
        return None

    # ------------------------------------------------------------------------------------------ response

    def _to_response(self, msg: Any, *, latency_s: float, attempts: int) -> LLMResponse:
        blocks: list[Any] = []
        for b in msg.content:
            t = getattr(b, "type", None)
            if t == "text":
                blocks.append(TextBlock(text=b.text))
            elif t == "tool_use":
                blocks.append(ToolUseBlock(id=b.id, name=b.name, input=b.input))
            elif t == "thinking":
                blocks.append(ThinkingBlock(thinking=b.thinking, signature=getattr(b, "signature", "") or ""))
            elif t == "redacted_thinking":
                blocks.append(RedactedThinkingBlock(data=b.data))
            # other block kinds (server tools...) are not used by our tools and are dropped
        u = msg.usage
        usage = Usage(input_tokens=u.input_tokens or 0, output_tokens=u.output_tokens or 0,
                      cache_read_input_tokens=getattr(u, "cache_read_input_tokens", None) or 0,
                      cache_creation_input_tokens=getattr(u, "cache_creation_input_tokens", None) or 0)
        model = getattr(msg, "model", None) or self.model
        cost = cost_usd(model, **usage.model_dump())
        if cost is None and model != self.model:
            cost = cost_usd(self.model, **usage.model_dump())
        stop = msg.stop_reason if msg.stop_reason in ("end_turn", "tool_use", "max_tokens", "stop_sequence",
                                                       "pause_turn", "refusal") else None
        return LLMResponse(content=blocks, stop_reason=stop, usage=usage, cost_usd=cost, model=model,
                           latency_s=latency_s, attempts=attempts)

    def _account(self, r: LLMResponse) -> None:
        t = self.totals
        t.calls += 1
        t.input_tokens += r.usage.input_tokens
        t.output_tokens += r.usage.output_tokens
        t.cache_read_input_tokens += r.usage.cache_read_input_tokens
        t.cache_creation_input_tokens += r.usage.cache_creation_input_tokens
        if r.cost_usd is None:
            t.usd_unknown = True
        else:
            t.usd += r.cost_usd
