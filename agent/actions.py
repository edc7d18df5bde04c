"""The planner's tools: pydantic input schemas, the same for every planner (claude, offline, replay).

Every experiment tool becomes a **code cell** that makes ONE call into :mod:`tools.experiments` in the
sandbox kernel and assigns its typed result to ``_result``, so each experiment is reproducible code in
the log, its algorithm is a linted, unit-tested function, and its numbers come back as JSON
(``ExecutionResult.data``) that :func:`parse_result` reads with the same pydantic model. The kernel's
names (``model``, ``batches``, ``metric``...) are defined by :func:`agent.kernel.setup_cells`.

Non-experiment tools (``record_hypothesis``, ``conclude_component``, ``finish``) run no code; the loop
turns them into ``hypothesis`` / ``conclusion`` events.

>>> print(Ablate(components=["L1H2"], method="mean").to_code())
# ablate L1H2 (mean) on the main prompts
_result = tools.experiments.ablation(model, batches['main'], metric, ['L1H2'], method='mean').model_dump(mode='json')
>>> sorted(TOOLS)[:3]
['ablate', 'attention', 'attribution_sweep']
>>> parse_result("ablate", {"components": ["L1H2"], "clean": 2.0, "gap": 4.0, "ablated": 1.0, "effect": 1.0}).effect
1.0
>>> RecordHypothesis(component="L1H2", statement="moves the IO name", status="proposed").status
'proposed'
"""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from evals.tasks.generic import PairsGenerator, TemplateGenerator
from tools import experiments as X
from tools.components import HEAD_PATTERN, PATTERN, Component, Kind, parse_components

PromptSet = Literal["main", "heldout"]


def _check_components(v: list[str]) -> list[str]:
    return [str(c) for c in parse_components(v)]


def _check_component(v: str) -> str:
    return str(Component.parse(v))


def _check_head(v: str) -> str:
    c = Component.parse(v)
    if c.kind is not Kind.HEAD:
        raise ValueError(f"{c} is not an attention head (L{{layer}}H{{head}}, e.g. L1H2)")
    return str(c)


ComponentName = Annotated[str, AfterValidator(_check_component), Field(json_schema_extra={"pattern": PATTERN})]
"""A component name in the project grammar (``L1H2``, ``MLP0``...), normalised; its JSON schema has the pattern."""
ComponentList = Annotated[list[ComponentName], AfterValidator(_check_components)]
"""Component names, duplicates dropped."""
HeadName = Annotated[str, AfterValidator(_check_head), Field(json_schema_extra={"pattern": HEAD_PATTERN})]
"""An attention head's name (``L1H2``)."""
HeadList = Annotated[list[HeadName], AfterValidator(_check_components)]
COMPONENT_CHECKS = (_check_component, _check_components, _check_head)


class _Tool(BaseModel):
    model_config = ConfigDict(extra="forbid")

    result: ClassVar[type[BaseModel] | None] = None
    """The result model of the tool's cell (None: the tool runs no code, or returns free-form data)."""

    def to_code(self) -> str | None:
        """The cell this tool runs, or ``None`` for tools that run no code."""
        return None

    def components_named(self) -> list[str]:
        """Every component the input names (fields typed :data:`ComponentName`, :data:`HeadName` or lists of them).

        >>> PathPatch(sender="L0H1", receivers=["L1H0", "MLP1"]).components_named()
        ['L0H1', 'L1H0', 'MLP1']
        """
        out: list[str] = []
        for name, f in type(self).model_fields.items():
            checks = [m for m in f.metadata if isinstance(m, AfterValidator) and m.func in COMPONENT_CHECKS]
            value = getattr(self, name)
            if checks and value is not None:
                out += [value] if isinstance(value, str) else list(value)
        return out


def _args(*args: Any, **kwargs: Any) -> str:
    return ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])


