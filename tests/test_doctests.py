"""Every docstring example in the package runs and holds."""

import doctest
import importlib
import pkgutil

import pytest

import unioncard

SKIP_PREFIXES = ("unioncard.testing", "unioncard.pytest_plugin")

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(unioncard.__path__, "unioncard.")
    if not info.name.startswith(SKIP_PREFIXES)
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
