"""The prompts every planner gets: one system prompt, and one opening brief per component.

The brief starts with ``KEY: value`` header lines (``COMPONENT``, ``TASK``, ``ROLES``, ``METRIC``...)
that a human reads easily and the offline planner parses (:func:`parse_brief`).

>>> text = component_brief("L1H0", question="Which heads move IO?", task="toy-ioi", description="IOI",
...                        roles=["IO", "S1", "S2", "END"], metric="logit_diff", effect=0.42, others=["L0H1"],
...                        concluded={"L0H1": "previous token"})
>>> b = parse_brief(text)
>>> b["COMPONENT"], b["ROLES"], b["EFFECT"]
('L1H0', 'IO, S1, S2, END', '0.420')
"""

from __future__ import annotations

SYSTEM_PROMPT = """\
You are a careful mechanistic-interpretability researcher. You investigate ONE component of a \
language model at a time (an attention head L{layer}H{head}, an MLP{layer}, ...) on a task given as \
clean/corrupt prompt pairs with a metric (by default the logit difference answer - wrong at the END \
position). Find out what the component does for the task.

Method:
1. Measure: ablate, patch, logit_attribution (direct effect onto answer - wrong), attention (where a head \
looks from END, in task roles), head_scores (copying / previous-token / induction / duplicate-token).
2. Propose hypotheses with record_hypothesis (status "proposed"), each with a falsifiable prediction.
3. Test each prediction on the HELD-OUT prompts (prompts="heldout") or a fresh seed, then record the \
hypothesis again with the same hypothesis_id and status "supported" or "refuted", citing evidence seqs.
4. Conclude with conclude_component: a short role label (e.g. "name mover", "negative name mover", \
"S-inhibition", "induction", "previous token", "duplicate token", "no task effect"), an explanation in \
task terms with the numbers, a confidence 0-1, and the evidence seqs. The conclusion is checked against \
the log: every number must be a number of a result you cite (rounded as you like), named by what it is \
("mean-ablation effect 0.35 of the gap", "DLA 2.1", "induction score 0.62", "path patching L1H1:k 0.30 of the gap"); \
every cited seq must be a successful experiment on this component (or one you name); and the role must rest \
on a hypothesis you marked supported citing a held-out result. A conclusion that fails comes back once with \
what to fix.

Every experiment tool runs as a code cell in a sandboxed Jupyter kernel where `model`, `task`, \
`batches` ({"main", "heldout"}), `batch`, `metric`, `tools` and `Component` are defined; run_code runs \
your own cell (assign `_result = {...}` to get numbers back). Tool results are JSON with the log \
`seq` of the result: cite those seqs as evidence. Effects are also given as fractions of the clean - \
corrupt metric gap ("effect_frac"). Be economical: each turn costs budget.
"""


def component_brief(component: str, *, question: str, task: str, description: str, roles: list[str],
                    metric: str, effect: float | None = None, others: list[str] | None = None,
                    concluded: dict[str, str] | None = None, redundant: dict | None = None) -> str:
    """The first user message of a component's sub-loop.

    ``redundant``: the localisation's redundancy check for this component (``partners``, ``joint``,
    ``why``), written as ``REDUNDANT WITH: L0H1 (why)``.
    """
    lines = [
        f"COMPONENT: {component}",
        f"TASK: {task}",
        f"ROLES: {', '.join(roles)}",
        f"METRIC: {metric}",
    ]
    if effect is not None:
        lines.append(f"EFFECT: {effect:.3f}")
    if redundant and redundant.get("partners"):
        lines.append(f"REDUNDANT WITH: {', '.join(redundant['partners'])} ({redundant.get('why', '')})")
    lines += [
        f"QUESTION: {question}",
        f"TASK DESCRIPTION: {description or task}",
        f"OTHER COMPONENTS: {', '.join(others or []) or 'none'}",
        "ALREADY CONCLUDED: " + ("; ".join(f"{c} = {r}" for c, r in (concluded or {}).items()) or "none"),
        "",
        f"Investigate {component}: what does it do for this task? Run experiments, record and test "
        f"hypotheses on held-out prompts, then call conclude_component for {component}.",
    ]
    if effect is not None:
        lines.insert(-1, f"(EFFECT is {component}'s patching effect in the localisation sweep, as a fraction of "
                         "the clean - corrupt gap.)")
    if redundant and redundant.get("partners"):
        lines.insert(-1, f"({component} was kept by the redundancy check: alone it barely matters, but ablating it "
                         "together with its partner breaks the task; either alone suffices.)")
    return "\n".join(lines)


