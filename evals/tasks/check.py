"""Is a task usable on a model? Tokenise it, run it, and say so with numbers (``interp-agent tasks check``).

:func:`check_task` is a pure function of a spec and a :class:`tools.Model` returning a :class:`TaskCheck`
(pydantic): how the task's prompts tokenise, the clean and corrupt metric, their gap, how often the model
prefers the answer, how often the corruption flips that preference, and — when the task cannot support
an investigation — the reasons. It imports only ``evals`` and ``tools``, so the sandboxed kernel can run
it (the LLM task designer calls it there).

A task is **unusable** when any of these holds (thresholds measured on the zoo; see docs/TASKS.md):

1. fewer than ``min_prompts`` distinct valid prompts (or none: the task does not tokenise at all);
2. the clean − corrupt gap is below the noise floor: ``|gap| < max(GAP_SE × SE, GAP_REL × scale)``, where
   SE is the standard error of the per-prompt gaps and ``scale`` the mean |clean metric| per prompt —
   the corruption must move the metric clearly (not within sampling noise) and substantially;
3. accuracy is at chance: the fraction of prompts on which the model prefers the answer (per-prompt
   metric > 0) is not above chance (½ for an answer-vs-wrong metric; the most frequent answer's share
   for ``accuracy``) by ``ACC_Z`` binomial standard errors and by ``ACC_MARGIN``.

>>> from evals.tasks import load_task
>>> from evals.zoo import load_zoo_model
>>> r = check_task(load_task("toy-ioi"), load_zoo_model("toy-ioi"), n=32)
>>> r.usable, r.accuracy, r.flips
(True, 1.0, 1.0)
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from evals.tasks.errors import TaskSpecError, TokenizationError
from evals.tasks.generators import TokenizationIssue

GAP_SE = 3.0
"""The gap must exceed this many standard errors of the mean per-prompt gap."""
GAP_REL = 0.1
"""... and this fraction of the mean |clean metric| per prompt."""
ACC_Z = 2.33
"""Accuracy must exceed chance by this many binomial standard errors (one-sided p ≈ 0.01) ..."""
ACC_MARGIN = 0.1
"""... and by this much."""
MIN_PROMPTS = 16
"""Default minimum number of distinct valid prompts."""


class PromptExample(BaseModel):
    """One prompt pair as the model's tokenizer renders it, with the model's per-prompt metric."""

    model_config = ConfigDict(frozen=True)

    clean: str
    corrupt: str
    answer: str
    wrong: str
    clean_metric: float
    corrupt_metric: float


class TaskCheck(BaseModel):
    """The verdict of :func:`check_task`: numbers, tokenisation problems and, if unusable, why."""

    model_config = ConfigDict(frozen=True)

    task: str
    model: str
    metric: str
    prompts: int = 0
    """Prompts in the checked batch."""
    distinct_prompts: int = 0
    """Distinct clean prompts among them."""
    seq_len: int = 0
    clean: float | None = None
    """Mean task metric on the clean prompts."""
    corrupt: float | None = None
    """Mean task metric on the corrupt prompts."""
    gap: float | None = None
    """clean − corrupt."""
    gap_se: float | None = None
    """Standard error of the mean per-prompt gap."""
    scale: float | None = None
    """Mean |clean metric| per prompt."""
    noise_floor: float | None = None
    """``max(GAP_SE × gap_se, GAP_REL × scale)``: a smaller |gap| is noise."""
    accuracy: float | None = None
    """Fraction of prompts whose clean metric is > 0 (the model prefers the answer over the wrong token)."""
    chance: float | None = None
    """What ``accuracy`` an answer-blind model scores (½, or the most frequent answer's share)."""
    top1: float | None = None
    """Fraction of prompts whose top token at END is the answer."""
    flips: float | None = None
    """Fraction of prompts whose preference flips: clean metric > 0 and corrupt metric < 0."""
    issues: list[TokenizationIssue] = Field(default_factory=list)
    """Tokenisation problems (draws that fail and are redrawn, items left out...)."""
    examples: list[PromptExample] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list)
    """Why the task is unusable on this model; empty when usable."""

    @property
    def usable(self) -> bool:
        return not self.reasons


