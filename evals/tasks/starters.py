"""Commented starter files for the generic task kinds (``interp-agent tasks new NAME --kind template|pairs``).

Each starter is a complete, valid spec for the ``toy-pronoun`` zoo model, so ``interp-agent tasks check``
runs on it as written; the comments say what to change for another behaviour or model.

>>> from evals.tasks.spec import spec_from_yaml
>>> spec_from_yaml(starter("my-task", "template")).generator.kind
'template'
>>> spec_from_yaml(starter("my-task", "pairs")).roles
['S', 'END']
"""

from __future__ import annotations

from typing import Literal

Kind = Literal["template", "pairs"]

_HEADER = """\
# Task spec: {name}. Check it against a model before investigating:
#   interp-agent tasks check {path} --model {model}
# Then: interp-agent investigate "your question" --task {path} --model {model}
name: {name}
description: >-
  What behaviour this task isolates, in a sentence or two (shown in reports).
# The model it is defined for: a zoo name (interp-agent zoo list) or a Hugging Face id / local path.
model: {model}
# logit_diff = logit(answer) - logit(wrong) at the last token (END); or accuracy.
metric: logit_diff
# Words that map a researcher's question to this task (keyword framing).
question_keywords: [{name}]
"""

_TEMPLATE = """\
generator:
  kind: template
  # Prompt texts; {SLOT} is filled per prompt, {SLOT.group} is the label of the group it was drawn from.
  # The prompt ends where the answer is predicted. Prompts in one batch must have the same token count.
  templates:
    - "{S} {VERB} {O} at the {PLACE} and then"
    - "at the {PLACE} {S} {VERB} {O} and then"
  # Fillers per slot: a list, or group label -> list (then answer/wrong can use {SLOT.group}/{SLOT.other}).
  # Values within one prompt are distinct. A slot named in `positions` must be one token for the model.
  slots:
    S:
      he: [John, Tom, Paul, Mark]
      she: [Mary, Anna, Emma, Lucy]
    O: [Jack, Dan, Sara, Rose]
    VERB: [saw, met, called]
    PLACE: [store, garden, park]
  # The next token after the prompt, and the contrasting one: literal text, {SLOT}, {SLOT.group}, or
  # {SLOT.other} (another group of SLOT: the one the corruption re-draws from). Each must be one token.
  answer: "{S.group}"
  wrong: "{S.other}"
  # Text between the prompt and the answer token (GPT-2 tokens carry a leading space).
  answer_prefix: " "
  # The corrupt prompt: re-draw slots (S: every occurrence; S#2: the second one only; grouped slots are
  # re-drawn from the other group) and/or swap pairs of slots, e.g. swap: [[S, O]].
  corruption:
    redraw: [S]
  # Named positions (the task's roles): role -> SLOT (its first occurrence), SLOT#k, or SLOT.group.
  # Leave it out to name every {SLOT} occurrence (S, or S1/S2 when it repeats). END is always added.
  positions: {S: S, O: O}
"""

_PAIRS = """\
generator:
  kind: pairs
  # Explicit prompt pairs. clean and corrupt must tokenise to the same length (per-position patching);
  # answer and wrong must each be one token after the prompt (answer_prefix is put before them).
  # positions names a role by a word of the clean prompt ("word", or "word#2" for its second occurrence);
  # every item names the same roles. Batches use the items of the most common token length.
  answer_prefix: " "
  items:
    - {clean: "Lucy helped Sam at the park and then", corrupt: "Paul helped Sam at the park and then",
       answer: she, wrong: he, positions: {S: Lucy}}
    - {clean: "John met Dan at the store and then", corrupt: "Kate met Dan at the store and then",
       answer: he, wrong: she, positions: {S: John}}
    - {clean: "at the store Kate met Sam and then", corrupt: "at the store Mike met Sam and then",
       answer: she, wrong: he, positions: {S: Kate}}
    - {clean: "at the park Paul saw Sara and then", corrupt: "at the park Jane saw Sara and then",
       answer: he, wrong: she, positions: {S: Paul}}
    - {clean: "Emma saw Dan at the garden and then", corrupt: "John saw Dan at the garden and then",
       answer: she, wrong: he, positions: {S: Emma}}
    - {clean: "Mike helped Sara at the school and then", corrupt: "Jane helped Sara at the school and then",
       answer: he, wrong: she, positions: {S: Mike}}
    - {clean: "at the park Kate saw Sam and then", corrupt: "at the park Paul saw Sam and then",
       answer: she, wrong: he, positions: {S: Kate}}
    - {clean: "at the school Paul called Jack and then", corrupt: "at the school Kate called Jack and then",
       answer: he, wrong: she, positions: {S: Paul}}
    - {clean: "Sara helped Anna at the garden and then", corrupt: "Sam helped Anna at the garden and then",
       answer: she, wrong: he, positions: {S: Sara}}
    - {clean: "Sam saw Dan at the garden and then", corrupt: "Lucy saw Dan at the garden and then",
       answer: he, wrong: she, positions: {S: Sam}}
    - {clean: "at the store Emma saw Anna and then", corrupt: "at the store Dan saw Anna and then",
       answer: she, wrong: he, positions: {S: Emma}}
    - {clean: "at the school Jack saw Tom and then", corrupt: "at the school Sara saw Tom and then",
       answer: he, wrong: she, positions: {S: Jack}}
    - {clean: "Kate saw Sam at the school and then", corrupt: "Tom saw Sam at the school and then",
       answer: she, wrong: he, positions: {S: Kate}}
    - {clean: "Paul helped Dan at the school and then", corrupt: "Mary helped Dan at the school and then",
       answer: he, wrong: she, positions: {S: Paul}}
    - {clean: "at the school Anna saw Lucy and then", corrupt: "at the school John saw Lucy and then",
       answer: she, wrong: he, positions: {S: Anna}}
    - {clean: "at the park Dan met Anna and then", corrupt: "at the park Sara met Anna and then",
       answer: he, wrong: she, positions: {S: Dan}}
"""


def starter(name: str, kind: Kind, model: str = "toy-pronoun", path: str | None = None) -> str:
    """The commented starter spec text for ``kind`` (valid YAML; a valid spec as written)."""
    head = _HEADER.format(name=name, model=model, path=path or f"{name}.yaml")
    return head + (_TEMPLATE if kind == "template" else _PAIRS)
