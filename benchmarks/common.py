"""Shared pieces of the benchmark scripts: the random-init GPT-2-shaped model, the batch, timing, memory.

Not a test and not part of the package: ``benchmarks/*.py`` put this folder on ``sys.path``.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from tools.batch import TaskBatch  # noqa: E402


def load_average() -> float:
    """One-minute load average (NaN where the OS has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def machine_line() -> str:
    return (f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"{os.cpu_count()} cpus")


def quiet_hf() -> None:
    """No progress bars from transformers while saving and loading the benchmark models."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def build_gpt2(path: Path, n_layers: int = 12, n_heads: int = 12, d_model: int = 768, vocab: int = 5000,
               n_positions: int = 1024, seed: int = 0) -> Path:
    """A random-init GPT-2-shaped model saved with ``save_pretrained`` (+ a word tokenizer) at ``path``.

    Biases are drawn non-zero (``tools.tiny.make_tiny_model``) so bias handling is exercised. Reuses an
    existing save with the same shape.
    """
    from tools.tiny import make_tiny_model

    path = Path(path)
    if (path / "model.safetensors").exists():
        import json

        cfg = json.loads((path / "config.json").read_text())
        if (cfg["n_layer"], cfg["n_head"], cfg["n_embd"], cfg["vocab_size"]) == (n_layers, n_heads, d_model, vocab):
            return path
    return make_tiny_model("gpt2", path, seed=seed, vocab_size=vocab, n_layers=n_layers, n_heads=n_heads,
                           d_model=d_model, n_positions=n_positions)


def make_batch(n_prompts: int, seq: int, vocab: int, seed: int = 0) -> TaskBatch:
    """Random clean prompts; the corrupt prompts differ in the middle token; random answer/wrong tokens."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(4, vocab, (n_prompts, seq), generator=g)
    corrupt = clean.clone()
    corrupt[:, seq // 2] = torch.randint(4, vocab, (n_prompts,), generator=g)
    return TaskBatch(clean_ids=clean, corrupt_ids=corrupt,
                     answer_ids=torch.randint(4, vocab, (n_prompts,), generator=g),
                     wrong_ids=torch.randint(4, vocab, (n_prompts,), generator=g))


def once(fn: Callable[[], object]) -> tuple[float, float]:
    """``(wall, cpu)`` seconds of one call. CPU time counts every thread of this process: on a machine
    shared with other jobs it is the steadier measure (with one torch thread, it is the work done)."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def interleaved(fns: dict[str, Callable[[], object]], repeat: int, warmup: bool = True
                ) -> dict[str, list[tuple[float, float]]]:
    """``(wall, cpu)`` of each call per entry, the entries called in turn ``repeat`` times, so load drift
    on a shared machine hits all of them alike."""
    if warmup:
        for fn in fns.values():
            fn()
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            times[k].append(once(fn))
    return times


def medians(samples: list[tuple[float, float]]) -> tuple[float, float]:
    """Median wall and median CPU time of ``(wall, cpu)`` samples."""
    return statistics.median(w for w, _ in samples), statistics.median(c for _, c in samples)


def _status(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (Linux), 0 elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_rss_during(fn: Callable[[], object]) -> float:
    """Peak resident memory above the level before the call, MiB (Linux: VmHWM reset via clear_refs).

    Only meaningful when freed memory goes back to the OS: run under ``MALLOC_MMAP_THRESHOLD_=131072``
    (large tensors then live in their own mappings). Returns NaN where the peak cannot be reset.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return float("nan")
    before = _status("VmRSS")
    fn()
    return max(0, _status("VmHWM") - before) / 1024
