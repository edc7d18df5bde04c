"""Task metrics as ``metric(logits [B,T,V], batch) -> scalar tensor`` (mean over the batch).

``logit_diff`` and ``accuracy`` are :mod:`tools.metrics`' (one implementation, with its shape checks);
``prob_diff`` (greater-than, Hanna et al. 2023) is the probability of years above YY minus the
probability of years at or below it, and is defined here because it needs the task's year tokens.

>>> import torch
>>> from tools.batch import TaskBatch
>>> b = TaskBatch(clean_ids=torch.zeros(1, 2, dtype=torch.long), answer_ids=torch.tensor([1]),
...               wrong_ids=torch.tensor([0]))
>>> logits = torch.tensor([[[0.0, 0.0], [0.5, 2.0]]])
>>> float(logit_diff(logits, b)), float(accuracy(logits, b))
(1.5, 1.0)
"""

from __future__ import annotations

from typing import Any

import torch

from tools.metrics import accuracy, end_logits, logit_diff

__all__ = ["accuracy", "logit_diff", "make_metric", "prob_diff_fn"]


def prob_diff_fn(year_ids: list[int]):
    """Greater-than ``prob_diff``: P(year > YY) − P(year ≤ YY) at END; YY read at position ``YY``."""
    ids = torch.tensor(year_ids)
    lookup = {t: y for y, t in enumerate(year_ids)}

    def prob_diff(logits: torch.Tensor, batch) -> torch.Tensor:
        probs = end_logits(logits, batch).softmax(-1)[:, ids.to(logits.device)]  # [B, 100]
        yy_tok = batch.clean_ids[torch.arange(batch.size), batch.position("YY")]
        yy = torch.tensor([lookup.get(int(t), 0) for t in yy_tok], device=probs.device)
        above = torch.arange(100, device=probs.device)[None, :] > yy[:, None]
        return ((probs * above).sum(-1) - (probs * ~above).sum(-1)).mean()

    return prob_diff


def make_metric(spec: Any, tokenizer: Any):
    """The metric named by ``spec.metric`` (``prob_diff`` needs the tokenizer's year tokens)."""
    if spec.metric == "prob_diff":
        return prob_diff_fn(spec.generator.year_token_ids(tokenizer))
    if spec.metric == "accuracy":
        return accuracy
    return logit_diff