class _Experiment(_Tool):
    """A tool whose cell is one ``tools.experiments`` call (:attr:`function`) and ``_result = r.model_dump()``."""

    function: ClassVar[str]

    def comment(self) -> str:  # pragma: no cover - overridden
        return self.function

    def arguments(self) -> str:  # pragma: no cover - overridden
        """The call's arguments after ``model``, as Python source."""
        return ""

    def to_code(self) -> str:
        return (f"# {self.comment()}\n_result = tools.experiments.{self.function}(model, {self.arguments()})"
                ".model_dump(mode='json')")


def _batch(prompts: str) -> str:
    return f"batches[{prompts!r}], metric"


class _Raw(str):
    """Source text inserted into a call as is (``batches['main'], metric``)."""

    def __repr__(self) -> str:
        return str(self)


class RunCode(_Tool):
    """Run arbitrary Python in the sandbox kernel. Assign ``_result = {...}`` to return JSON numbers."""

    code: str = Field(min_length=1, description="Python source for one cell; assign _result to return data.")
    purpose: str | None = Field(None, description="One line: what this cell tests.")

    def to_code(self) -> str:
        return self.code if not self.purpose else f"# {self.purpose}\n{self.code}"


class Ablate(_Experiment):
    """Ablate components and measure the task metric (effect = clean − ablated, and as a fraction of the gap)."""

    function: ClassVar[str] = "ablation"
    result: ClassVar[type[BaseModel]] = X.AblationResult
    components: ComponentList = Field(min_length=1, description="Components, e.g. ['L1H2', 'MLP0'].")
    method: Literal["mean", "zero", "resample"] = "mean"
    prompts: PromptSet = "main"

    def comment(self) -> str:
        return f"ablate {','.join(self.components)} ({self.method}) on the {self.prompts} prompts"

    def arguments(self) -> str:
        return _args(_Raw(_batch(self.prompts)), self.components, method=self.method)


class Patch(_Experiment):
    """Activation patching: copy components' outputs between clean and corrupt runs; report recovered fraction."""

    function: ClassVar[str] = "patching"
    result: ClassVar[type[BaseModel]] = X.PatchingResult
    components: ComponentList = Field(min_length=1)
    positions: list[str] | None = Field(None, description="Named roles (IO, S1, S2, END) or integer positions; all if omitted.")
    direction: Literal["clean_to_corrupt", "corrupt_to_clean"] = "clean_to_corrupt"
    prompts: PromptSet = "main"

    def comment(self) -> str:
        return f"patch {','.join(self.components)} {self.direction} on the {self.prompts} prompts"

    def arguments(self) -> str:
        return _args(_Raw(_batch(self.prompts)), self.components, positions=self.positions, direction=self.direction)


class PathPatch(_Experiment):
    """Path patching (IOI-paper method): the sender's corrupt output, only through the receivers' input."""

    function: ClassVar[str] = "path_patching"
    result: ClassVar[type[BaseModel]] = X.PathPatchingResult
    sender: ComponentName
    receivers: ComponentList = Field(min_length=1)
    receiver_input: Literal["q", "k", "v", "resid"] = "resid"
    prompts: PromptSet = "main"

    def comment(self) -> str:
        return f"path patch {self.sender} -> {','.join(self.receivers)} ({self.receiver_input})"

    def arguments(self) -> str:
        return _args(_Raw(_batch(self.prompts)), self.sender, self.receivers, receiver_input=self.receiver_input)


