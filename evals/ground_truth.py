"""Ground-truth recovery on planted models: exact component F1 and role ARI.

A planted model's ground truth is exact: ``{component: role}`` for every head/MLP that implements a
role by construction. Components planted as *distractors* (large activations, no effect on the task)
are in the truth table with a role in :data:`NON_CIRCUIT_ROLES`; they are not part of the circuit, so an
agent that includes them loses precision.

>>> truth = {"L0H1": "previous token", "L1H2": "induction", "L1H3": "distractor"}
>>> g = ground_truth_score({"L0H1": "previous-token head", "L1H2": "induction head"}, truth)
>>> g.f1, g.ari, g.n_truth
(1.0, 1.0, 2)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pydantic import BaseModel, ConfigDict

from evals.scores import _names, _roles, cluster_agreement, clusters_from_roles, component_prf
from tools.components import Component

NON_CIRCUIT_ROLES: frozenset[str] = frozenset({"distractor", "none", "irrelevant", "no effect"})
"""Role labels (lower case) that mark a planted component as outside the circuit."""


class GroundTruthScore(BaseModel):
    """An agent's circuit and clusters against a planted model's exact ground truth."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    precision: float
    recall: float
    f1: float
    """Exact component F1 against the planted circuit (distractors excluded from the truth)."""
    ari: float | None
    """Adjusted Rand index between the agent's clusters and the planted roles on shared components."""
    nmi: float | None
    n_truth: int
    """Number of components in the planted circuit."""
    n_predicted: int
    false_positives: list[str]
    false_negatives: list[str]


def circuit_of(truth: Mapping[str | Component, str]) -> dict[str, str]:
    """The circuit part of a truth table: components whose role is not in :data:`NON_CIRCUIT_ROLES`.

    >>> circuit_of({"L0H0": "mover", "L0H1": "Distractor"})
    {'L0H0': 'mover'}
    """
    return {c: r for c, r in _roles(truth).items() if r.strip().lower() not in NON_CIRCUIT_ROLES}


def ground_truth_score(agent_roles: Mapping[str | Component, str], truth: Mapping[str | Component, str],
                       agent_clusters: Mapping[str, Iterable[str | Component]] | None = None,
                       agent_components: Iterable[str | Component] | None = None) -> GroundTruthScore:
    """Exact component precision/recall/F1 and role ARI/NMI of an agent on a planted model.

    ``agent_components`` defaults to the components the agent labelled; ``agent_clusters`` to its
    labels grouped by canonical role.

    >>> g = ground_truth_score({"L0H0": "a"}, {"L0H0": "mover", "L0H1": "mover", "L1H0": "distractor"})
    >>> round(g.precision, 2), round(g.recall, 2), g.false_negatives
    (1.0, 0.5, ['L0H1'])
    """
    agent = _roles(agent_roles)
    comps = _names(agent_components) if agent_components is not None else list(agent)
    circuit = circuit_of(truth)
    prf = component_prf(comps, circuit)
    clusters = agent_clusters if agent_clusters else clusters_from_roles(agent)
    agree = cluster_agreement(clusters, circuit)
    return GroundTruthScore(precision=prf.precision, recall=prf.recall, f1=prf.f1, ari=agree.ari, nmi=agree.nmi,
                            n_truth=len(circuit), n_predicted=len(comps), false_positives=prf.false_positives,
                            false_negatives=prf.false_negatives)
