"""Benchmark runner and `interp-agent eval`: fake investigations written as real run logs.

A "permutation-aware" fake planner analyses whatever model it is given (ablation effects per head) and
concludes on the heads it finds, so on a head-permuted model it names the permuted heads: every score
must come out the same as on the original names.
"""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path

import pytest
import torch
import yaml

from agent.bench import (
    BenchConfig,
    BenchError,
    Cell,
    CellResult,
    evaluate_run,
    inline_executor,
    permuted_model_dir,
    read_results,
    read_run,
    run_bench,
)
from agent.log import (
    ClusterEvent,
    ConclusionEvent,
    ExecutionResultEvent,
    RunFinishedEvent,
    RunLog,
    RunStartedEvent,
    read_events,
)
from evals.tasks import load_task
from tools import experiments as X

REFERENCE = {"L1H0": "name mover", "L1H1": "name mover", "L0H2": "s-inhibition", "MLP1": "output"}


@pytest.fixture(scope="session")
def bench_task(tmp_path_factory) -> str:
    """A task file: toy-ioi prompts, a tiny loud GPT-2 with a word tokenizer, a made-up reference."""
    from transformers import AutoModelForCausalLM

    from tools.tiny import tiny_config, word_tokenizer

    root = tmp_path_factory.mktemp("bench-task")
    base = load_task("toy-ioi")
    tok = word_tokenizer(base.vocabulary())
    cfg = tiny_config("gpt2", vocab_size=len(tok), n_layers=2, n_heads=4, d_model=64)
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith(("c_attn.weight", "c_proj.weight", "wte.weight")):
                p *= 10
    hf.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    spec = base.model_dump(mode="json")
    spec.update(name="bench-toy", model=str(root / "model"),
                reference=[{"component": c, "role": r, "explanation": "made up for the test", "source": "test"}
                           for c, r in REFERENCE.items()])
    path = root / "bench-toy.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def fake_investigation(task_path: str, model_ref: str, seed: int, runs: Path, planner: str = "fake") -> Path:
    """Write the run log a planner would: localisation by ablation effect (logged as the typed sweep result
the real kernel returns), conclusions, clusters."""
    from agent.bench import load_eval_model
    from tools import ablate

    task = load_task(task_path)
    model = load_eval_model(model_ref)
    batch = task.make_batch(model.tokenizer, 16, seed)
    metric = task.metric_fn(model.tokenizer)
    with torch.no_grad():
        m0 = float(metric(model(batch.clean_ids), batch))
        eff = {str(c): float(metric(ablate(model, batch, [c]), batch)) - m0 for c in model.components("heads")}
    top = sorted(eff, key=lambda c: -abs(eff[c]))[:4]
    run_dir = runs / f"run-{planner}-{seed}-{uuid.uuid4().hex[:8]}"
    log = RunLog(run_dir)
    log.append(RunStartedEvent(run_id=run_dir.name, question="q?", task=task_path, model=model_ref, planner=planner,
                               seed=seed, config={"n_prompts": 16}))
    sweep = X.SweepResult(clean=m0, corrupt=0.0, gap=m0, effects=eff, effect_frac={c: v / m0 for c, v in eff.items()})
    log.append(ExecutionResultEvent(call_id="localise-sweep", code="# sweep", status="ok",
                                    data=sweep.model_dump(mode="json")))
    for c in top:
        role = "name mover" if c.startswith("L1") else "s-inhibition"
        log.append(ConclusionEvent(component=c, role=role, explanation="by ablation", confidence=0.8))
    rest = next(c for c in sorted(eff, key=lambda c: abs(eff[c])) if c not in top)
    log.append(ConclusionEvent(component=rest, role="inconclusive: budget", explanation="", confidence=0.0,
                               inconclusive_reason="budget"))
    for layer in (0, 1):
        members = [c for c in top if c.startswith(f"L{layer}")]
        if members:
            log.append(ClusterEvent(name=f"layer{layer}", components=members))
    log.append(RunFinishedEvent(status="completed"))
    return run_dir


