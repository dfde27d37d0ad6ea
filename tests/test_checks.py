from __future__ import annotations

import math
import re

import pytest
import torch

from study._checks import check_choice, check_int, check_real, check_vector


def test_check_int_accepts_and_refuses_with_shaped_message():
    assert check_int(3, "n", "parameter of X", low=1) == 3
    with pytest.raises(ValueError, match=re.escape("The 'n' parameter of X must be an integer >= 1. Got 0 instead.")):
        check_int(0, "n", "parameter of X", low=1)
    with pytest.raises(ValueError, match="Got True instead"):
        check_int(True, "n", "parameter of X")
    with pytest.raises(ValueError, match="Got 2.0 instead"):
        check_int(2.0, "n", "parameter of X")


def test_check_real_strict_and_finite():
    assert check_real(0.5, "lr", "parameter of X") == 0.5
    assert check_real(0, "noise", "parameter of X", strict=False) == 0.0
    for bad in (0, -1, math.nan, math.inf, "1"):
        with pytest.raises(ValueError, match=r"The 'lr' parameter of X must be a finite number > 0\."):
            check_real(bad, "lr", "parameter of X")


def test_check_choice_lists_the_allowed_values():
    with pytest.raises(ValueError, match=re.escape("must be one of ['squared', 'huber']. Got 'hubber' instead.")):
        check_choice("hubber", "loss", "parameter of X", ["squared", "huber"])


def test_check_vector_accepts_tensors_and_refuses_empty_or_non_numeric():
    assert check_vector(torch.tensor([2.0, -3.5]), "w", "parameter of X") == [2.0, -3.5]
    assert check_vector(3, "w", "parameter of X") == [3.0]
    for bad in ([], ["a"], [1, math.nan], "12", [True]):
        with pytest.raises(ValueError, match="The 'w' parameter of X must be a non-empty list of finite numbers"):
            check_vector(bad, "w", "parameter of X")
