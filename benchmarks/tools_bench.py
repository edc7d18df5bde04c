"""Speed of the intervention library on a random-init GPT-2-small-shaped model (CPU). Not a test.

Prints, in one run: raw batched forward time; per-head exact patching sweep time ÷ (n_variants ×
forward time) (target ≤ 1.15); attribution-patching speed-up over the exact sweep (target ≥ 20×); hook
overhead of ``ablate`` vs a plain forward (target ≤ 1.10×); peak RSS.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/tools_bench.py [--batch 8] [--seq 32] [--vocab 5000]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from tools import TaskBatch, ablate, attribution_patching, logit_diff, patching_sweep  # noqa: E402
from tools.model import Model  # noqa: E402


def timed(fn, repeat: int, warmup: bool = True) -> float:
    """Median wall time of ``repeat`` calls (after one warm-up unless ``warmup=False``), seconds."""
    if warmup:
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def paired(fa, fb, repeat: int) -> tuple[float, float]:
    """Median times of ``fa`` and ``fb`` called alternately (so load drift on a shared machine hits both)."""
    fa(), fb()
    ta, tb = [], []
    for _ in range(repeat):
        for fn, acc in ((fa, ta), (fb, tb)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=args.vocab, n_positions=1024, n_layer=12, n_head=12, n_embd=768,
                     bos_token_id=1, eos_token_id=2)
    hf = GPT2LMHeadModel(cfg)
    hf.set_attn_implementation("eager")
    model = Model.from_hf(hf, name="random-gpt2-small")
    B, T = args.batch, args.seq
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(3, args.vocab, (B, T), generator=g)
    corrupt = clean.clone()
    corrupt[:, T // 2] = torch.randint(3, args.vocab, (B,), generator=g)
    batch = TaskBatch(clean_ids=clean, corrupt_ids=corrupt, answer_ids=torch.randint(3, args.vocab, (B,), generator=g),
                      wrong_ids=torch.randint(3, args.vocab, (B,), generator=g))
    heads = model.components("heads")

    print(f"model: random-init GPT-2-small shape (12 layers, 12 heads, d_model 768), vocab {args.vocab} "
          f"(smaller than GPT-2's 50257 to save memory), float32, eager attention")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} cpus, load average {load:.1f}; batch {B} x seq {T}")

    plain = lambda: model(clean)  # noqa: E731
    fwd, abl = paired(plain, lambda: ablate(model, batch, ["L5H3"], method="zero"), 3 * args.repeat)
    abl_ratio = abl / fwd
    print(f"raw batched forward:            {fwd * 1e3:8.1f} ms  ({B}x{T} tokens)")
    print(f"ablate (zero, 1 head):          {abl * 1e3:8.1f} ms  = {abl / fwd:5.3f} x forward   (target <= 1.10)")
    f2, abl24 = paired(plain, lambda: ablate(model, batch, heads[:12] + heads[-12:], method="zero"), args.repeat)
    print(f"ablate (zero, 24 heads):        {abl24 * 1e3:8.1f} ms  = {abl24 / f2:5.3f} x forward")
    f3, ablm = paired(plain, lambda: ablate(model, batch, ["L5H3"], method="mean"), args.repeat)
    print(f"ablate (mean, 1 head in layer 5; reference forward stops after layer 5): {ablm * 1e3:8.1f} ms  "
          f"= {ablm / f3:5.3f} x forward")

    sweep_t = timed(lambda: patching_sweep(model, batch, logit_diff, components=heads), 1, warmup=False)
    fwd_after = timed(plain, args.repeat)
    fwd = statistics.median([fwd, f2, f3, fwd_after])  # forward time around the sweep
    ratio = sweep_t / (len(heads) * fwd)
    print(f"exact per-head sweep:           {sweep_t:8.2f} s   for {len(heads)} variants; "
          f"÷ (n_variants x forward) = {ratio:5.3f}   (target <= 1.15)")

    attr_t = timed(lambda: attribution_patching(model, batch, logit_diff, components=heads), args.repeat)
    print(f"attribution patching (heads):   {attr_t * 1e3:8.1f} ms  = {attr_t / fwd:5.2f} x forward; "
          f"speed-up over exact sweep {sweep_t / attr_t:6.1f} x   (target >= 20)")

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(f"peak RSS:                       {rss:8.0f} MiB")
    ok = ratio <= 1.15 and sweep_t / attr_t >= 20 and abl_ratio <= 1.10
    print("all targets met" if ok else "SOME TARGETS MISSED (see above)")


if __name__ == "__main__":
    main()