def _per_prompt(metric: Any, logits: torch.Tensor, batch: Any) -> torch.Tensor:
    return torch.stack([metric(logits[i:i + 1], batch[i:i + 1]).detach().float() for i in range(batch.size)])


def check_task(spec: Any, model: Any, n: int = 64, seed: int = 0, min_prompts: int = MIN_PROMPTS,
               examples: int = 3) -> TaskCheck:
    """Tokenise, run and judge ``spec`` on ``model`` (a :class:`tools.Model`); see the module docstring.

    Never raises for a task that does not tokenise: that is a reason in the result. ``n`` prompts are
    drawn with ``seed``.
    """
    tok = model.tokenizer
    base = dict(task=spec.name, model=str(getattr(model, "name", "") or ""), metric=spec.metric)
    issues = spec.generator.diagnose(tok, draws=max(200, 2 * n), seed=seed)
    try:
        batch = spec.make_batch(tok, n, seed)
    except (TokenizationError, TaskSpecError) as e:
        return TaskCheck(**base, issues=issues, reasons=[f"no prompts: {e}"])
    distinct = len({tuple(r) for r in batch.clean_ids.tolist()})
    metric = spec.metric_fn(tok)
    with torch.no_grad():
        clean_logits = model(batch.clean_ids)
        corrupt_logits = model(batch.corrupt_ids)
        mc = _per_prompt(metric, clean_logits, batch)
        mk = _per_prompt(metric, corrupt_logits, batch)
        top = clean_logits[torch.arange(batch.size), batch.end].argmax(-1).cpu()
    gaps = mc - mk
    b = batch.size
    se = float(gaps.std(unbiased=True) / math.sqrt(b)) if b > 1 else float("inf")
    gap = float(gaps.mean())
    scale = float(mc.abs().mean())
    floor = max(GAP_SE * se, GAP_REL * scale)
    acc = float((mc > 0).float().mean())
    answers = batch.answer_ids.tolist()
    chance = max(answers.count(a) for a in set(answers)) / b if spec.metric == "accuracy" else 0.5
    reasons = []
    if distinct < min_prompts:
        reasons.append(f"too few valid prompts: {distinct} distinct (need {min_prompts})")
    if not abs(gap) >= floor:
        reasons.append(f"the clean-corrupt gap {gap:.3g} is below the noise floor {floor:.3g} (SE {se:.2g}): the "
                       "corruption does not change what the metric measures")
    bar = chance + max(ACC_Z * math.sqrt(chance * (1 - chance) / b), ACC_MARGIN)
    if acc <= bar:
        reasons.append(f"accuracy {acc:.2f} is not above chance ({chance:.2f}; needs > {bar:.2f}): the model does "
                       "not do this task (or answer and wrong are the other way round)")
    ex = []
    for i in range(min(examples, b)):
        ex.append(PromptExample(
            clean=tok.decode(batch.clean_ids[i].tolist()), corrupt=tok.decode(batch.corrupt_ids[i].tolist()),
            answer=tok.decode([int(batch.answer_ids[i])]), wrong=tok.decode([int(batch.wrong_ids[i])]),
            clean_metric=float(mc[i]), corrupt_metric=float(mk[i])))
    return TaskCheck(**base, prompts=b, distinct_prompts=distinct, seq_len=batch.seq_len, clean=float(mc.mean()),
                     corrupt=float(mk.mean()), gap=gap, gap_se=se, scale=scale, noise_floor=floor, accuracy=acc, chance=chance,
                     top1=float((top == batch.answer_ids.cpu()).float().mean()),
                     flips=float(((mc > 0) & (mk < 0)).float().mean()), issues=issues, examples=ex, reasons=reasons)
