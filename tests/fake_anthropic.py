"""A fake Anthropic Messages API on 127.0.0.1, for driving the real ``anthropic`` SDK in tests.

The server replays a script: each ``POST /v1/messages`` takes the next item, which is either a
response turn (:func:`text_turn`, :func:`tool_turn`, :func:`turn`), an error (:func:`rate_limited`
429 with ``retry-after``, :func:`server_error` 500, :func:`overloaded` 529, :func:`api_error`), or a
callable ``(request_body) -> item`` for answers that depend on the request. Every request is recorded
(path, headers, JSON body) in ``.requests``. An exhausted script answers 400 ``invalid_request_error``
("fake_anthropic: script exhausted"), which the backend does not retry, so a test fails fast.

Use the ``fake_anthropic`` fixture (import it into a conftest)::

    def test_x(fake_anthropic):
        fake_anthropic.script([tool_turn("ablate", {"component": "L1H0"}), text_turn("done")])
        llm = ClaudeBackend(api_key="test", base_url=fake_anthropic.base_url, sleep=lambda s: None)
        ...
        assert fake_anthropic.requests[1].body["messages"][-1]["content"][0]["type"] == "tool_result"

The SDK sends ``Authorization: Bearer <key>`` (anthropic 2.12) or ``x-api-key``; the fake accepts
either and records both, insisting on neither (``fake.valid_keys = {...}`` makes every other key a 401
``authentication_error``). Streaming requests (``"stream": true``) are answered as server-sent events
with the same content. ``GET /v1/models/{id}`` answers like the Models API: the model's info for the ids in
:data:`KNOWN_MODELS`, else 404 ``not_found_error`` (the backend's start-up check).

**The real API's validation rules.** Before taking a script item, every ``POST /v1/messages`` is checked
by :func:`check_request` against the rules of the real service, and a request it would reject gets the
same 400 ``invalid_request_error`` (recorded in ``fake.rejected``; no script item is used): messages
that are empty (no content, an empty or whitespace-only text block) except the optional final assistant
message; roles that do not alternate user / assistant starting with user; a ``tool_use`` not answered by
a ``tool_result`` (placed first) in the very next user message, a ``tool_result`` answering no
``tool_use`` of the previous assistant message, duplicate ids; ``temperature`` / ``top_p`` / ``top_k``
on a 5-generation model (Sonnet 5+ reject non-default sampling parameters); ``tool_choice`` ``any`` or
``tool`` on ``claude-sonnet-5-5`` (forced tool use errors there); more than 4 ``cache_control``
breakpoints; tools without a valid name or an object ``input_schema``; a missing ``model`` or a
``max_tokens`` that is not a positive integer. So the agent's loop cannot send a request the real
service would refuse without a test failing on it.
"""

from __future__ import annotations

import itertools
import json
import re
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

_ids = itertools.count(1)

KNOWN_MODELS = ("claude-sonnet-5-5", "claude-opus-5-5", "claude-fable-5-1", "claude-sonnet-5", "claude-opus-5",
                "claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4-5")
"""Model ids ``GET /v1/models/{id}`` knows (others: 404)."""


# ---------------------------------------------------------------------------------------------- script items


def text(t: str) -> dict[str, Any]:
    """A text content block."""
    return {"type": "text", "text": t}


def tool_use(name: str, input: Any, id: str | None = None) -> dict[str, Any]:
    """A tool_use content block (``input`` may be anything, to test malformed inputs)."""
    return {"type": "tool_use", "id": id or f"toolu_fake{next(_ids):04d}", "name": name, "input": input}


def turn(*content: dict[str, Any], stop_reason: str | None = None, input_tokens: int = 100,
         output_tokens: int = 20, cache_read_input_tokens: int = 0, cache_creation_input_tokens: int = 0,
         model: str | None = None) -> dict[str, Any]:
    """An assistant turn; ``stop_reason`` defaults to ``tool_use`` when a block is a tool_use, else ``end_turn``."""
    if stop_reason is None:
        stop_reason = "tool_use" if any(b["type"] == "tool_use" for b in content) else "end_turn"
    return {"_turn": True, "content": list(content), "stop_reason": stop_reason, "model": model,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                      "cache_read_input_tokens": cache_read_input_tokens,
                      "cache_creation_input_tokens": cache_creation_input_tokens}}


def text_turn(t: str = "Done.", **kw: Any) -> dict[str, Any]:
    """A final text turn (``end_turn``)."""
    return turn(text(t), **kw)


