"""Replication and ground-truth scores: known answers on hand-made data."""

from __future__ import annotations

import json

import pytest

from evals.ground_truth import ground_truth_score
from evals.scores import (
    ScoreError,
    canonical_role,
    cluster_agreement,
    component_prf,
    judge_role_labels,
    labels_agree,
    replication_score,
    role_label_agreement,
)
from tools.errors import ComponentError, InterpAgentError


def test_prf_known_values_and_name_normalisation():
    r = component_prf([" L1H0", "L1H1", "MLP0", "L1H0"], ["L1H0", "MLP0", "L0H3", "L0H2"])
    assert r.precision == pytest.approx(2 / 3)
    assert r.recall == pytest.approx(0.5)
    assert r.f1 == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert r.false_positives == ["L1H1"] and r.false_negatives == ["L0H3", "L0H2"]
    assert component_prf([], ["L0H0"]).f1 == 0.0
    assert component_prf(["L0H0"], ["L0H0"]).f1 == 1.0


def test_prf_rejects_bad_names():
    with pytest.raises(ComponentError):
        component_prf(["L1X0"], ["L1H0"])


def test_cluster_agreement_ignores_names_and_detects_disagreement():
    ref = {"L1H0": "mover", "L1H1": "mover", "L0H0": "inh", "L0H1": "inh"}
    same = cluster_agreement({"x": ["L1H0", "L1H1"], "y": ["L0H0", "L0H1"]}, ref)
    assert same.ari == pytest.approx(1.0) and same.nmi == pytest.approx(1.0) and same.n_shared == 4
    crossed = cluster_agreement({"x": ["L1H0", "L0H0"], "y": ["L1H1", "L0H1"]}, ref)
    assert crossed.ari < 0 and crossed.nmi == pytest.approx(0.0, abs=1e-12)
    assert cluster_agreement({"x": ["L5H5"]}, ref).ari is None


def test_component_in_two_clusters_is_an_error():
    with pytest.raises(ScoreError) as e:
        cluster_agreement({"a": ["L0H0"], "b": ["L0H0"]}, {"L0H0": "x"})
    assert isinstance(e.value, InterpAgentError) and "two clusters" in str(e.value)


@pytest.mark.parametrize(("a", "b", "same"), [
    ("name mover", "copies the indirect object's name", True),
    ("Name Mover Head", "moves the IO name to the logits", True),
    ("negative name mover", "name mover", False),
    ("backup name mover", "name mover", False),
    ("S-inhibition", "inhibits attention to the subject", True),
    ("previous-token head", "attends to the previous token", True),
    ("induction head", "previous token head", False),
    ("duplicate token", "detects a repeated name", True),
    ("greater-than comparison", "compares years", True),
])
def test_synonym_table(a, b, same):
    assert labels_agree(a, b) is same


def test_canonical_role_specific_before_general():
    assert canonical_role("negative mover") == "negative name mover"
    assert canonical_role("backup mover") == "backup name mover"
    assert canonical_role("mover") == "name mover"


def test_role_label_agreement_counts_only_shared():
    r = role_label_agreement({"L1H0": "copies names", "L0H0": "previous token", "L3H3": "x"},
                             {"L1H0": "name mover", "L0H0": "induction"})
    assert (r.n_shared, r.n_agree, r.fraction) == (2, 1, 0.5)


class _Judge:
    def __init__(self, answer: str) -> None:
        self.answer, self.calls = answer, []

    def complete(self, *, system, messages, tools, max_tokens=None, timeout_s=None):  # the agent.llm backend signature
        assert tools == []
        self.calls.append((messages, system))
        return self.answer


def test_llm_judge_prompt_and_verdicts_returned():
    judge = _Judge('Sure: [{"component": "L1H0", "same": true, "reason": "r1"},'
                   ' {"component": "L0H0", "same": false, "reason": "r2"}]')
    r = judge_role_labels(judge, {"L1H0": "copies", "L0H0": "prev"}, {"L1H0": "name mover", "L0H0": "dup"})
    assert r.method == "llm" and r.n_agree == 1 and r.fraction == 0.5
    assert "L1H0" in r.prompt and "name mover" in r.prompt and r.raw_response.startswith("Sure")
    assert judge.calls[0][0][0]["content"] == r.prompt


def test_llm_judge_missing_verdict_counts_as_disagree_and_garbage_raises():
    r = judge_role_labels(_Judge('[{"component": "L1H0", "same": true}]'),
                          {"L1H0": "a", "L0H0": "b"}, {"L1H0": "a", "L0H0": "b"})
    assert [v.agree for v in r.verdicts] == [True, False]
    with pytest.raises(ScoreError):
        judge_role_labels(_Judge("I think they match"), {"L1H0": "a"}, {"L1H0": "a"})


def test_replication_score_with_and_without_judge():
    agent = {"L1H0": "name mover", "L1H1": "copies the IO", "L0H1": "s-inhibition"}
    ref = {"L1H0": "name mover", "L1H1": "name mover", "L0H1": "S-inhibition", "L0H3": "duplicate token"}
    s = replication_score(agent, ref)
    assert s.components.recall == pytest.approx(0.75) and s.components.precision == 1.0
    assert s.clusters.ari == pytest.approx(1.0)  # grouped by canonical role: {mover: 2, inh: 1}
    assert s.roles.n_agree == 3 and s.judge is None
    j = replication_score(agent, ref, judge=_Judge("[]"))
    assert j.judge is not None and j.judge.n_agree == 0


def test_ground_truth_excludes_distractors():
    truth = {"L0H1": "previous token", "L1H2": "induction", "L1H0": "distractor", "L1H3": "induction"}
    perfect = ground_truth_score({"L0H1": "prev", "L1H2": "ind", "L1H3": "ind"}, truth,
                                 agent_clusters={"a": ["L0H1"], "b": ["L1H2", "L1H3"]})
    assert perfect.f1 == 1.0 and perfect.ari == pytest.approx(1.0) and perfect.n_truth == 3
    fooled = ground_truth_score({"L0H1": "x", "L1H0": "y"}, truth)
    assert fooled.precision == 0.5 and fooled.false_positives == ["L1H0"]
    assert fooled.recall == pytest.approx(1 / 3)


def test_llm_judge_through_the_real_claude_backend(fake_anthropic):
    from agent.llm.claude import ClaudeBackend
    from tests.fake_anthropic import text_turn

    fake_anthropic.script([text_turn('[{"component": "L9H9", "same": true, "reason": "both copy the IO name"}]')])
    llm = ClaudeBackend(api_key="test", base_url=fake_anthropic.base_url, sleep=lambda s: None)
    r = judge_role_labels(llm, {"L9H9": "copies the indirect object"}, {"L9H9": "name mover"})
    assert r.n_agree == 1 and r.verdicts[0].reason == "both copy the IO name"
    sent = fake_anthropic.message_requests[0].body
    assert "L9H9" in json.dumps(sent["messages"]) and "JSON" in json.dumps(sent["system"])
