"""How the cost of the exact sweep, attribution patching and the interchange matrix grows. Not a test.

Three axes, each a curve per work item, on random-init GPT-2-shaped models (``save_pretrained``, loaded
with ``tools.load_model``; float32, eager attention, CPU), prompts of 16 tokens, metric: logit
difference at the last token:

- **model size**: (layers, d_model, heads) = (2, 256, 4), (4, 384, 6), (8, 512, 8), (12, 768, 12)
  [GPT-2 small], (24, 1024, 16) [GPT-2 medium shape]; 8 prompts; the sweep and attribution cover every
  head, the matrix 8 fixed components. x = forward FLOPs per token (2 x parameters touched per token).
  The exact sweep at 24 layers (384 heads) is the longest point (minutes on 2 cores).
- **prompts**: 8 -> 256 prompts on a 4-layer, d_model 256, 4-head model (16 heads; the matrix over 8).
- **components**: 8 -> 64 components (heads) on an 8-layer, d_model 256, 8-head model (64 heads),
  8 prompts: the sweep and the matrix over the first n heads, attribution over them.

Prints one table (with the load average before and after), writes a log-log PNG with the fitted
exponent (least squares on log time vs log x, all points of the curve) in each legend, and prints the
extrapolation to a 7B Llama-shaped model on one GPU under stated assumptions (an extrapolation, not a
measurement): time = forward-equivalents x (2 x 6.7e9 x tokens) / GPU FLOP/s, with the
forward-equivalents of each work item taken from the largest measured point of its components curve
and scaled to the 7B component count by that curve's fitted exponent.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/scaling.py [--quick | --full] [--png docs/scaling.png]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import build_gpt2, load_average, machine_line, make_batch, once, quiet_hf  # noqa: E402

from tools import attribution_patching, load_model, patching_sweep  # noqa: E402
from tools.model import Model  # noqa: E402

VOCAB = 1000
SEQ = 16
WORKS = ("sweep", "attribution", "matrix")
LLAMA_7B = {"params": 6.74e9, "layers": 32, "heads": 32, "d_model": 4096}
"""Llama-2-7B shape: 32 layers x 32 heads (1024 heads) + 32 MLPs, d_model 4096, 6.74e9 parameters."""


COUNTED = {("prompts", "sweep"): 1.0, ("prompts", "attribution"): 1.0, ("prompts", "matrix"): 1.0,
           ("components", "sweep"): 1.0, ("components", "attribution"): 0.0, ("components", "matrix"): 2.0}
"""Exponents from counting the work: every variant is one (stacked) forward over the prompts; the sweep
has n variants, attribution 2 forwards and a backward whatever n, the matrix O(n^2) variants."""


@dataclass
class Curve:
    axis: str
    work: str
    xs: list[float] = field(default_factory=list)
    ts: list[float] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    fwd: list[float] = field(default_factory=list)  # forward time at the same point (for forward-equivalents)

    def exponent(self) -> float:
        return fit_exponent(self.xs, self.ts)

    def extrapolation_exponent(self) -> float:
        """The larger of the fitted and the counted exponent (conservative: a fit over small sizes runs
        low where fixed per-call costs, or the sweep's block skipping, still shrink the per-variant cost)."""
        return max(self.exponent(), COUNTED.get((self.axis, self.work), float("-inf")))


def fit_exponent(xs, ts) -> float:
    """Slope of the least-squares line through ``(log x, log t)``: ``t ~ x^slope``.

    >>> round(fit_exponent([1, 2, 4, 8], [3, 12, 48, 192]), 6)
    2.0
    """
    if len(xs) < 2:
        return float("nan")
    return float(np.polyfit(np.log(np.asarray(xs, float)), np.log(np.asarray(ts, float)), 1)[0])


def flops_per_token(layers: int, d_model: int, vocab: int = VOCAB, mlp_ratio: int = 4) -> float:
    """2 x the parameters each token's forward multiplies by (attention + MLP weights, unembedding)."""
    return 2.0 * (layers * (4 + 2 * mlp_ratio) * d_model * d_model + d_model * vocab)


CLOCK = "wall"
"""Which time the curves use: ``wall`` or ``cpu`` (process CPU time; steadier on a shared machine with
``--threads 1``). Set by ``--clock``."""


def timed(fn: Callable[[], object], min_time: float = 0.5, most: int = 3) -> float:
    """Median time (:data:`CLOCK`), seconds: one call, repeated (up to ``most`` calls) while calls are short."""
    ts = []
    while len(ts) < most:
        wall, cpu = once(fn)
        ts.append(cpu if CLOCK == "cpu" else wall)
        if sum(ts) > min_time * most:
            break
    return float(np.median(ts))


def interchange(model: Model, batch, comps) -> object:
    """The public interchange-matrix API (evals.interchange), recomputed every call (no disk cache)."""
    from evals.interchange import interchange_matrix

    return interchange_matrix(model, batch, comps, "logit_diff", cache=False)


def measure(model: Model, batch, works: dict[str, list]) -> tuple[dict[str, float], float]:
    """``{work: seconds}`` for the requested works (value: the components), and the forward time."""
    with torch.no_grad():
        model(batch.clean_ids)  # warm-up
        fwd = timed(lambda: model(batch.clean_ids), most=5)
    out = {}
    for work, comps in works.items():
        if work == "sweep":
            out[work] = timed(lambda c=comps: patching_sweep(model, batch, "logit_diff", components=c))
        elif work == "attribution":
            out[work] = timed(lambda c=comps: attribution_patching(model, batch, "logit_diff", components=c))
        else:
            out[work] = timed(lambda c=comps: interchange(model, batch, c))
    return out, fwd


def spread(items: list, n: int) -> list:
    """``n`` items spread evenly over the list (first and last included)."""
    if n >= len(items):
        return list(items)
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)]


