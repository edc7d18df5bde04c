"""Running on bigger models and other devices: kernel threads and cell limits chosen from the model's size and
the machine, ``--device`` / ``--dtype`` reaching the kernel's model loader, and every experiment in bfloat16."""

from __future__ import annotations

import math

import pytest
import torch

from agent.kernel import ZOO_CELL_TIMEOUT_S, model_params, resolve_resources, setup_cells
from agent.log import read_events
from agent.run import RunConfig, start_run
from tests.test_graph_fakes import SIGNATURES, fake_factory, fake_tasks
from tools import experiments as X
from tools.batch import TaskBatch
from tools.metrics import logit_diff
from tools.model import load_model
from tools.tiny import make_tiny_model


def test_defaults_follow_model_size_and_idle_cores():
    zoo = resolve_resources(model_params("toy-ioi"), cores=16, load=0.0)
    assert (zoo.threads, zoo.cell_timeout_s) == (1, ZOO_CELL_TIMEOUT_S)  # zoo-sized: one thread is fastest
    big = resolve_resources(85_000_000, cores=16, load=0.0)
    assert big.threads == 16 and big.cell_timeout_s > ZOO_CELL_TIMEOUT_S  # beyond the zoo: every core
    assert resolve_resources(85_000_000, cores=16, load=10.0).threads == 6  # ...that other jobs leave idle
    assert resolve_resources(85_000_000, cores=2, load=12.0).threads == 1
    assert resolve_resources(None, cores=4, load=0).cell_timeout_s == 600  # unknown size: the longest limit
    given = resolve_resources(85_000_000, threads=3, cell_timeout_s=42, cores=16, load=0.0)
    assert (given.threads, given.cell_timeout_s) == (3, 42) and "given" in given.why


def test_model_params_of_a_saved_model(tmp_path):
    p = make_tiny_model("gpt2", tmp_path / "m")
    n = sum(v.numel() for v in load_model(p, device="cpu").hf.parameters())
    est = model_params(str(p))
    assert est is not None and abs(est - n) / n < 0.1  # the weight file's size over 4 bytes per float32


@pytest.mark.usefixtures(fake_tasks.__name__)
def test_threads_timeout_device_dtype_reach_the_kernel(tmp_path):
    factory = fake_factory()
    seen: dict = {}

    def capture(workspace, setup, options):
        seen.update(setup=setup, options=options)
        return factory(workspace, setup, options)

    cfg = RunConfig(question="Which heads move the indirect object's name?", task="toy-ioi", model="toy-ioi",
                    planner="offline", out=str(tmp_path / "runs"), n_prompts=8, circuit=list(SIGNATURES)[:1],
                    kernel_threads=3, cell_timeout_s=42, device="cpu", dtype="bfloat16")
    out = start_run(cfg, sandbox_factory=capture)
    assert out.status == "completed"
    assert "torch.set_num_threads(min(3, len(os.sched_getaffinity(0))))" in seen["setup"][0]
    assert "load_any_model('toy-ioi', dtype=torch.bfloat16)" in seen["setup"][1]
    started = read_events(out.run_dir)[0]
    assert started.config["run"]["kernel_threads"] == 3 and started.config["run"]["cell_timeout_s"] == 42
    assert started.config["resources"]["threads"] == 3  # what was chosen is logged, so resume uses it


@pytest.mark.usefixtures(fake_tasks.__name__)
def test_zoo_defaults_are_logged(tmp_path):
    cfg = RunConfig(question="Which heads move the indirect object's name?", task="toy-ioi", model="toy-ioi",
                    planner="offline", out=str(tmp_path / "runs"), n_prompts=8, circuit=list(SIGNATURES)[:1])
    out = start_run(cfg, sandbox_factory=fake_factory())
    run = read_events(out.run_dir)[0].config["run"]
    assert run["kernel_threads"] == 1 and run["cell_timeout_s"] == ZOO_CELL_TIMEOUT_S and run["device"] == "cpu"


