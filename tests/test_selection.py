"""Choosing rows: --where values read as their columns' types."""

from __future__ import annotations

import pytest

from study.errors import ParameterError
from study.selection import parse_where, select


def test_parse_where_reads_each_value_as_its_columns_type(small_table):
    assert parse_where(small_table, ["lr=0.1", "num_train=1e2"]) == {"lr": [0.1], "num_train": [100]}
    assert parse_where(small_table, ["lr = 0.03,0.1"]) == {"lr": [0.03, 0.1]}
    assert parse_where(small_table, ["loss=squared"]) == {"loss": ["squared"]}
    assert len(select(small_table, parse_where(small_table, ["lr=0.1", "epoch=2"]))) == 2 * 5
    for item, says in [
        ("lr", r"KEY=VALUE, e\.g\. loss=huber"),
        ("lrr=0.1", r"KEY one of the table's axes \(num_train"),
        ("lr=0.5", r"one of the values lr takes in the table \(lr=0\.03, 0\.1\)\. Got 'lr=0\.5'"),
        ("lr=fast", r"Got 'lr=fast'"),
        ("loss=hubber", r"\(loss=squared\)"),
    ]:
        with pytest.raises(ParameterError, match=says):
            parse_where(small_table, [item])
    with pytest.raises(ParameterError, match=r"given once for each axis \(lr is given twice\)"):
        parse_where(small_table, ["lr=0.1", "lr=0.03"])
