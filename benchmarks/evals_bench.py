"""Speed of the evals' batched variants (not a test): prints ratios measured in one run.

- interchange matrix time ÷ (n_variants × one forward of the task batch): < 1 means the batching
  (many (a, b) replacements per forward) beats a Python loop of single forwards;
- the same with a warm disk cache (only the lookup);
- faithfulness curve time ÷ ((n + 1) × one forward).

Model: a random-init GPT-2 (4 layers, 8 heads, d_model 256, vocab 1000) on CPU; 32 prompts of 16 tokens.
Run: ``HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/evals_bench.py``.
"""

from __future__ import annotations

import os
import tempfile
import time

import torch


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["INTERP_AGENT_HOME"] = tempfile.mkdtemp(prefix="evals-bench-")
    from transformers import AutoModelForCausalLM

    from evals.faithfulness import faithfulness_curve
    from evals.interchange import interchange_matrix
    from tools.batch import TaskBatch
    from tools.model import Model
    from tools.tiny import tiny_config

    torch.manual_seed(0)
    torch.set_num_threads(1)  # the shared 2-core box: more threads only spin against other jobs
    cfg = tiny_config("gpt2", vocab_size=1000, n_layers=4, n_heads=8, d_model=256)
    model = Model.from_hf(AutoModelForCausalLM.from_config(cfg, attn_implementation="eager"))
    ids = torch.randint(4, 1000, (32, 16))
    last = model(ids)[:, -1]
    batch = TaskBatch(clean_ids=ids, answer_ids=last.argmax(-1), wrong_ids=last.argmin(-1))
    comps = model.components("heads")[:12] + model.components("mlps")

    model(ids)  # warm up
    t = time.perf_counter()
    reps = 10
    for _ in range(reps):
        model(ids)
    fwd = (time.perf_counter() - t) / reps

    t = time.perf_counter()
    r = interchange_matrix(model, batch, comps, task="bench", seed=0)
    ic = time.perf_counter() - t
    n_var = r.n_computed
    t = time.perf_counter()
    interchange_matrix(model, batch, comps, task="bench", seed=0)
    warm = time.perf_counter() - t

    ranking = [str(c) for c in comps]
    t = time.perf_counter()
    faithfulness_curve(model, batch, ranking)
    fc = time.perf_counter() - t

    print(f"forward (32 x 16 tokens): {fwd * 1e3:.1f} ms")
    print(f"interchange matrix, {len(comps)} components, {n_var} variants: {ic:.2f} s; "
          f"ratio to a loop of forwards: {ic / (n_var * fwd):.2f}")
    print(f"interchange matrix from the disk cache: {warm * 1e3:.1f} ms")
    print(f"faithfulness curve, {len(ranking) + 1} points (+2 baselines): {fc:.2f} s; "
          f"ratio to a loop of forwards: {fc / ((len(ranking) + 3) * fwd):.2f}")


if __name__ == "__main__":
    main()
