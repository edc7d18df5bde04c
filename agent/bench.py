"""Scoring runs and benchmarking planners: ``interp-agent eval RUN`` and ``interp-agent bench``.

:func:`evaluate_run` reads one run's log (task, model, seed, conclusions, clusters, the localisation
ranking, costs), re-loads the model and the task's prompts, computes every score in ``evals`` and
appends an ``evaluation`` event to the log:

- interchangeability (``ic_*``): AUC of the agent's clustering, of the task's reference clustering and
  of random clusterings with the same sizes (null mean), each with its null percentile;
- replication (``rep_*``) against the task's reference circuit: component P/R/F1, ARI/NMI, role-label
  agreement by the synonym table, and by a Claude judge when ANTHROPIC_API_KEY is set (its prompt and
  verdicts go into the event's details);
- ground truth (``gt_*``) on planted models: exact component F1 and role ARI;
- faithfulness (``faith_*``) of the agent's and the reference circuit, and the area under the top-k
  curve of the agent's ranking;
- cost (``cost_*``): planner steps, tool calls, tokens, USD, wall time.

:func:`run_bench` runs a grid of investigations (task × planner × seed, and × permuted with
``permute_heads``) as Ray tasks (or in-process, for tests), scores each, and appends one line per
finished cell to ``results.jsonl`` keyed by ``(task, planner, seed, permuted)``: an interrupted
benchmark resumes without redoing finished cells. The table (mean ± std over seeds per task, planner
and permutation) is written as CSV and Markdown.

>>> BenchConfig(tasks=["toy-ioi"], out="/tmp/b").cells()[0].key
'toy-ioi|offline|0|orig'
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tools.errors import InterpAgentError

EVALUATOR = "evals"
"""``evaluator`` field of the ``evaluation`` events written here."""

NON_CIRCUIT_LABELS = ("inconclusive", "no effect", "no task effect", "distractor", "unclear", "irrelevant", "none")
"""A concluded component whose role starts with one of these (or whose canonical role in the synonym
table is ``distractor``) is not part of the agent's circuit."""


class BenchError(InterpAgentError):
    """A benchmark or evaluation that cannot run as asked."""


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


# ---------------------------------------------------------------------------------------------- one run


class RunData(_Data):
    """What the scores need from a run's log (plain data)."""

    run_dir: str
    task: str
    model: str
    seed: int = 0
    n_prompts: int = 32
    planner: str = ""
    roles: dict[str, str] = Field(default_factory=dict)
    """Component → concluded role label (every concluded component)."""
    circuit: list[str] = Field(default_factory=list)
    """The agent's circuit: concluded components whose role is not inconclusive / no effect."""
    clusters: dict[str, list[str]] = Field(default_factory=dict)
    """The agent's clusters (latest ``cluster`` events)."""
    ranking: list[str] = Field(default_factory=list)
    """The agent's components by importance: localisation |effect| order, else the circuit's order."""
    cost: dict[str, float] = Field(default_factory=dict)


def _is_circuit_role(role: str) -> bool:
    """True unless the label says the component does nothing for the task.

    >>> _is_circuit_role("name mover"), _is_circuit_role("no task effect"), _is_circuit_role("Unclear role")
    (True, False, False)
    """
    from evals.scores import canonical_role

    r = role.strip().lower()
    return bool(r) and not r.startswith(NON_CIRCUIT_LABELS) and canonical_role(r) != "distractor"