class AttributionSweep(_Experiment):
    """Effect of patching each component (exact sweep or its gradient approximation), as fractions of the gap."""

    function: ClassVar[str] = "sweep"
    result: ClassVar[type[BaseModel]] = X.SweepResult
    kind: Literal["heads", "mlps", "all"] = "all"
    method: Literal["exact", "attribution"] = "exact"
    top_k: int = Field(20, ge=1, le=500)
    prompts: PromptSet = "main"
    zero_ablation: bool = Field(False, description="Also zero-ablate each component (one forward each) and report "
                                                  "'ablation_frac': catches features constant across prompts.")
    ablation_method: Literal["exact", "attribution"] = Field(
        "exact", description="How the zero ablation is measured: exactly, or by its gradient estimate.")
    components: ComponentList | None = Field(None, description="Sweep only these components (default: all of kind).")

    def comment(self) -> str:
        what = f"{len(self.components)} components" if self.components is not None else self.kind
        return f"{self.method} patching sweep over {what} on the {self.prompts} prompts"

    def arguments(self) -> str:
        extra: dict[str, Any] = {}
        if self.components is not None:
            extra["components"] = self.components
        if self.ablation_method != "exact":
            extra["ablation_method"] = self.ablation_method
        return _args(_Raw(_batch(self.prompts)), kind=self.kind, method=self.method, top_k=self.top_k,
                     zero_ablation=self.zero_ablation, **extra)


class RedundancyCheck(_Experiment):
    """Find redundant heads: ablate each layer's heads together (minus ``exclude``) and, where that joint
    effect far exceeds the members' single effects, every pair inside; reports the pairs that matter jointly
    (:func:`tools.experiments.redundancy`)."""

    function: ClassVar[str] = "redundancy"
    result: ClassVar[type[BaseModel]] = X.RedundancyResult
    exclude: ComponentList = Field(default_factory=list, description="Components already kept (left out of groups).")
    threshold: float = Field(0.10, ge=0, description="A pair is kept when its joint effect >= this fraction of the gap")
    synergy: float = Field(2.0, ge=1, description="... and >= synergy x the sum of its members' |single effects|.")
    method: Literal["mean", "zero"] = "mean"
    max_groups: int | None = Field(None, ge=0, description="Examine at most this many layers' groups (those whose "
                                                          "joint effect reaches the threshold, largest first).")
    max_candidates: int | None = Field(None, ge=2, description="Test pairs among at most this many heads of a "
                                                              "flagged group (those restoring most of it).")
    layers: list[int] | None = Field(None, description="Only these layers' groups (default: every layer).")
    prompts: PromptSet = "main"

    def comment(self) -> str:
        return (f"redundancy check ({self.method} ablation) of each layer's heads, excluding "
                f"{','.join(self.exclude) or 'none'}, on the {self.prompts} prompts")

    def arguments(self) -> str:
        extra = {k: v for k, v in (("max_groups", self.max_groups), ("max_candidates", self.max_candidates),
                                   ("layers", self.layers)) if v is not None}
        return _args(_Raw(_batch(self.prompts)), exclude=self.exclude, threshold=self.threshold,
                     synergy=self.synergy, method=self.method, **extra)


class Attention(_Experiment):
    """Where a head attends from the scored position, in task terms (fraction on IO, S1, S2, previous token, BOS...)."""

    function: ClassVar[str] = "attention"
    result: ClassVar[type[BaseModel]] = X.AttentionResult
    head: HeadName
    prompts: PromptSet = "main"

    def comment(self) -> str:
        return f"attention summary of {self.head} on the {self.prompts} prompts"

    def arguments(self) -> str:
        return _args(_Raw(f"batches[{self.prompts!r}]"), self.head)


class LogitAttribution(_Experiment):
    """Direct logit attribution of components onto the answer − wrong direction (logit lens of their outputs)."""

    function: ClassVar[str] = "logit_attribution"
    result: ClassVar[type[BaseModel]] = X.DLAResult
    components: ComponentList = Field(min_length=1)
    prompts: PromptSet = "main"

    def comment(self) -> str:
        return f"direct logit attribution of {','.join(self.components)} on the {self.prompts} prompts"

    def arguments(self) -> str:
        return _args(_Raw(_batch(self.prompts)), self.components)


class HeadScores(_Experiment):
    """OV copying, previous-token, induction and duplicate-token scores of heads (weights + random sequences),
    plus a look-back scan (attention from t to t−k, best k in 1..4)."""

    function: ClassVar[str] = "head_profile"
    result: ClassVar[type[BaseModel]] = X.HeadProfileResult
    heads: HeadList = Field(min_length=1)
    seed: int = 0

    def comment(self) -> str:
        return f"head scores of {','.join(self.heads)} (seed {self.seed})"

    def arguments(self) -> str:
        return _args(self.heads, seed=self.seed)


