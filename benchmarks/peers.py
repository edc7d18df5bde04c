"""The same interpretability work done with interp-agent's tools, TransformerLens and nnsight. Not a test.

One random-init GPT-2-small-shaped model (12 layers x 12 heads, d_model 768; vocab 5000 instead of 50257
to save memory; float32, eager attention) saved with ``save_pretrained`` and loaded by each library its
own documented way; one batch of clean/corrupt prompts; the metric is the logit difference at the last
token (``tools.metrics.logit_diff``, a plain function of the logits, handed to every library). Work:

1. ``forward``     -- a plain forward (for scale: each library's own overhead);
2. ``cache heads`` -- every head's output ``z_h @ W_O[h]`` (residual space, no bias), ``[144, B, T, d]``;
3. ``ablate 1``    -- logits with head L5H3 zero-ablated (its ``z`` slice set to 0);
4. ``sweep``       -- exact activation patching of each of the 144 heads alone, clean -> corrupt, all
                      positions: ``metric(patched) - metric(corrupt)``, ``[12, 12]``;
5. ``attribution`` -- attribution patching over all heads: ``sum (z_clean - z_corrupt) * dmetric/dz``.

Each peer is first checked against our numbers (max abs difference printed; the script exits with code 1
if any exceeds the tolerance). That pass doubles as the warm-up and as the timing of the expensive sweep
(one call per peer, ours called beside each peer; ``--sweep-repeat`` adds rounds). Then every library's
version of the other work items is timed in turn, ``--repeat`` rounds, in the same process (median);
the table prints ours / peer (< 1: we are faster). Peak memory is measured afterwards in a child process
(one call of each work item; peak resident memory above the level before the call; ``MALLOC_MMAP_THRESHOLD_``
is pinned in the child so freed tensors go back to the OS and the peak can be reset per call).

What each library's code is (what its docs and demos show a researcher writing; see the classes below):

- TransformerLens 4 (``TransformerBridge.boot_transformers(model_dir)``; the 4.x line no longer has
  ``HookedTransformer``): ``run_with_cache(names_filter=hook_z)`` + ``cache.stack_head_results()``;
  ``run_with_hooks`` with a ``hook_z`` hook; ``transformer_lens.patching.get_act_patch_attn_head_out_all_pos``
  (one forward per head); the attribution-patching demo's forward + backward hooks on ``hook_z``.
- nnsight 0.8 (``TransformersModel(model_dir, task="text-generation", dispatch=True)``; ``LanguageModel``
  is its deprecated alias): ``model.trace`` saving ``attn.c_proj.input`` (the per-head ``z``: the docs' per-head recipe
  reshapes ``attn.output[0]``, which is *after* the output projection and so mixes heads -- we use the
  projection's input, which is the head's own output); in-place writes to it; one trace per patched
  head (the docs' activation-patching sweep); ``with metric.backward(): z.grad.save()``.

Forward-only work runs under ``torch.no_grad()`` for every library (ours does that itself; the peers'
demos switch gradients off globally). The peers' attribution backward also computes parameter gradients
(their demos do not freeze the weights); ours starts the graph at the embedding output.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/peers.py [--quick] [--batch 8] [--seq 16] [--repeat 3]

Install the peers into the same venv with torch pinned, e.g.
``.venv/bin/pip install -c <(echo torch==2.13.0) -e ".[peers]"``; a peer that is not installed is
skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
if __name__ == "__main__":  # (not when a test imports this file)
    os.environ.setdefault("TQDM_DISABLE", "1")  # TransformerLens' patching loop draws a progress bar per call
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from common import (  # noqa: E402
    build_gpt2,
    interleaved,
    load_average,
    machine_line,
    make_batch,
    medians,
    peak_rss_during,
    quiet_hf,
)

from tools import TaskBatch, ablate, attribution_patching, load_model, patching_sweep, run_with_cache  # noqa: E402
from tools.metrics import logit_diff  # noqa: E402

WORK = ("forward", "cache heads", "ablate 1", "sweep", "attribution")
ABLATE = (5, 3)
"""The head that ``ablate 1`` zeroes (layer, head), clamped to the model's shape."""


def ablated(n_layers: int, n_heads: int) -> tuple[int, int]:
    return min(ABLATE[0], n_layers - 1), min(ABLATE[1], n_heads - 1)
