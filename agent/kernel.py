"""The kernel a run's experiments execute in: its setup cells, the sandbox factory, and the start-up check.

The setup cells (:func:`setup_cells`) define the names every tool's cell uses:

============  ====================================================================================
``model``     the ``tools.Model`` under study (``evals.zoo.load_any_model``: a zoo name, a path or an HF id)
``task``      the ``evals.tasks.TaskSpec`` (a spec file's content is embedded in the cell)
``batches``   ``{"main": TaskBatch, "heldout": TaskBatch}``; held-out prompts use seed ``seed + 1000``
``batch``     ``batches["main"]``
``metric``    the task metric, ``metric(logits, batch) -> scalar`` (``task.metric_fn``; logit difference by default)
``tools``     the tools package; an experiment cell is one call to ``tools.experiments.<fn>``
``_tojson``   ``tools.experiments.to_json`` (older logged cells use it, and so may ``run_code`` cells)
``_base``     ``_base(b) -> {"clean", "corrupt", "gap"}``: ``tools.experiments.baseline`` of a batch
============  ====================================================================================

A run whose task the LLM planner designs (:mod:`agent.graph.design`) starts with the model alone
(``setup_cells(model, None, ...)``: no ``task``, ``batches`` or ``metric``); once a task is accepted, the
kernel restarts with ``setup_cells(model, None, ..., spec_json=...)``, the accepted spec embedded, and
those cells are logged in the ``framing`` event.

Runs logged before the experiments moved into ``tools.experiments`` carry their own setup cells in
``run_started.config["setup_cells"]`` (which defined ``_tojson`` / ``_base`` inline); replay uses those.

>>> cells = setup_cells("toy-ioi", "toy-ioi", 32, 0)
>>> "model = load_any_model('toy-ioi')" in cells[1]
True
>>> "batches" in setup_cells("toy-ioi", None, 32, 0)[1]   # a run designing its task: the model alone
False
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.config import KernelOptions, SandboxKind, parse_gpus
from tools.errors import InterpAgentError
from tools.experiments import ModelCheck


class KernelError(InterpAgentError):
    """A kernel that cannot start the run: the model or task does not load, or the circuit names bad components."""


SandboxFactory = Callable[[Path, list[str], KernelOptions], Any]
"""``factory(workspace, setup_cells, options) -> started sandbox``; tests pass in-process fakes."""


def setup_cells(model_ref: str, task_name: str | None, n_prompts: int, seed: int, threads: int | None = 1,
                spec_json: str | None = None) -> list[str]:
    """The kernel's setup cells: imports, the model, the task and its main / held-out batches, helpers.

    ``task_name``: a built-in task or a spec file (embedded); ``spec_json``: a spec as JSON text (embedded; a
    designed task); neither: the model alone (a run designing its task).

    ``threads`` sets torch's intra-op threads in the kernel (None: torch's default). One thread is the
    fast choice for the small models here (measured ~15x faster than 2 threads for an ablation on a
    loaded 2-core machine); give more for large models on many cores.
    """
    imports = "\n".join([
        "import os",
        "os.environ.setdefault('HF_HUB_OFFLINE', '1')",
        "import json, math",
        "import torch",
        "import tools",
        "from tools import Component, parse_components",
        "torch.set_grad_enabled(True)",
    ] + ([f"torch.set_num_threads({int(threads)})"] if threads else []))
    if spec_json is None and task_name is not None:
        spec_json = _task_file_json(task_name)
    lines = [
        "from evals.tasks import TaskSpec, load_task",
        "import evals.tasks.design",  # the task designer's cells call it
        "from evals.zoo import load_any_model",
        f"model = load_any_model({model_ref!r})",
    ]
    if spec_json is not None or task_name is not None:
        lines += [
            # a spec file is embedded: the kernel cannot see every host path, and resume/replay must not depend
            # on the file staying as it was
            f"task = TaskSpec.model_validate_json({spec_json!r})" if spec_json else f"task = load_task({task_name!r})",
            f"torch.manual_seed({seed})",
            f"batches = {{'main': task.make_batch(model.tokenizer, {n_prompts}, {seed}), "
            f"'heldout': task.make_batch(model.tokenizer, {n_prompts}, {seed + 1000})}}",
            "batch = batches['main']",
            "metric = task.metric_fn(model.tokenizer)",
        ]
    load = "\n".join(lines)
    helpers = "\n".join([
        "from tools.experiments import to_json as _tojson",
        "_base = lambda b: tools.experiments.baseline(model, b, metric).model_dump()",
    ])
    return [imports, load, helpers]


def _task_file_json(task: str) -> str | None:
    """The spec as JSON when ``task`` is a spec file (not a built-in task name), else None."""
    p = Path(task)
    if p.suffix not in (".yaml", ".yml", ".json") and not p.is_file():
        return None
    from evals.tasks import load_task

    return load_task(p).model_dump_json()


def check_cell(circuit: list[str] | None) -> str:
    """The start-up check: the model's fingerprint and shape, and the ``--circuit`` components it lacks.

    >>> check_cell(["L1H0"])
    "_result = tools.experiments.check_model(model, ['L1H0']).model_dump(mode='json')"
    """
    return f"_result = tools.experiments.check_model(model, {list(circuit or [])!r}).model_dump(mode='json')"


def check_setup(sb: Any, circuit: list[str] | None = None, timeout_s: float = 120) -> str | None:
    """Run :func:`check_cell` in a started sandbox; return the model's fingerprint (see :func:`model_check`)."""
    return model_check(sb, circuit, timeout_s).fingerprint


