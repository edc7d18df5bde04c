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

import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from agent.config import KernelOptions, SandboxKind, parse_gpus
from tools.errors import InterpAgentError
from tools.experiments import ModelCheck


class KernelError(InterpAgentError):
    """A kernel that cannot start the run: the model or task does not load, or the circuit names bad components."""


SandboxFactory = Callable[[Path, list[str], KernelOptions], Any]
"""``factory(workspace, setup_cells, options) -> started sandbox``; tests pass in-process fakes."""


def setup_cells(model_ref: str, task_name: str | None, n_prompts: int, seed: int, threads: int | None = 1,
                spec_json: str | None = None, device: str | None = None, dtype: str = "float32") -> list[str]:
    """The kernel's setup cells: imports, the model, the task and its main / held-out batches, helpers.

    ``task_name``: a built-in task or a spec file (embedded); ``spec_json``: a spec as JSON text (embedded; a
    designed task); neither: the model alone (a run designing its task).

    ``threads`` sets torch's intra-op threads in the kernel (None: torch's default), never more than the CPUs
    the kernel may use (its affinity mask: a sandbox may pin it to fewer). One thread is the fast choice for
    the zoo's models (measured ~15x faster than 2 threads for an ablation on a loaded 2-core machine); give
    more for large models (:func:`resolve_resources` chooses). ``device`` / ``dtype`` go to the model loader.

    >>> setup_cells("m", "toy-ioi", 8, 0, threads=4, device="cuda", dtype="bfloat16")[1].splitlines()[3]
    "model = load_any_model('m', device='cuda', dtype=torch.bfloat16)"
    """
    imports = "\n".join([
        "import os",
        "os.environ.setdefault('HF_HUB_OFFLINE', '1')",
        "import json, math",
        "import torch",
        "import tools",
        "from tools import Component, parse_components",
        "torch.set_grad_enabled(True)",
    ] + ([f"torch.set_num_threads(min({int(threads)}, len(os.sched_getaffinity(0))))" if threads > 1
          else f"torch.set_num_threads({int(threads)})"] if threads else []))
    if spec_json is None and task_name is not None:
        spec_json = _task_file_json(task_name)
    load_args = repr(model_ref) + (f", device={device!r}" if device and device != "cpu" else "") + (
        f", dtype=torch.{dtype}" if dtype != "float32" else "")
    lines = [
        "from evals.tasks import TaskSpec, load_task",
        "import evals.tasks.design",  # the task designer's cells call it
        "from evals.zoo import load_any_model",
        f"model = load_any_model({load_args})",
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


ZOO_SIZE_PARAMS = 5_000_000
"""Models up to this many parameters are zoo-sized: one kernel thread and a 120 s cell limit by default."""
ZOO_CELL_TIMEOUT_S = 120.0
"""Default cell limit for zoo-sized models, seconds."""
LARGE_CELL_TIMEOUT_S = 300.0
"""Default cell limit for larger models up to :data:`HUGE_PARAMS` (GPT-2-small class), seconds."""
HUGE_PARAMS = 1_000_000_000
HUGE_CELL_TIMEOUT_S = 600.0
"""Default cell limit for models above :data:`HUGE_PARAMS` or of unknown size, seconds."""


class Resources(BaseModel):
    """What :func:`resolve_resources` chose for a run (logged in the run's config)."""

    model_config = ConfigDict(frozen=True)

    params: int | None
    """The model's parameter count (None: unknown)."""
    threads: int
    cell_timeout_s: float
    device: str
    why: str
    """One line: how the defaults were chosen (shown to the user)."""


def model_params(ref: str | None) -> int | None:
    """Parameters of a model reference without loading it: a zoo entry's count, else the weight files' bytes
    over the bytes per parameter of the dtype its ``config.json`` names (None when unknown, e.g. a hub id).

    >>> model_params("toy-ioi"), model_params("/no/such/model")
    (105408, None)
    """
    if not ref:
        return None
    from evals.zoo import list_zoo

    entry = next((e for e in list_zoo() if e.name == ref), None)
    if entry is not None:
        return entry.params
    d = Path(ref).expanduser()
    if not d.is_dir():
        return None
    files = [f for f in d.iterdir() if f.suffix in (".safetensors", ".bin", ".pt")]
    if not files:
        return None
    size = 4
    try:
        cfg = json.loads((d / "config.json").read_text())
        size = 2 if str(cfg.get("torch_dtype") or cfg.get("dtype") or "").endswith(("16", "bf16")) else 4
    except (OSError, ValueError):
        pass
    return sum(f.stat().st_size for f in files) // size


def available_cores() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup (v2) CPU quota when one is set."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def idle_cores(cores: int | None = None, load: float | None = None) -> int:
    """Cores not kept busy by other processes: ``ceil(cores − 1-minute load average)``, at least 1.

    On a shared machine more torch threads than idle cores make every forward slower, not faster (measured on
    the 2-core build machine at load 10: a GPT-2-small-shaped forward took 3.4 s with 1 thread, 11.2 s with 2).

    >>> idle_cores(2, 0.3), idle_cores(2, 1.2), idle_cores(2, 9.0), idle_cores(16, 2.5)
    (2, 1, 1, 14)
    """
    cores = available_cores() if cores is None else cores
    load = (os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0) if load is None else load
    return max(1, min(cores, math.ceil(cores - load)))


def resolve_resources(params: int | None, threads: int | None = None, cell_timeout_s: float | None = None,
                      device: str | None = None, cores: int | None = None, load: float | None = None) -> Resources:
    """The run's kernel threads, cell limit and device: the given ones, else defaults from the model's size
    and the machine.

    - zoo-sized models (≤ :data:`ZOO_SIZE_PARAMS` parameters): 1 thread, 120 s per cell;
    - larger models: every idle core (:func:`idle_cores`; all of them on a quiet machine), 300 s per cell, 600 s
      above :data:`HUGE_PARAMS` parameters or when the size is unknown;
    - device: ``cuda`` when this machine has one, else ``cpu``; asking for ``cuda`` without one is an error.

    >>> r = resolve_resources(105_408, cores=2, load=0.2)
    >>> r.threads, r.cell_timeout_s, r.device
    (1, 120.0, 'cpu')
    >>> r = resolve_resources(85_000_000, cores=2, load=0.2)
    >>> r.threads, r.cell_timeout_s
    (2, 300.0)
    >>> resolve_resources(85_000_000, threads=3, cell_timeout_s=50, cores=2, load=0.2).threads
    3
    """
    import torch

    has_cuda = torch.cuda.is_available()
    dev = device or ("cuda" if has_cuda else "cpu")
    if dev.startswith("cuda") and not has_cuda:
        raise KernelError(f"--device {dev}: this machine has no CUDA device torch can use",
                          fix="drop --device (the CPU is used), or install a CUDA build of torch on a GPU machine")
    if not (dev == "cpu" or dev.startswith("cuda")):
        raise KernelError(f"--device {dev}: unknown device", fix="use cpu, cuda or cuda:N")
    small = params is not None and params <= ZOO_SIZE_PARAMS
    idle = idle_cores(cores, load)
    t = threads or (1 if small else idle)
    default_limit = ZOO_CELL_TIMEOUT_S if small else (
        LARGE_CELL_TIMEOUT_S if params is not None and params <= HUGE_PARAMS else HUGE_CELL_TIMEOUT_S)
    limit = cell_timeout_s or default_limit
    size = f"{params / 1e6:.1f}M parameters" if params is not None else "unknown size"
    why = (f"model {size}: {t} kernel thread(s) ({'given' if threads else 'zoo-sized' if small else f'{idle} idle core(s)'}),"
           f" {limit:g} s per cell ({'given' if cell_timeout_s else 'default'}), device {dev}")
    return Resources(params=params, threads=t, cell_timeout_s=float(limit), device=dev, why=why)


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
    gpus = parse_gpus(options.gpus) or options.device.startswith("cuda")  # a CUDA device needs the GPU in the sandbox
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
