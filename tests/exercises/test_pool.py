"""Running the studies: the refusals, the files they promise, and the same files from worker processes as from one."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from study.exercises import run_exercises
from study.exercises.catalog import check_numbers
from study.exercises.pool import run_studies, stop_workers, study_executor, study_workers

PROMISED = {
    "results": [
        "ex1_reduction.csv",
        "ex1_best_lr.csv",
        "ex2_huber.csv",
        "ex3_gradients.csv",
        "ex3_grad_access.csv",
        "ex4_lr_epochs.csv",
        "ex5_data_size.csv",
        "ex5_slopes.csv",
        "ex6_reaching_the_limit.csv",
        "ex7_weight_decay.csv",
        "answers.md",
    ],
    "figures": [
        f"{name}.{ext}"
        for name in (
            "ex1_reduction",
            "ex2_huber_losses",
            "ex2_huber",
            "ex3_gradients",
            "ex4_lr_epochs",
            "ex5_data_size",
            "ex6_reaching_the_limit",
            "ex7_weight_decay",
        )
        for ext in ("png",)
    ],
}


def test_run_exercises_quick_writes_every_promised_file(quick):
    out, outcomes = quick
    for folder, names in PROMISED.items():
        for name in names:
            assert (out / folder / name).is_file(), f"{folder}/{name}"
    assert sorted(outcomes) == [1, 2, 3, 4, 5, 6, 7]
    answers = (out / "results" / "answers.md").read_text()
    assert all(f"**Exercise {n}.**" in answers for n in range(1, 6))
    assert "**Study 6.**" in answers and "**Study 7.**" in answers


def test_run_exercises_refuses_unknown_numbers_and_a_missing_folder(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"The 'numbers' parameter of run_exercises must be among \[1, 2, 3, 4, 5, 6, 7\]\. "
        r"Got 8",
    ):
        run_exercises([8], out_dir=tmp_path)
    with pytest.raises(ValueError, match=r"The 'out_dir' parameter of run_exercises must be a folder that exists"):
        run_exercises([1], out_dir=tmp_path / "nope")
    assert not any(tmp_path.iterdir())


def test_run_exercises_logs_the_paths_it_writes(tmp_path):
    lines = []
    run_exercises(
        [3], quick=True, out_dir=tmp_path, n_jobs=1, progress=False, log=lines.append, formats=(".png", ".svg")
    )
    assert lines[:3] == [f"created folder {tmp_path / f}" for f in ("results", "results/raw", "figures")]
    written = lines[-1].split(" s: ", 1)[1].split(", ")
    assert written == [
        str(tmp_path / p)
        for p in (
            "results/ex3_gradients.csv",
            "results/ex3_grad_access.csv",
            "figures/ex3_gradients.png",
            "figures/ex3_gradients.svg",
        )
    ]
    assert all((tmp_path / p).is_file() for p in written)


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


_HELD: list = []


def _hold(megabytes: int) -> int:
    """In a study worker: keep ``megabytes`` resident (as a study's tables and figures are) past
    loky's check interval (1 s), and say which process it is."""
    _HELD.append(np.ones(megabytes * 2**20 // 8))
    time.sleep(1.2)
    return os.getpid()


def test_a_study_worker_that_grows_is_not_restarted():
    """loky takes 300 MB of growth past a worker's first task for a leak, and restarts it (a new
    worker's imports, and a warning in make run): a study grows that much by design."""
    pytest.importorskip("psutil")  # loky checks memory only with it
    stop_workers()
    executor = study_executor(1)
    try:
        pids = [executor.submit(_hold, 350).result() for _ in range(3)]
    finally:
        stop_workers()
    assert len(set(pids)) == 1, pids


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