def model_check(sb: Any, circuit: list[str] | None = None, timeout_s: float = 120) -> ModelCheck:
    """Run :func:`check_cell` in a started sandbox; return the model's fingerprint and shape.

    Raises :class:`KernelError` (one line; the kernel's traceback stays in the sandbox) when the setup
    cells failed to load the model or task, or when ``circuit`` names components the model lacks.
    """
    res = sb.execute(check_cell(circuit), timeout=timeout_s)
    if res.status != "ok":
        msg = " ".join(f"{res.error_name or res.status}: {res.error_value or ''}".split())
        raise KernelError(f"the sandbox could not load the model and task ({msg[:300]})",
                          fix="check --model / --task (interp-agent zoo list, interp-agent tasks list); "
                              "--debug shows the kernel's traceback")
    try:
        info = ModelCheck.model_validate(res.data)
    except ValueError:
        raise KernelError("the sandbox's start-up check returned no model description",
                          fix="rerun with --debug and report it") from None
    if info.bad:
        raise KernelError(f"--circuit names components this model lacks: {'; '.join(info.bad)}",
                          fix=f"the model has {info.n_layers} layers x {info.n_heads} heads "
                              "(layers and heads count from 0)")
    return info


def model_read_paths(model: str | None) -> list[str]:
    """Host folders the kernel must read to load ``model``: exactly its folder (a local path) or, for a
    hub id, that model's folder in the hub cache (``models--org--name``). Never the Hugging Face home,
    which holds the token, nor a home folder (the sandbox refuses those)."""
    if not model:
        return []
    local = Path(model).expanduser()
    if local.exists():
        return [str(local.resolve())]
    hf = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface").expanduser()
    hub = Path(os.environ.get("HF_HUB_CACHE") or hf / "hub").expanduser()
    folder = hub / ("models--" + model.replace("/", "--"))
    return [str(folder.resolve())] if folder.is_dir() else []


def check_model_readable(model: str | None) -> None:
    """Refuse early, with the fix, when the kernel's (unprivileged) user could not read the model's files.

    ``save_pretrained`` writes weights with mode 0600; the isolated kernel runs as another user.
    """
    if not model:
        return
    d = Path(model).expanduser()
    if not d.is_dir():
        from evals.zoo import list_zoo, zoo_path

        if model not in {e.name for e in list_zoo()}:
            return
        d = zoo_path(model)
    bad = [p.name for p in sorted(d.iterdir()) if p.is_file() and not p.stat().st_mode & 0o004]
    if bad:
        raise KernelError(f"the sandbox cannot read the model files {', '.join(bad)} in {d} (not world-readable; "
                          "save_pretrained writes weights as 0600)", fix=f"chmod -R a+rX {d}")


def _build_progress(line: str) -> None:
    """Docker image build output on stderr, one line per Dockerfile step (a first build takes minutes)."""
    if line.startswith("Step "):
        print(f"building the sandbox image: {line[:120]}", file=sys.stderr, flush=True)


def make_kernel(workspace: Path, setup: list[str], options: KernelOptions) -> Any:
    """A sandbox (not started) that runs ``setup`` and can read the model's files, as a run's kernel does."""
    from sandbox import make_sandbox

    if options.sandbox == SandboxKind.LOCAL and not options.unsafe_no_isolation:
        check_model_readable(options.model)
    opts: dict[str, Any] = {}
    ro = model_read_paths(options.model)
    if ro:  # local: bound read-only; docker: bound read-only at the same path in the container
        opts["read_only_paths"] = ro
    gpus = parse_gpus(options.gpus)
    if options.sandbox == SandboxKind.DOCKER:
        opts["on_build_log"] = _build_progress
        if gpus:
            opts["gpus"] = gpus
    elif gpus:
        opts["gpu"] = True
    return make_sandbox(backend=str(options.sandbox), workspace=workspace, setup_code=setup,
                        unsafe_no_isolation=options.unsafe_no_isolation, **opts)


def default_sandbox_factory(workspace: Path, setup: list[str], options: KernelOptions) -> Any:
    """The :data:`SandboxFactory` the CLI uses: :func:`make_kernel`, started.

    A setup cell that fails (the model or the task does not load) raises :class:`KernelError` whose message
    is the kernel's error in one line; the sandbox's full text (with the kernel's traceback) is its cause.
    """
    from sandbox.errors import KernelStartError

    sb = make_kernel(workspace, setup, options)
    try:
        sb.start()
    except KernelStartError as e:
        first = (e.what.splitlines() or [""])[0]
        if not first.startswith("setup cell"):
            raise
        raise KernelError(f"the sandbox could not load the model and task: {first}",
                          fix="check --model / --task (interp-agent zoo list, interp-agent tasks list); "
                              "--debug shows the kernel's traceback") from e
    return sb
