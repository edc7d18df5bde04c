"""Wall time per phase of a whole offline investigation, on the zoo models and a GPT-2-small-shaped model. Not a test.

For each model it runs ``interp-agent investigate`` in-process (offline planner, default settings: the
kernel's threads and cell limit are chosen from the model's size and the machine) and times, from the loop's
progress callbacks: **setup** (framing, sandbox start, model load, start-up check), **localise** (attribution
screen, exact checks, redundancy check), the **per-component battery** (mean and total over the components),
**cluster** (+ report), then **eval** (``interp-agent eval``: interchangeability, replication, faithfulness).
It prints one Markdown row per model with the CPU time of the investigation (this process and the kernel),
the investigation's wall time in plain forwards of the batch (measured here, same threads: the machine-free
size of the work) and the load average before and after, so runs on a shared machine can be read for what
they are. ``llama-7b-shape`` (32 layers x 32 heads, d_model 256) counts the forwards a 7B-shaped
investigation needs (docs/SCALING.md turns that into a GPU estimate).

The GPT-2-small-shaped model is random-init (12 layers x 12 heads, d_model 768, 85M parameters) with the
toy-IOI tokenizer (58 words), saved with ``save_pretrained`` under ``--out``; its task is ``toy-ioi`` (the
time is what is measured).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/investigation_bench.py [--models toy-ioi,gpt2-small] [--no-eval]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GPT2_SMALL = "gpt2-small"
"""The name this bench gives the random-init GPT-2-small-shaped model."""
LLAMA_7B_SHAPE = "llama-7b-shape"
"""A random-init Llama with Llama-2-7B's layers and heads (32 x 32) but d_model 256: the work an investigation
does, counted in forwards of the batch, depends on layers x heads, not on width (for the 7B estimate)."""
ZOO_MODELS = ["toy-ioi", "toy-induction", "toy-greater-than", "toy-pronoun", "planted-ioi", "planted-induction",
              "planted-twin-induction", "toy-ioi-6l"]


RANDOM_SHAPES: dict[str, dict] = {
    GPT2_SMALL: {"arch": "gpt2", "n_positions": 64, "n_layer": 12, "n_head": 12, "n_embd": 768},
    LLAMA_7B_SHAPE: {"arch": "llama", "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 32,
                     "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 64},
}
"""The random-init models this bench builds (config keywords), with the toy-IOI tokenizer's vocabulary."""


def make_random_model(name: str, out: Path, seed: int = 0) -> Path:
    """Save the random-init model ``name`` of :data:`RANDOM_SHAPES` (toy-IOI tokenizer) under ``out`` (once);
    return its folder."""
    path = out / "models" / f"{name}-random"
    if (path / "config.json").is_file():
        return path
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, LlamaConfig

    from evals.zoo import zoo_path

    tok = AutoTokenizer.from_pretrained(zoo_path("toy-ioi"), local_files_only=True)
    torch.manual_seed(seed)
    kw = dict(RANDOM_SHAPES[name])
    cls = GPT2Config if kw.pop("arch") == "gpt2" else LlamaConfig
    cfg = cls(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
              pad_token_id=tok.pad_token_id, **kw)
    model = AutoModelForCausalLM.from_config(cfg)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    for p in [path, *path.iterdir()]:  # the sandbox's user must read them (save_pretrained writes 0600)
        p.chmod(0o755 if p.is_dir() else 0o644)
    return path


def forward_s(model_ref: str, task: str, n_prompts: int, threads: int) -> float:
    """Median wall time of one plain forward of the run's main batch (in this process, ``threads`` threads)."""
    import statistics

    import torch

    from evals.tasks import load_task
    from evals.zoo import load_any_model

    torch.set_num_threads(threads)
    m = load_any_model(model_ref, device="cpu")
    b = load_task(task).make_batch(m.tokenizer, n_prompts, 0)
    m(b.clean_ids)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        m(b.clean_ids)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class CpuMeter:
    """CPU seconds of this process and every process below it (the sandboxed kernel runs under bubblewrap, which
    does not hand its children's usage up when it is killed, so they are sampled while alive, every 0.5 s)."""

    def __init__(self) -> None:
        import psutil

        self._me = psutil.Process()
        self._seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._c0 = self._self_cpu()

    def _self_cpu(self) -> float:
        t = self._me.cpu_times()
        return t.user + t.system

    def _sample(self) -> None:
        import psutil

        for p in self._me.children(recursive=True):
            try:
                t = p.cpu_times()
                self._seen[p.pid] = max(self._seen.get(p.pid, 0.0), t.user + t.system)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self._sample()

    def __enter__(self) -> CpuMeter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.total_s = self._self_cpu() - self._c0 + sum(self._seen.values())