def tool_turn(name: str, input: Any, *, id: str | None = None, say: str | None = None, **kw: Any) -> dict[str, Any]:
    """A turn calling one tool (optionally with some text before it)."""
    blocks = ([text(say)] if say else []) + [tool_use(name, input, id)]
    return turn(*blocks, **kw)


def api_error(status: int, type: str, message: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """An HTTP error answer with the API's error body."""
    return {"_error": True, "status": status, "type": type, "message": message, "headers": headers or {}}


def raw_response(status: int, body: bytes, content_type: str = "application/json") -> dict[str, Any]:
    """An answer sent as given (to test responses the SDK cannot parse)."""
    return {"_raw": True, "status": status, "body": body, "content_type": content_type}


def stream_error(type: str = "overloaded_error", message: str = "Overloaded") -> dict[str, Any]:
    """A streaming answer that starts (HTTP 200) and then sends an ``error`` event (as the API does mid-stream)."""
    return {"_stream_error": True, "type": type, "message": message}


def rate_limited(retry_after: float | None = 1.0) -> dict[str, Any]:
    """A 429 ``rate_limit_error`` (with a ``retry-after`` header in seconds unless None)."""
    headers = {} if retry_after is None else {"retry-after": str(retry_after)}
    return api_error(429, "rate_limit_error", "Number of request tokens has exceeded your rate limit.", headers)


def server_error() -> dict[str, Any]:
    """A 500 ``api_error``."""
    return api_error(500, "api_error", "Internal server error")


def overloaded() -> dict[str, Any]:
    """A 529 ``overloaded_error``."""
    return api_error(529, "overloaded_error", "Overloaded")


# ---------------------------------------------------------------------------------------------- validation

_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_GEN5 = re.compile(r"^claude-(sonnet|opus|fable|haiku)-5")


def _blocks(content: Any) -> list[dict[str, Any]]:
    return content if isinstance(content, list) else ([{"type": "text", "text": content}] if isinstance(content, str)
                                                      else [])


def _count_cache_control(x: Any) -> int:
    if isinstance(x, dict):
        return int("cache_control" in x) + sum(_count_cache_control(v) for k, v in x.items() if k != "cache_control")
    if isinstance(x, list):
        return sum(_count_cache_control(v) for v in x)
    return 0


def check_request(body: dict[str, Any]) -> str | None:
    """The 400 message the real Messages API would answer ``body`` with, or None for a valid request."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return "model: Field required"
    mt = body.get("max_tokens")
    if not isinstance(mt, int) or isinstance(mt, bool) or mt < 1:
        return "max_tokens: Input should be a positive integer"
    if _GEN5.match(model):
        for p in ("temperature", "top_p", "top_k"):
            if p in body and not (p == "temperature" and body[p] == 1.0):
                return f"{p}: sampling parameters are not supported for {model}; leave them at their defaults"
    tc = body.get("tool_choice")
    if isinstance(tc, dict) and tc.get("type") in ("any", "tool") and model == "claude-sonnet-5-5":
        return f"tool_choice: forced tool use (type {tc['type']!r}) is not supported for {model}"
    names = set()
    for i, t in enumerate(body.get("tools") or []):
        if not _TOOL_NAME.match(str(t.get("name", ""))):
            return f"tools.{i}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
        if t.get("name") in names:
            return f"tools: Tool names must be unique ({t['name']!r})"
        names.add(t["name"])
        schema = t.get("input_schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            return f"tools.{i}.input_schema.type: Input should be 'object'"
    if _count_cache_control(body.get("system")) + _count_cache_control(body.get("tools")) + \
            _count_cache_control(body.get("messages")) > 4:
        return "A maximum of 4 blocks with cache_control may be provided."
    system = body.get("system")
    if isinstance(system, list) and any(b.get("type") == "text" and not str(b.get("text", "")).strip()
                                        for b in system):
        return "system: text content blocks must contain non-whitespace text"
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return "messages: at least one message is required"
    if msgs[0].get("role") != "user":
        return "messages: first message must use the \"user\" role"
    seen_ids: set[str] = set()
    prev_uses: list[str] = []
    for i, m in enumerate(msgs):
        role = m.get("role")
        if role not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        if i and msgs[i - 1].get("role") == role:
            return (f"messages: roles must alternate between \"user\" and \"assistant\", but found multiple "
                    f"\"{role}\" roles in a row")
        content = m.get("content")
        last_assistant = i == len(msgs) - 1 and role == "assistant"
        blocks = _blocks(content)
        if not blocks and not last_assistant:
            return (f"messages.{i}: all messages must have non-empty content except for the optional final "
                    "assistant message")
        for j, b in enumerate(blocks):
            if b.get("type") == "text" and not str(b.get("text", "")).strip() and not (last_assistant and
                                                                                        len(blocks) == 1):
                return f"messages.{i}.content.{j}: text content blocks must contain non-whitespace text"
        uses = [b.get("id") for b in blocks if b.get("type") == "tool_use"]
        results = [(j, b.get("tool_use_id")) for j, b in enumerate(blocks) if b.get("type") == "tool_result"]
        if role == "user" and uses:
            return f"messages.{i}: tool_use blocks may only appear in assistant messages"
        if role == "assistant" and results:
            return f"messages.{i}: tool_result blocks may only appear in user messages"
        for u in uses:
            if u in seen_ids:
                return f"messages.{i}: tool_use ids must be unique ({u})"
            seen_ids.add(u)
        if role == "user":
            answered = [t for _, t in results]
            missing = [u for u in prev_uses if u not in answered]
            if missing:
                return (f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                        f"{', '.join(missing)}. Each `tool_use` block must have a corresponding `tool_result` "
                        "block in the next message.")
            for j, t in results:
                if t not in prev_uses:
                    return (f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: {t}. "
                            "Each `tool_result` block must have a corresponding `tool_use` block in the previous "
                            "message.")
            if len(set(answered)) != len(answered):
                return f"messages.{i}: each tool_use id may be answered by only one tool_result"
            if results and [j for j, _ in results] != list(range(len(results))):
                return f"messages.{i}: tool_result blocks must come first in the content, before any text"
        prev_uses = uses if role == "assistant" else []
    return None


# ---------------------------------------------------------------------------------------------- server


@dataclass
class RecordedRequest:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    """Header names lower-cased."""
    body: dict[str, Any]

    @property
    def api_key(self) -> str | None:
        """The key sent, from ``x-api-key`` or ``Authorization: Bearer``."""
        if "x-api-key" in self.headers:
            return self.headers["x-api-key"]
        auth = self.headers.get("authorization", "")
        return auth[7:] if auth.lower().startswith("bearer ") else None


@dataclass
class FakeAnthropic:
    """The running fake: ``base_url``, ``script(items)``, ``requests``, ``responses_left``."""

    base_url: str = ""
    requests: list[RecordedRequest] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    """The 400 messages of requests the real API would have rejected (see :func:`check_request`)."""
    strict: bool = True
    """Apply the real API's validation rules (a test of a malformed request itself may turn it off)."""
    valid_keys: set[str] | None = None
    """When set, any other key gets a 401 ``authentication_error`` (every route)."""
    _script: list[Any] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, items: list[Any]) -> FakeAnthropic:
        """Append items to the script (answers are taken in order)."""
        with self._lock:
            self._script.extend(items)
        return self

    @property
    def responses_left(self) -> int:
        return len(self._script)

    @property
    def message_requests(self) -> list[RecordedRequest]:
        """Requests to ``/v1/messages``."""
        return [r for r in self.requests if r.path.startswith("/v1/messages")]

    def _next(self, body: dict[str, Any]) -> Any:
        with self._lock:
            item = self._script.pop(0) if self._script else None
        if callable(item):
            item = item(body)
        return item


