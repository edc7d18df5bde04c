"""Which sandbox backends the sandbox tests run against: ``INTERP_AGENT_TEST_BACKENDS`` (comma list, default
``local``). ``make test-docker`` sets it to ``docker``; tests that need a real engine skip without it and fail
(never skip) when it is selected but the engine does not answer.

>>> selected_backends({"INTERP_AGENT_TEST_BACKENDS": "local, docker"})
['local', 'docker']
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import pytest

BACKENDS = ("local", "docker")
ENV = "INTERP_AGENT_TEST_BACKENDS"


def selected_backends(environ: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    names = [b.strip() for b in env.get(ENV, "local").split(",") if b.strip()]
    bad = [b for b in names if b not in BACKENDS]
    if bad:
        raise pytest.UsageError(f"{ENV}={env.get(ENV)!r}: unknown backend(s) {bad}; use a comma list of {BACKENDS}")
    return names


docker_selected = "docker" in selected_backends()
requires_docker = pytest.mark.skipif(
    not docker_selected, reason=f"real Docker engine tests run under `make test-docker` ({ENV}=docker)")


def docker_client():
    """A client of the engine under test (``DOCKER_HOST`` or the default socket); fails loudly when unreachable."""
    import docker

    try:
        client = docker.from_env(timeout=300)
        client.ping()
    except Exception as e:  # the SDK raises several unrelated types when there is no engine
        pytest.fail(f"{ENV} selects docker but no engine answers ({type(e).__name__}: {e}); run `make test-docker`")
    return client
