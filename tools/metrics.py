"""Task metrics: ``metric(logits [B,T,V], batch) -> scalar tensor`` (mean over the batch).

All read the prediction at ``batch.end`` (the ``END`` role, else the last token) and keep the
autograd graph (attribution patching differentiates them).

>>> import torch
>>> from tools.batch import TaskBatch
>>> b = TaskBatch(clean_ids=torch.zeros(2, 3, dtype=torch.long), answer_ids=torch.tensor([1, 2]),
...               wrong_ids=torch.tensor([2, 1]))
>>> logits = torch.zeros(2, 3, 4)
>>> logits[0, 2, 1] = 2.0
>>> float(logit_diff(logits, b)), float(accuracy(logits, b))
(1.0, 0.5)
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from tools.batch import TaskBatch
from tools.errors import BatchError, InterventionError

Metric = Callable[[torch.Tensor, TaskBatch], torch.Tensor]


def end_logits(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """The logits ``[B, V]`` at each prompt's scored position ``batch.end`` (shape-checked against the batch)."""
    if logits.dim() != 3 or logits.shape[0] != batch.size:
        raise BatchError(f"logits of shape {tuple(logits.shape)} do not fit a batch of {batch.size}",
                         fix="pass logits [batch, seq, vocab] from a forward over this batch")
    end = batch.end.to(logits.device)
    return logits[torch.arange(batch.size, device=logits.device), end]


def _need(batch: TaskBatch, *names: str) -> None:
    for n in names:
        if getattr(batch, n) is None:
            raise BatchError(f"this metric needs batch.{n}", fix=f"build the TaskBatch with {n}")


def logit_diff(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """Mean of ``logit[answer] - logit[wrong]`` at ``batch.end``."""
    _need(batch, "answer_ids", "wrong_ids")
    end = end_logits(logits, batch)
    a = end.gather(1, batch.answer_ids.to(end.device)[:, None])
    w = end.gather(1, batch.wrong_ids.to(end.device)[:, None])
    return (a - w).mean()


def prob_correct(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """Mean probability of the answer token at ``batch.end``.

    >>> import torch
    >>> from tools.batch import TaskBatch
    >>> b = TaskBatch(clean_ids=torch.zeros(1, 2, dtype=torch.long), answer_ids=torch.tensor([0]))
    >>> float(prob_correct(torch.zeros(1, 2, 4), b))
    0.25
    """
    _need(batch, "answer_ids")
    p = end_logits(logits, batch).softmax(-1)
    return p.gather(1, batch.answer_ids.to(p.device)[:, None]).mean()


def accuracy(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """Fraction of prompts whose top token at ``batch.end`` is the answer (no gradient)."""
    _need(batch, "answer_ids")
    top = end_logits(logits, batch).argmax(-1)
    return (top == batch.answer_ids.to(top.device)).float().mean()


def kl_to_clean(logits: torch.Tensor, batch: TaskBatch, clean_logits: torch.Tensor | None = None) -> torch.Tensor:
    """Mean KL(clean ‖ logits) of the next-token distributions at ``batch.end`` (0 = unchanged).

    Needs the clean logits: bind them with ``functools.partial(kl_to_clean, clean_logits=...)``.

    >>> import torch, functools
    >>> from tools.batch import TaskBatch
    >>> b = TaskBatch(clean_ids=torch.zeros(1, 2, dtype=torch.long))
    >>> clean = torch.randn(1, 2, 5)
    >>> metric = functools.partial(kl_to_clean, clean_logits=clean)
    >>> abs(float(metric(clean, b))) < 1e-6
    True
    """
    if clean_logits is None:
        raise InterventionError("kl_to_clean needs the clean logits",
                                fix="use functools.partial(kl_to_clean, clean_logits=model(batch.clean_ids))")
    p = end_logits(clean_logits.to(logits.device), batch).log_softmax(-1)
    q = end_logits(logits, batch).log_softmax(-1)
    return (p.exp() * (p - q)).sum(-1).mean()


METRICS: dict[str, Metric] = {"logit_diff": logit_diff, "prob_correct": prob_correct, "accuracy": accuracy}
"""Metrics by name (those that need nothing but logits and the batch)."""


def get_metric(metric: str | Metric) -> Metric:
    """A metric by name, or the callable itself.

    >>> get_metric("logit_diff") is logit_diff
    True
    """
    if callable(metric):
        return metric
    if metric not in METRICS:
        raise InterventionError(f"unknown metric {metric!r}", fix=f"use one of {sorted(METRICS)} or a callable")
    return METRICS[metric]