def test_setup_cells_load_the_model_in_bfloat16(tmp_path):
    """The setup cells, executed as the kernel executes them (no sandbox), load the model in the dtype asked."""
    from evals.tasks import load_task
    from tools.tiny import tiny_config, word_tokenizer

    tok = word_tokenizer(load_task("toy-ioi").vocabulary())
    from transformers import AutoModelForCausalLM

    path = tmp_path / "m"
    AutoModelForCausalLM.from_config(tiny_config("gpt2", vocab_size=len(tok))).save_pretrained(path)
    tok.save_pretrained(path)
    ns: dict = {}
    for cell in setup_cells(str(path), "toy-ioi", 4, 0, threads=1, device="cpu", dtype="bfloat16"):
        exec(cell, ns)  # noqa: S102 - the project's own setup cells
    assert ns["model"].dtype == torch.bfloat16
    r = X.ablation(ns["model"], ns["batch"], ns["metric"], ["L1H0"], method="mean")
    assert math.isfinite(r.clean) and math.isfinite(r.ablated)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_every_experiment_runs_in_bfloat16(arch, tmp_path):
    m = load_model(make_tiny_model(arch, tmp_path / arch), device="cpu", dtype=torch.bfloat16)
    g = torch.Generator().manual_seed(0)
    b = TaskBatch(clean_ids=torch.randint(4, 64, (8, 6), generator=g),
                  corrupt_ids=torch.randint(4, 64, (8, 6), generator=g),
                  answer_ids=torch.randint(4, 64, (8,), generator=g), wrong_ids=torch.randint(4, 64, (8,), generator=g),
                  positions={"END": torch.full((8,), 5), "S2": torch.full((8,), 3)})
    calls = {
        "ablation": lambda: X.ablation(m, b, logit_diff, ["L1H0", "MLP0"], method="mean"),
        "patching": lambda: X.patching(m, b, logit_diff, ["L1H0"], positions=["END"]),
        "path_patching": lambda: X.path_patching(m, b, logit_diff, "L0H1", ["L1H0", "L1H1"], receiver_input="q"),
        "sweep": lambda: X.sweep(m, b, logit_diff, zero_ablation=True, components=["L1H0", "MLP1"]),
        "screen": lambda: X.sweep(m, b, logit_diff, method="attribution", zero_ablation=True,
                                  ablation_method="attribution"),
        "redundancy": lambda: X.redundancy(m, b, logit_diff, max_groups=2, max_candidates=2),
        "attention": lambda: X.attention(m, b, "L1H0"),
        "logit_attribution": lambda: X.logit_attribution(m, b, logit_diff, ["L1H0", "MLP1"]),
        "head_profile": lambda: X.head_profile(m, ["L1H0"]),
        "probing": lambda: X.probing(m, b, "resid_post1"),
        "steering": lambda: X.steering(m, b, logit_diff, "resid_post0"),
        "attention_pattern": lambda: X.attention_pattern(m, b, ["L1H0"]),
    }
    for name, fn in calls.items():
        data = fn().model_dump(mode="json")
        assert X.RESULT_MODELS[name if name != "screen" else "sweep"].model_validate(data), name
    assert m.dtype == torch.bfloat16 and m.token_budget() == 2048


def test_a_cuda_device_exposes_the_gpu_unless_gpus_says_which(monkeypatch, tmp_path):
    """One rule, in make_kernel: ``--device cuda`` without ``--gpus`` gives the sandbox every GPU."""
    import sandbox
    from agent.config import KernelOptions, RunConfig
    from agent.kernel import make_kernel

    seen: dict = {}
    monkeypatch.setattr(sandbox, "make_sandbox", lambda **kw: seen.update(kw) or kw)
    for opts, want in [(dict(device="cuda", unsafe_no_isolation=True), {"gpu": True}),
                       (dict(device="cuda", sandbox="docker"), {"gpus": True}),
                       (dict(device="cuda:1", sandbox="docker", gpus="1,2"), {"gpus": ["1", "2"]}),
                       (dict(unsafe_no_isolation=True), {})]:
        seen.clear()
        make_kernel(tmp_path, [], KernelOptions(**opts))
        assert {k: seen[k] for k in ("gpu", "gpus") if k in seen} == want, opts
    cfg = RunConfig(question="q?", device="cuda", unsafe_no_isolation=True)
    seen.clear()
    make_kernel(tmp_path, [], cfg.kernel)
    assert seen.get("gpu") is True
