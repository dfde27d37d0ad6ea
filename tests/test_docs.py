"""The documented examples (doctests) run and give what their docstrings show."""

from __future__ import annotations

import doctest
import importlib

import pytest

#: The modules whose docstrings hold examples (``>>>``), each run as written.
DOCUMENTED = ["study.data", "study.grid", "study.theory", "study.runner", "study.summaries", "study.fits"]


@pytest.mark.parametrize("name", DOCUMENTED)
def test_the_documented_examples_run_as_shown(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{name} holds no example"
    assert result.failed == 0
