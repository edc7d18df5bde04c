"""The backend-independent half of a sandbox: a Jupyter kernel driven over ``jupyter_client``.

A backend (``local``: bubblewrap on this machine; ``docker``: a container) only says how to *launch*,
*poll* and *kill* the kernel process. Everything else lives here and is the same for both:

- the connection uses Jupyter's ``ipc`` transport (Unix sockets in a folder shared with the kernel), so
  the kernel needs no network at all;
- each cell gets a monotonic wall-clock deadline; past it the kernel is interrupted (an
  ``interrupt_request`` message), and restarted if it ignores the interrupt: status ``timeout``;
- a kernel that dies mid-cell is detected by polling its process: status ``died``, then it is restarted
  and the setup cells re-run, so a crash costs one cell, not the run;
- stdout/stderr are capped (a marker says how much was cut); a flood of output interrupts the cell;
- rich outputs (PNG, SVG, HTML) are written to ``<workspace>/outputs/`` by the host, without following
  links the kernel may have planted there;
- ``_result = <json value>`` in a cell comes back as :attr:`ExecutionResult.data`;
- every message from the kernel is hostile input: zmq refuses messages over ``limits.message_bytes``
  before allocating them (the kernel is then restarted), at most a few messages are queued, each field is
  type-checked and capped on the host (stdout/stderr, errors, tracebacks, results, rich outputs), the
  flood guard counts every output message, and a malformed message is dropped with a note;
- the kernel starts in a clean folder (its setup cells too), so nothing it planted in the workspace is
  imported or read as configuration by a restart; the socket folder is rebuilt from scratch at each start.

Use it as a context manager so a failed start or an exception always tears the kernel down::

    with make_sandbox(workspace=ws, setup_code=["import tools"]) as sb:
        r = sb.execute("1 + 1")
        assert r.result == "2"
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import queue
import secrets
import stat
import sys
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import zmq

from sandbox.config import SandboxLimits
from sandbox.errors import KernelStartError, SandboxClosed, SandboxError
from sandbox.hostio import as_text, parse_json_capped, remove_tree
from sandbox.result import ExecutionResult, OutputFile, strip_ansi

# Unix socket paths are limited to 108 bytes; ipc endpoints are "<ip>-<n>".
_MAX_SOCKET_PATH = 100
_RICH_MIMES = {"image/png": "png", "image/svg+xml": "svg", "text/html": "html"}
_TAKE_RESULT = "__sandbox_take_result__"
# Messages the host's sockets queue at most (per channel). With ``SandboxLimits.message_bytes`` (zmq's
# MAXMSGSIZE: a bigger message drops the connection before it is allocated) this bounds the host memory a
# flooding kernel can take: 8 x 24 MiB by default.
_RCV_HWM = 8
_NAME_CHARS = 200
_RESULT_DEPTH = 64
_BOOTSTRAP = """
class __SandboxJSON__(str):
    # Shown as itself: the reply's text/plain is then one JSON string literal, which the host reads with
    # json.loads (linear in its size) rather than evaluating a Python repr.
    __repr__ = str.__str__


