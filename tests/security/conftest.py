"""Fixtures of the attack suite: sandboxes of every backend under test.

``INTERP_AGENT_TEST_BACKENDS`` (comma list, default ``local``) names the backends; each attack runs once
per backend, and a backend that cannot run here (no bubblewrap, no Docker engine) is skipped with the
reason. A case that only makes sense for one backend calls :func:`only` with a reason.

The host's environment holds canary secrets for the whole suite (``ANTHROPIC_API_KEY``, ``HF_TOKEN``,
``AWS_SECRET_ACCESS_KEY``): no attack may ever see :data:`SECRET`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from sandbox import SandboxLimits, make_sandbox
from sandbox import local as local_mod
from tests.backends import selected_backends

BACKENDS = selected_backends()  # INTERP_AGENT_TEST_BACKENDS, checked (tests/backends.py)
SECRET = f"sk-ant-canary-{uuid.uuid4().hex}"
LIMITS = SandboxLimits(memory_gb=3, file_size_gb=0.1, processes=128, tmp_mb=64, flood_chars=2_000_000,
                       output_chars=10_000, output_file_bytes=1 << 20, output_files=8, interrupt_grace_s=2.0)
# The host-memory attacks need a kernel that survives building a 100+ MB message.
PEAK_LIMITS = LIMITS.model_copy(update={"memory_gb": 6})
REPO = Path(__file__).resolve().parents[2]


def backend_problem(name: str) -> str | None:
    """Why backend ``name`` cannot run attacks here, or ``None``."""
    if name == "local":
        return local_mod.isolation_problem()
    if name == "docker":
        try:
            import docker

            docker.from_env().ping()
        except Exception as e:  # noqa: BLE001 - any failure means no engine
            return f"no Docker engine reachable ({type(e).__name__}: {str(e)[:200]})"
        return None
    return f"unknown backend {name!r} in INTERP_AGENT_TEST_BACKENDS"


def only(backend: str, *names: str, reason: str) -> None:
    """Skip the calling test unless ``backend`` is one of ``names``."""
    if backend not in names:
        pytest.skip(f"{backend} backend: {reason}")


@pytest.fixture(scope="session", autouse=True)
def canary_env():
    mp = pytest.MonkeyPatch()
    for name in ("ANTHROPIC_API_KEY", "HF_TOKEN", "AWS_SECRET_ACCESS_KEY"):
        mp.setenv(name, SECRET)
    yield SECRET
    mp.undo()


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request) -> str:
    problem = backend_problem(request.param)
    if problem:
        pytest.skip(f"{request.param} backend unavailable: {problem}")
    return request.param


class BoxFactory:
    """``make_box(ws=None, limits=LIMITS, read_only_paths=(), **options)``: a sandbox (not started) of the
    backend under test (docker binds ``read_only_paths`` read-only at the same path in the container)."""

    def __init__(self, backend: str, tmp_path_factory) -> None:
        self.backend, self._tmp = backend, tmp_path_factory

    def __call__(self, ws: Path | None = None, limits: SandboxLimits = LIMITS, read_only_paths=(), **opts):
        ws = ws or self._tmp.mktemp(f"box-{self.backend}") / "workspace"
        if read_only_paths:
            opts["read_only_paths"] = list(read_only_paths)
        return make_sandbox(self.backend, workspace=ws, limits=limits, **opts)


@pytest.fixture(scope="module")
def make_box(backend, tmp_path_factory) -> BoxFactory:
    return BoxFactory(backend, tmp_path_factory)


def alive(sb) -> None:
    r = sb.execute("1 + 1", timeout=30)
    assert (r.status, r.result) == ("ok", "2"), r.summary()


def run(sb, code: str, timeout: float = 20):
    return sb.execute(code, timeout=timeout)


def host_peak(backend: str, attack: str, limits: SandboxLimits = PEAK_LIMITS, timeout: float = 240) -> dict:
    """Run ``attack`` in a fresh sandbox driven by a separate host process; return what that host saw:
    ``{"status", "error_value", "alive", "base_mb", "peak_mb"}`` (peak RSS of the host process, MiB, at
    the start of the cell and over the whole attack)."""
    script = textwrap.dedent(f"""
        import json, resource, shutil, sys, tempfile
        sys.path.insert(0, {str(REPO)!r})
        from sandbox import make_sandbox, SandboxLimits
        limits = SandboxLimits.model_validate_json({limits.model_dump_json()!r})
        top = tempfile.mkdtemp(prefix="peak-")
        try:
            with make_sandbox({backend!r}, workspace=top + "/workspace", limits=limits) as sb:
                base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                r = sb.execute({attack!r}, timeout={timeout / 2})
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                ok = sb.execute("1 + 1", timeout=60)
        finally:
            shutil.rmtree(top, ignore_errors=True)
        print(json.dumps({{"status": r.status, "error_value": (r.error_value or "")[:300], "stderr": r.stderr[-500:],
                           "alive": ok.result == "2", "base_mb": base / 1024, "peak_mb": peak / 1024}}))
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout,
                       env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])