class Probe(_Experiment):
    """Train a linear probe at a site and position for the answer token; held-out accuracy."""

    function: ClassVar[str] = "probing"
    result: ClassVar[type[BaseModel]] = X.ProbingResult
    site: ComponentName = Field(description="A component, e.g. resid_post1 or L1H2.")
    position: str = "END"
    prompts: PromptSet = "main"
    seed: int = 0

    def comment(self) -> str:
        return f"probe the answer at {self.site}, position {self.position}"

    def arguments(self) -> str:
        return _args(_Raw(f"batches[{self.prompts!r}]"), self.site, position=self.position, seed=self.seed)


class Steer(_Experiment):
    """Add ``alpha`` × (clean − corrupt mean activation) at a site on corrupt prompts; report the metric change."""

    function: ClassVar[str] = "steering"
    result: ClassVar[type[BaseModel]] = X.SteeringResult
    site: ComponentName
    alpha: float = 1.0
    prompts: PromptSet = "main"

    def comment(self) -> str:
        return f"steer {self.site} by {self.alpha} x (clean - corrupt) on the {self.prompts} prompts"

    def arguments(self) -> str:
        return _args(_Raw(_batch(self.prompts)), self.site, alpha=self.alpha)


class RecordHypothesis(_Tool):
    """Record (or update) a hypothesis about a component and its status."""

    component: ComponentName
    statement: str = Field(min_length=1)
    status: Literal["proposed", "supported", "refuted", "inconclusive"] = "proposed"
    evidence: list[int] = Field(default_factory=list, description="seq numbers of log events supporting this.")
    prediction: str | None = Field(None, description="A testable prediction, e.g. on held-out prompts.")
    hypothesis_id: str | None = Field(None, description="Reuse an id to update an earlier hypothesis.")


class ConcludeComponent(_Tool):
    """Conclude the current component: its role (a short label), an explanation, confidence 0-1, evidence seqs."""

    component: ComponentName
    role: str = Field(min_length=1, max_length=80)
    explanation: str = Field(min_length=1)
    confidence: float = Field(ge=0, le=1)
    evidence: list[int] = Field(default_factory=list)


class Finish(_Tool):
    """End the investigation of the current component without a conclusion (e.g. nothing more to learn)."""

    summary: str = ""


