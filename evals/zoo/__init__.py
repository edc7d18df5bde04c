"""The offline model zoo: small GPT-2-architecture models with known circuits, shipped in the repo.

Two kinds, one interface:

- **trained** (``toy-ioi``, ``toy-induction``, ``toy-greater-than``, ``toy-pronoun``): trained by
  ``evals/zoo/train.py``
  (fixed seed, minutes on 2 CPU cores); their reference circuits come from project analysis
  (``evals/zoo/analysis.py``) and live in the task data.
- **planted** (``planted-induction``, ``planted-ioi``, ``planted-twin-induction``): weights written by
  hand in ``evals/zoo/planted.py`` so that named heads implement named roles exactly (ground truth),
  with distractor heads and a redundant pair; ``planted-twin-induction`` also holds the known answers
  that validate the interchangeability score (``planted.KNOWN_ANSWERS``, ``planted.INTERCHANGE_TRUTH``).

Each model is a directory ``evals/zoo/models/<name>/`` holding ``config.json``, ``model.safetensors``,
an offline word-level tokenizer and ``zoo.json`` (this module's :class:`ZooEntry`).

>>> names = [e.name for e in list_zoo()]
>>> "toy-ioi" in names
True
>>> zoo_entry("toy-ioi").task
'toy-ioi'
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tools.errors import InterpAgentError

MODELS_DIR = Path(__file__).parent / "models"


class ZooError(InterpAgentError, ValueError):
    """An unknown zoo model, or a zoo directory with missing or broken files."""


class ZooEntry(BaseModel):
    """What ``zoo.json`` records about one zoo model (written by the training/construction script)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["trained", "planted"]
    task: str
    """Name of the task spec the model does (``evals.tasks.load_task(task)``)."""
    description: str = ""
    architecture: str = "gpt2"
    n_layers: int
    n_heads: int
    d_model: int
    params: int
    """Number of parameters."""
    accuracy: float
    """Top-1 accuracy on a held-out task batch (seeds never used in training), fraction in [0, 1]."""
    metric_value: float | None = None
    """The task's default metric on that batch (logit difference or prob_diff)."""
    eval_prompts: int = 0
    train_time_s: float | None = None
    """Wall-clock training time in seconds (None for planted models)."""
    train_steps: int | None = None
    seed: int = 0
    reference_source: str = ""
    """Where its reference circuit comes from: ``project analysis`` or ``planted (exact)``."""
    extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def path(self) -> Path:
        return MODELS_DIR / self.name


def _entry_file(name: str) -> Path:
    return MODELS_DIR / name / "zoo.json"


def list_zoo() -> list[ZooEntry]:
    """Every model in the zoo, sorted by name."""
    if not MODELS_DIR.is_dir():
        return []
    out = []
    for d in sorted(MODELS_DIR.iterdir()):
        if (d / "zoo.json").is_file():
            out.append(zoo_entry(d.name))
    return out


def zoo_entry(name: str) -> ZooEntry:
    """The :class:`ZooEntry` of one model; :class:`ZooError` naming the known models if absent."""
    f = _entry_file(name)
    if not f.is_file():
        known = sorted(d.name for d in MODELS_DIR.iterdir() if (d / "zoo.json").is_file()) if MODELS_DIR.is_dir() else []
        raise ZooError(f"no zoo model named {name!r}", fix=f"use one of {known} (see 'interp-agent zoo list')")
    try:
        return ZooEntry.model_validate(json.loads(f.read_text()))
    except (ValueError, json.JSONDecodeError) as e:
        raise ZooError(f"broken zoo metadata {f}: {e}".replace("\n", " "),
                       fix="re-run the script that made it (python -m evals.zoo.train / evals.zoo.planted)") from None


def zoo_path(name: str) -> Path:
    """Directory of a zoo model (checked to exist)."""
    return zoo_entry(name).path


def load_zoo_hf(name: str):
    """``(transformers model in eval mode, tokenizer)`` for a zoo model, offline (no tools wrapper).

    >>> model, tok = load_zoo_hf("toy-ioi")
    >>> model.config.model_type, tok.bos_token
    ('gpt2', '<bos>')
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = zoo_path(name)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, attn_implementation="eager")
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model.eval(), tok


def load_zoo_model(name: str, device: str | None = None, dtype=None):
    """A zoo model as a :class:`tools.Model` (offline, from ``evals/zoo/models/<name>/``), in ``dtype``
    (a ``torch.dtype``; default float32)."""
    path = zoo_path(name)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from tools import load_model
    except ImportError:  # tools' loader not present in this checkout
        raise ZooError("tools.load_model is not available", fix="use evals.zoo.load_zoo_hf(name) instead") from None
    return load_model(str(path), device=device, dtype=dtype)


def load_any_model(ref: str, device: str | None = None, dtype=None):
    """A zoo model by name, else ``tools.load_model(ref)`` (a local directory, or a hub id in the local cache).

    >>> load_any_model("toy-ioi").n_layers
    2
    """
    if ref in {e.name for e in list_zoo()}:
        return load_zoo_model(ref, device=device, dtype=dtype)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tools import load_model

    return load_model(ref, device=device, dtype=dtype)


__all__ = ["MODELS_DIR", "ZooEntry", "ZooError", "list_zoo", "load_any_model", "load_zoo_hf", "load_zoo_model",
           "zoo_entry", "zoo_path"]
