"""Sandbox speed: kernel start, trivial-cell round trip, a 1 MB array summary, torch import and restart.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/sandbox_bench.py [--backend local|docker] [--unsafe-no-isolation]
        [--repeats 50]

``--backend docker`` needs an engine and the image (``python -m sandbox.docker_image``; ``make test-docker``
prints the settings to export).

Targets (issue 5): start < 3 s without a model; trivial round trip < 20 ms. Prints one table and the
ratios to those targets (below 1.0 means the target is met).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from sandbox import make_sandbox


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=["local", "docker"], default="local")
    ap.add_argument("--unsafe-no-isolation", action="store_true", help="benchmark the unisolated kernel (local)")
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()
    ws = Path(tempfile.mkdtemp(prefix="sbx-bench-")) / "workspace"

    starts = []
    for i in range(3):
        sb = make_sandbox(args.backend, workspace=ws, unsafe_no_isolation=args.unsafe_no_isolation)
        t = time.perf_counter()
        sb.start()
        starts.append(time.perf_counter() - t)
        if i < 2:
            sb.shutdown()
    isolation = sb.isolation
    try:
        for _ in range(5):
            sb.execute("1")
        trivial = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            r = sb.execute("1 + 1")
            trivial.append(time.perf_counter() - t)
            assert r.result == "2"
        sb.execute("import numpy as np\narr = np.random.default_rng(0).random(131072)")  # 131072 * 8 B = 1 MB
        summary = []
        for _ in range(max(5, args.repeats // 5)):
            t = time.perf_counter()
            r = sb.execute("_result = {'mean': float(arr.mean()), 'std': float(arr.std()), "
                           "'q': np.quantile(arr, [0.01, 0.5, 0.99]).tolist(), 'hist': np.histogram(arr, 32)[0]}")
            summary.append(time.perf_counter() - t)
            assert r.data is not None and len(r.data["hist"]) == 32
        t = time.perf_counter()
        r = sb.execute("_result = arr.tolist()")  # the whole 1 MB array as JSON (≈2.6 MB of text)
        full = time.perf_counter() - t
        assert r.data is not None and len(r.data) == 131072
        t = time.perf_counter()
        r = sb.execute("import torch")
        torch_import = time.perf_counter() - t
        t = time.perf_counter()
        sb.restart()
        restart = time.perf_counter() - t
    finally:
        sb.shutdown()
        shutil.rmtree(ws.parent, ignore_errors=True)

    start_med = statistics.median(starts)
    trip = statistics.median(trivial)
    rows = [
        ("isolation", isolation, ""),
        ("kernel start (median of 3)", f"{start_med:.3f} s", f"{start_med / 3.0:.2f} × target 3 s"),
        ("trivial cell round trip (median)", f"{trip * 1e3:.1f} ms", f"{trip / 0.020:.2f} × target 20 ms"),
        ("trivial cell p90", f"{sorted(trivial)[int(0.9 * len(trivial))] * 1e3:.1f} ms", ""),
        ("1 MB array summary -> _result (median)", f"{statistics.median(summary) * 1e3:.1f} ms",
         f"{statistics.median(summary) / trip:.1f} × trivial"),
        ("1 MB array in full -> _result", f"{full * 1e3:.0f} ms", f"{full / trip:.0f} × trivial"),
        ("import torch in the kernel", f"{torch_import:.2f} s", ""),
        ("restart (kill + start, no setup)", f"{restart:.2f} s", f"{restart / start_med:.2f} × start"),
    ]
    w = max(len(r[0]) for r in rows)
    for name, value, ratio in rows:
        print(f"{name:<{w}}  {value:>14}  {ratio}")


if __name__ == "__main__":
    main()