REL_TOLERANCE = 1e-3
"""Largest allowed ``max |ours - peer|`` as a fraction of ``max |ours|`` for every work item (float32)."""


class Ours:
    """interp-agent's ``tools`` (what the agent's kernel code calls)."""

    name = "ours"

    def __init__(self, path: Path, batch: TaskBatch) -> None:
        self.model = load_model(path, device="cpu")
        self.batch = batch
        self.L, self.H = self.model.n_layers, self.model.n_heads
        self.heads = self.model.components("heads")
        self.ab = ablated(self.L, self.H)

    def forward(self) -> torch.Tensor:
        return self.model(self.batch.clean_ids)

    def cache_heads(self) -> torch.Tensor:
        _, cache = run_with_cache(self.model, self.batch.clean_ids, "heads")
        return torch.stack([cache[c] for c in self.heads])

    def ablate_one(self) -> torch.Tensor:
        return ablate(self.model, self.batch, [f"L{self.ab[0]}H{self.ab[1]}"], method="zero")

    def _grid(self, d: dict) -> torch.Tensor:
        return torch.tensor([d[c] for c in self.heads]).reshape(self.L, self.H)

    def sweep(self) -> torch.Tensor:
        return self._grid(patching_sweep(self.model, self.batch, "logit_diff", components="heads"))

    def attribution(self) -> torch.Tensor:
        return self._grid(attribution_patching(self.model, self.batch, "logit_diff", components="heads"))


