"""The studies' catalogue: every study has its spec, a smaller quick grid, and the figures it promises."""

from __future__ import annotations

from study.exercises.catalog import SPECS, study_grid


def test_every_study_has_its_spec_and_quick_is_smaller():
    for number, (name, _) in SPECS.items():
        full, small = study_grid(number), study_grid(number, quick=True)
        assert full.name == name and len(small.runs()) < len(full.runs())