def read_run(run_dir: str | Path) -> RunData:
    """Read a run's log into :class:`RunData` (raises when the run never started)."""
    from agent.log import (
        latest_clusters,
        latest_conclusions,
        llm_totals,
        read_events,
        run_finished,
        run_started,
    )

    run_dir = Path(run_dir)
    events = read_events(run_dir)
    started = run_started(events)
    if started is None or not started.task:
        raise BenchError(f"run {run_dir} has no run_started event with a task", fix="evaluate a run that started")
    concl = latest_conclusions(events)
    roles = {c: e.role for c, e in concl.items()}
    circuit = [c for c, e in concl.items() if _is_circuit_role(e.role) and e.inconclusive_reason is None]
    clusters = {n: list(e.components) for n, e in latest_clusters(events).items()}
    ranking: list[str] = []
    for e in events:
        if e.kind == "execution_result" and e.call_id == "localise-sweep" and isinstance(e.data, dict):
            fr = {k: v for k, v in (e.data.get("effect_frac") or {}).items() if v is not None}
            ranking = [c for c in sorted(fr, key=lambda k: -abs(float(fr[k]))) if c in circuit]
    ranking += [c for c in circuit if c not in ranking]
    tot = llm_totals(events)
    fin = run_finished(events)
    wall = (fin.ts - started.ts).total_seconds() if fin and fin.ts and started.ts else float("nan")
    cost = {"steps": float(sum(1 for e in events if e.kind == "llm_response") or
                           sum(1 for e in events if e.kind == "tool_call")),
            "tool_calls": float(sum(1 for e in events if e.kind == "tool_call")),
            "tokens": float(tot["input_tokens"] + tot["output_tokens"] + tot["cache_read_input_tokens"]
                            + tot["cache_creation_input_tokens"]),
            "usd": float(tot["usd"]), "wall_s": float(wall)}
    cfg = started.config or {}
    return RunData(run_dir=str(run_dir), task=started.task, model=started.model, seed=started.seed,
                   n_prompts=int(cfg.get("n_prompts") or (cfg.get("run") or {}).get("n_prompts") or 32),
                   planner=started.planner, roles=roles, circuit=circuit, clusters=clusters, ranking=ranking,
                   cost=cost)


def load_eval_model(ref: str) -> Any:
    """A ``tools.Model`` for a run's model reference: a zoo name, or a path / HF id."""
    from transformers.utils import logging as hf_logging

    from evals.zoo import list_zoo, load_zoo_model
    from tools import load_model

    hf_logging.disable_progress_bar()
    if ref in {e.name for e in list_zoo()}:
        return load_zoo_model(ref, device="cpu")
    return load_model(ref)


PERMUTATION_FILE = "permutation.json"
"""Written beside a head-permuted model: ``{"seed": s, "source": ref, "mapping": {old: new}}``."""


def _permutation(model_ref: str) -> dict[str, str] | None:
    p = Path(model_ref) / PERMUTATION_FILE
    if p.is_file():
        return dict(json.loads(p.read_text())["mapping"])
    return None


def _reference(task: Any, model_ref: str) -> tuple[dict[str, str], dict[str, str] | None]:
    """(reference roles, planted ground truth or None), both renamed through a head permutation."""
    from evals.zoo import list_zoo

    mapping = _permutation(model_ref)
    source = model_ref
    if mapping is not None:
        source = json.loads((Path(model_ref) / PERMUTATION_FILE).read_text()).get("source", model_ref)
        task = task.with_mapping(mapping)
    from evals.ground_truth import circuit_of

    ref = circuit_of({e.component: e.role for e in task.reference if not getattr(e, "uncertain", False)})
    entry = next((e.model_dump() for e in list_zoo() if e.name == source), None)
    if entry is None and (Path(source) / "zoo.json").is_file():  # a zoo model copied to a path
        entry = json.loads((Path(source) / "zoo.json").read_text())
    truth = None
    if entry is not None and entry.get("kind") == "planted":
        raw = (entry.get("extra") or {}).get("ground_truth")
        truth = dict(raw) if isinstance(raw, dict) else {e.component: e.role for e in task.reference}
        if mapping is not None and isinstance(raw, dict):
            truth = {mapping.get(c, c): r for c, r in truth.items()}
    return ref, truth


