"""LLM prices, per million tokens, by model family; and the cost of one call.

Source: Anthropic's published model pages and pricing (platform.claude.com/docs, "Models & pricing"),
checked 2026-11. Prompt caching bills cache reads at 0.1x the input price and 5-minute cache writes at
1.25x (e.g. Sonnet 5.5: $2 input, $0.20 cache read, $2.50 cache write). A model not in the table
has an unknown price: :func:`cost_usd` returns None (budgets then count tokens only), never raises.
Dated snapshots (``claude-opus-4-5-20251101``) use their family's price.

>>> PRICES["claude-sonnet-5-5"]
Price(input=2.0, output=10.0)
>>> round(cost_usd("claude-sonnet-5-5", input_tokens=1_000_000, output_tokens=100_000), 4)
3.0
>>> round(cost_usd("claude-opus-4-5-20251101", input_tokens=0, output_tokens=0,
...                cache_read_input_tokens=1_000_000, cache_creation_input_tokens=1_000_000), 4)
6.75
>>> cost_usd("my-local-llama", input_tokens=10, output_tokens=10) is None
True
"""

from __future__ import annotations

import re
from typing import NamedTuple

CACHE_READ_MULTIPLIER = 0.1
"""Cache reads cost this times the input price."""
CACHE_WRITE_MULTIPLIER = 1.25
"""5-minute cache writes cost this times the input price."""


class Price(NamedTuple):
    """US dollars per million tokens."""

    input: float
    output: float


PRICES: dict[str, Price] = {
    # current generation
    "claude-fable-5-1": Price(10.0, 50.0),
    "claude-opus-5-5": Price(4.0, 20.0),
    "claude-sonnet-5-5": Price(2.0, 10.0),
    "claude-opus-5": Price(5.0, 25.0),
    "claude-sonnet-5": Price(2.0, 10.0),
    # legacy
    "claude-opus-4-8": Price(5.0, 25.0),
    "claude-opus-4-7": Price(5.0, 25.0),
    "claude-opus-4-6": Price(5.0, 25.0),
    "claude-opus-4-5": Price(5.0, 25.0),
    "claude-sonnet-4-6": Price(3.0, 15.0),
    "claude-sonnet-4-5": Price(3.0, 15.0),
    "claude-haiku-4-5": Price(1.0, 5.0),
    # claude-haiku-5-5 is priced in tiers ("from $0.10 / $0.50"): left out, so its cost is None.
}
"""Model family → price. Add a row here when a model ships."""

_DATED = re.compile(r"^(?P<family>.+?)-\d{8}$")


def price_for(model: str) -> Price | None:
    """The price of ``model`` (an exact id or a dated snapshot of one), or None when unknown.

    >>> price_for("claude-sonnet-4-5-20250929"), price_for("claude-sonnet-5") == price_for("claude-sonnet-5-5")
    (Price(input=3.0, output=15.0), True)
    """
    if model in PRICES:
        return PRICES[model]
    m = _DATED.match(model)
    if m and m.group("family") in PRICES:
        return PRICES[m.group("family")]
    return None


def cost_usd(model: str, *, input_tokens: int, output_tokens: int, cache_read_input_tokens: int = 0,
             cache_creation_input_tokens: int = 0) -> float | None:
    """US dollars for one call's usage, or None when the model's price is unknown."""
    p = price_for(model)
    if p is None:
        return None
    return (input_tokens * p.input + output_tokens * p.output
            + cache_read_input_tokens * p.input * CACHE_READ_MULTIPLIER
            + cache_creation_input_tokens * p.input * CACHE_WRITE_MULTIPLIER) / 1e6
