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
- ``_result = <json value>`` in a cell comes back as :attr:`ExecutionResult.data`.

Use it as a context manager so a failed start or an exception always tears the kernel down::

    with make_sandbox(workspace=ws, setup_code=["import tools"]) as sb:
        r = sb.execute("1 + 1")
        assert r.result == "2"
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import secrets
import shutil
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
from sandbox.result import ExecutionResult, OutputFile, strip_ansi

# Unix socket paths are limited to 108 bytes; ipc endpoints are "<ip>-<n>".
_MAX_SOCKET_PATH = 100
_RICH_MIMES = {"image/png": "png", "image/svg+xml": "svg", "text/html": "html"}
_TAKE_RESULT = "__sandbox_take_result__"
_BOOTSTRAP = """
def __sandbox_take_result__(_limit=__LIMIT__):
    import json as _json
    g = globals()
    if "_result" not in g:
        return None
    value = g.pop("_result")
    try:
        text = _json.dumps(value, allow_nan=False, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    except (TypeError, ValueError) as e:
        return _json.dumps({"__sandbox_error__": f"_result is not JSON-serialisable: {e}"})
    if len(text) > _limit:
        return _json.dumps({"__sandbox_error__": f"_result is {len(text)} bytes of JSON, over the {_limit} limit"})
    return text
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
        self.workspace.mkdir(parents=True, exist_ok=True)
        self._prepare_workspace()
        try:
            self._boot()
        except BaseException:
            self._teardown()
            raise
        self._started = True
        return self

    def _socket_folder(self) -> Path:
        if self._socket_dir is None:
            cand = self.workspace / ".kernel"
            if len(str(cand / "k-00000-00")) > _MAX_SOCKET_PATH:
                cand = Path(tempfile.mkdtemp(prefix="iak-", dir="/tmp"))
                self._private_socket_dir = True
            cand.mkdir(parents=True, exist_ok=True)
            self._socket_dir = cand
        return self._socket_dir

    def _boot(self) -> None:
        from jupyter_client import BlockingKernelClient

        sdir = self._socket_folder()
        for p in sdir.iterdir():  # stale sockets of a previous kernel
            if p.name.startswith("k-") or p.name == "connection.json":
                p.unlink(missing_ok=True)
        tag = uuid.uuid4().hex[:6]
        key = secrets.token_hex(32)
        info: dict[str, Any] = {
            "shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5,
            "transport": "ipc", "signature_scheme": "hmac-sha256", "key": key, "kernel_name": "python3",
        }
        host_ip = str(sdir / f"k-{tag}")
        kernel_info = dict(info, ip=self._kernel_path(sdir) + f"/k-{tag}")
        conn = sdir / "connection.json"
        conn.write_text(json.dumps(kernel_info))
        self._after_connection_file(conn)
        self._launch(conn, kernel_info)
        deadline = time.monotonic() + self.limits.start_timeout_s
        self._wait_for_sockets(host_ip, deadline)
        # Connect once, never reconnect: a kernel that later swaps its socket files for links must not be
        # able to steer the host's client to another Unix socket on the host (a confused deputy).
        context = zmq.Context()
        context.setsockopt(zmq.RECONNECT_IVL, -1)
        kc = BlockingKernelClient(context=context)
        kc.load_connection_info(dict(info, ip=host_ip))
        kc.start_channels()
        self.kc = kc
        while True:  # wait_for_ready, but notice a kernel that exits instead of answering
            if not self._alive():
                raise KernelStartError(f"the kernel exited during start-up ({self._exit_reason()})",
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
        for i, code in enumerate(self.setup_code):
            r = self._run(code, self.limits.start_timeout_s, store_history=False, recover=False)
            if r.status != "ok":
                raise KernelStartError(
                    f"setup cell {i} failed with {r.status}: {r.error_name}: {r.error_value}\n"
                    + "\n".join(r.traceback[-5:]),
                    fix="fix the setup code (it runs on every start and restart); run it with execute() to debug")
        self._booted()

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
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    def _teardown(self) -> None:
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
        r = self._run(code, timeout or self.limits.cell_timeout_s, store_history=True, recover=True)
        if note:
            r = r.model_copy(update={"restarted": True, "stderr": f"[sandbox] {note}\n" + r.stderr})
        return r

    def _run(self, code: str, timeout: float, store_history: bool, recover: bool) -> ExecutionResult:
        kc = self.kc
        t0 = time.monotonic()
        deadline = t0 + timeout
        msg_id = kc.execute(code, silent=False, store_history=store_history, allow_stdin=False,
                            stop_on_error=False, user_expressions={"r": f"{_TAKE_RESULT}()"}
                            if store_history else {})
        out, err = _Capped(self.limits.output_chars), _Capped(self.limits.output_chars)
        res: dict[str, Any] = {"status": "ok", "outputs": []}
        flooded = interrupted = False
        last_poll = t0
        while True:
            now = time.monotonic()
            if now >= deadline and not interrupted:
                interrupted = True
                self.interrupt()
                deadline = now + self.limits.interrupt_grace_s
                res.update(status="timeout", error_name="Timeout",
                           error_value=f"the cell ran past its {timeout:g}s wall-clock limit and was interrupted")
                continue
            if now >= deadline and interrupted:
                reason = res.get("error_value") or "the cell"
                return self._recover(res, out, err, t0, "timeout",
                                     f"{reason}; the kernel ignored the interrupt and was restarted", recover)
            try:
                msg = kc.get_iopub_msg(timeout=min(0.05, max(deadline - now, 0.001)))
            except queue.Empty:
                if time.monotonic() - last_poll > 0.05:
                    last_poll = time.monotonic()
                    if not self._alive():
                        return self._recover(res, out, err, t0, "died",
                                             f"the kernel died ({self._exit_reason()})", recover)
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            mtype, content = msg["msg_type"], msg["content"]
            if mtype == "stream":
                (out if content.get("name") == "stdout" else err).add(content.get("text", ""))
                if not flooded and out.kept + out.cut + err.kept + err.cut > self.limits.flood_chars:
                    flooded = True
                    self.interrupt()
            elif mtype in ("execute_result", "display_data", "update_display_data"):
                self._rich(content.get("data", {}), res, mtype == "execute_result")
            elif mtype == "error":
                if res["status"] != "timeout":
                    res["status"] = "error"
                    res["error_name"] = content.get("ename")
                    res["error_value"] = content.get("evalue")
                res["traceback"] = [strip_ansi(t) for t in content.get("traceback", [])]
            elif mtype == "execute_input":
                res["execution_count"] = content.get("execution_count")
            elif mtype == "status" and content.get("execution_state") == "idle":
                break
        if flooded and res["status"] == "error":
            res["error_value"] = (f"the cell printed more than {self.limits.flood_chars} characters and was "
                                  f"interrupted ({res.get('error_value')})")
        self._take_reply(msg_id, res)
        return self._finish(res, out, err, t0)

    def _take_reply(self, msg_id: str, res: dict[str, Any]) -> None:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            try:
                reply = self.kc.get_shell_msg(timeout=0.5)
            except queue.Empty:
                if not self._alive():
                    return
                continue
            if reply.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            content = reply["content"]
            res.setdefault("execution_count", content.get("execution_count"))
            expr = (content.get("user_expressions") or {}).get("r")
            if expr and expr.get("status") == "ok":
                text = expr.get("data", {}).get("text/plain", "None")
                if text != "None":
                    import ast

                    value = json.loads(ast.literal_eval(text))
                    if isinstance(value, dict) and "__sandbox_error__" in value:
                        res["data"] = None
                        self._note(res, value["__sandbox_error__"])
                    else:
                        res["data"] = value
            return

    def _rich(self, bundle: dict[str, Any], res: dict[str, Any], is_result: bool) -> None:
        for mime, ext in _RICH_MIMES.items():
            if mime in bundle:
                raw = bundle[mime]
                payload = base64.b64decode(raw) if mime == "image/png" else str(raw).encode()
                if len(payload) > self.limits.output_file_bytes:
                    self._note(res, f"a {mime} output of {len(payload)} bytes was dropped "
                                    f"(limit {self.limits.output_file_bytes}); save it to a file yourself")
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
            text = str(bundle["text/plain"])
            limit = self.limits.output_chars
            res["result"] = text if len(text) <= limit else (
                text[:limit] + f"\n[... {len(text) - limit} characters of the result truncated ...]")

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
        res.update(status=status, error_name="Timeout" if status == "timeout" else "KernelDied", error_value=why)
        if not recover:
            raise KernelStartError(why, fix="fix the setup code; the kernel must survive it")
        try:
            self.restart()
            res["restarted"] = True
        except SandboxError as e:
            res["error_value"] = f"{why}; restarting failed: {e}"
            self._started = False
        return self._finish(res, out, err, t0)

    def _finish(self, res: dict[str, Any], out: _Capped, err: _Capped, t0: float) -> ExecutionResult:
        notes = res.pop("notes", [])
        stderr = err.text("stderr") + "".join(f"[sandbox] {n}\n" for n in notes)
        return ExecutionResult(stdout=out.text("stdout"), stderr=stderr, duration_s=time.monotonic() - t0,
                               truncated=bool(out.cut or err.cut) or "truncated ..." in (res.get("result") or ""),
                               **res)