def fake_cell(cell: Cell, cfg: BenchConfig, home: str | None) -> CellResult:
    """A bench cell with the fake planner instead of the agent (same scoring path)."""
    task = load_task(cell.task)
    ref = task.model if not cell.permuted else str(permuted_model_dir(task.model, cfg.permute_heads or 0, cfg.out))
    run_dir = fake_investigation(cell.task, ref, cell.seed, Path(cfg.out) / "runs", planner=cell.planner)
    ev = evaluate_run(run_dir, n_null=cfg.n_null)
    return CellResult(key=cell.key, task=cell.task, planner=cell.planner, seed=cell.seed, permuted=cell.permuted,
                      status="ok", run_dir=str(run_dir), scores=ev["scores"])


def test_read_run_extracts_circuit_clusters_ranking(bench_task, tmp_path):
    run_dir = fake_investigation(bench_task, load_task(bench_task).model, 0, tmp_path)
    data = read_run(run_dir)
    (rest,) = set(data.roles) - set(data.circuit)  # inconclusive is not in the circuit
    assert len(data.circuit) == 4 and data.roles[rest].startswith("inconclusive")
    assert sorted(data.ranking) == sorted(data.circuit)
    assert sum(len(v) for v in data.clusters.values()) == 4
    assert data.n_prompts == 16 and data.cost["wall_s"] >= 0


def test_evaluate_run_appends_an_evaluation_event(bench_task, tmp_path):
    run_dir = fake_investigation(bench_task, load_task(bench_task).model, 0, tmp_path)
    res = evaluate_run(run_dir, n_null=50)
    s = res["scores"]
    for k in ("ic_auc_agent", "ic_auc_reference", "ic_null_agent", "rep_f1", "rep_ari", "faith_agent",
              "faith_reference", "faith_curve_area", "cost_steps"):
        assert k in s, k
    assert 0.0 <= s["rep_f1"] <= 1.0 and s["ic_null_agent"] == pytest.approx(s["ic_null_agent"])
    last = read_events(run_dir)[-1]
    assert last.kind == "evaluation" and last.evaluator == "evals" and last.scores["rep_f1"] == s["rep_f1"]
    assert "gt_f1" not in s  # not a planted model
    # grounding, from the log alone: 4 conclusions citing nothing, none resting on a tested hypothesis
    assert (s["ground_rate"], s["ground_claims"], s["ground_untested"]) == (0.0, 4.0, 4.0)
    assert all("cites no evidence" in p[0] for p in res["details"]["grounding"]["problems"].values())


def test_eval_cli(bench_task, tmp_path, capsys):
    from agent.cli import main

    run_dir = fake_investigation(bench_task, load_task(bench_task).model, 1, tmp_path)
    assert main(["--json", "eval", str(run_dir), "--n-null", "20"]) == 0
    assert read_events(run_dir)[-1].kind == "evaluation"
    out = json.loads(capsys.readouterr().out)
    assert out["scores"]["ground_rate"] == 0.0 and len(out["grounding_problems"]) == 4
    assert main(["eval", str(tmp_path / "nope")]) == 2


def test_permutation_leaves_scores_of_permutation_aware_planner_unchanged(bench_task, tmp_path):
    cfg = BenchConfig(tasks=[bench_task], planners=["offline"], seeds=1, permute_heads=7, out=str(tmp_path),
                      executor="inline", n_null=50)
    res = run_bench(cfg, executor=inline_executor, cell_fn=fake_cell, progress=False)
    assert not res.errors and len(res.ran) == 2
    results = read_results(tmp_path)
    orig = results[f"{bench_task}|offline|0|orig"].scores
    perm = results[f"{bench_task}|offline|0|perm"].scores
    model_dir = next((tmp_path / "models").iterdir())
    mapping = json.loads((model_dir / "permutation.json").read_text())["mapping"]
    assert any(k != v for k, v in mapping.items())  # the names really changed
    assert all(f.stat().st_mode & 0o044 == 0o044 for f in model_dir.iterdir())  # readable by the sandbox user
    for k in orig:
        if k.startswith("cost_"):
            continue
        a, b = orig[k], perm[k]
        assert (a is None) == (b is None), k
        if a is not None and not math.isnan(a):
            assert a == pytest.approx(b, abs=1e-4), k
    assert "Memorization control" in res.markdown
    assert "+0.000" in res.markdown or "-0.000" in res.markdown
    head, _, *rows = res.markdown.splitlines()
    col = head.split(" | ").index("grounded")
    assert [r.split(" | ")[col] for r in rows[:2]] == ["0.000", "0.000"]  # every cell has its grounding score


