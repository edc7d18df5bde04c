"""What defines a run (:class:`RunConfig`), and the choices the CLI offers as enums.

>>> RunConfig(question="q?").planner in (Planner.OFFLINE, Planner.CLAUDE)
True
>>> RunConfig(question="q?", planner="offline").kernel.model_dump(mode="json")
{'model': None, 'sandbox': 'local', 'unsafe_no_isolation': False, 'gpus': None, 'device': 'cpu'}
"""

from __future__ import annotations

import os
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent.budget import Budget


class Planner(StrEnum):
    """Who plans the experiments (every planner is an LLM backend driving the same loop)."""

    CLAUDE = "claude"
    """Claude through the Messages API (needs ``ANTHROPIC_API_KEY``)."""
    OFFLINE = "offline"
    """The deterministic systematic researcher (:mod:`agent.planners.offline`)."""
    REPLAY = "replay"
    """A run's logged LLM turns, fed back (``--replay-from``)."""


class SandboxKind(StrEnum):
    """Where the kernel runs."""

    LOCAL = "local"
    """A local Jupyter kernel isolated by bubblewrap."""
    DOCKER = "docker"
    """A kernel in a Docker container."""


class DType(StrEnum):
    """The dtype the model's weights are loaded in (``--dtype``)."""

    FLOAT32 = "float32"
    """Full precision (the default; what every zoo number was measured in)."""
    BFLOAT16 = "bfloat16"
    """Half the memory; for large models on accelerators (CPUs run it too, usually slower)."""
    FLOAT16 = "float16"
    """Half precision (accelerators only in practice)."""


def default_planner() -> Planner:
    """``claude`` when ``ANTHROPIC_API_KEY`` is set, else ``offline``."""
    return Planner.CLAUDE if os.environ.get("ANTHROPIC_API_KEY") else Planner.OFFLINE


def parse_gpus(gpus: str | None) -> bool | int | list[str]:
    """``--gpus`` as the sandbox takes it: ``all`` → True, ``2`` → 2, ``0,2`` → ["0", "2"], None → False.

    >>> parse_gpus("all"), parse_gpus("2"), parse_gpus("0,2"), parse_gpus(None)
    (True, 2, ['0', '2'], False)
    >>> parse_gpus("two")
    Traceback (most recent call last):
    ...
    ValueError: cannot read --gpus 'two': pass all, a count (2) or device ids (0,1)
    """
    if not gpus:
        return False
    g = gpus.strip().lower()
    if g == "all":
        return True
    if g.isdigit() and int(g) >= 1:
        return int(g)
    ids = [i.strip() for i in g.split(",") if i.strip()]
    if "," not in g or not ids or not all(i.isdigit() or i.startswith("gpu-") for i in ids):
        raise ValueError(f"cannot read --gpus {gpus!r}: pass all, a count (2) or device ids (0,1)")
    return ids


def _check_gpus(v: str | None) -> str | None:
    parse_gpus(v)
    return v