def parse_brief(text: str) -> dict[str, str]:
    """The ``KEY: value`` header lines of a brief (up to the first blank line)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break
        key, sep, value = line.partition(": ")
        if sep and key.isupper():
            out[key] = value.strip()
    return out


CLUSTER_SYSTEM_PROMPT = """\
You are a careful mechanistic-interpretability researcher. The components of a language model's circuit \
have each been investigated and given a role, in free text. Group them by function: components that do \
the same thing for the task go in one group even when their role labels are worded differently \
(e.g. "copies the IO name into the logits" and "Copies IO name into logits."); components with different \
functions go in different groups, however similar their labels look. Call group_components exactly once, \
with every component in exactly one group, a short role label as each group's name and an explanation of \
what the members share, in task terms.
"""


def cluster_brief(question: str, task: str, conclusions: dict[str, dict], explanation_chars: int = 600) -> str:
    """The clustering request: the question, then one block per concluded component (role, confidence and
    the explanation, cut to ``explanation_chars``).

    >>> print(cluster_brief("q?", "toy-ioi", {"L1H0": {"role": "name mover", "confidence": 0.8,
    ...                                                 "explanation": "writes IO"}}))
    QUESTION: q?
    TASK: toy-ioi
    <BLANKLINE>
    COMPONENT L1H0 (confidence 0.80): name mover
      writes IO
    <BLANKLINE>
    Group these 1 component(s) by function with group_components.
    """
    lines = [f"QUESTION: {question}", f"TASK: {task}", ""]
    for comp, c in conclusions.items():
        expl = " ".join(str(c.get("explanation", "")).split())
        if len(expl) > explanation_chars:
            expl = expl[: explanation_chars - 1] + "…"
        lines += [f"COMPONENT {comp} (confidence {float(c.get('confidence', 0.0)):.2f}): {c['role']}", f"  {expl}"]
    lines += ["", f"Group these {len(conclusions)} component(s) by function with group_components."]
    return "\n".join(lines)


def _rules(doc: str | None, start: str | None = None, values: dict[str, object] | None = None) -> str:
    """A module docstring's prose as plain text for a prompt: from ``start`` (if given) up to its doctest,
    reStructuredText roles and literals unwrapped (lines kept), and the names in ``values`` given their values.

    >>> _rules("Intro. A task is **bad** when :func:`f` gives ``N`` or less.\\n\\n>>> 1", "A task", {"N": 3})
    'A task is **bad** when f gives N (3) or less.'
    """
    import re

    text = (doc or "").split(">>>")[0]
    if start and start in text:
        text = text[text.index(start):]
    text = re.sub(r":[a-z]+:`~?(?:[\w.]+\.)?([^`.]+)`", r"\1", text).replace("``", "")
    for name, value in (values or {}).items():
        text = re.sub(rf"\b{name}\b", f"{name} ({value})", text)
    return text.strip()


def _design_system_prompt() -> str:
    from evals.tasks import check, generic

    return f"""\
You are a careful mechanistic-interpretability researcher. Before a question about a language model can be \
investigated, it must become a TASK: clean and corrupt prompt pairs, each clean prompt followed by an answer \
token and a wrong-answer token, such that the model's logit difference (answer - wrong) at the last token \
measures the behaviour the question is about, and the corruption changes exactly the information that \
behaviour uses (so the model's preference flips). Design that task for the model you are given.

Method:
1. Read the model's facts (its vocabulary, how the question's words tokenise). Use only words the model \
knows; every slot value that is a role, and every answer, must be ONE token. Call tokenize to check texts.
2. Call propose_task with a spec of the generic kind "template" or "pairs" (rules below). A malformed spec \
comes back as an error: fix it and propose again.
3. Call check_task: it runs the proposal on the model. If it is unusable, read the reasons and the numbers, \
change the spec (another corruption, other words or templates, answer and wrong the other way round) and \
propose again. The first proposal whose check passes becomes the run's task and the investigation goes on \
with it; you cannot change it afterwards.
You may call propose_task and check_task in the same turn. Be economical: each turn costs budget, and the \
design stops when its turns run out.