class Cluster(BaseModel):
    """One group of components that do the same thing for the task."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=80, description="A short role label for the group, e.g. 'name mover'.")
    components: ComponentList = Field(min_length=1, description="The group's members, e.g. ['L9H9', 'L9H6'].")
    explanation: str = Field(min_length=1, max_length=2000,
                             description="What the members have in common, in task terms, with the evidence.")


class GroupComponents(_Tool):
    """Group the concluded components by what they do for the task: components whose roles are the same
    function (even when their labels are worded differently) go in one group, components with different
    functions in different groups. Every component goes in exactly one group."""

    clusters: list[Cluster] = Field(min_length=1)

    def problems(self, members: list[str]) -> list[str]:
        """What makes this grouping unusable for ``members`` (empty: usable).

        >>> GroupComponents(clusters=[Cluster(name="a", components=["L1H0"], explanation="x")]).problems(
        ...     ["L1H0", "L0H1"])
        ['L0H1 is in no group']
        """
        out: list[str] = []
        seen: dict[str, str] = {}
        names: set[str] = set()
        for cl in self.clusters:
            if cl.name.strip().lower() in names:
                out.append(f"two groups are named {cl.name!r}: give each group its own name")
            names.add(cl.name.strip().lower())
            for c in cl.components:
                if c not in members:
                    out.append(f"{c} is not one of the concluded components ({', '.join(members)})")
                elif c in seen:
                    out.append(f"{c} is in two groups ({seen[c]!r} and {cl.name!r})")
                seen.setdefault(c, cl.name)
        out += [f"{c} is in no group" for c in members if c not in seen]
        return out


CLUSTER_TOOL = "group_components"
"""The one tool of the clustering call (not a component tool: it is not in :data:`TOOLS`)."""


# ------------------------------------------------------------------------------------- task design (framing)

DesignGenerator = Annotated[TemplateGenerator | PairsGenerator, Field(discriminator="kind")]
"""The generic kinds a designed task may use (:mod:`evals.tasks.generic`)."""
DESIGN_CHECK_PROMPTS = 64
"""Prompts ``check_task`` draws for a proposal (the count its thresholds were validated at, docs/TASKS.md)."""
MAX_SPEC_CHARS = 60_000
"""Largest proposal (its spec as JSON) the designer may send."""


class ProposeTask(_Tool):
    """Propose the task as a spec of one of the two generic kinds: template (prompts made from text templates
    with named slots, the answer and the wrong answer given as slot values, group labels or literal words, and a
    corruption that re-draws or swaps slots) or pairs (an explicit list of clean and corrupt prompts with their
    answer and wrong answer). The spec is validated at once and numbered; a malformed one comes back as an error
    saying what to fix. Then call check_task to run it on the model. The metric is the logit difference between
    the answer and the wrong answer at the last token."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="A short name: lower case, digits, dashes.")
    description: str = Field(min_length=1, max_length=600, description="One or two sentences: the behaviour.")
    generator: DesignGenerator
    question_keywords: list[str] = Field(default_factory=list, max_length=20)
    notes: str = Field("", max_length=2000, description="Anything a reader of the spec should know.")

    def spec(self, model: str) -> dict[str, Any]:
        """The task spec (:class:`evals.tasks.TaskSpec` fields) for ``model``; roles come from the generator."""
        return {"name": self.name, "description": self.description, "model": model, "metric": "logit_diff",
                "question_keywords": list(self.question_keywords), "generator": self.generator.model_dump(mode="json"),
                "notes": self.notes}


class CheckTask(_Tool):
    """Run the usability check on a proposed task (interp-agent tasks check, in the sandbox): it draws 64 prompts,
    runs the clean and the corrupt ones on the model and reports the clean and corrupt logit difference, their
    gap with its noise floor, accuracy against chance, how often the corruption flips the model's preference,
    tokenisation problems and example prompts. The first proposal whose check passes is the run's task and the
    design ends; otherwise the reasons say what to change."""

    proposal: int | None = Field(None, ge=1, description="The proposal's number (default: the latest valid one).")

    @staticmethod
    def code(spec_json: str, proposal: int, seed: int) -> str:
        """The cell: one call to :func:`evals.tasks.design.check_proposal` with the spec embedded."""
        return (f"# check proposal {proposal}\n_result = evals.tasks.design.check_proposal(model, {spec_json!r}, "
                f"n={DESIGN_CHECK_PROMPTS}, seed={seed}).model_dump(mode='json')")


class Tokenize(_Tool):
    """Tokenize texts with the model's own tokenizer: the tokens and ids of each, and how many are the unknown
    token (words the model cannot read). Slot values, role words and answers must be one token each."""

    texts: list[Annotated[str, Field(max_length=1000)]] = Field(min_length=1, max_length=50)

    def to_code(self) -> str:
        return (f"# tokenize {len(self.texts)} text(s)\n_result = evals.tasks.design.tokenize(model, {self.texts!r})"
                ".model_dump(mode='json')")


def facts_code(words: list[str]) -> str:
    """The cell that opens a task design: the model's facts and how the question's words tokenise.

    >>> print(facts_code(["he", "she"]))
    # the model's facts for the task designer
    _result = evals.tasks.design.model_facts(model, ['he', 'she']).model_dump(mode='json')
    """
    return ("# the model's facts for the task designer\n"
            f"_result = evals.tasks.design.model_facts(model, {list(words)!r}).model_dump(mode='json')")


