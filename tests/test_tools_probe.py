"""Probes on a planted direction, steering by a predicted amount, difference-of-means vectors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tools import diff_of_means_vector, steer, train_probe
from tools.model import Model
from tools.tiny import TINY_ARCHS

ARCHS = TINY_ARCHS  # the `models` / `model` fixtures live in conftest.py


def planted(model: Model, scale: float = 3.0) -> tuple[Model, torch.Tensor]:
    """A copy whose token embeddings carry +scale·v for ids 4..33 and -scale·v for ids 34..63."""
    m = model.copy()
    v = torch.nn.functional.normalize(torch.randn(m.d_model, generator=torch.Generator().manual_seed(3)), dim=0)
    with torch.no_grad():
        m.W_E[4:34] += scale * v
        m.W_E[34:64] -= scale * v
    return m, v


def test_probe_finds_planted_direction(model: Model) -> None:
    m, v = planted(model)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 64, (240, 6), generator=g)
    labels = (ids[:, -1] < 34).long()
    r = train_probe(m, ids, "EMB", labels, position=-1, seed=0)
    assert r.test_accuracy >= 0.95 and r.n_test == 60
    assert abs(float(torch.dot(r.vector(), v))) > 0.8  # it found the planted direction itself
    deep = train_probe(m, ids, f"resid_post{m.n_layers - 1}", labels, position=-1, seed=0)
    assert deep.test_accuracy >= 0.95
    # random labels: held-out accuracy stays near chance (the test can fail)
    rnd = torch.randint(0, 2, (240,), generator=g)
    assert train_probe(m, ids, "EMB", rnd).test_accuracy < 0.8


def linear_tail(model: Model) -> Model:
    m = model.copy()
    path = m.adapter.final_norm.rsplit(".", 1)
    setattr(m.module(path[0]), path[1], nn.Identity())
    return m


def test_steering_moves_logits_by_predicted_amount(model: Model) -> None:
    m = linear_tail(model)
    ids = torch.randint(4, 64, (3, 5), generator=torch.Generator().manual_seed(2))
    W_U = m.W_U.detach()
    v = torch.nn.functional.normalize(W_U[10], dim=0)
    base = m(ids)
    alpha = 7.5
    out = steer(m, ids, f"resid_post{m.n_layers - 1}", v, alpha=alpha, positions=-1)
    torch.testing.assert_close(out[:, -1] - base[:, -1], (alpha * W_U @ v).expand(3, -1), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out[:, :-1], base[:, :-1], atol=0, rtol=0)  # other positions untouched
    assert float((out[:, -1, 10] - base[:, -1, 10]).mean()) == pytest.approx(alpha * float(W_U[10].norm()), rel=1e-4)


def test_steered_generation_follows_the_vector(model: Model) -> None:
    ids = torch.randint(4, 64, (2, 4), generator=torch.Generator().manual_seed(4))
    v = model.W_U.detach()[17]
    # the final norm rescales, so a huge alpha makes token 17 dominate the last residual
    gen = steer(model, ids, f"resid_post{model.n_layers - 1}", v, alpha=1e4, generate_tokens=3)
    assert gen.shape == (2, 7) and torch.equal(gen[:, :4], ids) and (gen[:, 4:] == 17).all()
    plain = steer(model, ids, f"resid_post{model.n_layers - 1}", v, alpha=0.0, generate_tokens=1)
    assert torch.equal(plain[:, -1], model(ids)[:, -1].argmax(-1))


def test_diff_of_means(model: Model) -> None:
    m, v = planted(model, scale=5.0)
    a = torch.randint(4, 34, (30, 4), generator=torch.Generator().manual_seed(5))
    b = torch.randint(34, 64, (30, 4), generator=torch.Generator().manual_seed(6))
    d = diff_of_means_vector(m, a, b, "EMB", position=-1)
    assert float(torch.nn.functional.cosine_similarity(d, v, dim=0)) > 0.95


def test_multiclass_probe_with_many_rare_classes(models) -> None:
    m = models["gpt2"]
    ids = torch.randint(4, 64, (24, 3), generator=torch.Generator().manual_seed(8))
    labels = ids[:, -1] % 11  # 11 classes, some with 1 example: stratification impossible
    r = train_probe(m, ids, "EMB", labels)
    assert r.n_train + r.n_test == 24 and len(r.coef) > 2 and 0.0 <= r.test_accuracy <= 1.0