def _message_json(item: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"msg_fake{next(_ids):04d}", "type": "message", "role": "assistant",
            "model": item.get("model") or body.get("model", "fake"), "content": item["content"],
            "stop_reason": item["stop_reason"], "stop_sequence": None, "usage": item["usage"]}


def _sse(msg: dict[str, Any]) -> bytes:
    """The message as a Messages streaming response."""
    out: list[tuple[str, dict[str, Any]]] = []
    start = {**msg, "content": [], "stop_reason": None,
             "usage": {**msg["usage"], "output_tokens": 0}}
    out.append(("message_start", {"type": "message_start", "message": start}))
    for i, b in enumerate(msg["content"]):
        if b["type"] == "text":
            out.append(("content_block_start", {"type": "content_block_start", "index": i,
                                                "content_block": {"type": "text", "text": ""}}))
            out.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                                "delta": {"type": "text_delta", "text": b["text"]}}))
        elif b["type"] == "thinking":
            out.append(("content_block_start", {"type": "content_block_start", "index": i,
                                                "content_block": {"type": "thinking", "thinking": "",
                                                                  "signature": ""}}))
            out.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                                "delta": {"type": "thinking_delta", "thinking": b["thinking"]}}))
            out.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                                "delta": {"type": "signature_delta", "signature": b["signature"]}}))
        else:
            out.append(("content_block_start", {"type": "content_block_start", "index": i,
                                                "content_block": {**b, "input": {}}}))
            out.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                                "delta": {"type": "input_json_delta",
                                                          "partial_json": json.dumps(b["input"])}}))
        out.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    out.append(("message_delta", {"type": "message_delta",
                                  "delta": {"stop_reason": msg["stop_reason"], "stop_sequence": None},
                                  "usage": {"output_tokens": msg["usage"]["output_tokens"]}}))
    out.append(("message_stop", {"type": "message_stop"}))
    return b"".join(f"event: {e}\ndata: {json.dumps(d)}\n\n".encode() for e, d in out)


