"""Replication scores: how well an agent's circuit, clusters and role labels match a reference.

All functions are pure and take plain data — component names (the ``tools.components`` grammar),
clusters as ``{cluster name: [component, ...]}`` and role labels as ``{component: label}`` — never a
run log. The agent (or the benchmark runner) reads its log and passes the data in.

- :func:`component_prf`: precision / recall / F1 of the agent's component set against the reference's.
- :func:`cluster_agreement`: adjusted Rand index and NMI (scikit-learn) between the agent's clusters and
  the reference roles, on the components both contain.
- :func:`role_label_agreement`: whether the agent's role label of each shared component means the same
  as the reference's, by the documented offline synonym table :data:`ROLE_SYNONYMS`.
- :func:`judge_role_labels`: the same question put to an LLM judge (any backend with ``.complete``);
  the prompt and the verdicts come back for logging.
- :func:`replication_score`: all of the above in one pydantic record.

>>> s = replication_score(
...     agent_roles={"L1H0": "copies the indirect object's name", "L1H1": "previous token head"},
...     reference_roles={"L1H0": "name mover", "L0H2": "duplicate token"})
>>> round(s.components.precision, 2), round(s.components.recall, 2), s.roles.n_agree
(0.5, 0.5, 1)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tools.components import Component
from tools.errors import InterpAgentError


class ScoreError(InterpAgentError, ValueError):
    """Input to a score that cannot be scored (bad component names, a malformed judge answer...)."""


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


def _names(components: Iterable[str | Component]) -> list[str]:
    """Canonical component names (parsed, so ``' L1H0'`` and ``Component`` objects compare equal)."""
    out: list[str] = []
    for c in components:
        name = str(Component.parse(c))
        if name not in out:
            out.append(name)
    return out


def _roles(roles: Mapping[str | Component, str]) -> dict[str, str]:
    return {str(Component.parse(c)): str(r) for c, r in roles.items()}


def _membership(clusters: Mapping[str, Iterable[str | Component]]) -> dict[str, str]:
    """``{component: cluster name}``; a component listed in two clusters is an error."""
    out: dict[str, str] = {}
    for cname, members in clusters.items():
        for c in _names(members):
            if c in out and out[c] != cname:
                raise ScoreError(f"component {c} is in two clusters ({out[c]!r} and {cname!r})",
                                 fix="give each component exactly one cluster")
            out[c] = cname
    return out


# ---------------------------------------------------------------------------------------------
# components


class PRF(_Data):
    """Precision, recall and F1 of a predicted component set against a reference set."""

    precision: float
    """|predicted ∩ reference| / |predicted| (0 when nothing is predicted)."""
    recall: float
    """|predicted ∩ reference| / |reference| (0 when the reference is empty)."""
    f1: float
    """Harmonic mean of precision and recall (0 when both are 0)."""
    true_positives: list[str] = Field(default_factory=list)
    """Components in both sets."""
    false_positives: list[str] = Field(default_factory=list)
    """Predicted components the reference lacks."""
    false_negatives: list[str] = Field(default_factory=list)
    """Reference components the prediction missed."""


def component_prf(predicted: Iterable[str | Component], reference: Iterable[str | Component]) -> PRF:
    """Component-level precision / recall / F1.

    >>> r = component_prf(["L1H0", "L1H1", "MLP0"], ["L1H0", "MLP0", "L0H3"])
    >>> round(r.precision, 3), round(r.recall, 3), round(r.f1, 3), r.false_negatives
    (0.667, 0.667, 0.667, ['L0H3'])
    """
    pred, ref = _names(predicted), _names(reference)
    tp = [c for c in pred if c in ref]
    p = len(tp) / len(pred) if pred else 0.0
    r = len(tp) / len(ref) if ref else 0.0
    f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return PRF(precision=p, recall=r, f1=f1, true_positives=tp,
               false_positives=[c for c in pred if c not in ref],
               false_negatives=[c for c in ref if c not in pred])


# ---------------------------------------------------------------------------------------------
# clusters


class ClusterAgreement(_Data):
    """Agreement between two partitions restricted to the components both contain."""

    ari: float | None
    """Adjusted Rand index (1 = identical partitions, ≈0 = chance); None with fewer than 2 shared components."""
    nmi: float | None
    """Normalised mutual information (arithmetic mean normalisation); None with fewer than 2 shared."""
    n_shared: int
    """Number of components in both partitions."""


def cluster_agreement(agent_clusters: Mapping[str, Iterable[str | Component]],
                      reference_roles: Mapping[str | Component, str]) -> ClusterAgreement:
    """ARI and NMI between the agent's clusters and the reference roles on the shared components.

    Cluster and role *names* do not matter, only the partition: ``{"A": [x, y], "B": [z]}`` and roles
    ``{x: "mover", y: "mover", z: "inhibition"}`` agree perfectly.

    >>> cluster_agreement({"A": ["L1H0", "L1H1"], "B": ["L0H0"]},
    ...                   {"L1H0": "mover", "L1H1": "mover", "L0H0": "inhibition", "L0H1": "x"})
    ClusterAgreement(ari=1.0, nmi=1.0, n_shared=3)
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    member = _membership(agent_clusters)
    ref = _roles(reference_roles)
    shared = [c for c in member if c in ref]
    if len(shared) < 2:
        return ClusterAgreement(ari=None, nmi=None, n_shared=len(shared))
    pred = [member[c] for c in shared]
    true = [ref[c] for c in shared]
    return ClusterAgreement(ari=float(adjusted_rand_score(true, pred)),
                            nmi=float(normalized_mutual_info_score(true, pred)), n_shared=len(shared))


