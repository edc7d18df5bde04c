"""Task specs as frozen, validated data: what a task is, how to make its prompts, and its reference circuit.

A spec is a YAML (or JSON) file under ``evals/tasks/data/``. Loading validates it with pydantic; a
malformed file raises one :class:`TaskSpecError` naming the file, each bad field and the problem.

>>> spec = load_task("toy-ioi")
>>> spec.name, spec.roles, spec.metric
('toy-ioi', ['IO', 'S1', 'S2', 'END'], 'logit_diff')
>>> sorted({e.source for e in load_task("ioi-gpt2-small").reference})[0][:10]
'Wang et al'
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from evals.tasks.errors import TaskSpecError
from evals.tasks.generators import (
    DocstringGenerator,
    GreaterThanGenerator,
    InductionGenerator,
    IOIGenerator,
)
from evals.tasks.generic import PairsGenerator, TemplateGenerator
from tools.components import Component
from tools.errors import InterpAgentError

DATA_DIR = Path(__file__).parent / "data"

GeneratorSpec = Annotated[
    IOIGenerator | InductionGenerator | GreaterThanGenerator | DocstringGenerator | TemplateGenerator | PairsGenerator,
    Field(discriminator="kind"),
]
"""The generator kinds: four hard-coded families and the two generic kinds (``template``, ``pairs``;
see :mod:`evals.tasks.generic`) with which a new task needs no Python."""
_GENERATOR = TypeAdapter(GeneratorSpec)


class ReferenceEntry(BaseModel):
    """One component of a reference circuit: what it is, what it does, and who says so.

    >>> ReferenceEntry(component="L9H9", role="name mover", explanation="copies IO", source="Wang et al. 2022").component
    'L9H9'
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    component: str
    """A component name in the project grammar (``L9H9``, ``MLP8``...)."""
    role: str
    """Short role label shared by components that do the same job (``name mover``)."""
    explanation: str
    """One or two sentences: what the component does in the task."""
    source: str
    """Paper (authors, year) or ``project analysis`` / ``planted (exact)``."""
    uncertain: bool = False
    """True when the source itself flags the entry as tentative or we could not confirm it."""
    evidence: dict[str, float] = Field(default_factory=dict)
    """Numbers behind the entry (project analysis): e.g. ``{"ablation_drop": 0.93}``."""

    @field_validator("component")
    @classmethod
    def _parse_component(cls, v: str) -> str:
        try:
            return str(Component.parse(v))
        except InterpAgentError as e:
            raise ValueError(str(e)) from None

    @property
    def parsed(self) -> Component:
        return Component.parse(self.component)


class TaskSpec(BaseModel):
    """A task: prompts (clean/corrupt pairs with answers and named positions), metric, reference circuit.

    Frozen data; building prompts needs a tokenizer (the model's own), given at run time.

    >>> from tools.tiny import word_tokenizer
    >>> spec = load_task("toy-ioi")
    >>> batch = spec.make_batch(word_tokenizer(spec.vocabulary()), n=4, seed=0)
    >>> batch.size, sorted(batch.positions)
    (4, ['END', 'IO', 'S1', 'S2'])
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    """Unique task name (``toy-ioi``); also the data file's stem."""
    description: str
    model: str
    """The model it is defined for: a zoo name (``toy-ioi``) or a Hugging Face id (``gpt2``)."""
    metric: Literal["logit_diff", "prob_diff", "accuracy"] = "logit_diff"
    """Default metric: ``logit_diff`` (answer − wrong at END) or ``prob_diff`` (greater-than)."""
    roles: list[str]
    """Named positions every batch carries (``IO``, ``S1``, ``S2``, ``END``); may be left out of the file,
    then it is the generator's roles."""
    question_keywords: list[str] = Field(default_factory=list)
    """Lower-case words and phrases that map a researcher's question to this task."""
    generator: GeneratorSpec
    reference: list[ReferenceEntry] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=list)
    """Full citations for the sources named in ``reference``."""
    notes: str = ""

    @model_validator(mode="before")
    @classmethod
    def _default_roles(cls, data: Any) -> Any:
        if isinstance(data, dict) and "roles" not in data and isinstance(data.get("generator"), dict):
            try:
                gen = _GENERATOR.validate_python(data["generator"])
            except ValidationError:
                return data  # the field validation reports it, with its location
            data = {**data, "roles": gen.roles()}
        return data

    @model_validator(mode="after")
    def _roles_match_generator(self) -> TaskSpec:
        made = self.generator.roles()
        if set(made) != set(self.roles):
            raise ValueError(f"roles {self.roles} differ from the roles the {self.generator.kind} generator "
                             f"produces {made}")
        seen: set[str] = set()
        for e in self.reference:
            if e.component in seen:
                raise ValueError(f"component {e.component} appears twice in reference")
            seen.add(e.component)
        return self

    # ------------------------------------------------------------------ prompts
    def make_batch(self, tokenizer: Any, n: int, seed: int = 0):
        """``n`` clean/corrupt prompt pairs as a :class:`tools.TaskBatch` (deterministic in ``seed``).

        Raises :class:`TokenizationError` if a slot word is not one token for ``tokenizer``.
        """
        if n < 1:
            raise TaskSpecError(f"n must be at least 1, got {n}", fix="ask for one or more prompts")
        return self.generator.make_batch(tokenizer, n, seed)

    def vocabulary(self) -> list[str]:
        """Every whitespace-separated word a prompt of this task can contain (for word-level tokenizers)."""
        return self.generator.vocabulary()

    def metric_fn(self, tokenizer: Any):
        """The task's default metric as ``metric(logits [B,T,V], batch) -> scalar tensor``."""
        from evals.tasks.metrics import make_metric

        return make_metric(self, tokenizer)

    def to_yaml(self) -> str:
        """The spec as YAML; :func:`spec_from_yaml` reads it back to an equal spec.

        >>> spec = load_task("toy-ioi")
        >>> spec_from_yaml(spec.to_yaml()) == spec
        True
        """
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True, width=110)

    # ------------------------------------------------------------------ reference circuit
    def reference_components(self) -> list[Component]:
        """The reference circuit's components, in file order.

        >>> [str(c) for c in load_task("ioi-gpt2-small").reference_components()][:3]
        ['L9H9', 'L9H6', 'L10H0']
        """
        return [e.parsed for e in self.reference]

    def reference_roles(self) -> dict[str, list[str]]:
        """Role label → component names (the reference clustering, for the scores).

        >>> load_task("toy-ioi").reference_roles() is not None
        True
        """
        out: dict[str, list[str]] = {}
        for e in self.reference:
            out.setdefault(e.role, []).append(e.component)
        return out

    def with_mapping(self, mapping: Mapping[Component | str, Component | str]) -> TaskSpec:
        """A copy whose reference components are renamed through ``mapping`` (e.g. from ``permute_heads``)."""
        return self.model_copy(update={"reference": map_reference(self.reference, mapping)})