THE GENERIC TASK KINDS ({generic.__name__}; the examples are YAML, propose_task takes the same fields as JSON, \
its "generator" being the generator below):
{_rules(generic.__doc__)}

THE CHECK ({check.__name__}; it draws 64 prompts):
{_rules(check.__doc__, "A task is", {"min_prompts": check.MIN_PROMPTS, "GAP_SE": check.GAP_SE,
                                      "GAP_REL": check.GAP_REL, "ACC_Z": check.ACC_Z, "ACC_MARGIN": check.ACC_MARGIN})}
"""


DESIGN_SYSTEM_PROMPT = _design_system_prompt()
"""The task designer's system prompt: the method, the generic kinds' rules and the check's rules (from the
docstrings of :mod:`evals.tasks.generic` and :mod:`evals.tasks.check`, so they cannot drift apart)."""

DESIGN_REMINDER = ("You ended your turn without a tool call. Propose a task with propose_task and check it with "
                   "check_task (the first proposal whose check passes becomes the run's task).")
VOCAB_CHARS = 6000
"""The most characters of the vocabulary listed in the design brief."""


def design_brief(question: str, model: str, facts: dict | None, turns: int, problem: str | None = None) -> str:
    """The first user message of the task design: the question, the model's facts (from the facts cell's data,
    :class:`evals.tasks.design.ModelFacts`), and the budget.

    >>> print(design_brief("Which heads pick he or she?", "toy-pronoun", {"arch": "gpt2", "n_layers": 2,
    ...     "n_heads": 4, "d_model": 64, "vocab_size": 6, "tokenizer": "Fast", "bos": "<bos>",
    ...     "vocabulary": ["he", "she"], "words": [{"word": "she", "spaced": ["she"], "one_token": True}]}, 8))
    QUESTION: Which heads pick he or she?
    MODEL: toy-pronoun (gpt2, 2 layers x 4 heads, d_model 64; vocabulary of 6 tokens, tokenizer Fast, prompts start with <bos>)
    VOCABULARY (every token the model knows): he she
    QUESTION WORDS (tokens of ' word'): she → [she]
    TURNS: 8
    <BLANKLINE>
    Design a task for this question on this model: propose_task, then check_task; revise until the check passes.
    """
    lines = [f"QUESTION: {question}"]
    if facts:
        bos = f", prompts start with {facts['bos']}" if facts.get("bos") else ""
        lines.append(f"MODEL: {model} ({facts.get('arch')}, {facts.get('n_layers')} layers x {facts.get('n_heads')} "
                     f"heads, d_model {facts.get('d_model')}; vocabulary of {facts.get('vocab_size')} tokens, tokenizer "
                     f"{facts.get('tokenizer')}{bos})")
        vocab = facts.get("vocabulary")
        if vocab:
            listed = " ".join(str(v) for v in vocab)
            if len(listed) > VOCAB_CHARS:
                listed = listed[:VOCAB_CHARS].rsplit(" ", 1)[0] + " … (more: use tokenize)"
            lines.append(f"VOCABULARY (every token the model knows): {listed}")
        else:
            lines.append("VOCABULARY: too large to list; use tokenize to check words")
        words = []
        for w in facts.get("words") or []:
            toks = "[" + ", ".join(str(t) for t in w.get("spaced") or []) + "]"
            words.append(f"{w.get('word')} → {toks}" + ("" if w.get("one_token") else " (not one known token)"))
        if words:
            lines.append("QUESTION WORDS (tokens of ' word'): " + "; ".join(words))
    else:
        lines.append(f"MODEL: {model} (its facts are unavailable: {problem or 'the facts cell failed'}; use tokenize)")
    lines += [f"TURNS: {turns}", "",
              "Design a task for this question on this model: propose_task, then check_task; revise until the "
              "check passes."]
    return "\n".join(lines)