def test_bench_resumes_without_redoing_cells_and_skips_claude(tmp_path, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    calls: list[str] = []

    def counting(cell, cfg, home):  # synthetic scores: this test is about the bookkeeping
        calls.append(cell.key)
        return CellResult(key=cell.key, task=cell.task, planner=cell.planner, seed=cell.seed,
                          permuted=cell.permuted, status="ok", scores={"rep_f1": 0.5 + 0.25 * cell.seed,
                                                                      "ic_auc_agent": None})

    cfg = BenchConfig(tasks=["toy-ioi"], planners=["offline", "claude"], seeds=2, out=str(tmp_path),
                      executor="inline", n_null=20)
    first = run_bench(cfg, executor=inline_executor, cell_fn=counting, progress=False)
    assert len(calls) == 2 and any("ANTHROPIC_API_KEY" in n for n in first.skipped)
    assert (tmp_path / "results.csv").exists() and (tmp_path / "results.md").exists()
    assert "0.625 ± 0.177" in first.markdown  # mean ± std over the two seeds
    assert "| – |" in first.markdown  # a score that was never defined
    again = run_bench(cfg, executor=inline_executor, cell_fn=counting, progress=False)
    assert len(calls) == 2 and sorted(again.reused) == sorted(first.ran)
    # an interrupted benchmark: drop the last finished line (and tear the file) -> only that cell reruns
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    (tmp_path / "results.jsonl").write_text("\n".join(lines[:-1]) + "\n{\"key\": \"torn")
    third = run_bench(cfg, executor=inline_executor, cell_fn=counting, progress=False)
    assert len(calls) == 3 and third.ran == [json.loads(lines[-1])["key"]]


def test_failed_cell_is_recorded_and_retried(tmp_path):
    def boom(cell, cfg, home):
        return CellResult(key=cell.key, task=cell.task, planner=cell.planner, seed=cell.seed,
                          permuted=cell.permuted, status="error", note="RuntimeError: boom")

    cfg = BenchConfig(tasks=["toy-ioi"], out=str(tmp_path), executor="inline")
    res = run_bench(cfg, executor=inline_executor, cell_fn=boom, progress=False)
    assert res.errors and "boom" in res.errors[0]
    res2 = run_bench(cfg, executor=inline_executor, cell_fn=boom, progress=False)
    assert res2.ran == res.ran  # errors are not "finished": retried


@pytest.mark.slow
def test_ray_executor_smoke(tmp_path):
    pytest.importorskip("ray")
    from agent.bench import ray_executor

    def tiny(cell, cfg, home):
        return CellResult(key=cell.key, task=cell.task, planner=cell.planner, seed=cell.seed,
                          permuted=cell.permuted, status="ok", scores={"rep_f1": float(cell.seed)})

    cfg = BenchConfig(tasks=["t"], seeds=2, out=str(tmp_path), n_null=0)
    res = run_bench(cfg, executor=ray_executor, cell_fn=tiny, progress=False)
    assert sorted(res.ran) == ["t|offline|0|orig", "t|offline|1|orig"]
    assert "0.500 ± 0.707" in res.markdown


def _oracle_run(task_name: str, runs: Path) -> Path:
    """A run whose conclusions are exactly the planted ground truth (clusters by role)."""
    from evals.zoo import zoo_entry

    truth = zoo_entry(task_name).extra["ground_truth"]
    run_dir = runs / f"oracle-{uuid.uuid4().hex[:8]}"
    log = RunLog(run_dir)
    log.append(RunStartedEvent(run_id=run_dir.name, question="q?", task=task_name, model=task_name,
                               planner="oracle", seed=0, config={"n_prompts": 16}))
    for c, role in truth.items():
        log.append(ConclusionEvent(component=c, role=role, explanation="planted", confidence=1.0))
    roles: dict[str, list[str]] = {}
    for c, role in truth.items():
        if role != "distractor":
            roles.setdefault(role, []).append(c)
    for role, members in roles.items():
        log.append(ClusterEvent(name=role, components=members))
    log.append(RunFinishedEvent(status="completed"))
    return run_dir


@pytest.mark.parametrize("name", ["planted-induction", "planted-ioi"])
def test_oracle_on_planted_model_scores_perfect_ground_truth(name, tmp_path):
    from evals.zoo import list_zoo

    if name not in {e.name for e in list_zoo()}:
        pytest.skip(f"{name} is not in the zoo in this checkout")
    s = evaluate_run(_oracle_run(name, tmp_path), n_null=50)["scores"]
    assert s["gt_f1"] == 1.0 and s["gt_ari"] == pytest.approx(1.0)
    assert s["rep_f1"] == 1.0  # the task's reference is the ground truth
    assert s["faith_agent"] is not None and s["faith_agent"] > 0.8  # the planted circuit does the task
    assert s["ic_auc_agent"] == s["ic_auc_reference"]  # same clustering, same matrix


def test_bench_cli_builds_the_config(tmp_path, monkeypatch):
    import agent.bench as bench_mod
    from agent.bench import BenchOutcome
    from agent.cli import main

    seen = {}

    def fake_run_bench(cfg, progress=True):
        seen["cfg"] = cfg
        return BenchOutcome(out=cfg.out, ran=[], reused=[], skipped=[], errors=[], markdown="| t |\n")

    monkeypatch.setattr(bench_mod, "run_bench", fake_run_bench)
    code = main(["--json", "bench", "--tasks", "toy-ioi, planted-ioi", "--planners", "offline,claude", "--seeds", "2",
                 "--permute-heads", "3", "--executor", "inline", "--out", str(tmp_path), "--ray-address", "auto"])
    assert code == 0
    cfg = seen["cfg"]
    assert cfg.tasks == ["toy-ioi", "planted-ioi"] and cfg.planners == ["offline", "claude"]
    assert (cfg.seeds, cfg.permute_heads, cfg.executor, cfg.out, cfg.ray_address) == (2, 3, "inline", str(tmp_path), "auto")
    assert len(cfg.cells()) == 2 * 2 * 2 * 2
    assert main(["bench", "--executor", "threads", "--out", str(tmp_path)]) == 2


def test_llm_judge_in_evaluation_and_a_failing_judge_costs_only_its_score(bench_task, tmp_path, monkeypatch):
    from agent.bench import default_judge

    class Judge:
        def __init__(self, fail: bool) -> None:
            self.fail = fail

        def complete(self, *, system, messages, tools, max_tokens=None, timeout_s=None):
            if self.fail:
                raise ConnectionError("API down")
            return '[{"component": "L1H0", "same": true, "reason": "ok"}]'

    run_dir = fake_investigation(bench_task, load_task(bench_task).model, 0, tmp_path)
    good = evaluate_run(run_dir, n_null=10, judge=Judge(False), append=False)
    assert "rep_roles_llm" in good["scores"] and good["details"]["replication"]["judge"]["prompt"]
    bad = evaluate_run(run_dir, n_null=10, judge=Judge(True), append=False)
    assert "rep_roles_llm" not in bad["scores"] and "API down" in bad["details"]["judge_error"]
    assert bad["scores"]["rep_f1"] == good["scores"]["rep_f1"]
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    assert default_judge() is None
    with pytest.raises(BenchError, match="ANTHROPIC_API_KEY"):
        default_judge(True)