def _make_handler(fake: FakeAnthropic) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # headers and body go out in two writes: without this, Nagle + delayed ACK add ~40 ms a request
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def _send(self, status: int, payload: bytes, content_type: str = "application/json",
                  headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(payload)))
            self.send_header("request-id", f"req_fake{next(_ids):04d}")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)

        def _error(self, status: int, type: str, message: str, headers: dict[str, str] | None = None) -> None:
            body = {"type": "error", "error": {"type": type, "message": message}}
            self._send(status, json.dumps(body).encode(), headers=headers)

        def _record(self, body: dict[str, Any]) -> RecordedRequest:
            rec = RecordedRequest(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            fake.requests.append(rec)
            return rec

        def _key_rejected(self, rec: RecordedRequest) -> bool:
            if fake.valid_keys is not None and rec.api_key not in fake.valid_keys:
                self._error(401, "authentication_error", "invalid x-api-key")
                return True
            return False

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            rec = self._record({})
            if self._key_rejected(rec):
                return None
            path = self.path.split("?")[0]
            if not path.startswith("/v1/models/"):
                return self._error(404, "not_found_error", f"fake_anthropic: no route {self.path}")
            model = path.removeprefix("/v1/models/")
            if model not in KNOWN_MODELS:
                return self._error(404, "not_found_error", f"model: {model}")
            info = {"type": "model", "id": model, "display_name": model, "created_at": "2026-01-01T00:00:00Z"}
            return self._send(200, json.dumps(info).encode())

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            n = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(n) if n else b""
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {"_unparsed": raw.decode("utf-8", "replace")}
            rec = self._record(body)
            if self._key_rejected(rec):
                return None
            if not self.path.startswith("/v1/messages"):
                return self._error(404, "not_found_error", f"fake_anthropic: no route {self.path}")
            problem = check_request(body) if fake.strict else None
            if problem is not None:
                fake.rejected.append(problem)
                return self._error(400, "invalid_request_error", problem)
            item = fake._next(body)
            if item is None:
                return self._error(400, "invalid_request_error", "fake_anthropic: script exhausted")
            if item.get("_stream_error"):
                start = {"type": "message_start", "message": {**_message_json(turn(), body), "content": []}}
                err = {"type": "error", "error": {"type": item["type"], "message": item["message"]}}
                payload = (f"event: message_start\ndata: {json.dumps(start)}\n\n"
                           f"event: error\ndata: {json.dumps(err)}\n\n").encode()
                return self._send(200, payload, content_type="text/event-stream")
            if item.get("_raw"):
                return self._send(item["status"], item["body"], content_type=item["content_type"])
            if item.get("_error"):
                return self._error(item["status"], item["type"], item["message"], item["headers"])
            msg = _message_json(item, body)
            if body.get("stream"):
                return self._send(200, _sse(msg), content_type="text/event-stream")
            return self._send(200, json.dumps(msg).encode())

    return Handler


class _QuietServer(ThreadingHTTPServer):
    """A client that hung up (the SDK's timeout, a test that ended) is not an error of the fake: without
    this, socketserver prints the BrokenPipe traceback to whatever stderr a later test is capturing."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class _Server:
    def __init__(self) -> None:
        self.fake = FakeAnthropic()
        self.httpd = _QuietServer(("127.0.0.1", 0), _make_handler(self.fake))
        self.httpd.daemon_threads = True
        host, port = self.httpd.server_address[:2]
        self.fake.base_url = f"http://{host}:{port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       name="fake-anthropic", daemon=True)

    def __enter__(self) -> FakeAnthropic:
        self.thread.start()
        return self.fake

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def serve() -> _Server:
    """A context manager running a fresh fake: ``with serve() as fake: ...``."""
    return _Server()


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    """A running fake Messages API with an empty script; stopped after the test."""
    with serve() as fake:
        yield fake


ScriptItem = dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]]
