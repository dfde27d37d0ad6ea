"""Running the studies: their specs, the refusals, and the same files from worker processes as from one."""

from __future__ import annotations

import subprocess
import sys

import pytest

from study.exercise_runner import SPECS, check_numbers, run_studies, stop_workers, study_grid, study_workers


def test_every_study_has_its_spec_and_quick_is_smaller():
    for number, (name, _) in SPECS.items():
        full, small = study_grid(number), study_grid(number, quick=True)
        assert full.name == name and len(small.runs()) < len(full.runs())


def test_numbers_formats_and_folders_are_refused_before_any_work(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"^The 'numbers' parameter of run_exercises must be among \[1, 2, 3, 4, 5, 6, 7\]\. "
        r"Got 8 instead\.$",
    ):
        check_numbers([1, 8])
    with pytest.raises(ValueError, match=r"^The 'formats' parameter of run_exercises must be some of"):
        run_studies([1], out_dir=tmp_path, formats=(".jpg",))
    with pytest.raises(ValueError, match=r"^The 'out_dir' parameter of run_exercises must be a folder that exists"):
        run_studies([1], out_dir=tmp_path / "nope")
    assert list(tmp_path.iterdir()) == []


def test_workers_are_one_per_study_up_to_the_cores():
    import joblib

    assert study_workers([3], -1) == 1
    assert study_workers(None, -1) == min(5, joblib.cpu_count())
    assert study_workers([1, 2], 1) == 1 and study_workers([1, 2], 8) == 2


def test_studies_in_worker_processes_write_what_one_process_writes(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    outcomes = run_studies([1, 4], quick=True, out_dir=one, n_jobs=1, progress=False, log=lambda _: None)
    try:
        answers = run_studies([1, 4], quick=True, out_dir=two, n_jobs=2, progress=False, log=lambda _: None, keep=False)
    finally:
        stop_workers()  # the workers would otherwise idle, torch imported, until the tests end
    assert {n: o.answer for n, o in outcomes.items()} == answers
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file() and "raw" not in p.parts)
    assert [str(f) for f in files if f.suffix == ".png"] == ["figures/ex1_reduction.png", "figures/ex4_lr_epochs.png"]
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file() and "raw" not in p.parts)
    for f in files:
        assert (one / f).read_bytes() == (two / f).read_bytes(), f


def test_study_exercises_imports_no_torch_in_its_own_process(tmp_path):
    """The studies run in workers; the command's own process stays light (what makes it fast)."""
    code = (
        "import sys; from study.cli import main; "
        "rc = main(['exercises', '--quick', '--only', '1,4', '--jobs', '2', '--quiet', '--out-dir', sys.argv[1]]); "
        "print(rc, 'torch' in sys.modules, 'matplotlib' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["0", "False", "False"], done.stderr
    assert (tmp_path / "results" / "answers.md").read_text().startswith("**Exercise 1.**")


def test_a_study_run_alone_replaces_its_answer_and_keeps_the_others(tmp_path):
    """`--only 1` rewrites exercise 1's tables, figure and answer; the other exercises' answers in
    answers.md stay, as their files do."""
    (tmp_path / "results").mkdir()
    earlier = {n: f"an earlier answer to exercise {n}." for n in (1, 2, 3, 4, 5, 6)}
    label = {n: "Exercise" if n <= 5 else "Study" for n in earlier}
    (tmp_path / "results" / "answers.md").write_text(
        "\n\n".join(f"**{label[n]} {n}.** {text}" for n, text in earlier.items()) + "\n"
    )
    outcomes = run_studies([1], quick=True, out_dir=tmp_path, n_jobs=1, progress=False, log=lambda _: None)
    paragraphs = (tmp_path / "results" / "answers.md").read_text().rstrip("\n").split("\n\n")
    assert paragraphs[0] == f"**Exercise 1.** {outcomes[1].answer}"
    assert paragraphs[1:] == [f"**{label[n]} {n}.** {earlier[n]}" for n in (2, 3, 4, 5, 6)]