class KernelOptions(BaseModel):
    """What a sandbox factory needs to start a run's kernel."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = None
    """The model reference (its folder is bound read-only into the sandbox when it is a local path)."""
    sandbox: SandboxKind = SandboxKind.LOCAL
    unsafe_no_isolation: bool = False
    gpus: str | None = None
    """GPUs for the kernel (``all``, a count, or ids ``0,1``): docker asks the engine for them (a device
    request); local binds ``/dev/nvidia*``."""

    device: str = "cpu"
    """Where the kernel puts the model (``cpu``, ``cuda``, ``cuda:1``); a CUDA device with no ``gpus`` given
    exposes all GPUs to the sandbox (:func:`agent.kernel.make_kernel`)."""

    _gpus = field_validator("gpus")(_check_gpus)

    @classmethod
    def logged(cls, started: Any, **override: Any) -> KernelOptions:
        """The options a logged run's kernel had (its ``run_started`` event), with ``override`` applied; runs
        logged before the sandbox or GPUs were recorded get the defaults."""
        run = ((getattr(started, "config", None) or {}).get("run") or {}) if started is not None else {}
        kw: dict[str, Any] = {"model": getattr(started, "model", None)}
        if run.get("sandbox") in {k.value for k in SandboxKind}:
            kw["sandbox"] = run["sandbox"]
        if run.get("gpus"):
            kw["gpus"] = run["gpus"]
        if isinstance(run.get("device"), str) and run["device"]:
            kw["device"] = run["device"]
        kw.update({k: v for k, v in override.items() if v is not None})
        return cls(**kw)


def logged_config(run: dict) -> dict:
    """``run_started.config["run"]`` for :class:`RunConfig`, with the defaults of options added since it was
    logged set to what that run did (``grounding_check``: off).

    >>> logged_config({"question": "q"})["grounding_check"], logged_config({"grounding_check": True})["grounding_check"]
    (False, True)
    """
    return {"grounding_check": False, **run}


class RunConfig(BaseModel):
    """Everything that defines a run (logged in ``run_started.config["run"]``; resume rebuilds from it)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    question: str
    task: str | None = None
    """Task name or spec path; None to frame the question."""
    model: str | None = None
    """Zoo name, HF id or path; None for the task's default (a zoo model for toy tasks)."""
    circuit: list[str] | None = None
    planner: Planner = Field(default_factory=default_planner)
    replay_from: str | None = None
    """Run directory whose LLM turns the ``replay`` planner feeds back."""
    llm_model: str | None = None
    """Claude model id (``claude`` planner); None for the backend's default."""
    llm_max_tokens: int = Field(16000, ge=1)
    """Output tokens per Claude call, thinking included (adaptive thinking is on by default on Claude 5
    models: leave it room)."""
    llm_stream: bool = False
    """Stream Claude's responses (server-sent events; needed for a very large ``llm_max_tokens``)."""
    budget: Budget = Field(default_factory=Budget)
    design_task: bool = False
    """Let the LLM planner design the task (``--design-task``); it also does when no task matches the question
    and the planner is ``claude``."""
    design_steps: int = Field(8, ge=1)
    """Planner turns the task design may take (its framing budget; run-wide budgets count too)."""
    n_prompts: int = Field(32, ge=2)
    """Prompts in the main batch and in the held-out batch."""
    seed: int = 0
    sandbox: SandboxKind = SandboxKind.LOCAL
    gpus: str | None = None
    """GPUs for the kernel: ``all``, a count, or device ids ``0,1`` (see :class:`KernelOptions`)."""
    unsafe_no_isolation: bool = False
    threshold: float = Field(0.1, ge=0)
    """Localisation keeps components whose |effect| ≥ threshold × the clean − corrupt gap."""
    max_components: int = Field(8, ge=1)
    cell_timeout_s: float | None = Field(None, gt=0)
    """Wall-clock limit of one kernel cell, seconds (None: chosen from the model's size when the run starts, see
    :func:`agent.kernel.resolve_resources`; the chosen value is what the log records)."""
    kernel_threads: int | None = Field(None, ge=1)
    """torch threads in the kernel (None: chosen from the model's size and the machine when the run starts)."""
    device: str | None = None
    """``cpu``, ``cuda`` or ``cuda:N`` (None: ``cuda`` when this machine has one, else ``cpu``)."""
    dtype: DType = DType.FLOAT32
    """The dtype the model is loaded in."""
    grounding_check: bool = True
    """Send a ``conclude_component`` that fails the grounding check (:mod:`evals.grounding`) back to the planner
    once (off: record every conclusion as it is; the grounding scores count it either way). A run logged
    before the check existed has no such key and resumes and replays with it off."""
    out: str | None = None

    @property
    def kernel(self) -> KernelOptions:
        """The options the sandbox factory gets."""
        return KernelOptions(model=self.model, sandbox=self.sandbox, unsafe_no_isolation=self.unsafe_no_isolation,
                             gpus=self.gpus, device=self.device or "cpu")

    _gpus = field_validator("gpus")(_check_gpus)