def clusters_from_roles(roles: Mapping[str | Component, str], canonical: bool = True) -> dict[str, list[str]]:
    """Group components by role label (by its canonical role from :data:`ROLE_SYNONYMS` when known).

    >>> clusters_from_roles({"L1H0": "Name mover", "L1H1": "copies the IO name", "L0H0": "weird"})
    {'name mover': ['L1H0', 'L1H1'], 'weird': ['L0H0']}
    """
    out: dict[str, list[str]] = {}
    for c, label in _roles(roles).items():
        key = (canonical_role(label) if canonical else None) or _normalise(label)
        out.setdefault(key, []).append(c)
    return out


# ---------------------------------------------------------------------------------------------
# role labels: the offline synonym table

ROLE_SYNONYMS: list[tuple[str, list[str]]] = [
    # More specific roles come first: the first pattern that matches a label decides its role.
    ("negative name mover", [r"negative (name )?mover", r"suppress\w* .*(name|io|indirect object)",
                             r"anti-?cop", r"negative cop"]),
    ("backup name mover", [r"backup (name )?mover", r"backup"]),
    ("name mover", [r"name mover", r"\bmover\b", r"cop\w* .*(name|indirect object|\bio\b)",
                    r"moves? .*(name|indirect object|\bio\b)", r"(name|indirect object|\bio\b) .*(cop|mov)",
                    r"outputs? the (io|indirect object)"]),
    ("s-inhibition", [r"s-?inhibition", r"subject inhibition", r"inhibit\w*", r"suppress\w* .*subject"]),
    ("induction", [r"induction", r"token (that )?(followed|after) .*(previous|earlier|first) (occurrence|copy)",
                   r"attends? to the token after", r"completes? (the )?repeat"]),
    ("previous token", [r"previous[- ]token", r"prev[- ]token", r"attends? to the (previous|preceding) token",
                        r"(one|1) token back", r"shift\w* .*previous"]),
    ("duplicate token", [r"duplicate[- ]token", r"duplicate", r"repeated (token|name)",
                         r"earlier (copy|occurrence) of the (current )?token"]),
    ("greater-than", [r"greater[- ]than", r"compar\w*", r"years? .*(later|larger|greater)"]),
    ("year mover", [r"(move|attend)\w* .*year", r"yy"]),
    ("distractor", [r"distractor", r"no (task )?effect", r"irrelevant", r"unused", r"not (part of|in) the circuit"]),
]
"""Ordered (canonical role, regex patterns) pairs used to decide offline whether two role labels mean
the same thing. A label is lower-cased, its punctuation except ``-`` dropped, and matched against the
patterns in order; the first role with a matching pattern is its canonical role. Examples:
"name mover" ≈ "copies the indirect object's name" ≈ "moves the IO name to the output";
"S-inhibition" ≈ "inhibits attention to the subject"; "previous-token head" ≈ "attends to the previous
token". Two labels agree when their normalised texts are equal or their canonical roles are equal."""