def run_one(name: str, out: Path, n_prompts: int, evaluate: bool, threads: int | None,
            cell_timeout: float | None) -> dict[str, Any]:
    """Investigate one model with the offline planner; the phases' wall times and the run's outcome."""
    from agent.bench import evaluate_run
    from agent.config import Planner, RunConfig
    from agent.run import start_run
    from agent.view import RunView
    from evals.zoo import zoo_entry

    if name in RANDOM_SHAPES:
        task, model = "toy-ioi", str(make_random_model(name, out))
    else:
        task, model = zoo_entry(name).task, name
    marks: list[tuple[float, dict[str, Any]]] = []

    def on_progress(info: dict[str, Any]) -> None:
        marks.append((time.monotonic(), dict(info)))

    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    cfg = RunConfig(question=f"Which components implement the {task} task?", task=task, model=model,
                    planner=Planner.OFFLINE, n_prompts=n_prompts, out=str(out / "runs"), kernel_threads=threads,
                    cell_timeout_s=cell_timeout)
    with CpuMeter() as meter:
        res = start_run(cfg, on_progress=on_progress)
    t1 = time.monotonic()
    cpu = meter.total_s
    load1 = os.getloadavg()[0]
    phases = phase_times(t0, t1, marks)
    row: dict[str, Any] = {"model": name, "task": task, "status": res.status, **phases, "investigation_s": t1 - t0,
                           "cpu_s": cpu, "load_before": load0, "load_after": load1, "run_dir": res.run_dir}
    v = RunView.from_run(res.run_dir)
    st = v.started.config.get("resources", {}) if v.started else {}
    row.update(params=st.get("params"), threads=st.get("threads"), cell_timeout_s=st.get("cell_timeout_s"),
               components=len(v.components))
    if v.localised is not None:
        row.update(screened=v.localised.screened, verified=len(v.localised.verified),
                   rank_correlation=v.localised.rank_correlation, fallback=v.localised.fallback,
                   chunks=v.localised.chunks)
    row["forward_s"] = forward_s(model, task, n_prompts, int(row.get("threads") or 1))
    row["forwards"] = row["investigation_s"] / row["forward_s"]
    if evaluate:
        e0 = time.monotonic()
        ev = evaluate_run(res.run_dir, judge=False)
        row["eval_s"] = time.monotonic() - e0
        row["rep_f1"] = ev["scores"].get("rep_f1")
    return row


def phase_times(t0: float, t1: float, marks: list[tuple[float, dict[str, Any]]]) -> dict[str, Any]:
    """Seconds per phase from the progress marks (see the module docstring).

    >>> m = [(1.0, {"phase": "localise"}), (3.0, {"phase": "component", "component": "A"}),
    ...      (4.0, {"phase": "component_done", "component": "A"}), (4.5, {"phase": "component", "component": "B"}),
    ...      (6.5, {"phase": "component_done", "component": "B"}), (7.0, {"phase": "done"})]
    >>> phase_times(0.0, 7.5, m)
    {'setup_s': 1.0, 'localise_s': 2.0, 'battery_total_s': 3.0, 'battery_mean_s': 1.5, 'n_battery': 2, 'cluster_s': 1.0}
    """
    first = {}
    for t, info in marks:
        first.setdefault(info.get("phase"), t)
    loc = first.get("localise", t0)
    starts = [t for t, i in marks if i.get("phase") == "component"]
    ends = [t for t, i in marks if i.get("phase") == "component_done"]
    after_loc = starts[0] if starts else first.get("cluster", t1)
    batt = [e - s for s, e in zip(starts, ends, strict=False)]
    last = ends[-1] if ends else after_loc
    return {"setup_s": loc - t0, "localise_s": after_loc - loc, "battery_total_s": sum(batt),
            "battery_mean_s": sum(batt) / len(batt) if batt else 0.0, "n_battery": len(batt),
            "cluster_s": t1 - last}


def table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of the rows."""
    head = ("| model | params | threads | status | setup s | localise s | battery s (mean × n) | cluster s | eval s "
            "| investigation s | = forwards | CPU s | load avg before → after | screened / checked exactly | rank corr. |")
    lines = [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
    for r in rows:
        p = r.get("params")
        ps = "–" if p is None else (f"{p / 1e6:.1f}M" if p >= 1e6 else f"{p / 1e3:.0f}k")
        rc = r.get("rank_correlation")
        lines.append(
            f"| {r['model']} | {ps} | {r.get('threads', '–')} | {r['status']} | {r['setup_s']:.1f} | "
            f"{r['localise_s']:.1f} | {r['battery_total_s']:.1f} ({r['battery_mean_s']:.1f} × {r['n_battery']}) | "
            f"{r['cluster_s']:.1f} | {r.get('eval_s', float('nan')):.1f} | {r['investigation_s']:.1f} | "
            f"{r['forwards']:.0f} | "
            f"{r['cpu_s']:.0f} | {r['load_before']:.1f} → {r['load_after']:.1f} | "
            f"{r.get('screened', '–')} / {r.get('verified', '–')} | {'–' if rc is None else f'{rc:.2f}'} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join([*ZOO_MODELS, GPT2_SMALL]),
                    help=f"comma-separated zoo names, {GPT2_SMALL} and/or {LLAMA_7B_SHAPE}")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "interp-agent-investigation-bench")
    ap.add_argument("--no-eval", action="store_true", help="skip interp-agent eval after each run")
    ap.add_argument("--threads", type=int, default=None, help="kernel threads (default: chosen per model)")
    ap.add_argument("--cell-timeout", type=float, default=None, help="cell limit, s (default: chosen per model)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    args.out.chmod(0o755)
    import platform

    import torch

    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}; "
          f"{args.prompts} prompts; offline planner; default settings unless given", flush=True)
    rows = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        r = run_one(name, args.out, args.prompts, not args.no_eval, args.threads, args.cell_timeout)
        rows.append(r)
        with (args.out / "results.jsonl").open("a") as f:
            f.write(json.dumps(r) + "\n")
        print(f"{name}: {r['status']} in {r['investigation_s']:.1f}s (CPU {r['cpu_s']:.0f}s, load "
              f"{r['load_before']:.1f} -> {r['load_after']:.1f})", flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
