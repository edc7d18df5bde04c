"""Linear probes, difference-of-means vectors and steering.

Sites are components in the one grammar (``resid_post3``, ``MLP1``, ``L2H0``...); activations are their
residual-space outputs ``[B, T, d_model]`` read at one position per prompt.

>>> import torch
>>> from tools.tiny import tiny_config
>>> from transformers import AutoModelForCausalLM
>>> from tools.model import Model
>>> m = Model.from_hf(AutoModelForCausalLM.from_config(tiny_config("gpt2")))
>>> ids = torch.randint(4, 64, (6, 4))
>>> activations(m, ids, "resid_post0").shape
torch.Size([6, 64])
>>> v = diff_of_means_vector(m, ids[:3], ids[3:], "resid_post0")
>>> steer(m, ids, "resid_post0", v, alpha=2.0).shape
torch.Size([6, 4, 64])
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from tools.batch import TaskBatch
from tools.components import Component
from tools.errors import BatchError, InterventionError
from tools.interventions import Positions, _ids, run_with_cache, run_with_interventions


def _pos_index(position: int | str | torch.Tensor, batch, B: int, T: int) -> torch.Tensor:
    if isinstance(position, torch.Tensor):
        if position.shape != (B,):
            raise BatchError(f"position tensor must have shape [{B}]", fix="give one index per prompt")
        return position
    if isinstance(position, str):
        if not isinstance(batch, TaskBatch):
            raise BatchError(f"position {position!r} is a role name but no TaskBatch was given",
                             fix="pass a TaskBatch, or an integer position")
        return batch.position(position)
    q = position if position >= 0 else T + position
    if not 0 <= q < T:
        raise BatchError(f"position {position} is outside the prompt (length {T})", fix="index tokens from 0")
    return torch.full((B,), q, dtype=torch.long)


def activations(model, ids: torch.Tensor | TaskBatch, site: str | Component,
                position: int | str | torch.Tensor = -1) -> torch.Tensor:
    """``[B, d_model]``: the output of ``site`` at ``position`` (int, role name or ``[B]`` indices).

    >>> import torch
    >>> from tools.tiny import tiny_config
    >>> from transformers import AutoModelForCausalLM
    >>> from tools.model import Model
    >>> m = Model.from_hf(AutoModelForCausalLM.from_config(tiny_config("gpt2")))
    >>> b = TaskBatch(clean_ids=torch.tensor([[5, 6, 7], [8, 9, 10]]), positions={"S1": torch.tensor([0, 1])})
    >>> activations(m, b, "L0H2", position="S1").shape
    torch.Size([2, 64])
    """
    c = model.check(site)
    x = _ids(ids, model)
    B, T = x.shape
    pos = _pos_index(position, ids, B, T).to(model.device)
    _, cache = run_with_cache(model, x, [c])
    return cache[c][torch.arange(B, device=model.device), pos]


class ProbeResult(BaseModel):
    """A logistic-regression probe: held-out accuracy and the learned direction (in activation space)."""

    model_config = ConfigDict(frozen=True)
    site: str
    position: str
    train_accuracy: float
    test_accuracy: float = Field(description="accuracy on the held-out split (never trained on)")
    n_train: int
    n_test: int
    classes: list[int]
    direction: list[float] = Field(description="unit vector along the class-1 weights (binary probes); "
                                               "for multi-class, the first class's")
    coef: list[list[float]] = Field(description="raw weights, one row per class (one row if binary)")
    bias: float = Field(description="intercept of the (first) decision function")

    def vector(self) -> torch.Tensor:
        """The direction as a ``[d_model]`` float tensor (e.g. for :func:`steer`)."""
        return torch.tensor(self.direction)


def train_probe(model, ids_or_batch: torch.Tensor | TaskBatch, site: str | Component, labels,
                position: int | str | torch.Tensor = -1, seed: int = 0, test_frac: float = 0.25,
                C: float = 1.0) -> ProbeResult:
    """Fit a logistic-regression probe on ``site`` activations at ``position`` to predict ``labels``.

    A seeded random split keeps ``test_frac`` of prompts held out (stratified when possible).

    >>> import torch
    >>> from tools.tiny import tiny_config
    >>> from transformers import AutoModelForCausalLM
    >>> from tools.model import Model
    >>> m = Model.from_hf(AutoModelForCausalLM.from_config(tiny_config("gpt2")))
    >>> ids = torch.randint(4, 64, (40, 3))
    >>> labels = (ids[:, -1] % 2).tolist()
    >>> r = train_probe(m, ids, "EMB", labels)
    >>> r.n_test, len(r.direction)
    (10, 64)
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    X = activations(model, ids_or_batch, site, position).float().cpu().numpy()
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if y.shape != (X.shape[0],):
        raise BatchError(f"got {y.shape[0] if y.ndim else 0} labels for {X.shape[0]} prompts",
                         fix="give one label per prompt")
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise InterventionError("labels have a single class", fix="give prompts of at least two classes")
    try:  # stratify when every class can appear on both sides; else a plain seeded split
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=test_frac, random_state=seed,
                                              stratify=y if counts.min() >= 2 else None)
    except ValueError:
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=test_frac, random_state=seed)
    if len(np.unique(ytr)) < 2:
        raise InterventionError("the training split has a single class", fix="give more prompts per class")
    clf = LogisticRegression(C=C, max_iter=2000, random_state=seed).fit(Xtr, ytr)
    w = clf.coef_
    d = w[0] / (np.linalg.norm(w[0]) or 1.0)
    return ProbeResult(site=str(model.check(site)), position=str(position if not isinstance(position, torch.Tensor)
                                                                   else "tensor"),
                       train_accuracy=float(clf.score(Xtr, ytr)), test_accuracy=float(clf.score(Xte, yte)),
                       n_train=len(ytr), n_test=len(yte), classes=[int(c) for c in classes],
                       direction=d.tolist(), coef=w.tolist(), bias=float(clf.intercept_[0]))