def _normalise(label: str) -> str:
    text = label.lower().replace("’", "'").replace("'s", "")
    text = re.sub(r"[^a-z0-9\- ]+", " ", text)
    text = re.sub(r"\bheads?\b", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def canonical_role(label: str) -> str | None:
    """The canonical role of a free-text label by :data:`ROLE_SYNONYMS`, or None when none matches.

    >>> canonical_role("Copies the indirect object's name to the output")
    'name mover'
    >>> canonical_role("Negative Name Mover"), canonical_role("attends to the previous token")
    ('negative name mover', 'previous token')
    >>> canonical_role("something else") is None
    True
    """
    text = _normalise(label)
    for role, patterns in ROLE_SYNONYMS:
        if any(re.search(p, text) for p in patterns):
            return role
    return None


def labels_agree(a: str, b: str) -> bool:
    """True when two role labels mean the same role by the synonym table.

    >>> labels_agree("name mover", "moves the IO name"), labels_agree("name mover", "S-inhibition")
    (True, False)
    """
    if _normalise(a) == _normalise(b):
        return True
    ca, cb = canonical_role(a), canonical_role(b)
    return ca is not None and ca == cb


class RoleVerdict(_Data):
    """One component's agent label against the reference label."""

    component: str
    agent_label: str
    reference_label: str
    agree: bool
    reason: str = ""
    """Why (synonym table: the canonical roles; LLM judge: its stated reason)."""


class RoleAgreement(_Data):
    """Role-label agreement on the components both the agent and the reference label."""

    method: str
    """``synonyms`` (offline table) or ``llm`` (an LLM judge)."""
    n_shared: int
    n_agree: int
    fraction: float | None
    """n_agree / n_shared; None when nothing is shared."""
    verdicts: list[RoleVerdict] = Field(default_factory=list)
    prompt: str | None = None
    """The judge's prompt (LLM method only), for the log."""
    raw_response: str | None = None
    """The judge's raw answer (LLM method only), for the log."""


def role_label_agreement(agent_roles: Mapping[str | Component, str],
                         reference_roles: Mapping[str | Component, str]) -> RoleAgreement:
    """Agreement of role labels by the offline synonym table.

    >>> r = role_label_agreement({"L1H0": "copies the IO name", "L0H0": "previous token"},
    ...                          {"L1H0": "name mover", "L0H0": "duplicate token"})
    >>> r.n_shared, r.n_agree, [v.agree for v in r.verdicts]
    (2, 1, [True, False])
    """
    agent, ref = _roles(agent_roles), _roles(reference_roles)
    verdicts = []
    for c in agent:
        if c not in ref:
            continue
        ok = labels_agree(agent[c], ref[c])
        reason = f"{canonical_role(agent[c]) or _normalise(agent[c])!r} vs {canonical_role(ref[c]) or _normalise(ref[c])!r}"
        verdicts.append(RoleVerdict(component=c, agent_label=agent[c], reference_label=ref[c], agree=ok,
                                    reason=reason))
    n_agree = sum(v.agree for v in verdicts)
    return RoleAgreement(method="synonyms", n_shared=len(verdicts), n_agree=n_agree,
                         fraction=n_agree / len(verdicts) if verdicts else None, verdicts=verdicts)


JUDGE_SYSTEM = ("You judge whether two descriptions of a transformer component's role in a circuit describe "
                "the same function. Answer only with JSON.")


def judge_prompt(pairs: list[tuple[str, str, str]]) -> str:
    """The user prompt sent to the LLM judge for ``(component, agent label, reference label)`` triples.

    >>> "L9H9" in judge_prompt([("L9H9", "copies names", "name mover")])
    True
    """
    lines = [f"- {c}: A = {a!r}; B = {b!r}" for c, a, b in pairs]
    return ("For each component below, decide whether description A (an agent's conclusion) and description "
            "B (a reference circuit's role label) name the same function. Be strict about direction (a head "
            "that suppresses a token is not one that copies it) but lenient about wording.\n\n"
            + "\n".join(lines)
            + '\n\nAnswer with a JSON list, one object per component, in the same order: '
              '[{"component": "L9H9", "same": true, "reason": "..."}]')


def _response_text(resp: Any) -> str:
    if isinstance(resp, str):
        return resp
    text = getattr(resp, "text", None)
    if isinstance(text, str):
        return text
    return str(resp)


def judge_role_labels(backend: Any, agent_roles: Mapping[str | Component, str],
                      reference_roles: Mapping[str | Component, str], max_tokens: int = 1024) -> RoleAgreement:
    """Role-label agreement decided by an LLM judge.

    ``backend`` is any object with ``complete(*, system, messages, tools, max_tokens)`` returning a
    response with ``.text`` (the ``agent.llm`` backends, e.g. ``ClaudeBackend``) or a string. The prompt and the raw answer
    are returned in the result so the caller can log them. A component the judge skips counts as
    disagreeing.

    >>> class Fake:
    ...     def complete(self, *, system, messages, tools, max_tokens=1024):
    ...         return '[{"component": "L1H0", "same": true, "reason": "both copy the name"}]'
    >>> r = judge_role_labels(Fake(), {"L1H0": "copies names"}, {"L1H0": "name mover"})
    >>> r.method, r.n_agree, r.verdicts[0].reason
    ('llm', 1, 'both copy the name')
    """
    agent, ref = _roles(agent_roles), _roles(reference_roles)
    pairs = [(c, agent[c], ref[c]) for c in agent if c in ref]
    if not pairs:
        return RoleAgreement(method="llm", n_shared=0, n_agree=0, fraction=None)
    prompt = judge_prompt(pairs)
    resp = backend.complete(system=JUDGE_SYSTEM, messages=[{"role": "user", "content": prompt}], tools=[],
                            max_tokens=max_tokens)
    raw = _response_text(resp)
    match = re.search(r"\[.*\]", raw, flags=re.S)
    try:
        items = json.loads(match.group(0)) if match else None
    except json.JSONDecodeError:
        items = None
    if not isinstance(items, list):
        raise ScoreError(f"the LLM judge did not answer with a JSON list: {raw[:200]!r}",
                         fix="retry, or score role labels offline with role_label_agreement")
    by_comp = {str(it.get("component")): it for it in items if isinstance(it, dict)}
    verdicts = []
    for c, a, b in pairs:
        it = by_comp.get(c, {})
        verdicts.append(RoleVerdict(component=c, agent_label=a, reference_label=b, agree=bool(it.get("same", False)),
                                    reason=str(it.get("reason", "no verdict from the judge"))))
    n_agree = sum(v.agree for v in verdicts)
    return RoleAgreement(method="llm", n_shared=len(verdicts), n_agree=n_agree, fraction=n_agree / len(verdicts),
                         verdicts=verdicts, prompt=prompt, raw_response=raw)


# ---------------------------------------------------------------------------------------------
# everything together


class ReplicationScore(_Data):
    """An agent's circuit, clusters and role labels scored against one reference circuit."""

    components: PRF
    clusters: ClusterAgreement
    roles: RoleAgreement
    judge: RoleAgreement | None = None
    """LLM-judged role agreement, when a judge backend was given."""


def replication_score(agent_roles: Mapping[str | Component, str],
                      reference_roles: Mapping[str | Component, str],
                      agent_clusters: Mapping[str, Iterable[str | Component]] | None = None,
                      agent_components: Iterable[str | Component] | None = None,
                      judge: Any = None) -> ReplicationScore:
    """Score an agent against a reference circuit given as ``{component: role label}``.

    ``agent_components`` defaults to the components the agent labelled; ``agent_clusters`` defaults to
    grouping its labels by canonical role (:func:`clusters_from_roles`). Pass ``judge`` (an LLM
    backend) to add LLM-judged role agreement.

    >>> s = replication_score({"L1H0": "name mover", "L1H1": "name mover"},
    ...                       {"L1H0": "name mover", "L1H1": "backup name mover"},
    ...                       agent_clusters={"movers": ["L1H0", "L1H1"]})
    >>> s.components.f1, s.clusters.ari, s.roles.n_agree
    (1.0, 0.0, 1)
    """
    agent = _roles(agent_roles)
    comps = _names(agent_components) if agent_components is not None else list(agent)
    clusters = agent_clusters if agent_clusters else clusters_from_roles(agent)
    return ReplicationScore(
        components=component_prf(comps, _roles(reference_roles)),
        clusters=cluster_agreement(clusters, reference_roles),
        roles=role_label_agreement(agent, reference_roles),
        judge=judge_role_labels(judge, agent, reference_roles) if judge is not None else None,
    )
