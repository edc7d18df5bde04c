"""Every docstring example in the packages runs (doctest), so examples cannot rot."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

PACKAGES = ["tools", "agent", "evals", "sandbox"]
# Modules whose import needs optional heavy services (none yet) can be listed here with the reason.
SKIP: dict[str, str] = {}


def _modules() -> list[str]:
    names = []
    for pkg in PACKAGES:
        mod = importlib.import_module(pkg)
        names.append(pkg)
        for info in pkgutil.walk_packages(mod.__path__, prefix=f"{pkg}."):
            if info.name not in SKIP and not info.name.endswith("__main__"):
                names.append(info.name)
    return names


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name: str) -> None:
    mod = importlib.import_module(name)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} doctest example(s) failed in {name}"