def diff_of_means_vector(model, ids_a: torch.Tensor | TaskBatch, ids_b: torch.Tensor | TaskBatch,
                         site: str | Component, position: int | str | torch.Tensor = -1) -> torch.Tensor:
    """``mean(act(a)) - mean(act(b))`` at ``site`` and ``position``: a ``[d_model]`` steering vector.

    >>> import torch
    >>> from tools.tiny import tiny_config
    >>> from transformers import AutoModelForCausalLM
    >>> from tools.model import Model
    >>> m = Model.from_hf(AutoModelForCausalLM.from_config(tiny_config("gpt2")))
    >>> ids = torch.tensor([[5, 6, 7]])
    >>> float(diff_of_means_vector(m, ids, ids, "MLP0").abs().max())
    0.0
    """
    return activations(model, ids_a, site, position).mean(0) - activations(model, ids_b, site, position).mean(0)


def steer(model, ids: torch.Tensor | TaskBatch, site: str | Component, vector: torch.Tensor, alpha: float = 1.0,
          positions: Positions = None, generate_tokens: int = 0) -> torch.Tensor:
    """Add ``alpha * vector`` to ``site``'s output during the forward.

    Returns logits ``[B, T, V]`` when ``generate_tokens == 0``; else greedily generates that many tokens
    (steering every forward, at ``positions`` of the prompt or everywhere when None) and returns ids
    ``[B, T + generate_tokens]``.

    >>> import torch
    >>> from tools.tiny import tiny_config
    >>> from transformers import AutoModelForCausalLM
    >>> from tools.model import Model
    >>> m = Model.from_hf(AutoModelForCausalLM.from_config(tiny_config("gpt2")))
    >>> steer(m, torch.tensor([[5, 6]]), "resid_post1", torch.ones(64), generate_tokens=3).shape
    torch.Size([1, 5])
    >>> steer(m, torch.tensor([[5, 6]]), "resid_post1", torch.full((64,), float("nan")))
    Traceback (most recent call last):
    ...
    tools.errors.InterventionError: steering vector contains NaN or inf — check how the vector was computed
    """
    c = model.check(site)
    vector = torch.as_tensor(vector)
    if vector.shape != (model.d_model,):
        raise InterventionError(f"steering vector has shape {tuple(vector.shape)}, expected ({model.d_model},)",
                                fix="give one residual-space vector [d_model]")
    if not torch.isfinite(vector).all():
        raise InterventionError("steering vector contains NaN or inf", fix="check how the vector was computed")
    if not np.isfinite(alpha):
        raise InterventionError(f"alpha must be finite, got {alpha}", fix="give a finite scale")
    add = (alpha * vector).to(model.device, model.dtype)
    fn = lambda out: out + add  # noqa: E731
    if generate_tokens <= 0:
        return run_with_interventions(model, ids, {c: fn}, positions=positions)
    x = _ids(ids, model)
    T0 = x.shape[1]
    for _ in range(generate_tokens):
        pos = positions
        if positions is not None:  # prompt positions only; generated tokens are not steered
            from tools.interventions import position_mask

            mask = position_mask(positions, ids if isinstance(ids, TaskBatch) else x[:, :T0])
            pos = torch.cat([mask, torch.zeros(x.shape[0], x.shape[1] - T0, dtype=torch.bool,
                                               device=mask.device)], 1)
            fn_m = (lambda m: (lambda out: out + add * m[..., None].to(out.dtype)))(pos)
            logits = run_with_interventions(model, x, {c: fn_m})
        else:
            logits = run_with_interventions(model, x, {c: fn})
        x = torch.cat([x, logits[:, -1].argmax(-1, keepdim=True)], 1)
    return x
