"""The one vocabulary: the names that Grid fields, TOML keys, CLI flags and table columns share."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

from study import vocabulary
from study.grid import Grid


def test_the_vocabulary_imports_neither_torch_nor_pandas():
    code = "import sys, study.vocabulary; print(sorted(m for m in ('torch', 'pandas', 'numpy') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_axes_and_settings_are_the_grids_fields_and_nothing_else():
    fields = {f.name for f in dataclasses.fields(Grid)}
    named = set(vocabulary.AXES) | set(vocabulary.SETTINGS)
    assert named <= fields
    assert not set(vocabulary.AXES) & set(vocabulary.SETTINGS)
    assert vocabulary.RUN_AXES == tuple(a for a in vocabulary.AXES if a != "epoch")
    assert set(vocabulary.STREAM_KEYS) <= set(vocabulary.RUN_AXES) | {"num_val"}


def test_every_engine_has_a_revision():
    assert set(vocabulary.ENGINE_REVISIONS) == set(vocabulary.ENGINES)
    assert all(isinstance(r, int) and r >= 1 for r in vocabulary.ENGINE_REVISIONS.values())