def map_reference(entries: list[ReferenceEntry],
                  mapping: Mapping[Component | str, Component | str]) -> list[ReferenceEntry]:
    """Rename reference components through a component mapping (old → new); unmapped ones stay.

    Use it with the mapping returned by ``tools.permute_heads(model, seed)``.

    >>> e = [ReferenceEntry(component="L1H0", role="r", explanation="x", source="s")]
    >>> [x.component for x in map_reference(e, {Component.parse("L1H0"): Component.parse("L1H3")})]
    ['L1H3']
    """
    m = {Component.parse(k): Component.parse(v) for k, v in mapping.items()}
    targets = list(m.values())
    if len(set(targets)) != len(targets):
        raise TaskSpecError("the component mapping sends two components to the same name",
                            fix="pass a one-to-one mapping such as the one permute_heads returns")
    return [e.model_copy(update={"component": str(m.get(e.parsed, e.parsed))}) for e in entries]


# ---------------------------------------------------------------------- loading
def _format_errors(path: Path, err: ValidationError) -> str:
    parts = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "(top level)"
        parts.append(f"field '{loc}': {item['msg']}")
    return f"invalid task spec {path}: " + "; ".join(parts)


def spec_from_yaml(text: str, where: str = "<text>", json_only: bool = False) -> TaskSpec:
    """Parse and validate a spec from YAML (or JSON) text; :class:`TaskSpecError` names ``where`` and each bad field."""
    try:
        raw = json.loads(text) if json_only else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise TaskSpecError(f"cannot parse task spec {where}: {e}".replace("\n", " "),
                            fix="fix the YAML/JSON syntax at the position shown") from None
    if not isinstance(raw, dict):
        raise TaskSpecError(f"task spec {where} must be a mapping of fields, got {type(raw).__name__}",
                            fix="start the file with 'name: ...'")
    try:
        return TaskSpec.model_validate(raw)
    except ValidationError as e:
        raise TaskSpecError(_format_errors(Path(where), e), fix="fix the named field(s); see evals/tasks/spec.py "
                            "and evals/tasks/generic.py") from None


def load_spec_file(path: str | Path) -> TaskSpec:
    """Load and validate one spec file (``.yaml``, ``.yml`` or ``.json``)."""
    path = Path(path)
    if not path.is_file():
        raise TaskSpecError(f"task spec file {path} does not exist", fix="check the path")
    return spec_from_yaml(path.read_text(), str(path), json_only=path.suffix == ".json")


def _spec_files() -> list[Path]:
    return sorted(p for p in DATA_DIR.iterdir() if p.suffix in (".yaml", ".yml", ".json"))


def list_tasks() -> list[TaskSpec]:
    """Every built-in task spec, sorted by name.

    >>> "toy-ioi" in [t.name for t in list_tasks()]
    True
    """
    return sorted((load_spec_file(p) for p in _spec_files()), key=lambda s: s.name)


def load_task(name_or_path: str | Path) -> TaskSpec:
    """A built-in task by name (``toy-ioi``, ``ioi-gpt2-small``...) or a spec file by path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml", ".json") or p.is_file():
        return load_spec_file(p)
    for f in _spec_files():
        if f.stem == str(name_or_path):
            spec = load_spec_file(f)
            if spec.name != f.stem:
                raise TaskSpecError(f"task spec {f} has name {spec.name!r} but file stem {f.stem!r}",
                                    fix="make the file name match the 'name' field")
            return spec
    names = [f.stem for f in _spec_files()]
    raise TaskSpecError(f"no task named {str(name_or_path)!r}", fix=f"use one of {names} or a path to a spec file")
