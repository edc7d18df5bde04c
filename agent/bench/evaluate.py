"""Scoring one run: ``interp-agent eval RUN`` (:func:`evaluate_run`).

:func:`read_run` takes what the scores need from the run's :class:`~agent.view.RunView` (task, model,
seed, conclusions, clusters, the localisation ranking, costs); :func:`score_run` re-loads the model and the
task's prompts and computes every score in ``evals``:

- interchangeability (``ic_*``): AUC of the agent's clustering, of the task's reference clustering and
  of random clusterings with the same sizes (null mean), each with its null percentile;
- replication (``rep_*``) against the task's reference circuit: component P/R/F1, ARI/NMI, role-label
  agreement by the synonym table, and by a Claude judge when ANTHROPIC_API_KEY is set (its prompt and
  verdicts go into the event's details);
- ground truth (``gt_*``) on planted models: exact component F1 and role ARI;
- faithfulness (``faith_*``) of the agent's and the reference circuit, and the area under the top-k
  curve of the agent's ranking;
- grounding (``ground_*``, :mod:`evals.grounding`, from the log alone): the fraction of conclusions whose
  citations, numbers and role are traced to logged evidence, numbers checked and ungrounded, invalid
  citations, roles without a tested hypothesis, hypotheses never decided;
- cost (``cost_*``): planner steps, tool calls, tokens, USD, wall time.

:func:`evaluate_run` appends them as an ``evaluation`` event (NaN stored as null by pydantic's JSON).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agent.log import EvaluationEvent, RunLog
from agent.view import RunView
from evals.zoo import load_any_model
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
    grounding: dict[str, float | None] = Field(default_factory=dict)
    """The run's grounding scores (:meth:`evals.grounding.GroundingReport.scores`), from the log alone."""
    grounding_problems: dict[str, list[str]] = Field(default_factory=dict)
    """Component → its conclusion's grounding problems (ungrounded conclusions only)."""
    task_spec: dict[str, Any] | None = None
    """The task's spec when the LLM planner designed it (the log's ``framing`` event); else ``task`` is loaded."""


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
    run_dir = Path(run_dir)
    v = RunView.from_run(run_dir)
    started = v.started
    if started is None or not v.task:
        raise BenchError(f"run {run_dir} has no run_started event with a task (or no accepted task design)",
                         fix="evaluate a run that started on a task")
    roles = {c: e.role for c, e in v.conclusions.items()}
    circuit = [c for c, e in v.conclusions.items() if _is_circuit_role(e.role) and e.inconclusive_reason is None]
    sweep = v.localisation()
    ranking = [c for c in sweep.ranked() if c in circuit] if sweep is not None else []
    ranking += [c for c in circuit if c not in ranking]
    u = v.usage
    cost = {"steps": float(u.steps), "tool_calls": float(u.tool_calls), "tokens": float(u.tokens),
            "usd": float(u.usd), "wall_s": float("nan") if u.wall_s is None else float(u.wall_s)}
    cfg = started.config or {}
    g = v.grounding()
    return RunData(run_dir=str(run_dir), task=v.task, task_spec=v.framing.spec if v.framing else None,
                   model=started.model, seed=started.seed,
                   n_prompts=int(cfg.get("n_prompts") or (cfg.get("run") or {}).get("n_prompts") or 32),
                   planner=started.planner, roles=roles, circuit=circuit,
                   clusters={n: list(e.components) for n, e in v.clusters.items()}, ranking=ranking, cost=cost,
                   grounding=g.scores(), grounding_problems={c.component: c.problems for c in g.claims if c.problems})


def load_eval_model(ref: str) -> Any:
    """The run's model on the CPU (:func:`evals.zoo.load_any_model`), without Hugging Face progress bars."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return load_any_model(ref, device="cpu")


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
    from evals.tasks import TaskSpec, load_task
    from tools.components import Kind

    task = TaskSpec.model_validate(data.task_spec) if data.task_spec else load_task(data.task)
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
                                  "version": ic.version,
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
    scores.update(data.grounding)
    details["grounding"] = {"problems": data.grounding_problems}
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
    data = read_run(run_dir)
    scores, details = score_run(data, **kwargs)
    if append:
        RunLog.open_existing(Path(run_dir)).append(
            EvaluationEvent(evaluator=EVALUATOR, scores=scores, details=details))
    return {"run_dir": str(run_dir), "scores": scores, "details": details}
