"""One grammar for circuit components, used in logs, reports, CLI flags and reference data.

=================  ===========================================================================
``L{l}H{h}``       attention head *h* of layer *l*: its per-head output (the head's slice of the
                   input to the attention output projection, times its W_O rows)
``ATTN{l}``        the whole attention block output of layer *l* (bias included)
``MLP{l}``         the MLP output of layer *l*
``EMB``            the embedding output (token + learned positions where the model has them)
``resid_pre{l}``   the residual stream entering block *l*
``resid_post{l}``  the residual stream leaving block *l*
=================  ===========================================================================

Layers and heads count from 0. A name parses once into a frozen :class:`Component`; ``str()``
round-trips, so nothing downstream ever handles a raw hook string.

>>> c = Component.parse("L9H6")
>>> c.kind, c.layer, c.head, str(c)
(<Kind.HEAD: 'head'>, 9, 6, 'L9H6')
>>> parse_components("L9H9, MLP3,resid_pre0")
[Component.parse('L9H9'), Component.parse('MLP3'), Component.parse('resid_pre0')]
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from tools.errors import ComponentError

VALID_FORMS = "L{layer}H{head} (e.g. L9H9), MLP{layer}, ATTN{layer}, EMB, resid_pre{layer}, resid_post{layer}"
PATTERN = r"^(L\d+H\d+|MLP\d+|ATTN\d+|EMB|resid_pre\d+|resid_post\d+)$"
"""A regular expression for one component name (the JSON schema of the planner's tools carries it)."""
HEAD_PATTERN = r"^L\d+H\d+$"
"""A regular expression for one attention head's name."""


class Kind(StrEnum):
    """What kind of site a component is."""

    HEAD = "head"
    """One attention head's output (written into the residual stream)."""
    ATTN = "attn"
    """A whole attention block's output."""
    MLP = "mlp"
    """An MLP block's output."""
    EMB = "emb"
    """The embedding output."""
    RESID_PRE = "resid_pre"
    """The residual stream before a block."""
    RESID_POST = "resid_post"
    """The residual stream after a block."""

    @property
    def writes_residual(self) -> bool:
        """True for components that add into the residual stream (heads, ATTN, MLP, EMB)."""
        return self in (Kind.HEAD, Kind.ATTN, Kind.MLP, Kind.EMB)


_PATTERNS: list[tuple[re.Pattern[str], Kind]] = [
    (re.compile(r"^L(\d+)H(\d+)$"), Kind.HEAD),
    (re.compile(r"^MLP(\d+)$"), Kind.MLP),
    (re.compile(r"^ATTN(\d+)$"), Kind.ATTN),
    (re.compile(r"^EMB$"), Kind.EMB),
    (re.compile(r"^resid_pre(\d+)$"), Kind.RESID_PRE),
    (re.compile(r"^resid_post(\d+)$"), Kind.RESID_POST),
]


@dataclass(frozen=True, order=True)
class Component:
    """A parsed component name. Build with :meth:`parse` or the helpers :meth:`attn_head`, :meth:`mlp`...

    >>> Component.attn_head(2, 3) == Component.parse("L2H3")
    True
    >>> sorted([Component.parse("MLP1"), Component.parse("L0H1")])
    [Component.parse('L0H1'), Component.parse('MLP1')]
    """

    layer: int
    """Layer index (0-based); -1 for ``EMB``."""
    kind: Kind
    head: int | None = None
    """Head index for ``L{l}H{h}``, else None."""

    @classmethod
    def parse(cls, name: str | Component) -> Component:
        """Parse one name; raise :class:`ComponentError` naming the bad token and the valid forms."""
        if isinstance(name, Component):
            return name
        if not isinstance(name, str):
            raise ComponentError(f"component must be a string, got {type(name).__name__}", fix=f"use {VALID_FORMS}")
        token = name.strip()
        for pattern, kind in _PATTERNS:
            m = pattern.match(token)
            if m is None:
                continue
            if kind is Kind.HEAD:
                return cls(layer=int(m.group(1)), kind=kind, head=int(m.group(2)))
            if kind is Kind.EMB:
                return cls(layer=-1, kind=kind)
            return cls(layer=int(m.group(1)), kind=kind)
        raise ComponentError(f"cannot parse component {token!r}", fix=f"valid forms: {VALID_FORMS}")

    def check_shape(self, n_layers: int, n_heads: int) -> Component:
        """This component if a model with ``n_layers`` layers of ``n_heads`` heads has it, else
        :class:`ComponentError` saying which index is out of range.

        >>> Component.parse("L1H3").check_shape(2, 4)
        Component.parse('L1H3')
        >>> Component.parse("L2H0").check_shape(2, 4)
        Traceback (most recent call last):
        ...
        tools.errors.ComponentError: layer 2 out of range in 'L2H0' (model has 2 layers) — use layers 0..1
        """
        if self.kind is not Kind.EMB and not 0 <= self.layer < n_layers:
            raise ComponentError(f"layer {self.layer} out of range in {self.name!r} (model has {n_layers} layers)",
                                 fix=f"use layers 0..{n_layers - 1}")
        if self.kind is Kind.HEAD and not 0 <= (self.head or 0) < n_heads:
            raise ComponentError(
                f"head index {self.head} out of range in {self.name!r} (model has {n_heads} heads per layer)",
                fix=f"use heads 0..{n_heads - 1}")
        return self

    @classmethod
    def attn_head(cls, layer: int, head: int) -> Component:
        return cls(layer=layer, kind=Kind.HEAD, head=head)

    @classmethod
    def mlp(cls, layer: int) -> Component:
        return cls(layer=layer, kind=Kind.MLP)

    @classmethod
    def attn(cls, layer: int) -> Component:
        return cls(layer=layer, kind=Kind.ATTN)

    @classmethod
    def emb(cls) -> Component:
        return cls(layer=-1, kind=Kind.EMB)

    @classmethod
    def resid_pre(cls, layer: int) -> Component:
        return cls(layer=layer, kind=Kind.RESID_PRE)

    @classmethod
    def resid_post(cls, layer: int) -> Component:
        return cls(layer=layer, kind=Kind.RESID_POST)

    @property
    def name(self) -> str:
        if self.kind is Kind.HEAD:
            return f"L{self.layer}H{self.head}"
        if self.kind is Kind.EMB:
            return "EMB"
        if self.kind is Kind.MLP:
            return f"MLP{self.layer}"
        if self.kind is Kind.ATTN:
            return f"ATTN{self.layer}"
        return f"{self.kind.value}{self.layer}"

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"Component.parse({self.name!r})"


def parse_components(names: str | Iterable[str | Component]) -> list[Component]:
    """Parse a comma-separated string or an iterable of names; keeps order, drops duplicates.

    >>> [str(c) for c in parse_components("L1H0,L1H0, MLP0")]
    ['L1H0', 'MLP0']
    """
    items = [t for t in names.split(",") if t.strip()] if isinstance(names, str) else list(names)
    out: list[Component] = []
    for item in items:
        c = Component.parse(item)
        if c not in out:
            out.append(c)
    return out
