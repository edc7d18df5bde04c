"""Question → task: map a researcher's question to a task spec and a model.

The offline framing is keyword matching, documented so a user can predict it:

1. ``--task NAME_OR_PATH`` given: that task, no matching (a spec file, e.g. one of the generic kinds
   ``template``/``pairs``, is recorded by its absolute path and embedded in the kernel's setup).
2. Otherwise each task scores the number of its ``question_keywords`` found in the lower-cased
   question (whole words or phrases). Tasks scoring 0 are out.
3. Among the best-scoring tasks, one defined for the given ``--model`` wins; without ``--model``, one
   whose model is in the zoo (so it runs offline) wins; then the first by name.
4. No task scores: :class:`NoMatchingTask` (a :class:`FramingError`) lists the tasks and says how to pass
   ``--task``. With the ``claude`` planner the run designs a task instead (:mod:`agent.graph.design`):
   Claude proposes a spec of a generic kind and revises it until ``tasks check`` passes on the model.

With no ``--model``, the model is the task's own (``TaskSpec.model``: a zoo model for the toy tasks).

>>> class T:  # a stand-in for evals.tasks.TaskSpec
...     def __init__(self, name, model, kw): self.name, self.model, self.question_keywords = name, model, kw
...     description, metric, roles = "", "logit_diff", ["END"]
>>> tasks = [T("ioi", "gpt2", ["ioi", "indirect object"]), T("toy-ioi", "toy-ioi", ["ioi", "indirect object", "toy"])]
>>> frame_question("Which heads move the indirect object's name in IOI?", tasks=tasks, zoo={"toy-ioi"}).task
'toy-ioi'
>>> frame_question("Which heads move the indirect object in IOI?", model="gpt2", tasks=tasks, zoo={"toy-ioi"}).task
'ioi'
>>> try:
...     frame_question("what is 2+2?", tasks=tasks, zoo=set())
... except FramingError as e:
...     print(str(e)[:60])
cannot map the question to a task (known tasks: ioi, toy-ioi
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from tools.errors import InterpAgentError


class FramingError(InterpAgentError):
    """A question the offline framing cannot map to a task, or an unknown task/model."""


class NoMatchingTask(FramingError):
    """No task's keywords are in the question (the ``claude`` planner then designs one)."""


class Framing(BaseModel):
    """The result of framing a question."""

    model_config = ConfigDict(frozen=True)

    task: str
    """Task spec name (or the path given with ``--task``)."""
    model: str
    """Model to investigate: ``--model`` or the task's default (a zoo name for toy tasks)."""
    matched: list[str] = []
    """Keywords of the question that selected the task (empty when ``--task`` was given)."""
    description: str = ""
    metric: str = "logit_diff"
    roles: list[str] = []
    design: bool = False
    """The task is designed by the LLM planner inside the run (``task`` is empty until it is accepted)."""


def _hits(question: str, keywords: Sequence[str]) -> list[str]:
    q = question.lower()
    out = []
    for kw in keywords:
        k = kw.lower().strip()
        if k and re.search(r"(?<![a-z0-9])" + re.escape(k) + r"(?![a-z0-9])", q):
            out.append(kw)
    return out


def _load_tasks() -> list[Any]:
    from evals.tasks import list_tasks

    return list(list_tasks())


def _zoo_names() -> set[str]:
    try:
        from evals.zoo import list_zoo
    except ImportError:
        return set()
    return {e.name for e in list_zoo()}


def frame_question(question: str, task: str | None = None, model: str | None = None,
                   tasks: Sequence[Any] | None = None, zoo: set[str] | None = None) -> Framing:
    """Frame ``question`` as a task (and model). ``tasks``/``zoo`` default to ``evals``' registries."""
    if not question or not question.strip():
        raise FramingError("the question is empty", fix='ask one, e.g. interp-agent investigate "which heads ..."')
    if task is not None:
        spec = _load_task(task)
        # a spec file is recorded by its absolute path, so a run resumed from another directory finds it
        ref = str(Path(task).resolve()) if Path(task).suffix in (".yaml", ".yml", ".json") else task
        return _framing(spec, model, [], ref=ref)
    tasks = _load_tasks() if tasks is None else list(tasks)
    zoo = _zoo_names() if zoo is None else zoo
    scored = [(len(h), t, h) for t in tasks if (h := _hits(question, getattr(t, "question_keywords", []) or []))]
    if not scored:
        names = ", ".join(sorted(t.name for t in tasks)) or "none installed"
        raise NoMatchingTask(f"cannot map the question to a task (known tasks: {names})",
                             fix="name one with --task NAME, pass a task spec file with --task PATH, or let Claude "
                                 "design one (--planner claude)")
    best = max(s for s, _, _ in scored)
    top = sorted([(t, h) for s, t, h in scored if s == best], key=lambda th: th[0].name)
    if model is not None:
        pick = next(((t, h) for t, h in top if t.model == model), None)
    else:
        pick = next(((t, h) for t, h in top if t.model in zoo), None)
    spec, hits = pick or top[0]
    return _framing(spec, model, hits)


def design_framing(question: str, model: str | None, matched: Framing | None = None) -> Framing:
    """The framing of a run whose task the LLM planner designs: the model is ``--model``, else the model of the
    task the keywords matched (``matched``); with neither, :class:`FramingError` (the designer needs a model).

    >>> design_framing("q?", "toy-pronoun").model_dump(include={"task", "model", "design"})
    {'task': '', 'model': 'toy-pronoun', 'design': True}
    """
    if not question or not question.strip():
        raise FramingError("the question is empty", fix='ask one, e.g. interp-agent investigate "which heads ..."')
    model = model or (matched.model if matched is not None else None)
    if not model:
        raise FramingError("task design needs the model the task is for",
                           fix="pass --model NAME (interp-agent zoo list shows the offline ones)")
    return Framing(task="", model=model, design=True)


def _load_task(name: str) -> Any:
    from evals.tasks import load_task

    return load_task(name)


def _framing(spec: Any, model: str | None, hits: list[str], ref: str | None = None) -> Framing:
    return Framing(task=ref or spec.name, model=model or spec.model, matched=hits,
                   description=getattr(spec, "description", "") or "",
                   metric=getattr(spec, "metric", "logit_diff") or "logit_diff",
                   roles=list(getattr(spec, "roles", []) or []))
