"""The one interface every LLM backend implements, tool specs built from pydantic models, and errors.

A backend takes a system prompt, Anthropic-format messages and tool specs, and returns one assistant
turn as an :class:`~agent.llm.types.LLMResponse`. The research loop executes the turn's tool calls,
appends ``tool_result`` blocks, and calls again.

>>> from pydantic import BaseModel, Field
>>> class Ablate(BaseModel):
...     component: str = Field(description="component to ablate, e.g. L1H0")
...     method: Literal["mean", "zero"] = "mean"
>>> spec = ToolSpec.from_model("ablate", "Ablate one component.", Ablate)
>>> spec.to_api()["input_schema"]["required"]
['component']
>>> args, err = validate_tool_input(Ablate, {"component": "L1H0", "method": "avg"})
>>> args is None, err.splitlines()[0]
(True, "Invalid input for tool 'Ablate': 1 problem.")
>>> validate_tool_input(spec, {"component": "L1H0"})
(Ablate(component='L1H0', method='mean'), '')
"""

from __future__ import annotations

import json
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from agent.llm.types import LLMResponse
from tools.errors import InterpAgentError


class LLMError(InterpAgentError):
    """Base of LLM backend errors."""


class LLMConfigError(LLMError):
    """A backend that cannot be built as configured (no API key, unknown backend...)."""


class LLMAPIError(LLMError):
    """An API call that failed for good: a non-retryable error, or retries exhausted."""

    def __init__(self, what: str, fix: str | None = None, *, status_code: int | None = None,
                 error_type: str | None = None, attempts: int = 1) -> None:
        super().__init__(what, fix)
        self.status_code = status_code
        """HTTP status of the last failure (None for a connection error)."""
        self.error_type = error_type
        """The API's ``error.type`` (``rate_limit_error``, ``overloaded_error``...), if any."""
        self.attempts = attempts
        """HTTP attempts made."""


class LLMDeadlineError(LLMAPIError):
    """A call that could not finish within the time it was given (``complete(..., timeout_s=)``): the run's
    wall-clock budget ran out while it waited for the API."""


class ReplayDivergence(LLMError):
    """A replayed run that asks for an LLM turn its recording does not have (ran out, or diverged)."""


TOOL_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"


class ToolSpec(BaseModel):
    """A tool offered to the model: name, description and the JSON schema of its input.

    Build it from a pydantic model with :meth:`from_model`, so the schema the model sees and the
    validation of what it sends back (:func:`validate_tool_input`) are the same thing.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    name: str = Field(pattern=TOOL_NAME_PATTERN)
    """Tool name (letters, digits, ``_``, ``-``; at most 64)."""
    description: str
    """What the tool does and when to use it (the model reads this)."""
    input_schema: dict[str, Any]
    """JSON schema of the input object (``{"type": "object", "properties": ...}``)."""
    _model: type[BaseModel] | None = PrivateAttr(default=None)

    @classmethod
    def from_model(cls, name: str, description: str, model: type[BaseModel]) -> ToolSpec:
        """A spec whose ``input_schema`` is ``model``'s JSON schema (its docstring left out: ``description`` is
        what the model reads about the tool); remembers ``model`` for validation."""
        schema = model.model_json_schema()
        schema.pop("title", None)
        schema.pop("description", None)  # the model's docstring: ``description`` says it, in plain text
        schema.setdefault("type", "object")
        spec = cls(name=name, description=description, input_schema=schema)
        spec._model = model
        return spec

    @property
    def model(self) -> type[BaseModel] | None:
        """The pydantic model the spec was built from (None when built from a raw schema)."""
        return self._model

    def to_api(self) -> dict[str, Any]:
        """The dict the Messages API takes in ``tools``."""
        return {"name": self.name, "description": self.description, "input_schema": self.input_schema}


def validate_tool_input(spec_model: type[BaseModel] | ToolSpec, input: Any, name: str | None = None
                        ) -> tuple[BaseModel | None, str]:
    """Validate a model-written tool input. Returns ``(parsed, "")`` or ``(None, error_text)``.

    ``error_text`` is written for the model: send it back as a ``tool_result`` with ``is_error=True``
    (see :func:`agent.llm.types.tool_result`) so it can correct the call; never crash on it. ``name``
    (default: the spec's name, or the model's class name) is the tool name the text uses.
    """
    model = spec_model.model if isinstance(spec_model, ToolSpec) else spec_model
    name = name or (spec_model.name if isinstance(spec_model, ToolSpec) else spec_model.__name__)
    if model is None:
        raise LLMConfigError(f"tool spec {name!r} was not built from a pydantic model",
                             fix="build it with ToolSpec.from_model(name, description, Model)")
    if not isinstance(input, dict):
        return None, (f"Invalid input for tool {name!r}: expected a JSON object of arguments, got "
                      f"{type(input).__name__} {json.dumps(input, default=str)[:200]}. Call the tool again "
                      "with an object matching its input schema.")
    try:
        return model.model_validate(input), ""
    except ValidationError as e:
        errs = e.errors(include_url=False)
        lines = [f"Invalid input for tool {name!r}: {len(errs)} problem{'s' if len(errs) != 1 else ''}."]
        for err in errs:
            loc = ".".join(str(p) for p in err["loc"]) or "(input)"
            got = "" if err["type"] == "missing" else f" (got {json.dumps(err.get('input'), default=str)[:120]})"
            lines.append(f"- {loc}: {err['msg']}{got}")
        lines.append("Fix the arguments and call the tool again.")
        return None, "\n".join(lines)


@runtime_checkable
class LLMBackend(Protocol):
    """What the research loop needs from an LLM: one assistant turn per call."""

    name: str
    """``claude`` | ``offline`` | ``replay``."""
    model: str
    """The model id (``claude-sonnet-5-5``...), or a descriptive name for non-API backends."""

    def complete(self, *, system: str, messages: list[dict[str, Any]], tools: list[ToolSpec],
                 max_tokens: int | None = None, timeout_s: float | None = None) -> LLMResponse:
        """Return the next assistant turn for this conversation.

        ``max_tokens``: the output limit of this call (None: the backend's default). ``timeout_s``: the call
        must end within this many seconds, retries included (None: no deadline; backends that call no API
        ignore it).
        """
        ...


BackendName = Literal["claude", "offline", "replay"]