class TransformerLensPeer:
    """TransformerLens 4 through its ``TransformerBridge`` (HF weights as they are, no weight folding)."""

    name = "TransformerLens"
    package = "transformer_lens"

    def __init__(self, path: Path, batch: TaskBatch) -> None:
        from transformer_lens.model_bridge import TransformerBridge

        self.model = TransformerBridge.boot_transformers(str(path), device="cpu")
        self.model.eval()
        self.clean, self.corrupt = batch.clean_ids, batch.corrupt_ids
        self.metric = lambda logits: logit_diff(logits, batch)
        self.L, self.H = self.model.cfg.n_layers, self.model.cfg.n_heads
        self.ab = ablated(self.L, self.H)

    @staticmethod
    def _is_z(name: str) -> bool:
        return name.endswith("hook_z")

    def forward(self) -> torch.Tensor:
        with torch.no_grad():
            return self.model(self.clean)

    def cache_heads(self) -> torch.Tensor:
        with torch.no_grad():
            _, cache = self.model.run_with_cache(self.clean, names_filter=self._is_z)
            return cache.stack_head_results(layer=-1)

    def ablate_one(self) -> torch.Tensor:
        layer, head = self.ab

        def zero_head(z, hook):  # z: [batch, pos, head, d_head]
            z[:, :, head] = 0.0
            return z

        with torch.no_grad():
            return self.model.run_with_hooks(self.clean, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", zero_head)])

    def sweep(self) -> torch.Tensor:
        from transformer_lens import patching

        with torch.no_grad():
            _, clean_cache = self.model.run_with_cache(self.clean, names_filter=self._is_z)
            base = self.metric(self.model(self.corrupt))
            return patching.get_act_patch_attn_head_out_all_pos(self.model, self.corrupt, clean_cache,
                                                                 self.metric) - base

    def attribution(self) -> torch.Tensor:
        # The attribution-patching demo: cache activations and gradients with fwd/bwd hooks, one backward.
        with torch.no_grad():
            _, clean_cache = self.model.run_with_cache(self.clean, names_filter=self._is_z)
        clean = {int(k.split(".")[1]): v for k, v in clean_cache.items()}
        acts, grads = {}, {}
        self.model.add_hook(self._is_z, lambda a, hook: acts.__setitem__(hook.name, a.detach()), "fwd")
        self.model.add_hook(self._is_z, lambda g, hook: grads.__setitem__(hook.name, g.detach()), "bwd")
        try:
            self.metric(self.model(self.corrupt)).backward()
        finally:
            self.model.reset_hooks()
            self.model.zero_grad(set_to_none=True)
        layer = {int(k.split(".")[1]): k for k in acts}
        return torch.stack([((clean[li] - acts[layer[li]]) * grads[layer[li]]).sum((0, 1, 3))
                            for li in range(self.L)])


class NnsightPeer:
    """nnsight 0.8: ``TransformersModel`` over the HF checkpoint, interventions written inside ``trace``."""

    name = "nnsight"
    package = "nnsight"

    def __init__(self, path: Path, batch: TaskBatch) -> None:
        from nnsight import TransformersModel

        self.model = TransformersModel(str(path), task="text-generation", dispatch=True,
                                       attn_implementation="eager")
        self.model.eval()
        cfg = self.model.config
        self.L, self.H, self.dh = cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head
        self.ab = ablated(self.L, self.H)
        self.clean, self.corrupt = batch.clean_ids, batch.corrupt_ids
        self.metric = lambda logits: logit_diff(logits, batch)

    def _heads(self, zs: list[torch.Tensor]) -> torch.Tensor:
        """Per-head outputs from the saved ``c_proj`` inputs: ``z_h @ W_O[h]`` -> ``[L*H, B, T, d]``."""
        out = []
        for li, z in enumerate(zs):
            w = self.model.transformer.h[li].attn.c_proj.weight  # Conv1D: [H*dh, d]
            B, T, _ = z.shape
            out.append(torch.einsum("bthe,hed->hbtd", z.view(B, T, self.H, self.dh),
                                    w.view(self.H, self.dh, -1)))
        return torch.cat(out)

    def forward(self) -> torch.Tensor:
        with torch.no_grad(), self.model.trace(self.clean):
            logits = self.model.lm_head.output.save()
        return logits

    def _save_z(self, ids: torch.Tensor) -> list[torch.Tensor]:
        zs: list[torch.Tensor] = []  # defined outside the trace, appended inside (nnsight's documented way)
        with self.model.trace(ids):
            for block in self.model.transformer.h:
                zs.append(block.attn.c_proj.input)
        return zs

    def cache_heads(self) -> torch.Tensor:
        with torch.no_grad():
            return self._heads(self._save_z(self.clean))

    def ablate_one(self) -> torch.Tensor:
        layer, head = self.ab
        sl = slice(head * self.dh, (head + 1) * self.dh)
        with torch.no_grad(), self.model.trace(self.clean):
            self.model.transformer.h[layer].attn.c_proj.input[:, :, sl] = 0
            logits = self.model.lm_head.output.save()
        return logits

    def sweep(self) -> torch.Tensor:
        out = torch.zeros(self.L, self.H)
        with torch.no_grad():
            clean_z = self._save_z(self.clean)
            with self.model.trace(self.corrupt):
                base_logits = self.model.lm_head.output.save()
            base = self.metric(base_logits)
            for li in range(self.L):
                for h in range(self.H):
                    sl = slice(h * self.dh, (h + 1) * self.dh)
                    with self.model.trace(self.corrupt):
                        self.model.transformer.h[li].attn.c_proj.input[:, :, sl] = clean_z[li][:, :, sl]
                        logits = self.model.lm_head.output.save()
                    out[li, h] = self.metric(logits) - base
        return out

    def attribution(self) -> torch.Tensor:
        with torch.no_grad():
            clean_z = self._save_z(self.clean)
        corrupt_z: list[torch.Tensor] = []
        grads: list[torch.Tensor] = []
        with self.model.trace(self.corrupt):
            for block in self.model.transformer.h:
                z = block.attn.c_proj.input
                z.requires_grad_(True)
                corrupt_z.append(z)
            value = self.metric(self.model.lm_head.output)
            with value.backward():
                for z in reversed(corrupt_z):  # gradients arrive in reverse order
                    grads.append(z.grad)
        grads.reverse()
        self.model.zero_grad(set_to_none=True)
        B, T = self.clean.shape
        return torch.stack([((c - k) * g).detach().view(B, T, self.H, self.dh).sum((0, 1, 3))
                            for c, k, g in zip(clean_z, corrupt_z, grads, strict=True)])


PEERS = (TransformerLensPeer, NnsightPeer)
METHODS: dict[str, str] = {"forward": "forward", "cache heads": "cache_heads", "ablate 1": "ablate_one",
                           "sweep": "sweep", "attribution": "attribution"}


def installed_peers(wanted: list[str] | None = None) -> tuple[list[type], list[str]]:
    """The peer classes whose package imports, and a note for each one skipped."""
    import importlib.util

    ok, notes = [], []
    for cls in PEERS:
        if wanted is not None and cls.name.lower() not in wanted:
            continue
        if importlib.util.find_spec(cls.package) is None:
            notes.append(f"{cls.name}: not installed (pip install -e \".[peers]\"), skipped")
        else:
            ok.append(cls)
    return ok, notes


def agreement(ours: Ours, peer, samples: dict[str, dict[str, list[tuple[float, float]]]] | None = None
              ) -> dict[str, tuple[float, float]]:
    """``{work: (max |ours - peer|, max |ours|)}`` for every work item; call times go to ``samples``."""
    out = {}
    for work, meth in METHODS.items():
        res = {}
        for lib in (ours, peer):
            w0, c0 = time.perf_counter(), time.process_time()
            res[lib.name] = getattr(lib, meth)()
            if samples is not None:
                samples.setdefault(work, {}).setdefault(lib.name, []).append(
                    (time.perf_counter() - w0, time.process_time() - c0))
        a, b = res[ours.name].detach().float(), res[peer.name].detach().float().reshape(res[ours.name].shape)
        out[work] = (float((a - b).abs().max()), float(a.abs().max()))
    return out


def _memory_child(path: Path, args: argparse.Namespace, names: list[str]) -> None:
    """Run in a child process: peak resident memory (MiB above the level before) per library and work."""
    batch = make_batch(args.batch, args.seq, args.vocab)
    libs = [Ours] + [c for c in PEERS if c.name in names]
    res: dict[str, dict[str, float]] = {}
    for cls in libs:
        lib = cls(path, batch)
        lib.forward()  # first-call allocations are not the work's
        res[cls.name] = {w: peak_rss_during(getattr(lib, m)) for w, m in METHODS.items()}
        del lib
    print("MEMORY " + json.dumps(res))


def measure_memory(path: Path, args: argparse.Namespace, names: list[str]) -> dict[str, dict[str, float]] | None:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, __file__, "--memory-child", str(path), "--batch", str(args.batch), "--seq",
           str(args.seq), "--vocab", str(args.vocab), "--layers", str(args.layers), "--heads", str(args.heads),
           "--d-model", str(args.d_model), "--threads", str(args.threads), "--only", ",".join(n.lower() for n in names) or "none"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    for line in p.stdout.splitlines():
        if line.startswith("MEMORY "):
            return json.loads(line[len("MEMORY "):])
    print(f"note: memory child failed ({p.returncode}): {p.stderr.strip().splitlines()[-1:]}")
    return None


def fmt_time(t: float) -> str:
    return f"{t * 1e3:8.1f} ms" if t < 1 else f"{t:8.2f} s "


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8, help="prompts (default 8)")
    ap.add_argument("--seq", type=int, default=16, help="tokens per prompt (default 16)")
    ap.add_argument("--vocab", type=int, default=5000)
    ap.add_argument("--layers", type=int, default=12, help="model shape (default GPT-2 small: 12 x 12 x 768)")
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--d-model", type=int, default=768)
    ap.add_argument("--repeat", type=int, default=5, help="timed rounds per work item (median; default 5)")
    ap.add_argument("--sweep-repeat", type=int, default=0,
                    help="extra timed rounds of the sweep beyond the agreement pass (default 0)")
    ap.add_argument("--quick", action="store_true", help="batch 4, one timed round, no memory child")
    ap.add_argument("--only", default=None, help="comma-separated peers (transformerlens, nnsight)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory child process")
    ap.add_argument("--model-dir", default=None, help="where to save the model (default: a temp dir)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (0: torch's default; 1 is steadier on a loaded machine)")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    wanted = None if args.only is None else [s.strip().lower() for s in args.only.split(",") if s.strip()]
    warnings.filterwarnings("ignore")
    quiet_hf()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        _memory_child(Path(args.memory_child), args, [c.name for c in installed_peers(wanted)[0]])
        return 0
    if args.quick:
        args.batch, args.repeat, args.sweep_repeat, args.no_memory = 4, 1, 0, True

    peers, notes = installed_peers(wanted)
    for n in notes:
        print(f"note: {n}")
    tmp = tempfile.TemporaryDirectory(prefix="peers-bench-")
    path = build_gpt2(Path(args.model_dir or tmp.name) / "gpt2-random", n_layers=args.layers, n_heads=args.heads,
                      d_model=args.d_model, vocab=args.vocab)
    batch = make_batch(args.batch, args.seq, args.vocab)
    shape = "GPT-2-small shape" if (args.layers, args.heads, args.d_model) == (12, 12, 768) else "GPT-2 shape"
    print(f"model: random-init {shape} ({args.layers} layers x {args.heads} heads, d_model {args.d_model}), "
          f"vocab {args.vocab}, float32, eager attention, saved with save_pretrained at {path}")
    print(f"batch: {args.batch} prompts x {args.seq} tokens; metric: logit difference at the last token")
    print(f"machine: {machine_line()}")
    import importlib.metadata as md

    versions = ", ".join(f"{c.name} {md.version(c.package.replace('_', '-'))}" for c in peers)
    print(f"peers: {versions or 'none installed'}")

    ours = Ours(path, batch)
    libs = {"ours": ours}
    failed = False
    load0 = load_average()
    first: dict[str, dict[str, list[tuple[float, float]]]] = {}
    print(f"\nagreement with ours: max |ours - peer| [max |ours|]; must be <= {REL_TOLERANCE:g} x max |ours|")
    for cls in peers:
        peer = cls(path, batch)
        agree = agreement(ours, peer, first)
        cells = "  ".join(f"{w} {d:.1e} [{s:.2g}]" for w, (d, s) in agree.items())
        bad = [w for w, (d, s) in agree.items() if not (d <= REL_TOLERANCE * s and s > 0)]
        print(f"  {cls.name:16s} {cells}  {'OK' if not bad else 'DISAGREES: ' + ', '.join(bad)}")
        failed |= bool(bad)
        libs[cls.name] = peer
    if failed:
        print("FAILED: a peer disagrees with our numbers beyond the tolerance; no timings printed.")
        return 1
    if not peers:
        print("no peer installed: nothing to compare (pip install -e \".[peers]\")")
        return 0

    times: dict[str, dict[str, tuple[float, float]]] = {}  # work -> library -> (wall, cpu) medians
    for work, meth in METHODS.items():
        fns: dict[str, Callable[[], object]] = {name: getattr(lib, meth) for name, lib in libs.items()}
        if work == "sweep":  # the agreement pass timed it (ours beside each peer): add --sweep-repeat rounds
            extra = interleaved(fns, args.sweep_repeat, warmup=False) if args.sweep_repeat else {}
            runs = {n: first[work][n] + extra.get(n, []) for n in libs}
        else:  # the agreement pass was the warm-up
            runs = interleaved(fns, args.repeat, warmup=False)
        times[work] = {n: medians(v) for n, v in runs.items()}
        print(f"  timed {work}: " + ", ".join(f"{n} {fmt_time(w).strip()} wall, {fmt_time(c).strip()} cpu "
                                              f"({len(runs[n])}x)" for n, (w, c) in times[work].items()),
              flush=True)
    load1 = load_average()
    mem = None if args.no_memory else measure_memory(path, args, [c.name for c in peers])

    names = list(libs)
    print(f"\nwall times and ratios (median; interleaved: {args.repeat} rounds after the agreement pass, the sweep timed in that "
          f"pass{f' + {args.sweep_repeat} rounds' if args.sweep_repeat else ''}; "
          f"load average {load0:.1f} before, {load1:.1f} after)")
    head = (f"| work | {' | '.join(names)} | " + " | ".join(f"ours ÷ {n}" for n in names[1:]) + " | "
            + " | ".join(f"CPU time: ours ÷ {n}" for n in names[1:]) + " |")
    print(head)
    print("|" + "---|" * (1 + 3 * len(names) - 2))
    for work in WORK:
        t = times[work]
        row = ([fmt_time(t[n][0]).strip() for n in names] + [f"{t['ours'][0] / t[n][0]:.2f}" for n in names[1:]]
               + [f"{t['ours'][1] / t[n][1]:.2f}" for n in names[1:]])
        print(f"| {work} | " + " | ".join(row) + " |")
    if mem:
        print("\npeak memory above the loaded model, MiB (one call each, child process)")
        print(f"| work | {' | '.join(names)} |")
        print("|" + "---|" * (1 + len(names)))
        for work in WORK:
            print(f"| {work} | " + " | ".join(f"{mem[n][work]:.0f}" for n in names) + " |")
    for n in notes:
        print(f"note: {n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