def _nan(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def score_run(data: RunData, *, seed: int | None = None, n_prompts: int | None = None, n_null: int = 200,
              judge: Any = None, cache: bool = True, model: Any = None) -> tuple[dict[str, float | None], dict]:
    """Every score of one run: ``(flat scores, details)`` (see the module docstring for the names)."""
    from evals.faithfulness import faithfulness, faithfulness_curve
    from evals.ground_truth import ground_truth_score
    from evals.interchange import interchange_matrix, random_clustering, score_clustering
    from evals.scores import clusters_from_roles, replication_score
    from evals.tasks import load_task
    from tools.components import Kind

    task = load_task(data.task)
    model = model if model is not None else load_eval_model(data.model)
    seed = data.seed if seed is None else seed
    batch = task.make_batch(model.tokenizer, n_prompts or data.n_prompts, seed)
    metric = task.metric_fn(model.tokenizer)
    ref_roles, truth = _reference(task, data.model)
    writers = (Kind.HEAD, Kind.MLP)

    def ok(c: str, kinds: tuple = writers) -> bool:
        try:
            comp = model.check(c)
        except InterpAgentError:
            return False
        return comp.kind in kinds

    agent_clusters = {n: [c for c in cs if ok(c)] for n, cs in (data.clusters or {}).items()}
    agent_clusters = {n: cs for n, cs in agent_clusters.items() if cs}
    if not agent_clusters:
        agent_clusters = clusters_from_roles({c: data.roles[c] for c in data.circuit if ok(c)})
    ref_clusters: dict[str, list[str]] = {}
    for c, r in ref_roles.items():
        if ok(c):
            ref_clusters.setdefault(r, []).append(c)
    universe = list(dict.fromkeys([c for cs in agent_clusters.values() for c in cs]
                                  + [c for cs in ref_clusters.values() for c in cs]))
    scores: dict[str, float | None] = {}
    details: dict[str, Any] = {"task": data.task, "model": data.model, "eval_seed": seed,
                               "agent_circuit": data.circuit, "agent_clusters": agent_clusters,
                               "reference_clusters": ref_clusters}
    if len(universe) >= 2:
        ic = interchange_matrix(model, batch, universe, metric, task=data.task, seed=seed, cache=cache)
        details["interchange"] = {"components": ic.components, "m0": ic.m0, "noise_floor": ic.noise_floor,
                                  "undefined_components": ic.undefined_components,
                                  "I_sym": [[_nan(x) for x in row] for row in ic.sym().tolist()]}
        scores["ic_undefined_pairs"] = float(ic.n_undefined_sym)
        for name, cl in (("agent", agent_clusters), ("reference", ref_clusters)):
            if not cl:
                scores[f"ic_auc_{name}"] = scores[f"ic_null_{name}"] = scores[f"ic_pct_{name}"] = None
                continue
            s = score_clustering(ic, cl, n_null=n_null, seed=seed)
            scores[f"ic_auc_{name}"] = s.auc if s.defined else None
            scores[f"ic_null_{name}"] = s.null_mean if s.defined else None
            scores[f"ic_pct_{name}"] = s.percentile if s.defined else None
            details[f"ic_{name}"] = s.model_dump(exclude={"null_aucs"})
        if agent_clusters:
            sizes = [len(v) for v in agent_clusters.values()]
            members = [c for cs in agent_clusters.values() for c in cs]
            rnd = score_clustering(ic, random_clustering(members, sizes, seed=seed), n_null=0)
            scores["ic_auc_random"] = rnd.auc if rnd.defined else None
    if ref_roles:
        agent_roles = {c: data.roles[c] for c in data.circuit}
        try:
            rep = replication_score(agent_roles, ref_roles, agent_clusters=agent_clusters or None,
                                    agent_components=data.circuit, judge=judge)
        except Exception as e:  # noqa: BLE001 - a failing judge (API down, bad answer) costs only its score
            if judge is None:
                raise
            details["judge_error"] = f"{type(e).__name__}: {e}"[:500]
            rep = replication_score(agent_roles, ref_roles, agent_clusters=agent_clusters or None,
                                    agent_components=data.circuit)
        scores.update(rep_precision=rep.components.precision, rep_recall=rep.components.recall,
                      rep_f1=rep.components.f1, rep_ari=rep.clusters.ari, rep_nmi=rep.clusters.nmi,
                      rep_roles=rep.roles.fraction)
        if rep.judge is not None:
            scores["rep_roles_llm"] = rep.judge.fraction
        details["replication"] = rep.model_dump()
    if truth:
        gt = ground_truth_score({c: data.roles[c] for c in data.circuit}, truth,
                                agent_clusters=agent_clusters or None, agent_components=data.circuit)
        scores.update(gt_precision=gt.precision, gt_recall=gt.recall, gt_f1=gt.f1, gt_ari=gt.ari)
        details["ground_truth"] = gt.model_dump()
    circuit = [c for c in data.circuit if ok(c, (Kind.HEAD, Kind.MLP, Kind.ATTN))]
    fa = faithfulness(model, batch, circuit, metric)
    scores["faith_agent"] = fa.fraction
    if ref_roles:
        scores["faith_reference"] = faithfulness(model, batch, [c for c in ref_roles if ok(c)], metric).fraction
    ranking = [c for c in data.ranking if c in circuit]
    if ranking:
        curve = faithfulness_curve(model, batch, ranking, metric)
        scores["faith_curve_area"] = curve.area
        details["faithfulness_curve"] = curve.model_dump()
    scores.update({f"cost_{k}": _nan(v) for k, v in data.cost.items()})
    return scores, details


def default_judge(use: bool | None = None) -> Any:
    """The LLM judge backend: Claude when ``use`` is True, or None (auto) and ANTHROPIC_API_KEY is set.

    >>> default_judge(False) is None
    True
    """
    if use is False or (use is None and not os.environ.get("ANTHROPIC_API_KEY")):
        return None
    if not os.environ.get("ANTHROPIC_API_KEY"):
        raise BenchError("the LLM judge needs ANTHROPIC_API_KEY", fix="export ANTHROPIC_API_KEY or use --no-judge")
    from agent.llm.claude import ClaudeBackend

    return ClaudeBackend()


def evaluate_run(run_dir: str | Path, *, append: bool = True, **kwargs: Any) -> dict[str, Any]:
    """Score one run (:func:`score_run`) and append an ``evaluation`` event to its log.

    Returns ``{"run_dir", "scores", "details"}``. ``kwargs`` go to :func:`score_run`.
    """
    from agent.log import EvaluationEvent, RunLog

    data = read_run(run_dir)
    scores, details = score_run(data, **kwargs)
    if append:
        RunLog.open_existing(Path(run_dir)).append(
            EvaluationEvent(evaluator=EVALUATOR, scores=scores, details=_jsonable(details)))
    return {"run_dir": str(run_dir), "scores": scores, "details": details}


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, default=str, allow_nan=False)) if not _has_nan(x) else json.loads(
        json.dumps(x, default=str).replace("NaN", "null"))