DESIGN_TOOLS: dict[str, type[_Tool]] = {"propose_task": ProposeTask, "check_task": CheckTask, "tokenize": Tokenize}
"""The task designer's tools (name → input model); the framing loop handles them (:mod:`agent.graph.design`)."""

TOOLS: dict[str, type[_Tool]] = {
    "run_code": RunCode,
    "ablate": Ablate,
    "patch": Patch,
    "path_patch": PathPatch,
    "attribution_sweep": AttributionSweep,
    "redundancy_check": RedundancyCheck,
    "attention": Attention,
    "logit_attribution": LogitAttribution,
    "head_scores": HeadScores,
    "probe": Probe,
    "steer": Steer,
    "record_hypothesis": RecordHypothesis,
    "conclude_component": ConcludeComponent,
    "finish": Finish,
}
"""Tool name → input model. The names are what every planner emits in ``tool_use`` blocks."""

EXPERIMENT_TOOLS = frozenset(n for n, t in TOOLS.items() if t is RunCode or issubclass(t, _Experiment))
"""Tools that run a code cell in the sandbox."""


def describe(model: type[BaseModel]) -> str:
    """A tool's description for the model: its whole docstring as plain text (no reStructuredText markup).

    >>> describe(RedundancyCheck).endswith("(tools.experiments.redundancy).")
    True
    """
    from agent.llm.text import plain

    return plain(model.__doc__ or model.__name__)


def tool_specs() -> list:
    """The :class:`agent.llm.ToolSpec` list sent to every planner (built from the models above)."""
    from agent.llm import ToolSpec

    return [ToolSpec.from_model(name, describe(model), model) for name, model in TOOLS.items()]


def design_specs() -> list:
    """The :class:`agent.llm.ToolSpec` list of the task designer (:data:`DESIGN_TOOLS`)."""
    from agent.llm import ToolSpec

    return [ToolSpec.from_model(name, describe(model), model) for name, model in DESIGN_TOOLS.items()]


def cluster_spec() -> Any:
    """The :class:`agent.llm.ToolSpec` of :data:`CLUSTER_TOOL`."""
    from agent.llm import ToolSpec

    return ToolSpec.from_model(CLUSTER_TOOL, describe(GroupComponents), GroupComponents)


def input_schema(name: str) -> dict:
    """JSON schema of a tool's input (what a planner must send).

    >>> input_schema("ablate")["required"]
    ['components']
    """
    return TOOLS[name].model_json_schema()


def parse_result(tool: str, data: Any) -> BaseModel | None:
    """A logged cell's ``data`` as its tool's result model; None for tools without one or for data that does
    not validate (kernel output is untrusted: a malformed result is never an exception here)."""
    model = getattr(TOOLS.get(tool), "result", None)
    if model is None or not isinstance(data, dict):
        return None
    try:
        return model.model_validate(data)
    except ValidationError:
        return None


def tool_function(tool: str) -> str | None:
    """The :mod:`tools.experiments` function a tool's cell calls (None: ``run_code`` and tools without a cell).

    >>> tool_function("head_scores"), tool_function("run_code")
    ('head_profile', None)
    """
    t = TOOLS.get(tool)
    return t.function if isinstance(t, type) and issubclass(t, _Experiment) else None


def result_text(data: object, limit: int = 4000) -> str:
    """Compact JSON for a tool_result block, cut to ``limit`` characters with a marker.

    >>> result_text({"a": 1.23456789})
    '{"a": 1.2346}'
    >>> result_text("x" * 50, limit=10)
    '"xxxxxxxx… [cut 43 chars]'
    """
    text = json.dumps(_round(data), separators=(", ", ": ")) if not isinstance(data, str) else json.dumps(data)
    if len(text) > limit:
        cut = len(text) - limit + 1
        text = text[: limit - 1] + f"… [cut {cut} chars]"
    return text


def _round(x: object) -> object:
    if isinstance(x, float):
        return round(x, 4)
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_round(v) for v in x]
    return x
