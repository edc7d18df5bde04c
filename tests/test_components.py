from __future__ import annotations

import pytest

from tools.components import Component, Kind, parse_components
from tools.errors import ComponentError


@pytest.mark.parametrize("name", ["L0H0", "L11H10", "MLP3", "ATTN0", "EMB", "resid_pre4", "resid_post0"])
def test_names_round_trip(name: str) -> None:
    assert str(Component.parse(name)) == name


def test_parse_fields() -> None:
    c = Component.parse("L9H6")
    assert (c.layer, c.head, c.kind) == (9, 6, Kind.HEAD)
    assert Component.parse("MLP2").kind is Kind.MLP and Component.parse("EMB").layer == -1


@pytest.mark.parametrize("bad", ["L9", "9.9", "l9h9", "MLP", "resid_mid3", "H3L1", "", "L-1H2"])
def test_bad_names_name_the_token(bad: str) -> None:
    with pytest.raises(ComponentError) as err:
        Component.parse(bad)
    assert repr(bad.strip()) in str(err.value) and "L{layer}H{head}" in str(err.value)


def test_parse_list_dedups_and_keeps_order() -> None:
    assert [str(c) for c in parse_components("MLP1, L0H1,MLP1")] == ["MLP1", "L0H1"]
    with pytest.raises(ComponentError):
        parse_components("L0H1,bogus")
