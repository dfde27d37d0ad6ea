"""This machine's pace: the time estimates scaled by how far they were off here before."""

from __future__ import annotations

import json

import pytest

from study import pace
from study.grid import Grid
from study.runner import plan_summary, run_grid


def test_the_factor_is_the_median_of_the_last_runs_long_enough_to_tell():
    assert pace.factor("batched/cpu") == (1.0, 0)
    pace.record("batched/cpu", 10.0, 2.0)  # too short to tell: start-up, not training
    assert pace.factor("batched/cpu") == (1.0, 0)
    for actual in (20.0, 30.0, 25.0):
        pace.record("batched/cpu", 10.0, actual)
    assert pace.factor("batched/cpu") == (2.5, 3)
    assert pace.factor("batched/cuda") == (1.0, 0)  # kept by engine and kind of device
    for actual in (10.0, 10.0, 10.0, 10.0):
        pace.record("batched/cpu", 10.0, actual)
    assert pace.factor("batched/cpu") == (1.0, pace.KEEP)  # the last KEEP only: 3.0 and 2.0 are gone


def test_a_cache_that_cannot_be_used_leaves_the_models_as_they_are(tmp_path, monkeypatch):
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    monkeypatch.setenv("STUDY_CACHE_DIR", str(blocked / "below"))  # below a file: never a folder
    pace.record("batched/cpu", 10.0, 20.0)
    assert pace.factor("batched/cpu") == (1.0, 0)
    folder = tmp_path / "cache"
    folder.mkdir()
    monkeypatch.setenv("STUDY_CACHE_DIR", str(folder))
    (folder / pace.FILE).write_text("{not json")
    assert pace.factor("batched/cpu") == (1.0, 0)
    pace.record("batched/cpu", 10.0, 20.0)  # a damaged file is replaced, not a reason to fail
    assert pace.factor("batched/cpu") == (2.0, 1)
    assert [p.name for p in folder.iterdir()] == [pace.FILE]  # no temporary left


def test_plan_summary_scales_its_estimate_by_the_pace_and_says_so():
    grid = Grid(name="s", num_train=[10_000], lr=[0.01, 0.1], epoch=[1, 10], replicates=20_000)

    def seconds(line: str) -> float:
        return float(line.split("; about ")[1].split(" s")[0])

    before = plan_summary(grid, n_jobs=1, device="cpu")
    pace.record("batched/cpu", 10.0, 15.0)
    after = plan_summary(grid, n_jobs=1, device="cpu")
    assert 10 <= seconds(before) < 60  # in seconds, past the clamp at 1 s
    assert abs(seconds(after) - 1.5 * seconds(before)) <= 1  # both rounded to the second
    assert "s (the models × 1.5: this machine's pace, from its last 1 run of 5 s or more); the CSV" in after
    assert "× 1.5" not in plan_summary(grid, n_jobs=1, engine="reference")  # the reference loop's own pace


def test_a_run_records_how_long_its_training_took_against_the_estimate(monkeypatch):
    monkeypatch.setattr(pace, "MIN_SECONDS", 0.0)  # a test's grid trains in well under a second
    run_grid(Grid(num_train=[20], lr=[0.1], epoch=[1], replicates=3), n_jobs=1, device="cpu", progress=False)
    (ratio,) = json.loads((pace.cache_folder() / pace.FILE).read_text())["batched/cpu"]
    assert ratio > 0
    assert pace.factor("batched/cpu") == (pytest.approx(ratio), 1)
