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
either and records both, insisting on neither. Streaming requests (``"stream": true``) are answered
as server-sent events with the same content.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

_ids = itertools.count(1)


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

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            n = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(n) if n else b""
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {"_unparsed": raw.decode("utf-8", "replace")}
            fake.requests.append(RecordedRequest(self.command, self.path,
                                                 {k.lower(): v for k, v in self.headers.items()}, body))
            if not self.path.startswith("/v1/messages"):
                return self._error(404, "not_found_error", f"fake_anthropic: no route {self.path}")
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


class _Server:
    def __init__(self) -> None:
        self.fake = FakeAnthropic()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self.fake))
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
