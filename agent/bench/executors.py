"""Where benchmark cells run: in this process (:func:`inline_executor`) or as Ray tasks (:func:`ray_executor`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence

from agent.bench.evaluate import BenchError
from agent.bench.models import BenchConfig, Cell, CellResult

CellFn = Callable[[Cell, BenchConfig, str | None], CellResult]


def inline_executor(fn: CellFn, cells: Sequence[Cell], cfg: BenchConfig, home: str | None) -> Iterator[CellResult]:
    """Run cells one after another in this process (tests, debugging)."""
    for c in cells:
        yield fn(c, cfg, home)


def _gpus(cfg: BenchConfig, cells: Sequence[Cell]) -> float:
    if cfg.gpus_per_run is not None:
        return cfg.gpus_per_run
    try:
        import torch

        if not torch.cuda.is_available():
            return 0.0
    except ImportError:
        return 0.0
    from evals.tasks import load_task
    from evals.zoo import list_zoo

    zoo = {e.name for e in list_zoo()}
    return 0.0 if all(load_task(c.task).model in zoo for c in cells) else 1.0


def ray_executor(fn: CellFn, cells: Sequence[Cell], cfg: BenchConfig, home: str | None) -> Iterator[CellResult]:
    """One Ray task per cell (``num_cpus`` / ``num_gpus`` each); yields results as they finish."""
    try:
        import ray
    except ImportError:
        raise BenchError("ray is not installed", fix="pip install 'interp-agent[bench]' or use --executor inline") from None
    started_here = False
    if not ray.is_initialized():
        if cfg.ray_address:
            ray.init(address=cfg.ray_address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(num_cpus=max(1, int(os.cpu_count() or 1)), include_dashboard=False, log_to_driver=False)
        started_here = True
    try:
        remote = ray.remote(num_cpus=cfg.num_cpus, num_gpus=_gpus(cfg, cells), max_retries=0)(fn)
        pending = [remote.remote(c, cfg, home) for c in cells]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
    finally:
        if started_here:
            ray.shutdown()


Executor = Callable[[CellFn, Sequence[Cell], BenchConfig, str | None], Iterable[CellResult]]