def __sandbox_take_result__(_limit=__LIMIT__):
    import json as _json
    g = globals()
    if "_result" not in g:
        return None
    value = g.pop("_result")
    try:
        text = _json.dumps(value, allow_nan=False, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    except (TypeError, ValueError) as e:
        text = _json.dumps({"__sandbox_error__": f"_result is not JSON-serialisable: {e}"})
    if len(text) > _limit:
        text = _json.dumps({"__sandbox_error__": f"_result is {len(text)} bytes of JSON, over the {_limit} limit"})
    return __SandboxJSON__(_json.dumps(text))


def __sandbox_cap_streams__(_cap=1 << 20):
    # ipykernel sends stdout in batches every 0.2 s, however large: a fast print loop makes one message
    # bigger than the host accepts. Flush (waiting for the IO thread) past _cap instead. The hook is the
    # class's _schedule_flush (write calls it after each write): IPython re-binds each stream's write
    # around every cell, so a patched write would be undone when this cell ends.
    import sys
    cls = type(sys.stdout)
    if getattr(cls, "_sandbox_capped", False) or not hasattr(cls, "_schedule_flush") \
            or not hasattr(sys.stdout, "_buffers") or not hasattr(sys.stdout, "_buffer_lock"):
        return
    schedule = cls._schedule_flush

    def capped_schedule(self, _schedule=schedule):
        try:
            with self._buffer_lock:
                size = sum(b.tell() for b in self._buffers.values())
            if size > _cap:
                self.flush()
                return None
        except Exception:
            pass
        return _schedule(self)

    cls._schedule_flush = capped_schedule
    cls._sandbox_capped = True


__sandbox_cap_streams__()
"""


def check_workspace(workspace: str | os.PathLike | None) -> Path:
    """The resolved workspace, refusing folders whose whole tree must not become the kernel's to write.

    The workspace is handed to the kernel (and, as root, chowned to its uid), so it must be a dedicated
    folder: not ``/``, not a home folder, not one that contains the interpreter or this repository.

    >>> check_workspace("/")
    Traceback (most recent call last):
    ...
    sandbox.errors.SandboxError: refusing workspace '/': the kernel may write everything under it — pass a dedicated folder, e.g. <run dir>/workspace
    """
    if workspace is None:
        raise SandboxError("no workspace given", fix="pass workspace=<run dir>/workspace (a dedicated folder)")
    ws = Path(workspace).expanduser().resolve()
    protected = {Path("/"), Path.home().resolve(), Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(),
                 Path(__file__).resolve().parent.parent}
    if any(p == ws or p.is_relative_to(ws) for p in protected):
        raise SandboxError(f"refusing workspace {str(ws)!r}: the kernel may write everything under it",
                           fix="pass a dedicated folder, e.g. <run dir>/workspace")
    return ws


class _Capped:
    """A text buffer that keeps the first ``limit`` characters and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.limit, self.parts, self.kept, self.cut = limit, [], 0, 0

    def add(self, text: str) -> None:
        room = self.limit - self.kept
        if room > 0:
            self.parts.append(text[:room])
            self.kept += min(room, len(text))
        self.cut += max(0, len(text) - max(room, 0))

    def text(self, name: str) -> str:
        out = "".join(self.parts)
        if self.cut:
            out += f"\n[... {self.cut} characters of {name} truncated (limit {self.limit}) ...]\n"
        return out


def _text_volume(content: dict[str, Any]) -> int:
    """Characters of text in a message's content (strings one level into ``data``/lists): the flood count."""
    n = 0
    for v in content.values():
        if isinstance(v, str):
            n += len(v)
        elif isinstance(v, dict | list):
            for w in (v.values() if isinstance(v, dict) else v):
                if isinstance(w, str):
                    n += len(w)
                elif isinstance(w, dict | list):
                    n += 1024  # deeper structure: counted coarsely
    return n


def _capped_traceback(tb: Any, limit: int) -> list[str]:
    """Traceback lines from a kernel message: strings only, colour codes stripped, the *last* ``limit``
    characters kept (the end of a traceback says what happened)."""
    if not isinstance(tb, list):
        tb = [tb] if tb is not None else []
    lines: list[str] = []
    room = limit
    for t in reversed(tb[-1000:]):
        line = strip_ansi(as_text(t, min(room, limit)))
        lines.append(line)
        room -= len(line)
        if room <= 0:
            lines.append(f"[... {len(tb) - len(lines)} earlier traceback lines cut ...]")
            break
    return lines[::-1]


class Sandbox(ABC):
    """A Jupyter kernel isolated from the host; one per run. See the module docstring.

    Subclasses implement :meth:`_launch`, :meth:`_alive`, :meth:`_exit_reason` and :meth:`_kill`.
    """

    backend: str = "abstract"

    def __init__(self, workspace: str | os.PathLike, setup_code: list[str] | None = None,
                 limits: SandboxLimits | None = None, env: dict[str, str] | None = None) -> None:
        self.workspace = check_workspace(workspace)
        self.setup_code: list[str] = list(setup_code or [])
        self.limits = limits or SandboxLimits()
        self.extra_env = dict(env or {})
        self.kc: Any = None
        self.restarts = 0
        self._closed = False
        self._started = False
        self._socket_dir: Path | None = None
        self._private_socket_dir = False
        self._output_seq = 0
        self._monitors: dict[str, Any] = {}
        self._broken: str | None = None
        self._host_notes: list[str] = []

    # ---- backend hooks -------------------------------------------------------------------------
    @property
    @abstractmethod
    def isolation(self) -> str:
        """What isolates the kernel, for the run log (e.g. ``"bubblewrap"``, ``"none (unsafe)"``)."""

    @abstractmethod
    def _launch(self, connection_file: Path, info: dict[str, Any]) -> None:
        """Start the kernel process reading ``connection_file`` (host path)."""

    @abstractmethod
    def _alive(self) -> bool:
        """Whether the kernel process is still running."""

    @abstractmethod
    def _exit_reason(self) -> str:
        """A human description of how the kernel process ended."""

    @abstractmethod
    def _kill(self) -> None:
        """Kill the kernel and everything it started; idempotent."""

    def _prepare_workspace(self) -> None:  # noqa: B027
        """Backend hook run once before the first launch (e.g. ownership of the workspace)."""

    def _kernel_path(self, host_path: Path) -> str:
        """The path under which the kernel sees ``host_path`` (identity unless a container remaps it)."""
        return str(host_path)

    # ---- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def start(self) -> Sandbox:
        """Launch the kernel, wait until it answers, run the setup cells. Idempotent.

        Raises :class:`KernelStartError` (after tearing everything down) if the kernel does not come up
        or a setup cell fails.
        """
        if self._closed:
            raise SandboxClosed("this sandbox was shut down", fix="create a new one with make_sandbox(...)")
        if self._started:
            return self
        try:
            self.workspace.mkdir(parents=True, exist_ok=True)
            self._prepare_workspace()
            self._boot()
        except SandboxError:
            self._teardown()
            raise
        except Exception as e:  # whatever the kernel left behind must not break the host for good
            self._teardown()
            raise KernelStartError(f"the kernel could not start: {type(e).__name__}: {e}",
                                   fix="check the workspace; restart with a fresh workspace if it persists") from e
        except BaseException:
            self._teardown()
            raise
        self._started = True
        return self

    def _socket_folder(self) -> Path:
        """The folder of the kernel's ipc sockets, rebuilt empty at every start (the kernel is dead then).

        It must be writable by the kernel, so nothing in it is trusted: whatever the previous kernel left
        there (links, files, folders of any depth) is removed without following links.
        """
        cand = self.workspace / ".kernel"
        if len(str(cand / "k-00000-00")) > _MAX_SOCKET_PATH:
            if self._socket_dir is not None and self._private_socket_dir:
                remove_tree(self._socket_dir)
            self._socket_dir = Path(tempfile.mkdtemp(prefix="iak-", dir="/tmp"))
            self._private_socket_dir = True
            return self._socket_dir
        remove_tree(cand)
        cand.mkdir(mode=0o700)
        self._socket_dir = cand
        return cand

    def _connection_file(self, sdir: Path) -> Path:
        """Where the host writes the connection file. Default: inside the fresh socket folder; a backend
        that can hand the kernel a read-only copy of a host-private file overrides this (local does)."""
        return sdir / "connection.json"

    def _boot(self) -> None:
        from jupyter_client import BlockingKernelClient

        sdir = self._socket_folder()
        tag = uuid.uuid4().hex[:6]
        key = secrets.token_hex(32)
        info: dict[str, Any] = {
            "shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5,
            "transport": "ipc", "signature_scheme": "hmac-sha256", "key": key, "kernel_name": "python3",
        }
        host_ip = str(sdir / f"k-{tag}")
        kernel_info = dict(info, ip=self._kernel_path(sdir) + f"/k-{tag}")
        conn = self._connection_file(sdir)
        with contextlib.suppress(FileNotFoundError):
            conn.unlink()
        fd = os.open(conn, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(kernel_info))
        self._after_connection_file(conn)
        self._launch(conn, kernel_info)
        deadline = time.monotonic() + self.limits.start_timeout_s
        self._wait_for_sockets(host_ip, deadline)
        # Connect once, never reconnect: a kernel that later swaps its socket files for links must not be
        # able to steer the host's client to another Unix socket on the host (a confused deputy). Messages
        # over message_bytes drop the connection before the host allocates them; the queues are short.
        context = zmq.Context()
        context.setsockopt(zmq.RECONNECT_IVL, -1)
        context.setsockopt(zmq.MAXMSGSIZE, self.limits.message_bytes)
        context.setsockopt(zmq.RCVHWM, _RCV_HWM)
        kc = BlockingKernelClient(context=context)
        kc.load_connection_info(dict(info, ip=host_ip))
        # No heartbeat channel: it re-creates its socket (a fresh connect through the socket file, which may be
        # a planted link by then) after 1 s without a beat. Liveness is the backend's _alive() poll instead.
        kc.start_channels(hb=False)
        self.kc = kc
        self._broken = None
        self._monitors = {name: getattr(kc, f"{name}_channel").socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)
                          for name in ("shell", "iopub")}
        while True:  # wait_for_ready, but notice a kernel that exits instead of answering
            if not self._alive():
                raise KernelStartError(f"the kernel exited during start-up ({self._exit_reason()})",
                                       fix=self._start_fix())
            if self._broken_channel():
                raise KernelStartError("the kernel broke its connection during start-up",
                                       fix=self._start_fix())
            try:
                kc.wait_for_ready(timeout=0.5)
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise KernelStartError(
                        f"the kernel did not answer within {self.limits.start_timeout_s:.0f}s",
                        fix="raise SandboxLimits(start_timeout_s=...) on a slow machine") from None
        with contextlib.suppress(queue.Empty):  # drop the start-up chatter
            while True:
                kc.get_iopub_msg(timeout=0.01)
        boot = self._run(_BOOTSTRAP.replace("__LIMIT__", str(self.limits.result_bytes)), self.limits.start_timeout_s,
                         store_history=False, recover=False)
        if boot.status != "ok":
            raise KernelStartError(f"the sandbox bootstrap cell failed: {boot.error_name}: {boot.error_value}",
                                   fix="this is a bug in sandbox/base.py; please report it")
        # Setup cells run in the kernel's clean start folder: a module the kernel planted in the workspace
        # (torch.py, tools.py...) cannot shadow their imports. Cells then run in the workspace.
        for i, code in enumerate([*self.setup_code, self._enter_workspace_code()]):
            r = self._run(code, self.limits.start_timeout_s, store_history=False, recover=False)
            if r.status != "ok":
                raise KernelStartError(
                    f"setup cell {i} failed with {r.status}: {r.error_name}: {r.error_value}\n"
                    + "\n".join(r.traceback[-5:]),
                    fix="fix the setup code (it runs on every start and restart); run it with execute() to debug")
        self._booted()

    def _enter_workspace_code(self) -> str:
        return f"__import__('os').chdir({self._kernel_path(self.workspace)!r})"

    def _broken_channel(self) -> str | None:
        """The channel whose connection dropped (an oversized or malformed message), if any; sticky until
        the next start (the client never reconnects)."""
        from zmq.utils.monitor import recv_monitor_message

        if self._broken is None:
            for name, mon in self._monitors.items():
                try:
                    recv_monitor_message(mon, zmq.NOBLOCK)
                    self._broken = name
                except zmq.Again:
                    continue
                except Exception:  # noqa: BLE001 - a closed monitor: treat as broken
                    self._broken = name
                break
        return self._broken

    def _wait_for_sockets(self, host_ip: str, deadline: float) -> None:
        """Wait until the fresh kernel has bound its five ipc sockets (real sockets, not links)."""
        paths = [f"{host_ip}-{port}" for port in range(1, 6)]
        while True:
            try:
                if all(stat.S_ISSOCK(os.lstat(p).st_mode) for p in paths):
                    return
            except FileNotFoundError:
                pass
            if not self._alive():
                raise KernelStartError(f"the kernel exited during start-up ({self._exit_reason()})",
                                       fix=self._start_fix())
            if time.monotonic() > deadline:
                raise KernelStartError(f"the kernel did not open its sockets within {self.limits.start_timeout_s:.0f}s",
                                       fix="raise SandboxLimits(start_timeout_s=...) on a slow machine")
            time.sleep(0.005)

    def _booted(self) -> None:  # noqa: B027
        """Backend hook run when the kernel has answered and run its setup cells."""

    def _after_connection_file(self, conn: Path) -> None:  # noqa: B027
        """Backend hook: e.g. give the kernel's user read access to the connection file."""

    def _start_fix(self) -> str:
        return "check that ipykernel is installed in the kernel's python; run with unsafe_no_isolation=True to debug"

    def restart(self) -> None:
        """Kill the kernel and start a fresh one; the setup cells run again. Session variables are lost."""
        if self._closed:
            raise SandboxClosed("this sandbox was shut down", fix="create a new one with make_sandbox(...)")
        self._teardown()
        self.restarts += 1
        self._started = False
        self.start()

    def interrupt(self) -> None:
        """Send an interrupt (``KeyboardInterrupt`` in the running cell); the kernel's state is kept."""
        if self.kc is not None:
            msg = self.kc.session.msg("interrupt_request", content={})
            self.kc.control_channel.send(msg)

    def shutdown(self) -> None:
        """Kill the kernel and everything it started (background processes included). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._teardown()
        if self._private_socket_dir and self._socket_dir is not None:
            remove_tree(self._socket_dir)

    def _teardown(self) -> None:
        for mon in getattr(self, "_monitors", {}).values():
            with contextlib.suppress(Exception):
                mon.close(linger=0)
        self._monitors = {}
        if self.kc is not None:
            with contextlib.suppress(Exception):
                self.kc.stop_channels()
            with contextlib.suppress(Exception):
                self.kc.context.destroy(linger=0)
            self.kc = None
        self._kill()

    @property
    def started(self) -> bool:
        return self._started and not self._closed

    # ---- cells ---------------------------------------------------------------------------------
    def execute(self, code: str, timeout: float | None = None) -> ExecutionResult:
        """Run one cell and return what happened; never raises for errors *in* the cell.

        ``timeout`` (seconds, default ``limits.cell_timeout_s``) is a wall-clock deadline; past it the cell
        is interrupted (status ``timeout``) and the kernel restarted if it ignores the interrupt.
        """
        if not self.started:
            self.start()
        note = None
        if not self._alive():  # died between cells (e.g. a background thread called os._exit)
            note = f"the kernel had died since the previous cell ({self._exit_reason()}); restarted before this cell"
            self.restart()
        elif self._broken_channel():
            note = f"the kernel had broken its {self._broken} connection; restarted before this cell"
            self.restart()
        r = self._run(code, timeout or self.limits.cell_timeout_s, store_history=True, recover=True)
        if note:
            r = r.model_copy(update={"restarted": True, "stderr": f"[sandbox] {note}\n" + r.stderr})
        return r

    def _run(self, code: str, timeout: float, store_history: bool, recover: bool) -> ExecutionResult:
        kc = self.kc
        lim = self.limits
        t0 = time.monotonic()
        deadline = t0 + timeout
        msg_id = kc.execute(code, silent=False, store_history=store_history, allow_stdin=False,
                            stop_on_error=False, user_expressions={"r": f"{_TAKE_RESULT}()"}
                            if store_history else {})
        out, err = _Capped(lim.output_chars), _Capped(lim.output_chars)
        res: dict[str, Any] = {"status": "ok", "outputs": []}
        flooded = interrupted = False
        flooded_at = 0.0
        volume = 0  # characters of every output message of this cell (the flood guard's count)
        reply: dict[str, Any] | None = None
        reply_at = 0.0
        last_poll = t0
        while True:
            now = time.monotonic()
            if now >= deadline and not interrupted:
                interrupted = True
                self.interrupt()
                deadline = now + lim.interrupt_grace_s
                res.update(status="timeout", error_name="Timeout",
                           error_value=f"the cell ran past its {timeout:g}s wall-clock limit and was interrupted")
                continue
            if now >= deadline and interrupted:
                reason = res.get("error_value") or "the cell"
                return self._recover(res, out, err, t0, "timeout",
                                     f"{reason}; the kernel ignored the interrupt and was restarted", recover)
            if flooded and volume > 4 * lim.flood_chars and now - flooded_at > lim.interrupt_grace_s:
                return self._recover(res, out, err, t0, "error", f"the cell was interrupted for flooding its output but kept on "
                                     f"({volume} characters, limit {lim.flood_chars}); the kernel was restarted",
                                     recover)
            try:
                msg = kc.get_iopub_msg(timeout=min(0.05, max(deadline - now, 0.001)))
            except queue.Empty:
                if time.monotonic() - last_poll > 0.05:
                    last_poll = time.monotonic()
                    if not self._alive():
                        return self._recover(res, out, err, t0, "died",
                                             f"the kernel died ({self._exit_reason()})", recover)
                    broken = self._broken_channel()
                    if broken and self._died_soon():
                        return self._recover(res, out, err, t0, "died",
                                             f"the kernel died ({self._exit_reason()})", recover)
                    if broken:
                        return self._recover(res, out, err, t0, "error", (
                            f"the kernel broke its {broken} connection: it sent a message over the "
                            f"{lim.message_bytes}-byte limit (e.g. one huge print or display) or a malformed one; "
                            "the kernel was restarted"), recover)
                    if reply is None:
                        reply = self._poll_reply(msg_id)
                        reply_at = time.monotonic()
                    elif time.monotonic() - reply_at > 1.0:  # the reply came, the idle status never did
                        self._note(res, "some output messages of this cell were lost (sent faster than read)")
                        break
                continue
            except Exception:  # noqa: BLE001 - a message that does not deserialise (forged by the kernel)
                self._note(res, "a malformed message from the kernel was dropped")
                continue
            if not isinstance(msg, dict) or not isinstance(msg.get("parent_header"), dict) \
                    or msg["parent_header"].get("msg_id") != msg_id:
                continue
            mtype, content = msg.get("msg_type"), msg.get("content")
            if not isinstance(content, dict):
                self._note(res, f"a malformed {as_text(mtype, 40)} message from the kernel was dropped")
                continue
            size = _text_volume(content)
            volume += size
            if not flooded and volume > lim.flood_chars:
                flooded, flooded_at = True, time.monotonic()
                self.interrupt()
            if mtype == "stream":
                text = content.get("text")
                (out if content.get("name") == "stdout" else err).add(
                    text if isinstance(text, str) else as_text(text, lim.output_chars))
            elif mtype in ("execute_result", "display_data", "update_display_data"):
                data = content.get("data")
                if isinstance(data, dict):
                    self._rich(data, res, mtype == "execute_result")
                else:
                    self._note(res, f"a {mtype} message without a data dict was dropped")
            elif mtype == "error":
                if res["status"] != "timeout":
                    res["status"] = "error"
                    res["error_name"] = as_text(content.get("ename"), _NAME_CHARS)
                    res["error_value"] = as_text(content.get("evalue"), lim.output_chars)
                res["traceback"] = _capped_traceback(content.get("traceback"), lim.output_chars)
            elif mtype == "execute_input":
                count = content.get("execution_count")
                res["execution_count"] = count if type(count) is int else None
            elif mtype == "status" and content.get("execution_state") == "idle":
                break
        if flooded and res["status"] != "timeout":
            what = (f"the cell's output passed {lim.flood_chars} characters and it was interrupted")
            if res["status"] == "error":
                res["error_value"] = f"{what} ({res.get('error_value')})"
            else:
                self._note(res, what)
        if reply is None:
            reply = self._wait_reply(msg_id)
        if reply is not None:
            self._use_reply(reply, res)
        elif self._broken_channel():
            return self._recover(res, out, err, t0, "error", (
                f"the kernel broke its {self._broken} connection (a message over the {lim.message_bytes}-byte "
                "limit, or a malformed one); the kernel was restarted"), recover)
        return self._finish(res, out, err, t0)

    def _died_soon(self, grace_s: float = 1.0) -> bool:
        """Whether the kernel process ends within ``grace_s`` (a dropped connection is usually a death)."""
        end = time.monotonic() + grace_s
        while time.monotonic() < end:
            if not self._alive():
                return True
            time.sleep(0.05)
        return not self._alive()

    def _poll_reply(self, msg_id: str) -> dict[str, Any] | None:
        """This cell's execute_reply if it is already there (other replies are dropped), else ``None``."""
        while True:
            try:
                reply = self.kc.get_shell_msg(timeout=0)
            except queue.Empty:
                return None
            except Exception:  # noqa: BLE001 - malformed reply: dropped
                continue
            if isinstance(reply, dict) and isinstance(reply.get("parent_header"), dict) \
                    and reply["parent_header"].get("msg_id") == msg_id:
                return reply

    def _wait_reply(self, msg_id: str) -> dict[str, Any] | None:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            reply = self._poll_reply(msg_id)
            if reply is not None:
                return reply
            if not self._alive() or self._broken_channel():
                return None
            time.sleep(0.01)
        return None

    def _use_reply(self, reply: dict[str, Any], res: dict[str, Any]) -> None:
        """Take the execution count and the ``_result`` hand-back from a reply, validating everything."""
        content = reply.get("content")
        if not isinstance(content, dict):
            return
        count = content.get("execution_count")
        if res.get("execution_count") is None and type(count) is int:
            res["execution_count"] = count
        exprs = content.get("user_expressions")
        expr = exprs.get("r") if isinstance(exprs, dict) else None
        if not isinstance(expr, dict) or expr.get("status") != "ok":
            return
        data = expr.get("data")
        text = data.get("text/plain") if isinstance(data, dict) else None
        if text is None or text == "None":
            return
        value, why = self._parse_result(text)
        if why is not None:
            res["data"] = None
            self._note(res, f"_result was dropped: {why}")
        elif isinstance(value, dict) and "__sandbox_error__" in value:
            res["data"] = None
            self._note(res, as_text(value["__sandbox_error__"], 500))
        else:
            res["data"] = value

    def _parse_result(self, text: Any) -> tuple[Any, str | None]:
        """The ``_result`` JSON from the helper's hand-back: bounded, validated on the host; never raises.

        The helper runs in the kernel, so the kernel can redefine it: its output is checked here as if
        forged. It must be one JSON string literal (of at most ~``result_bytes``) holding JSON at most
        ``result_bytes`` long and 64 levels deep. It is read with ``json.loads`` (memory linear in its
        size), never evaluated as a Python repr: ``ast.literal_eval`` of 16 MiB of concatenated string
        literals took 500 MiB of host memory.
        """
        lim = self.limits.result_bytes
        if not isinstance(text, str) or text[:1] != '"' or len(text) > 4 * lim + 16:
            return None, f"the result hand-back was not a string of at most {lim} bytes (was it redefined?)"
        try:
            inner = json.loads(text)
        except Exception:  # noqa: BLE001 - ValueError, RecursionError, MemoryError...
            return None, "the result hand-back could not be read (was it redefined?)"
        if not isinstance(inner, str):
            return None, "the result hand-back was not a string (was it redefined?)"
        return parse_json_capped(inner, lim, _RESULT_DEPTH)

    def _rich(self, bundle: dict[str, Any], res: dict[str, Any], is_result: bool) -> None:
        for mime, ext in _RICH_MIMES.items():
            if mime in bundle:
                raw = bundle[mime]
                if not isinstance(raw, str):
                    self._note(res, f"a {mime} output that was not text was dropped")
                    return
                limit = self.limits.output_file_bytes
                if len(raw) > (limit * 4 // 3 + 4 if mime == "image/png" else limit):
                    self._note(res, f"a {mime} output of about {len(raw)} bytes was dropped "
                                    f"(limit {limit}); save it to a file yourself")
                    return
                if mime == "image/png":
                    try:
                        payload = base64.b64decode(raw, validate=True)
                    except (binascii.Error, ValueError):
                        self._note(res, "an image/png output that was not valid base64 was dropped")
                        return
                else:
                    payload = raw.encode(errors="replace")
                if len(payload) > limit:
                    self._note(res, f"a {mime} output of {len(payload)} bytes was dropped "
                                    f"(limit {limit}); save it to a file yourself")
                elif len(res["outputs"]) >= self.limits.output_files:
                    self._note(res, f"rich outputs beyond {self.limits.output_files} in one cell were dropped")
                else:
                    path = self._save_output(payload, ext)
                    if path is not None:
                        res["outputs"].append(OutputFile(path=path, mime=mime, bytes=len(payload)))
                    else:
                        self._note(res, "a rich output was dropped: outputs/ is not a plain folder")
                return  # the richest form only (a figure's text/plain is "<Figure ...>")
        if is_result and "text/plain" in bundle:
            text = as_text(bundle["text/plain"], self.limits.output_chars + 1)
            limit = self.limits.output_chars
            res["result"] = text if len(text) <= limit else (
                text[:limit] + f"\n[... {len(text) - limit} characters of the result truncated ...]")

    def _host_note(self, text: str) -> None:
        """Backend hook (any thread): a note for the current cell's stderr (e.g. the memory watchdog acted)."""
        self._host_notes.append(text)

    @staticmethod
    def _note(res: dict[str, Any], text: str) -> None:
        notes = res.setdefault("notes", [])
        if text not in notes:
            notes.append(text)

    def _save_output(self, payload: bytes, ext: str) -> Path | None:
        """Write a rich output to ``<workspace>/outputs/`` without following any link the kernel planted."""
        flags_dir = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
        ws_fd = os.open(self.workspace, flags_dir)
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir("outputs", 0o755, dir_fd=ws_fd)
            try:
                out_fd = os.open("outputs", flags_dir, dir_fd=ws_fd)
            except OSError:
                return None  # "outputs" was replaced by a link or a file: refuse to write through it
            try:
                for _ in range(100):
                    self._output_seq += 1
                    name = f"out-{os.getpid()}-{self._output_seq:04d}.{ext}"
                    try:
                        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644,
                                     dir_fd=out_fd)
                    except FileExistsError:
                        continue
                    with os.fdopen(fd, "wb") as f:
                        f.write(payload)
                    return self.workspace / "outputs" / name
                return None
            finally:
                os.close(out_fd)
        finally:
            os.close(ws_fd)

    def _recover(self, res: dict[str, Any], out: _Capped, err: _Capped, t0: float, status: str,
                 why: str, recover: bool) -> ExecutionResult:
        name = {"timeout": "Timeout", "died": "KernelDied"}.get(status, "SandboxLimit")
        res.update(status=status, error_name=name, error_value=why)
        if not recover:
            raise KernelStartError(why, fix="fix the setup code; the kernel must survive it")
        try:
            self.restart()
            res["restarted"] = True
        except Exception as e:  # noqa: BLE001 - reported in the cell's result; the next cell tries again
            res["error_value"] = f"{why}; restarting failed: {e}"
            self._started = False
        return self._finish(res, out, err, t0)

    def _finish(self, res: dict[str, Any], out: _Capped, err: _Capped, t0: float) -> ExecutionResult:
        notes = res.pop("notes", [])
        while self._host_notes:
            notes.append(self._host_notes.pop(0))
        stderr = err.text("stderr") + "".join(f"[sandbox] {n}\n" for n in notes)
        return ExecutionResult(stdout=out.text("stdout"), stderr=stderr, duration_s=time.monotonic() - t0,
                               truncated=bool(out.cut or err.cut) or "truncated ..." in (res.get("result") or ""),
                               **res)