def _has_nan(x: Any) -> bool:
    if isinstance(x, float):
        return math.isnan(x) or math.isinf(x)
    if isinstance(x, dict):
        return any(_has_nan(v) for v in x.values())
    if isinstance(x, list | tuple):
        return any(_has_nan(v) for v in x)
    return False


# ---------------------------------------------------------------------------------------------- the grid


class Cell(_Data):
    """One investigation of the benchmark grid."""

    task: str
    planner: str
    seed: int
    permuted: bool = False

    @property
    def key(self) -> str:
        """``task|planner|seed|orig`` or ``...|perm``: the results file's key."""
        return f"{self.task}|{self.planner}|{self.seed}|{'perm' if self.permuted else 'orig'}"


class BenchConfig(_Data):
    """A benchmark: the grid, where results go, and how investigations run."""

    tasks: list[str]
    planners: list[str] = Field(default_factory=lambda: ["offline"])
    seeds: int = Field(1, ge=1)
    """Seeds 0..seeds-1 per (task, planner)."""
    permute_heads: int | None = None
    """Also run every cell on a head-permuted model (this permutation seed) and report the difference."""
    out: str
    """Directory for results.jsonl / results.csv / results.md, runs/ and permuted models."""
    ray_address: str | None = None
    """An existing Ray cluster (``ray.init(address=...)``); None starts Ray on this machine. On a
    cluster, ``out`` must be on a file system every node sees (workers write runs and permuted models
    there; the driver writes the results files)."""
    executor: Literal["ray", "inline"] = "ray"
    """``ray`` (one Ray task per investigation) or ``inline`` (sequential, in this process)."""
    num_cpus: float = 1.0
    """CPUs per investigation (Ray resource request)."""
    gpus_per_run: float | None = None
    """GPUs per investigation; None: 0 for zoo models, 1 for other models when CUDA is available."""
    n_prompts: int = Field(32, ge=2)
    n_null: int = Field(200, ge=0)
    judge: bool | None = None
    """Judge role labels with Claude too: None = when ANTHROPIC_API_KEY is set."""
    max_steps: int | None = None
    """Planner steps per component (the run budget's max_steps; None: the default budget)."""
    sandbox: Literal["local", "docker"] = "local"
    unsafe_no_isolation: bool = False

    def cells(self) -> list[Cell]:
        perms = [False, True] if self.permute_heads is not None else [False]
        return [Cell(task=t, planner=p, seed=s, permuted=q)
                for t in self.tasks for p in self.planners for s in range(self.seeds) for q in perms]