def progress(msg: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def record(curves: dict[str, Curve], res: dict[str, float], fwd: float, x: float, label: str, what: str) -> None:
    """One measured point on every work's curve of an axis, and its progress line."""
    for w, t in res.items():
        c = curves[w]
        c.xs.append(x), c.ts.append(t), c.fwd.append(fwd), c.labels.append(label)
    progress(f"{what}: forward {fwd * 1e3:.0f} ms, " + ", ".join(f"{w} {t:.2f} s" for w, t in res.items()))


def run_model_axis(root: Path, shapes, sweep_max_heads: int, prompts: int, matrix_n: int) -> list[Curve]:
    curves = {w: Curve("model size", w) for w in WORKS}
    batch = make_batch(prompts, SEQ, VOCAB)
    for layers, d, heads in shapes:
        path = build_gpt2(root / f"gpt2-{layers}x{d}", n_layers=layers, n_heads=heads, d_model=d, vocab=VOCAB)
        model = load_model(path, device="cpu")
        hs = model.components("heads")
        works = {"attribution": hs, "matrix": spread(hs, matrix_n)}
        if len(hs) <= sweep_max_heads:
            works = {"sweep": hs, **works}
        res, fwd = measure(model, batch, works)
        record(curves, res, fwd, flops_per_token(layers, d), f"{layers}L x d{d} ({len(hs)} heads)",
               f"model {layers}x{d}")
        del model
    return list(curves.values())


def run_prompts_axis(root: Path, prompt_counts, matrix_n: int) -> list[Curve]:
    curves = {w: Curve("prompts", w) for w in WORKS}
    path = build_gpt2(root / "gpt2-4x256", n_layers=4, n_heads=4, d_model=256, vocab=VOCAB)
    model = load_model(path, device="cpu")
    hs = model.components("heads")
    for n in prompt_counts:
        batch = make_batch(n, SEQ, VOCAB)
        res, fwd = measure(model, batch, {"sweep": hs, "attribution": hs, "matrix": spread(hs, matrix_n)})
        record(curves, res, fwd, n, f"{n} prompts", f"{n} prompts")
    return list(curves.values())


def run_components_axis(root: Path, counts, prompts: int) -> list[Curve]:
    curves = {w: Curve("components", w) for w in WORKS}
    path = build_gpt2(root / "gpt2-8x256", n_layers=8, n_heads=8, d_model=256, vocab=VOCAB)
    model = load_model(path, device="cpu")
    hs = model.components("heads")
    batch = make_batch(prompts, SEQ, VOCAB)
    for n in counts:
        comps = spread(hs, n)
        res, fwd = measure(model, batch, {"sweep": comps, "attribution": comps, "matrix": comps})
        record(curves, res, fwd, n, f"{n} components", f"{n} components")
    return list(curves.values())


def plot(curves: list[Curve], png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_names = ["model size", "prompts", "components"]
    sized = next((c.labels for c in curves if c.axis == "model size" and c.labels), None)
    span = f"{sized[0].split(' (')[0]} -> {sized[-1].split(' (')[0]}" if sized else "none measured"
    xlabels = {"model size": f"forward FLOPs per token (GPT-2 shapes {span})",
               "prompts": "prompts (16 tokens each; 4L x d256 model)",
               "components": "components (heads; 8L x d256 model, 8 prompts)"}
    colors = {"sweep": "tab:blue", "attribution": "tab:green", "matrix": "tab:red"}
    fig, axs = plt.subplots(1, 3, figsize=(16, 5))
    for ax, name in zip(axs, axes_names, strict=True):
        for c in curves:
            if c.axis != name or len(c.xs) < 2:
                continue
            xs, ts = np.asarray(c.xs), np.asarray(c.ts)
            k = c.exponent()
            b = np.polyfit(np.log(xs), np.log(ts), 1)[1]
            ax.loglog(xs, ts, "o-", color=colors[c.work], label=f"{c.work}: t ∝ x^{k:.2f}")
            ax.loglog(xs, np.exp(b) * xs ** k, ":", color=colors[c.work], alpha=0.6)
        ax.set_xlabel(xlabels[name])
        ax.set_ylabel(f"{CLOCK} time (s)")
        ax.set_title(f"cost vs {name}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)


def extrapolate(curves: list[Curve], gpu_tflops: float, prompts: int, n_matrix: int) -> list[str]:
    """The 7B Llama-shaped extrapolation, as printable lines (assumptions included)."""
    by = {(c.axis, c.work): c for c in curves}
    tokens = prompts * SEQ
    fwd_gpu = 2 * LLAMA_7B["params"] * tokens / (gpu_tflops * 1e12)
    n_heads = LLAMA_7B["layers"] * LLAMA_7B["heads"]
    lines = [f"extrapolation to a 7B Llama-shaped model on one GPU (NOT a measurement): {prompts} prompts x "
             f"{SEQ} tokens; assumed {gpu_tflops:g} TFLOP/s effective; one forward = 2 x "
             f"{LLAMA_7B['params']:.3g} x {tokens} FLOPs = {fwd_gpu * 1e3:.0f} ms; forward-equivalents from the "
             "largest point of the components curve, scaled by max(fitted, counted) exponent"]
    n_writers = n_heads + LLAMA_7B["layers"]
    targets = [("sweep", n_heads), ("attribution", n_heads), ("matrix", n_matrix), ("matrix", n_writers)]
    for work, n in targets:
        c = by.get(("components", work))
        if c is None or not c.xs:
            continue
        k = c.extrapolation_exponent()
        fe = c.ts[-1] / c.fwd[-1]  # forward-equivalents at the largest measured component count
        fe_n = fe * (n / c.xs[-1]) ** k
        t = fe_n * fwd_gpu
        what = f"all {n} heads" if work != "matrix" else f"{n} components"
        if n == n_writers:
            what = f"all {n} heads and MLPs"
        lines.append(f"  {work:11s} over {what}: {fe:.3g} forward-equivalents at {c.xs[-1]:.0f} components "
                     f"x ({n}/{c.xs[-1]:.0f})^{k:.2f} = {fe_n:.3g} -> {fmt_s(t)}")
    return lines


def gpt2_small_investigation(curves: list[Curve], prompts: int, n_matrix: int) -> list[str]:
    """GPT-2-small costs for an IOI-sized investigation, from the measured GPT-2-small point of the model
    axis (8 prompts; the matrix over 8 components) scaled by the prompts and components exponents."""
    by = {(c.axis, c.work): c for c in curves}
    out = []
    est = {}
    for work in WORKS:
        m, p, k = by.get(("model size", work)), by.get(("prompts", work)), by.get(("components", work))
        if m is None or p is None or not any("12L" in lab for lab in m.labels):
            continue
        i = next(j for j, lab in enumerate(m.labels) if "12L" in lab)
        kp = p.extrapolation_exponent()
        t = m.ts[i] * (prompts / 8) ** kp
        note = f"{fmt_s(m.ts[i])} measured at 8 prompts x (prompts {prompts}/8)^{kp:.2f}"
        if work == "matrix" and k is not None:
            kc = k.extrapolation_exponent()
            t *= (n_matrix / 8) ** kc
            note += f" x (components {n_matrix}/8)^{kc:.2f}"
        est[work] = t
        what = {"sweep": "exact sweep, 144 heads", "attribution": "attribution, 144 heads",
                "matrix": f"interchange matrix, {n_matrix} components"}[work]
        out.append(f"  {what:40s} ~{fmt_s(t):>9s}   ({note})")
    if est:
        top = max(est, key=est.get)
        out.insert(0, f"GPT-2 small, IOI-sized investigation on this CPU ({prompts} prompts x {SEQ} tokens; "
                      f"extrapolated along the fitted curves): the {top} bounds it")
    return out


def fmt_s(t: float) -> str:
    if t < 1:
        return f"{t * 1e3:.0f} ms"
    if t < 120:
        return f"{t:.1f} s"
    if t < 7200:
        return f"{t / 60:.1f} min"
    return f"{t / 3600:.1f} h"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="small grid (about a minute): smoke test of the script")
    g.add_argument("--full", action="store_true", help="a longer grid: also 512 prompts and 4 components")
    ap.add_argument("--png", default="docs/scaling.png", help="where to write the plot (default docs/scaling.png)")
    ap.add_argument("--gpu-tflops", type=float, default=400.0,
                    help="assumed effective GPU throughput for the 7B extrapolation (default 400 TFLOP/s)")
    ap.add_argument("--ioi-prompts", type=int, default=32, help="prompts in the extrapolated investigation")
    ap.add_argument("--ioi-matrix", type=int, default=40, help="components in the extrapolated interchange matrix")
    ap.add_argument("--axes", default="model,prompts,components", help="which axes to run")
    ap.add_argument("--sweep-max-heads", type=int, default=None,
                    help="skip the model-size sweep above this many heads (default: none skipped)")
    ap.add_argument("--max-layers", type=int, default=None,
                    help="model-size axis: only the shapes with at most this many layers (default: all, up to 24)")
    ap.add_argument("--prompt-counts", default=None,
                    help="prompts axis points, comma-separated (default 8,16,32,64,128,256)")
    ap.add_argument("--component-counts", default=None,
                    help="components axis points, comma-separated (default 8,16,32,64)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (0: torch's default; 1 is steadier on a loaded machine)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="time measured: wall (default) or this process's CPU time (with --threads 1 on a shared "
                         "machine)")
    args = ap.parse_args(argv)
    global CLOCK
    CLOCK = args.clock
    warnings.filterwarnings("ignore")
    quiet_hf()
    if args.threads:
        torch.set_num_threads(args.threads)
    axes = {a.strip() for a in args.axes.split(",")}
    bad = axes - {"model", "prompts", "components"}
    if bad:
        print(f"error: unknown axis {sorted(bad)}: use model, prompts, components", file=sys.stderr)
        return 2

    shapes = [(2, 256, 4), (4, 384, 6), (8, 512, 8), (12, 768, 12), (24, 1024, 16)]
    prompt_counts = [8, 16, 32, 64, 128, 256]
    comp_counts = [8, 16, 32, 64]
    sweep_max = args.sweep_max_heads or 10**9
    if args.quick:
        shapes, prompt_counts, comp_counts = shapes[:3], [8, 16, 32], [8, 16, 32]
    if args.full:
        prompt_counts, comp_counts = prompt_counts + [512], [4, 8, 16, 32, 64]
    try:
        if args.prompt_counts:
            prompt_counts = [int(v) for v in args.prompt_counts.split(",")]
        if args.component_counts:
            comp_counts = [int(v) for v in args.component_counts.split(",")]
    except ValueError:
        print("error: --prompt-counts / --component-counts take comma-separated integers, e.g. 8,16,32",
              file=sys.stderr)
        return 2
    if min(prompt_counts + comp_counts) < 1:
        print("error: prompt and component counts must be at least 1", file=sys.stderr)
        return 2
    if args.max_layers is not None:
        shapes = [s for s in shapes if s[0] <= args.max_layers]
    import evals.interchange as ic

    print(f"machine: {machine_line()}; seq {SEQ}, vocab {VOCAB}, float32, eager attention; {CLOCK} time; "
          f"interchange matrix: definition {getattr(ic, 'DEFINITION', 'v1')} (evals.interchange default)")
    load0 = load_average()
    print(f"load average before: {load0:.1f}")
    t0 = time.perf_counter()
    curves: list[Curve] = []
    with tempfile.TemporaryDirectory(prefix="scaling-") as tmp:
        root = Path(tmp)
        if "model" in axes:
            curves += run_model_axis(root, shapes, sweep_max, prompts=8, matrix_n=8)
        if "prompts" in axes:
            curves += run_prompts_axis(root, prompt_counts, matrix_n=8)
        if "components" in axes:
            curves += run_components_axis(root, comp_counts, prompts=8)
    load1 = load_average()
    wall = time.perf_counter() - t0

    print(f"\n(load average {load0:.1f} before, {load1:.1f} after; {wall / 60:.1f} min in all)")
    print(f"| axis | work | point | {CLOCK} time | ÷ forward |")
    print("|---|---|---|---|---|")
    for c in curves:
        for lab, t, f in zip(c.labels, c.ts, c.fwd, strict=True):
            print(f"| {c.axis} | {c.work} | {lab} | {fmt_s(t)} | {t / f:.1f} |")
    print("\nfitted exponents (t ∝ x^k, least squares on all points; counted: from the number of forwards):")
    for c in curves:
        if len(c.xs) >= 2:
            counted = COUNTED.get((c.axis, c.work))
            print(f"  {c.axis:10s} {c.work:11s} k = {c.exponent():.2f}  ({len(c.xs)} points)"
                  + (f"  counted {counted:g}" if counted is not None else ""))
    png = Path(args.png)
    plot(curves, png, f"interp-agent tools on CPU ({machine_line()}; {CLOCK} time); "
                      f"load average {load0:.1f} -> {load1:.1f}")
    print(f"\nwrote {png}")
    if all(any(c.axis == a for c in curves) for a in ("model size", "prompts", "components")):
        print()
        for line in gpt2_small_investigation(curves, args.ioi_prompts, args.ioi_matrix):
            print(line)
    if any(c.axis == "components" for c in curves):
        print()
        for line in extrapolate(curves, args.gpu_tflops, args.ioi_prompts, args.ioi_matrix):
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
