"""Shared fixtures: tiny random-init GPT-2, GPT-NeoX and Llama models saved with ``save_pretrained``."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from tests.fake_anthropic import fake_anthropic  # noqa: E402, F401  (fixture: a fake Messages API)
from tools.tiny import TINY_ARCHS, make_tiny_model  # noqa: E402

hf_logging.disable_progress_bar()


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict[str, str]:
    """``{"gpt2": path, "neox": path, "llama": path}``: each a model dir loadable by ``from_pretrained``."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {arch: str(make_tiny_model(arch, root / arch)) for arch in TINY_ARCHS}


@pytest.fixture(params=TINY_ARCHS)
def tiny_model_dir(request, tiny_model_dirs) -> str:
    """Each tiny architecture in turn (parametrised)."""
    return tiny_model_dirs[request.param]


@pytest.fixture(scope="module")
def models(tiny_model_dirs) -> dict:
    """``{arch: tools.Model}`` for the three tiny architectures, loaded once per test module."""
    from tools import load_model

    return {a: load_model(tiny_model_dirs[a], device="cpu") for a in TINY_ARCHS}


@pytest.fixture(params=TINY_ARCHS)
def model(request, models):
    """Each tiny architecture's ``tools.Model`` in turn (parametrised)."""
    return models[request.param]


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Runs and logs of every test go to a temp ``INTERP_AGENT_HOME``, never the user's."""
    monkeypatch.setenv("INTERP_AGENT_HOME", str(tmp_path / "home"))