class CellResult(_Data):
    """One finished cell (a line of ``results.jsonl``)."""

    key: str
    task: str
    planner: str
    seed: int
    permuted: bool
    status: Literal["ok", "error"]
    note: str = ""
    run_dir: str | None = None
    scores: dict[str, float | None] = Field(default_factory=dict)
    wall_s: float = 0.0
    """Wall time of the whole cell: investigation + scoring (seconds)."""


def planner_available(planner: str) -> str | None:
    """None when ``planner`` can run here, else a note saying why not and how to fix it.

    >>> planner_available("offline") is None
    True
    """
    if planner == "offline":
        return None
    if planner == "claude":
        return None if os.environ.get("ANTHROPIC_API_KEY") else (
            "claude planner skipped: ANTHROPIC_API_KEY is not set (export it to include claude)")
    return f"planner {planner!r} cannot run in a benchmark (use offline or claude)"


def _question(task: Any) -> str:
    desc = " ".join(str(task.description).split())
    return f"Which components implement the {task.name} task, and what does each do? {desc}"


def permuted_model_dir(model_ref: str, seed: int, out: str | Path) -> Path:
    """Save a head-permuted copy of ``model_ref`` under ``out/models/`` (once) with its mapping."""
    safe = model_ref.strip("/").replace("/", "_")
    path = Path(out) / "models" / f"{safe}-perm{seed}"
    if (path / PERMUTATION_FILE).is_file():
        return path
    from tools import permute_heads

    model = load_eval_model(model_ref)
    pm, mapping = permute_heads(model, seed)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{time.monotonic_ns()}")  # unique per worker
    tmp.mkdir(parents=True, exist_ok=True)
    pm.hf.save_pretrained(tmp)
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(tmp)
    (tmp / PERMUTATION_FILE).write_text(json.dumps(
        {"seed": seed, "source": model_ref, "mapping": {str(k): str(v) for k, v in mapping.items()}}))
    for f in tmp.iterdir():  # save_pretrained writes 0600 files: the sandbox's user must read them
        f.chmod(0o644)
    try:
        tmp.rename(path)
    except OSError:  # another worker won the race: its copy is the same permutation
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def run_cell(cell: Cell, cfg: BenchConfig, home: str | None = None) -> CellResult:
    """Investigate one cell with the agent, score it, and return the result (never raises)."""
    if home:
        os.environ["INTERP_AGENT_HOME"] = home
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    t0 = time.monotonic()
    base = dict(key=cell.key, task=cell.task, planner=cell.planner, seed=cell.seed, permuted=cell.permuted)
    run_dir = None
    try:
        from agent.run import RunConfig, start_run
        from evals.tasks import load_task

        task = load_task(cell.task)
        model_ref = task.model
        if cell.permuted:
            model_ref = str(permuted_model_dir(model_ref, int(cfg.permute_heads or 0), cfg.out))
        kwargs: dict[str, Any] = {}
        if cfg.max_steps is not None:
            from agent.budget import Budget

            kwargs["budget"] = Budget(max_steps=cfg.max_steps)
        rc = RunConfig(question=_question(task), task=cell.task, model=model_ref, planner=cell.planner,
                       seed=cell.seed, n_prompts=cfg.n_prompts, out=str(Path(cfg.out) / "runs"),
                       sandbox=cfg.sandbox, unsafe_no_isolation=cfg.unsafe_no_isolation, **kwargs)
        outcome = start_run(rc)
        run_dir = outcome.run_dir
        ev = evaluate_run(run_dir, n_null=cfg.n_null, judge=default_judge(cfg.judge))
        return CellResult(**base, status="ok", run_dir=run_dir, scores=ev["scores"], wall_s=time.monotonic() - t0)
    except Exception as e:  # noqa: BLE001 - a failed cell is a result, not a crashed benchmark
        return CellResult(**base, status="error", note=f"{type(e).__name__}: {e}"[:500], run_dir=run_dir,
                          wall_s=time.monotonic() - t0)


