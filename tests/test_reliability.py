"""Faults a run must survive on one machine: a chunk that fails, damaged chunk files, Ctrl-C,
outputs that cannot be written, leftovers (processes, temporary files), oversubscription, and
malformed input of every kind (property-based). The SIGKILL/resume case lives in test_runner.py,
the Dask cluster cases in test_cluster.py."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from specs import default_sigint, long_spec

import study.engine
from study import kernels
from study.cli import main
from study.errors import ChunksFailed
from study.grid import Grid, load_grid
from study.runner import run_grid

GRID = dict(num_train=[20, 40, 100], lr=[0.01, 0.1], loss=["squared", "huber"], epoch=[1, 2], replicates=2, num_val=30)
BROKEN_NUM_TRAIN = 40

SPEC = long_spec("faults")


def _study(*args) -> list[str]:
    return [sys.executable, "-m", "study", *map(str, args)]


@pytest.fixture
def broken_engine(monkeypatch):
    """The batched engine, raising for the chunks of num_train == BROKEN_NUM_TRAIN (in-process
    runs; train_batched trains through train_batched_together, as chunks trained together do)."""
    train = study.engine.train_batched_together

    def train_or_raise(chunks, checkpoints, device="cpu", options=None):
        if any(chunk.num_train == BROKEN_NUM_TRAIN for chunk in chunks):
            raise MemoryError("cannot allocate the chunk\nsecond line")
        return train(chunks, checkpoints, device)

    monkeypatch.setattr(study.engine, "train_batched_together", train_or_raise)
    return monkeypatch


@pytest.fixture(scope="module")
def whole_csv(tmp_path_factory) -> Path:
    """GRID run whole (chunks of 4) by a healthy engine: what every faulty run must end with."""
    out = tmp_path_factory.mktemp("whole") / "whole.csv"
    run_grid(Grid(**GRID), out=out, n_jobs=1, chunk_size=4, progress=False)
    return out


def _lines_without(csv: bytes, num_train: int) -> bytes:
    lines = csv.splitlines(keepends=True)
    return b"".join([lines[0], *(line for line in lines[1:] if not line.startswith(f"{num_train},".encode()))])


# a chunk that fails -------------------------------------------------------------------------------


def test_failed_chunk_is_reported_the_rest_written_and_a_rerun_computes_only_it(tmp_path, whole_csv, broken_engine):
    grid = Grid(**GRID)
    whole = whole_csv
    out = tmp_path / "r.csv"
    with pytest.raises(
        ChunksFailed, match=r"2 of 6 chunks \(8 of 24 runs\) failed; the runs that finished are in"
    ) as caught:
        run_grid(grid, out=out, n_jobs=1, chunk_size=4, progress=False)
    err = caught.value
    assert [f.runs for f in err.failures] == [4, 4]
    assert all(f.reason == "MemoryError: cannot allocate the chunk second line" for f in err.failures)
    assert sorted(f.cells for f in err.failures) == [
        f"num_train=40, batch_size=32, lr=[0.01, 0.1], loss=['huber', 'squared'], replicate={r}" for r in (0, 1)
    ]
    # What finished is kept: saved chunks, and a partial CSV (the complete one's other rows).
    assert not out.exists()
    assert err.partial_path == tmp_path / "r.partial.csv"
    assert err.partial_path.read_bytes() == _lines_without(whole.read_bytes(), BROKEN_NUM_TRAIN)
    assert len(err.partial) == 16 * 3
    meta = json.loads((tmp_path / "r.partial.meta.json").read_text())
    assert meta["partial"] is True and len(meta["failed_chunks"]) == 2 and meta["complete_output"] == str(out)
    assert len(list((tmp_path / "r.csv.store").glob("*.runs"))) == 4

    broken_engine.undo()
    run_grid(grid, out=out, n_jobs=1, chunk_size=4, progress=False)
    assert out.read_bytes() == whole.read_bytes()
    meta = json.loads((tmp_path / "r.meta.json").read_text())
    assert (meta["chunks_computed"], meta["chunks_resumed"]) == (2, 4)
    assert (meta["runs_computed"], meta["runs_reused"]) == (8, 16)
    assert not (tmp_path / "r.partial.csv").exists() and not (tmp_path / "r.partial.meta.json").exists()


def test_failed_chunk_without_output_still_gives_the_rows_that_finished(broken_engine):
    with pytest.raises(ChunksFailed, match=r"^1 of 3 chunks \(8 of 24 runs\) failed$") as caught:
        run_grid(Grid(**GRID), n_jobs=1, progress=False)
    assert caught.value.partial_path is None
    assert set(caught.value.partial["num_train"]) == {20, 100}


def test_every_chunk_failed_lists_them_and_writes_no_partial_table(tmp_path, monkeypatch, capsys):
    def train_or_raise(chunks, checkpoints, device="cpu", options=None):
        raise RuntimeError(f"no luck with {chunks[0].num_train}")

    monkeypatch.setattr(study.engine, "train_batched_together", train_or_raise)
    (tmp_path / "r.partial.csv").write_text("an older run's")
    spec = tmp_path / "g.toml"
    spec.write_text(
        "[grid]\nnum_train = [20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130]\nepoch = 1\nnum_val = 20\n"
    )
    assert main(["run", str(spec), "--out", str(tmp_path / "r.csv"), "--jobs", "1", "--quiet"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 12 and err[9].endswith("RuntimeError: no luck with 110")
    assert err[10] == "study: failed: ... and 2 more chunks (all listed in r.partial.meta.json)"
    assert (
        err[11] == "study: failed: 12 of 12 chunks (12 of 12 runs) failed; run again to compute only the failed chunks"
    )
    assert not (tmp_path / "r.partial.csv").exists()
    assert len(json.loads((tmp_path / "r.partial.meta.json").read_text())["failed_chunks"]) == 12


def test_study_run_failed_chunk_exits_1_with_one_line_per_chunk(tmp_path, broken_engine, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "g.toml"
    spec.write_text("[grid]\nnum_train = [20, 40]\nlr = [0.01, 0.1]\nepoch = 1\nnum_val = 20\n")
    assert main(["run", str(spec), "--out", "g.csv", "--jobs", "1", "--quiet"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2, err
    assert (
        err[0].startswith("study: failed: chunk ") and "(2 runs: num_train=40, batch_size=32, lr=[0.01, 0.1])" in err[0]
    )
    assert err[0].endswith("MemoryError: cannot allocate the chunk second line")
    assert err[1] == (
        "study: failed: 1 of 2 chunks (2 of 4 runs) failed; the runs that finished are in g.partial.csv; "
        "run again to compute only the failed chunks"
    )


# damaged chunk files ------------------------------------------------------------------------------


def test_truncated_damaged_or_foreign_segment_files_are_recomputed(tmp_path, whole_csv, broken_engine):
    from study.store import read_segment_head

    grid = Grid(**GRID)
    whole = whole_csv
    out = tmp_path / "r.csv"
    with pytest.raises(ChunksFailed):  # leaves the 4 good chunks kept, as an interrupted run would
        run_grid(grid, out=out, n_jobs=1, chunk_size=4, progress=False)
    broken_engine.undo()
    store = tmp_path / "r.csv.store"
    first, second, third, fourth = sorted(store.glob("*.runs"))
    data = first.read_bytes()
    first.write_bytes(data[: len(data) // 2])  # truncated
    data = bytearray(second.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: a wrong number
    second.write_bytes(bytes(data))
    data = bytearray(third.read_bytes())
    data[data.index(b'"batched"') + 1] = ord("B")  # another engine's (the digest made to match)
    import hashlib

    head = len(b"study-runs 1\n")
    data[head : head + 32] = hashlib.sha256(bytes(data[head + 32 :])).digest()
    third.write_bytes(bytes(data))
    (store / f".{fourth.name}.1234.tmp").write_bytes(fourth.read_bytes()[:100])  # a write cut short
    for damaged in (first, second, third):
        assert read_segment_head(damaged, engine="batched", stream="counter") is None
    assert read_segment_head(fourth, engine="batched", stream="counter") is not None
    with pytest.warns(UserWarning, match="is damaged") as said:  # the truncated and the altered, not the foreign
        run_grid(grid, out=out, n_jobs=1, chunk_size=4, progress=False)
    assert sorted(str(w.message).split(" is damaged")[0] for w in said) == [str(first), str(second)]
    assert out.read_bytes() == whole.read_bytes()
    meta = json.loads((tmp_path / "r.meta.json").read_text())
    assert (meta["chunks_computed"], meta["chunks_resumed"]) == (5, 1)
    assert (meta["runs_computed"], meta["runs_reused"]) == (20, 4)


def test_temporary_files_of_a_write_killed_midway_are_removed(tmp_path):
    out = tmp_path / "r.csv"
    for name in (".r.csv.x1y2.tmp", ".r.meta.json.x1y2.tmp", ".other.csv.x1y2.tmp"):
        (tmp_path / name).write_text("half a file")
    run_grid(Grid(**GRID), out=out, n_jobs=1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.csv.x1y2.tmp", "r.csv", "r.csv.store", "r.meta.json"]


# Ctrl-C -------------------------------------------------------------------------------------------


def _alive(pids: set[int]) -> list[str]:
    left = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                left.append(" ".join(proc.cmdline()[:4]))
    return left


def _watch_children(proc: subprocess.Popen, until, timeout: float = 120) -> set[int]:
    """The descendants of proc seen while waiting for until() (or proc's end)."""
    seen: set[int] = set()
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not until():
        with contextlib.suppress(psutil.NoSuchProcess):
            seen |= {child.pid for child in psutil.Process(proc.pid).children(recursive=True)}
        time.sleep(0.02)
    return seen


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "signum, status, word",
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
    ids=["ctrl_c", "sigterm"],
)
@pytest.mark.parametrize("backend", ["loky", "auto"])
def test_a_stop_is_prompt_keeps_chunks_says_how_to_resume_and_exits_with_its_status(
    tmp_path, signum, status, word, backend
):
    """Ctrl-C at a terminal, or SIGTERM from a batch system at its time limit, to the whole
    process group, workers included: the finished chunks are kept, one line says how to resume,
    the workers and their temporary files are gone, and the run resumes to the same table. With
    loky's worker processes, and with the default (this plain grid's chunks train on threads of
    the process itself: none is started)."""
    spec = tmp_path / "faults.toml"
    spec.write_text(SPEC)
    out, store = tmp_path / "r.csv", tmp_path / "r.csv.store"
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    args = ["run", spec, "--out", out, "--jobs", "2", "--chunk-size", "2", "--quiet", "--backend", backend]
    proc = subprocess.Popen(
        _study(*args),
        cwd=tmp_path,
        env=env,
        start_new_session=True,
        preexec_fn=default_sigint,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = _watch_children(proc, lambda: store.is_dir() and len(list(store.glob("*.runs"))) >= 6)
    assert proc.poll() is None  # stopped midway
    threads = backend == "auto" and kernels.AVAILABLE  # else loky's processes
    assert not seen if threads else len(seen) >= 2  # with its workers running
    stopped = time.time()
    os.killpg(proc.pid, signum)
    stdout, stderr = proc.communicate(timeout=30)
    assert time.time() - stopped < 10
    assert proc.returncode == status
    kept = len(list(store.glob("*.runs")))
    assert 6 <= kept < 72 and not out.exists()
    assert stderr.splitlines() == [
        f"study: {word}; {kept} finished chunks are kept in {store}; run the same command again to resume"
    ], stderr
    time.sleep(0.5)
    assert _alive(seen) == []
    assert list((tmp_path / "tmp").iterdir()) == []

    subprocess.run(_study(*args), cwd=tmp_path, env=env, check=True)
    whole = tmp_path / "whole.csv"
    run_grid(load_grid(spec), out=whole, n_jobs=1, chunk_size=2, progress=False)
    assert out.read_bytes() == whole.read_bytes()
    meta = json.loads((tmp_path / "r.meta.json").read_text())
    assert (meta["chunks_resumed"], meta["chunks_computed"]) == (kept, 72 - kept)


def test_sigterm_in_process_restores_the_previous_handler(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    assert main(["--help"]) == 0
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.timeout(180)
def test_a_second_run_on_the_same_output_is_refused_naming_the_first(tmp_path):
    """Two `study run` on one --out at once: the second exits 1 at once, with one line naming
    the first's pid and writing nothing; the first finishes with the table a lone run gives."""
    spec = tmp_path / "faults.toml"
    spec.write_text(SPEC.replace("epoch = [5, 2000]", "epoch = [5, 6000]"))  # long enough to be caught running
    out, store = tmp_path / "r.csv", tmp_path / "r.csv.store"
    args = ["run", spec, "--out", out, "--jobs", "1", "--chunk-size", "2", "--quiet"]
    first = subprocess.Popen(_study(*args), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _watch_children(first, lambda: store.is_dir() and len(list(store.glob("*.runs"))) >= 2)
    assert first.poll() is None
    second = subprocess.run(_study(*args), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert second.returncode == 1
    assert second.stderr.splitlines() == [
        f"study: failed: OutputBusy: another study run (pid {first.pid}) is writing {out}; wait for it to finish, "
        "or stop it (its finished chunks are kept) and run again"
    ], second.stderr
    assert first.wait(timeout=150) == 0, first.stderr.read()
    meta = json.loads((tmp_path / "r.meta.json").read_text())
    assert (meta["chunks_computed"], meta["chunks_resumed"]) == (72, 0)  # the second took none of them
    whole = tmp_path / "whole.csv"
    run_grid(load_grid(spec), out=whole, n_jobs=1, chunk_size=2, progress=False)
    assert out.read_bytes() == whole.read_bytes()


# leftovers and oversubscription -------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_a_finished_run_leaves_no_process_and_no_temporary_file(tmp_path):
    spec = tmp_path / "faults.toml"
    spec.write_text(SPEC.replace("replicates = 8", "replicates = 2"))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen(
        _study("run", spec, "--out", tmp_path / "out" / "r.csv", "--jobs", "2", "--quiet", "--backend", "loky"),
        cwd=tmp_path,
        env={**os.environ, "TMPDIR": str(tmp)},
    )
    seen = _watch_children(proc, lambda: False)
    assert proc.wait(timeout=60) == 0
    assert len(seen) >= 2  # it did start workers
    time.sleep(0.5)
    assert _alive(seen) == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["r.csv", "r.csv.store", "r.meta.json"]
    # the finished chunks, and what grid they were for (so that `study table` reads them while it runs)
    assert all(p.suffix == ".runs" or p.name == "grid.json" for p in (tmp_path / "out" / "r.csv.store").iterdir())
    assert list(tmp.iterdir()) == []
    shm = Path("/dev/shm")  # where joblib and loky put shared memory, when there is one
    assert not (shm.is_dir() and list(shm.glob(f"*{proc.pid}*")))


@pytest.mark.timeout(120)
def test_a_run_killed_outright_leaves_no_process_and_no_shared_memory_behind(tmp_path):
    """SIGKILL gives run_grid no chance to stop its workers: they notice and leave on their own,
    and loky's resource tracker removes what they held in /dev/shm."""
    spec = tmp_path / "faults.toml"
    spec.write_text(SPEC)
    store = tmp_path / "r.csv.store"
    proc = subprocess.Popen(
        _study(
            "run", spec, "--out", tmp_path / "r.csv", "--jobs", "2", "--chunk-size", "2", "--quiet", "--backend", "loky"
        ),
        cwd=tmp_path,
        stderr=subprocess.DEVNULL,
    )
    seen = _watch_children(proc, lambda: store.is_dir() and len(list(store.glob("*.runs"))) >= 4)
    assert proc.poll() is None and len(seen) >= 2
    proc.kill()
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and _alive(seen):
        time.sleep(0.1)
    assert _alive(seen) == []
    shm = Path("/dev/shm")
    assert not (shm.is_dir() and list(shm.glob(f"*{proc.pid}*")))


def test_tasks_train_with_one_torch_thread_and_the_caller_keeps_its_own(monkeypatch):
    seen = []
    train = study.engine.train_batched_together  # what trains every chunk, alone or with others

    def recording(chunks, checkpoints, device="cpu", options=None):
        seen.append(torch.get_num_threads())
        return train(chunks, checkpoints, device)

    monkeypatch.setattr(study.engine, "train_batched_together", recording)
    torch.set_num_threads(2)
    run_grid(Grid(**GRID), n_jobs=1, chunk_size=8, progress=False)  # chunk by chunk
    run_grid(Grid(**GRID), n_jobs=1, progress=False)  # chunks trained together (study.dispatch.bundle)
    assert len(seen) == 4 and set(seen) == {1}
    assert torch.get_num_threads() == 2


# outputs that cannot be written -------------------------------------------------------------------


def _unwritable(tmp_path: Path) -> list[Path]:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    paths = [blocker / "r.csv", blocker / "sub" / "r.csv", tmp_path / ("x" * 300 + ".csv")]
    if Path("/proc/self").is_dir():  # refused even to root, whatever the permission bits say
        paths.append(Path("/proc/study-test/r.csv"))
    return paths


def test_study_run_refuses_an_output_it_cannot_write_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "g.toml"
    spec.write_text("[grid]\nnum_train = 20\nepoch = 1\nnum_val = 20\n")
    for out in _unwritable(tmp_path):
        before = set(tmp_path.rglob("*"))
        assert main(["run", str(spec), "--out", str(out), "--quiet", "--jobs", "1"]) == 2, out
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith("study: error: The '--out' option must be"), err
        assert set(tmp_path.rglob("*")) == before


# malformed input, generated -------------------------------------------------------------------------

_KEYS = [
    "num_train",
    "lr",
    "epoch",
    "loss",
    "sigma",
    "reduction",
    "batch_size",
    "noise",
    "noise_kind",
    "w",
    "b",
    "num_val",
    "replicates",
    "seed",
    "lrr",
    "epochs",
    "Num_Train",
    "",
]
# Small where they are sizes, so that a spec that happens to be valid runs in milliseconds.
_SCALARS = st.one_of(
    st.integers(-3, 30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from(["squared", "huber", "mean", "sum", "gaussian", "student_t", "outliers", "hubber", "", "1"]),
    st.text(max_size=8),
)
_VALUES = st.one_of(
    _SCALARS, st.lists(_SCALARS, max_size=2), st.dictionaries(st.sampled_from(["a", "lr"]), _SCALARS, max_size=1)
)


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {float("inf"): "inf", float("-inf"): "-inf"}.get(value, "nan" if value != value else repr(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml, value)) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"


@st.composite
def _specs(draw) -> str:
    if draw(st.integers(0, 9)) == 0:  # not TOML, or TOML of another shape
        return draw(st.sampled_from(["", "[grid", "grid = 3", "[other]\nx = 1", "[grid]\nlr = = 1", "\x00"]))
    lines = []
    if draw(st.booleans()):
        lines.append(f"name = {_toml(draw(st.one_of(st.sampled_from(['ok', 'a b', '../x', '']), st.integers())))}")
    if draw(st.integers(0, 4)) == 0:
        lines.append(f"descripton = {_toml(draw(_SCALARS))}")
    lines.append("[grid]")
    for key in draw(st.lists(st.sampled_from(_KEYS), max_size=4, unique=True)):
        lines.append(f"{json.dumps(key)} = {_toml(draw(_VALUES))}")
    return "\n".join(lines) + "\n"


_RUN_OPTIONS = {
    "--out": ["r.csv", "r.txt", "sub/r.csv", ".", "g.toml/r.csv", "x" * 300 + ".csv", "/proc/nope/r.csv"],
    "--jobs": ["-1", "1", "0", "-2", "x", "1.5"],
    "--device": ["auto", "cpu", "cuda", "cuda:0", "tpu", ""],
    "--engine": ["batched", "reference", "warp"],
    "--backend": ["loky", "sequential", "threading", "multiprocessing", "ray"],  # dask: see test_cluster.py
    "--scheduler": ["tcp://127.0.0.1:8786", "127.0.0.1:0", "nowhere", "x.json", ""],
    "--chunk-timeout": ["5", "0", "-1", "nan", "inf", "soon"],
    "--chunk-size": ["1", "0", "x"],
    "--fresh": None,
    "--quiet": None,
    "--bogus": None,
}
_DEMO_OPTIONS = {
    "--seed": ["0", "-1", "x"],
    "--lr": ["0.03", "0", "-1", "nan", "inf", "1e30"],
    "--epochs": ["1", "0", "-2"],
    "--loss": ["squared", "huber", "l1"],
    "--num-train": ["20", "0", "-5", "x"],
}


@st.composite
def _argv(draw) -> list[str]:
    command = draw(st.sampled_from(["run", "run", "run", "table", "demo", "plot", "--help", "", "-x"]))
    argv = [command] if command else []
    if command == "run":
        argv.append(draw(st.sampled_from(["g.toml", "g.toml", "missing.toml", ".", "r.csv"])))
        options = _RUN_OPTIONS
    elif command == "demo":
        options = _DEMO_OPTIONS
    elif command == "table":
        argv.append(draw(st.sampled_from(["g.toml", "missing.csv", "."])))
        options = {"--by": ["lr", "nope", ","], "--out": ["s.csv", "s.txt"]}
    else:
        options = {}
    from conftest import with_drawn_options

    return with_drawn_options(draw, argv, options, unique=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=_specs(), argv=_argv())
def test_bad_input_never_shows_a_traceback(tmp_path_factory, spec, argv):
    """Whatever the spec and the arguments: exit 0, or exit 2 with one line on stderr."""
    from conftest import run_cli_in

    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "g.toml").write_text(spec, encoding="utf-8")
    code, out, err = run_cli_in(folder, argv)
    assert "Traceback" not in out + err, (argv, spec, err)
    assert code in (0, 2), (argv, spec, code, err)
    if code == 2:
        assert len(err.strip().splitlines()) == 1 and err.startswith("study"), (argv, spec, err)