# ---------------------------------------------------------------------------------------------- executors

CellFn = Callable[[Cell, BenchConfig, str | None], CellResult]


def inline_executor(fn: CellFn, cells: Sequence[Cell], cfg: BenchConfig, home: str | None) -> Iterator[CellResult]:
    """Run cells one after another in this process (tests, debugging)."""
    for c in cells:
        yield fn(c, cfg, home)


def _gpus(cfg: BenchConfig, cells: Sequence[Cell]) -> float:
    if cfg.gpus_per_run is not None:
        return cfg.gpus_per_run
    try:
        import torch

        if not torch.cuda.is_available():
            return 0.0
    except ImportError:
        return 0.0
    from evals.tasks import load_task
    from evals.zoo import list_zoo

    zoo = {e.name for e in list_zoo()}
    return 0.0 if all(load_task(c.task).model in zoo for c in cells) else 1.0


def ray_executor(fn: CellFn, cells: Sequence[Cell], cfg: BenchConfig, home: str | None) -> Iterator[CellResult]:
    """One Ray task per cell (``num_cpus`` / ``num_gpus`` each); yields results as they finish."""
    try:
        import ray
    except ImportError:
        raise BenchError("ray is not installed", fix="pip install 'interp-agent[bench]' or use --executor inline") from None
    started_here = False
    if not ray.is_initialized():
        if cfg.ray_address:
            ray.init(address=cfg.ray_address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(num_cpus=max(1, int(os.cpu_count() or 1)), include_dashboard=False, log_to_driver=False)
        started_here = True
    try:
        remote = ray.remote(num_cpus=cfg.num_cpus, num_gpus=_gpus(cfg, cells), max_retries=0)(fn)
        pending = [remote.remote(c, cfg, home) for c in cells]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
    finally:
        if started_here:
            ray.shutdown()


Executor = Callable[[CellFn, Sequence[Cell], BenchConfig, str | None], Iterable[CellResult]]


# ---------------------------------------------------------------------------------------------- results


def read_results(out: str | Path) -> dict[str, CellResult]:
    """Finished cells by key from ``out/results.jsonl`` (later lines win; a torn last line is ignored)."""
    path = Path(out) / "results.jsonl"
    res: dict[str, CellResult] = {}
    if not path.exists():
        return res
    for line in path.read_text().splitlines():
        try:
            r = CellResult.model_validate_json(line)
        except ValueError:
            continue
        res[r.key] = r
    return res


def _append(out: Path, r: CellResult) -> None:
    with open(out / "results.jsonl", "a") as f:
        f.write(r.model_dump_json() + "\n")
        f.flush()
        os.fsync(f.fileno())


TABLE_COLUMNS: list[tuple[str, str]] = [
    ("ic_auc_agent", "IC AUC agent"), ("ic_auc_reference", "IC AUC reference"), ("ic_null_agent", "IC AUC random"),
    ("rep_f1", "rep F1"), ("rep_ari", "rep ARI"), ("gt_f1", "GT F1"), ("gt_ari", "GT ARI"),
    ("faith_agent", "faithfulness"), ("faith_curve_area", "faith. curve area"), ("cost_steps", "steps"),
    ("cost_tokens", "tokens"), ("cost_usd", "USD"), ("cost_wall_s", "wall s"),
]
"""Columns of the summary table: (score name, header)."""


def _mean_std(vals: list[float]) -> tuple[float, float] | None:
    vals = [v for v in vals if v is not None and not math.isnan(v)]
    if not vals:
        return None
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return m, sd


DIGITS: dict[str, int] = {"cost_steps": 0, "cost_tool_calls": 0, "cost_tokens": 0, "cost_usd": 4, "cost_wall_s": 1}
"""Decimals per score in the Markdown table (default 3)."""


def _fmt(ms: tuple[float, float] | None, n: int, digits: int = 3) -> str:
    """``mean ± std`` (just the mean for one seed; ``–`` when undefined).

    >>> _fmt((0.625, 0.1768), 2), _fmt((21.0, 0.0), 1, 0), _fmt(None, 3)
    ('0.625 ± 0.177', '21', '–')
    """
    if ms is None:
        return "–"
    m, sd = ms
    return f"{m:.{digits}f}" if n <= 1 else f"{m:.{digits}f} ± {sd:.{digits}f}"


def _task_label(task: str) -> str:
    """A task name as shown in tables: a spec file path shows as its stem."""
    p = Path(task)
    return p.stem if p.suffix in (".yaml", ".yml", ".json") else task


def summarise(results: Iterable[CellResult]) -> list[dict[str, Any]]:
    """Rows of mean/std per (task, planner, permuted) over seeds, ok cells only.

    ``n`` counts the cells; a score undefined in a cell (e.g. the interchangeability AUC of an
    all-singleton clustering) is left out of that score's mean.
    """
    groups: dict[tuple[str, str, bool], list[CellResult]] = {}
    for r in results:
        if r.status == "ok":
            groups.setdefault((r.task, r.planner, r.permuted), []).append(r)
    rows = []
    for (task, planner, perm), rs in sorted(groups.items()):
        row: dict[str, Any] = {"task": task, "planner": planner, "names": "permuted" if perm else "original",
                               "n": len(rs)}
        for k, _ in TABLE_COLUMNS:
            ms = _mean_std([r.scores.get(k) for r in rs])
            row[f"{k}_mean"], row[f"{k}_std"] = (ms if ms else (None, None))
        rows.append(row)
    return rows


def memorization_gaps(rows: list[dict[str, Any]],
                      keys: Sequence[str] = ("rep_f1", "gt_f1", "ic_auc_agent", "faith_agent")) -> list[dict[str, Any]]:
    """Original − permuted mean score per (task, planner): a large drop flags recall instead of research."""
    by = {(r["task"], r["planner"], r["names"]): r for r in rows}
    out = []
    for (task, planner, names), r in by.items():
        p = by.get((task, planner, "permuted"))
        if names != "original" or p is None:
            continue
        gap = {"task": task, "planner": planner}
        for k in keys:
            a, b = r.get(f"{k}_mean"), p.get(f"{k}_mean")
            gap[k] = None if a is None or b is None else a - b
        out.append(gap)
    return out


def markdown_table(rows: list[dict[str, Any]], gaps: list[dict[str, Any]] | None = None) -> str:
    """The summary as Markdown (mean ± std over seeds)."""
    head = ["task", "planner", "names", "n"] + [h for _, h in TABLE_COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [_task_label(r["task"]), r["planner"], r["names"], str(r["n"])]
        for k, _ in TABLE_COLUMNS:
            m = r.get(f"{k}_mean")
            cells.append(_fmt(None if m is None else (m, r.get(f"{k}_std") or 0.0), r["n"], DIGITS.get(k, 3)))
        lines.append("| " + " | ".join(cells) + " |")
    if gaps:
        keys = [k for k in gaps[0] if k not in ("task", "planner")]
        lines += ["", "Memorization control (original − permuted names):", "",
                  "| task | planner | " + " | ".join(keys) + " |", "|" + "---|" * (2 + len(keys))]
        for g in gaps:
            lines.append(f"| {_task_label(g['task'])} | {g['planner']} | "
                         + " | ".join("–" if g[k] is None else f"{g[k]:+.3f}" for k in keys) + " |")
    return "\n".join(lines) + "\n"


def write_tables(out: str | Path, results: dict[str, CellResult]) -> tuple[Path, Path, str]:
    """Write ``results.csv`` (one row per cell), ``summary.csv`` and ``results.md``; return (csv, md, markdown)."""
    out = Path(out)
    cells = sorted(results.values(), key=lambda r: r.key)
    score_keys = sorted({k for r in cells for k in r.scores})
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["task", "planner", "seed", "names", "status", "note", "run_dir", "wall_s", *score_keys])
        for r in cells:
            w.writerow([r.task, r.planner, r.seed, "permuted" if r.permuted else "original", r.status, r.note,
                        r.run_dir or "", f"{r.wall_s:.1f}", *["" if r.scores.get(k) is None else r.scores[k]
                                                               for k in score_keys]])
    rows = summarise(cells)
    if rows:
        with open(out / "summary.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    md = markdown_table(rows, memorization_gaps(rows))
    (out / "results.md").write_text(md)
    return out / "results.csv", out / "results.md", md


class BenchOutcome(_Data):
    """What :func:`run_bench` did."""

    out: str
    ran: list[str]
    """Keys of cells run in this call."""
    reused: list[str]
    """Keys already finished in results.jsonl (not rerun)."""
    skipped: list[str]
    """Notes for planners that could not run here."""
    errors: list[str]
    markdown: str


def run_bench(cfg: BenchConfig, *, executor: Executor | None = None, cell_fn: CellFn = run_cell,
              progress: bool = True) -> BenchOutcome:
    """Run the grid; results are appended as each cell finishes, finished cells are never rerun."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    skipped = []
    planners = []
    for p in cfg.planners:
        note = planner_available(p)
        if note:
            skipped.append(note)
        else:
            planners.append(p)
    cells = cfg.model_copy(update={"planners": planners}).cells()
    done = {k: r for k, r in read_results(out).items() if r.status == "ok"}
    todo = [c for c in cells if c.key not in done]
    reused = [c.key for c in cells if c.key in done]
    if executor is None:
        executor = ray_executor if cfg.executor == "ray" else inline_executor
    home = os.environ.get("INTERP_AGENT_HOME")
    ran, errors = [], []
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="bench", unit="run")
    try:
        for r in (executor(cell_fn, todo, cfg, home) if todo else []):
            _append(out, r)
            ran.append(r.key)
            if r.status != "ok":
                errors.append(f"{r.key}: {r.note}")
            if bar is not None:
                bar.set_postfix_str(f"{r.key} {r.status}")
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    results = read_results(out)
    keys = {c.key for c in cells}
    _, _, md = write_tables(out, {k: r for k, r in results.items() if k in keys})
    return BenchOutcome(out=str(out), ran=ran, reused=reused, skipped=skipped, errors=errors, markdown=md)
