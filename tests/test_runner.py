from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from specs import long_spec

from study import kernels
from study.grid import Grid
from study.runner import plan_chunks, resolve_devices, run_grid
from study.schema import COORDINATES

SMALL = dict(num_train=[5, 40, 100], lr=[0.01, 0.1], loss=["squared", "huber"], epoch=[1, 3], replicates=2, num_val=50)


def small_grid(**kw) -> Grid:
    return Grid(**{**SMALL, **kw})


def test_run_grid_schema_and_row_count():
    grid = small_grid()
    df = run_grid(grid, n_jobs=1, progress=False)
    runs = 3 * 2 * 2 * 2
    assert len(df) == runs * 3  # epochs 0, 1, 3
    expected = [
        *COORDINATES,
        "w_hat_0",
        "w_hat_1",
        "w_err_0",
        "w_err_1",
        "w_err_norm",
        "w_err_max",
        "b_hat",
        "b_err",
        "train_loss",
        "val_mse",
        "grad_w_norm",
        "grad_b",
        "ols_w_err_norm",
        "ols_b_err",
        "gap_w_norm",
        "steps",
        "diverged",
    ]
    assert list(df.columns) == expected
    # σ is missing exactly where it does not apply: the squared runs (the Huber loss's threshold).
    assert df[[c for c in COORDINATES if c != "sigma"]].notna().all().all()
    assert (df["sigma"].isna() == (df["loss"] == "squared")).all()
    assert sorted(df["epoch"].unique()) == [0, 1, 3]
    assert df.groupby(["num_train", "lr", "loss", "replicate"]).size().eq(3).all()
    np.testing.assert_allclose(df["w_err_norm"], np.hypot(df["w_err_0"], df["w_err_1"]))
    np.testing.assert_allclose(df["w_err_0"], df["w_hat_0"] - np.float32(2.0))
    # steps: ceil(n / 32) per epoch
    last = df[df["epoch"] == 3]
    np.testing.assert_array_equal(last["steps"], 3 * np.ceil(last["num_train"] / 32))


def test_run_grid_same_spec_twice_gives_byte_identical_csv(tmp_path):
    grid = small_grid()
    run_grid(grid, out=tmp_path / "a.csv", n_jobs=1, progress=False)
    run_grid(grid, out=tmp_path / "b.csv", n_jobs=1, progress=False)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    meta = json.loads((tmp_path / "a.meta.json").read_text())
    assert meta["runs"] == 24 and meta["engine"] == "batched" and "wall_time_s" in meta
    assert (meta["runs_computed"], meta["runs_reused"]) == (24, 0)
    # The store outlives the table: the same spec again on the same output trains nothing.
    assert list((tmp_path / "a.csv.store").glob("*.runs"))
    run_grid(grid, out=tmp_path / "a.csv", n_jobs=1, progress=False)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    meta = json.loads((tmp_path / "a.meta.json").read_text())
    assert (meta["runs_computed"], meta["runs_reused"], meta["chunks_computed"]) == (0, 24, 0)


def test_run_grid_workers_backends_and_chunk_sizes_change_nothing(tmp_path):
    grid = small_grid()
    outs = {
        "one": dict(n_jobs=1),
        "two": dict(n_jobs=2),
        "chunk1": dict(n_jobs=2, chunk_size=1),
        "chunk5": dict(n_jobs=1, chunk_size=5),
        "threads": dict(n_jobs=2, backend="threading", chunk_size=3),
        "processes": dict(n_jobs=2, backend="loky", chunk_size=2),
    }
    for name, kw in outs.items():
        run_grid(grid, out=tmp_path / f"{name}.csv", progress=False, **kw)
    first = (tmp_path / "one.csv").read_bytes()
    for name in outs:
        assert (tmp_path / f"{name}.csv").read_bytes() == first, name
    # the sidecar names the backend "auto" took: threads for these compiled chunks (plain SGD)
    meta = json.loads((tmp_path / "two.meta.json").read_text())
    assert meta["backend"] == ("threading" if kernels.AVAILABLE else "loky")
    assert json.loads((tmp_path / "processes.meta.json").read_text())["backend"] == "loky"


def test_run_grid_common_random_numbers_across_lr_and_loss():
    df = run_grid(small_grid(), n_jobs=1, progress=False)
    start = df[df["epoch"] == 0]
    cols = ["seed", "w_hat_0", "w_hat_1", "b_hat", "train_loss", "val_mse", "ols_w_err_norm", "ols_b_err"]
    squared = start[start["loss"] == "squared"]
    per_cell = squared.groupby(["num_train", "replicate"])[cols].nunique()
    assert (per_cell == 1).all().all()  # lr does not change data, start or seed
    trained = df[(df["epoch"] == 3) & (df["num_train"] == 100)]
    assert trained.groupby(["replicate", "loss"])["w_hat_0"].nunique().eq(2).all()  # but training differs


def test_run_grid_epoch_is_a_checkpoint_axis():
    long = run_grid(small_grid(epoch=[3, 10]), n_jobs=1, progress=False)
    short = run_grid(small_grid(epoch=[3]), n_jobs=1, progress=False)
    a = long[long["epoch"] == 3].reset_index(drop=True)
    b = short[short["epoch"] == 3].reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_run_grid_divergence_is_flagged_and_contained():
    grid = Grid(num_train=[1000], lr=[0.03, 10.0], epoch=[1, 3], replicates=2, num_val=100)
    df = run_grid(grid, n_jobs=1, progress=False)
    last = df[df["epoch"] == 3]
    assert last[last["lr"] == 10.0]["diverged"].all()
    calm = last[last["lr"] == 0.03]
    assert not calm["diverged"].any() and np.isfinite(calm["w_err_norm"]).all()
    assert (calm["w_err_norm"] < 0.05).all()


def test_run_grid_reference_engine_agrees_with_batched():
    grid = small_grid(num_train=[5, 40])
    a = run_grid(grid, n_jobs=1, progress=False)
    b = run_grid(grid, n_jobs=1, progress=False, engine="reference")
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-5, atol=1e-5)


def test_plan_chunks_groups_by_size_whole_streams_and_respects_the_cap():
    grid = small_grid(batch_size=[8, 32])
    runs = grid.runs()
    per_stream = len(grid.lr) * len(grid.loss) * len(grid.sigma) * len(grid.reduction)
    cap = 5 * per_stream
    chunks = plan_chunks(grid, chunk_size=cap)
    assert sorted(i for c in chunks for i in c.index.tolist()) == list(range(len(runs)))
    assert all(len(c) <= cap for c in chunks)
    assert all(len({(r.num_train, r.batch_size) for r in c}) == 1 for c in chunks)
    for c in chunks:  # every stream of a chunk is whole there
        seeds, counts = np.unique(c.seed, return_counts=True)
        assert (counts == per_stream).all()
        for i in c.index:
            assert runs[i] == c[int(np.flatnonzero(c.index == i)[0])]
    # A cap below one stream still keeps the stream whole.
    assert all(len(c) == per_stream for c in plan_chunks(grid, chunk_size=1))


def test_plan_chunks_balance_the_work_and_stay_in_the_memory_budget():
    from study.engine import CHUNK_MEMORY_BUDGET, chunk_bytes

    grid = Grid(num_train=[10_000], replicates=2000)
    big = plan_chunks(grid, cores=2)
    assert all(chunk_bytes(10_000, 1000, 2, len(c), len(c)) <= CHUNK_MEMORY_BUDGET for c in big)
    small = plan_chunks(Grid(num_train=[20], replicates=4000, epoch=[1]), cores=2)
    assert len(small) >= 2  # a grid of little work still splits over the cores


def test_resolve_devices_without_gpu_is_cpu():
    if not __import__("torch").cuda.is_available():
        assert resolve_devices("auto") == ["cpu"]
        with pytest.raises(ValueError, match="'device' parameter of run_grid .* no CUDA GPU"):
            resolve_devices("cuda")
    with pytest.raises(
        ValueError, match=r"'device' parameter of run_grid must be 'auto', 'cpu', 'cuda' or 'cuda:N'\. Got 'tpu'"
    ):
        resolve_devices("tpu")


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(n_jobs=0), r"'n_jobs' parameter of run_grid must be a positive integer or -1"),
        (dict(engine="fast"), r"'engine' parameter of run_grid must be one of \['batched', 'reference'\]"),
        (dict(backend="ray"), r"'backend' parameter of run_grid must be one of"),
        (dict(chunk_size=0), r"'chunk_size' parameter of run_grid"),
        (dict(out="results.txt"), r"'out' parameter of run_grid must be a path ending in \.csv"),
        (
            dict(backend="multiprocessing"),
            r"'backend' parameter of run_grid must be one of \['auto', 'loky', 'threading', "
            r"'sequential', 'dask'\]\. Got 'multiprocessing'",
        ),
        (
            dict(scheduler="tcp://127.0.0.1:8786"),
            r"'scheduler' parameter of run_grid must be None unless backend is 'dask'",
        ),
        (dict(chunk_timeout=60), r"'chunk_timeout' parameter of run_grid must be None unless backend is 'dask'"),
        (
            dict(backend="dask", chunk_timeout=0),
            r"'chunk_timeout' parameter of run_grid must be a finite number > 0\. Got 0",
        ),
        (dict(backend="dask", chunk_timeout=float("inf")), r"'chunk_timeout' parameter of run_grid must be a finite"),
    ],
)
def test_run_grid_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        run_grid(small_grid(), progress=False, **kw)


@pytest.mark.parametrize(
    "scheduler",
    ["nowhere", "127.0.0.1", "127.0.0.1:99999", "udp://127.0.0.1:8786", "tcp://a b:1", "missing.json", 8786, ""],
)
def test_run_grid_refuses_a_malformed_scheduler_before_any_work(tmp_path, scheduler):
    with pytest.raises(
        ValueError,
        match=r"The 'scheduler' parameter of run_grid must be 'tcp://HOST:PORT', "
        r"'HOST:PORT' or an existing scheduler file ending in \.json\. Got ",
    ):
        run_grid(small_grid(), out=tmp_path / "r.csv", backend="dask", scheduler=scheduler, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_scheduler_addresses_are_taken_as_dask_takes_them(tmp_path):
    from study.runner import _check_scheduler

    assert _check_scheduler("127.0.0.1:8786", "dask") == "tcp://127.0.0.1:8786"
    assert _check_scheduler("tcp://node-3.cluster:8786", "dask") == "tcp://node-3.cluster:8786"
    assert _check_scheduler("tls://[::1]:8786", "dask") == "tls://[::1]:8786"
    (tmp_path / "scheduler.json").write_text("{}")
    assert _check_scheduler(str(tmp_path / "scheduler.json"), "dask") == str(tmp_path / "scheduler.json")
    assert _check_scheduler(None, "loky") is None


def test_run_grid_refuses_an_output_under_a_file_before_any_work(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="'out' parameter of run_grid must be a path in a folder that can be written"):
        run_grid(small_grid(), out=blocker / "sub" / "r.csv", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_run_grid_truncated_chunk_file_is_recomputed(tmp_path):
    grid = small_grid()
    out = tmp_path / "r.csv"
    run_grid(grid, out=out, n_jobs=1, progress=False)
    reference = out.read_bytes()
    # A store holding a truncated segment, a damaged one, and a file that is not a segment.
    from study.store import read_segment_head

    store = tmp_path / "r.csv.store"
    segments = sorted(store.glob("*.runs"))
    assert len(segments) >= 2
    runs = [len(read_segment_head(path, engine="batched", stream="counter").keys) for path in segments]
    segments[0].write_bytes(segments[0].read_bytes()[:-5])
    damaged = bytearray(segments[1].read_bytes())
    damaged[-3] ^= 0xFF
    segments[1].write_bytes(bytes(damaged))
    (store / "0123.runs").write_bytes(b"not a segment")
    out.unlink()
    with pytest.warns(UserWarning) as said:  # repaired, and said: a file each, with the runs it held
        run_grid(grid, out=out, n_jobs=1, progress=False)
    lines = sorted(str(w.message) for w in said)
    assert lines == sorted(
        [
            f"{store / '0123.runs'} is damaged (it does not start as a segment of runs does): its runs (how many: "
            "unreadable); they are trained again",
            *(
                f"{path} is damaged (its contents fail their sha256 digest: truncated or altered): its {n:,} runs; they are "
                "trained again"
                for path, n in zip(segments[:2], runs[:2])
            ),
        ]
    )
    assert out.read_bytes() == reference
    meta = json.loads((tmp_path / "r.meta.json").read_text())
    assert meta["runs_computed"] == runs[0] + runs[1] and meta["runs_reused"] == 24 - runs[0] - runs[1]


RESUME_SPEC = long_spec("resume")


def _study(*args, cwd):
    return [sys.executable, "-m", "study", *map(str, args)]


def _saved_chunks_all_load(store: Path, spec: Path, chunk_size: int) -> int:
    """Every segment in the store is whole (its digest holds) and holds whole chunks' runs of
    this grid; their count."""
    from study.grid import load_grid
    from study.store import read_segment_head

    grid = load_grid(spec)
    chunks = {frozenset(c.key.tolist()) for c in plan_chunks(grid, chunk_size)}
    files = list(store.glob("*.runs"))
    for path in files:
        head = read_segment_head(path, engine="batched", stream=grid.stream)
        assert head is not None, path.name
        assert frozenset(head.keys.tolist()) in chunks
    return len(files)


def test_study_run_killed_at_any_moment_resumes_to_the_same_csv(tmp_path):
    """SIGKILLed before its first chunk, early, and late; each time restarted: the chunks saved
    are whole, no CSV appears until the end, and the last run computes only what is missing."""
    from study.grid import load_grid

    spec = tmp_path / "resume.toml"
    spec.write_text(RESUME_SPEC)
    common = ["--jobs", "1", "--chunk-size", "2", "--quiet"]  # 144 runs in 72 chunks
    whole = tmp_path / "whole.csv"
    run_grid(load_grid(spec), out=whole, n_jobs=1, chunk_size=2, progress=False)

    out = tmp_path / "killed.csv"
    store = tmp_path / "killed.csv.store"
    saved = 0
    for kill_after in (0, 20, 55):
        proc = subprocess.Popen(_study("run", spec, "--out", out, *common, cwd=tmp_path))
        deadline = time.time() + 120
        while time.time() < deadline and not (store.is_dir() and len(list(store.glob("*.runs"))) >= kill_after):
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not out.exists()
        now = _saved_chunks_all_load(store, spec, chunk_size=2)
        assert saved <= now < 72
        saved = now
    assert saved >= 55

    subprocess.run(_study("run", spec, "--out", out, *common, cwd=tmp_path), check=True)
    assert out.read_bytes() == whole.read_bytes()
    meta = json.loads((tmp_path / "killed.meta.json").read_text())
    assert meta["chunks_resumed"] == saved
    assert meta["chunks_computed"] == 72 - saved  # only the chunks that were not saved
    assert (meta["runs_reused"], meta["runs_computed"]) == (2 * saved, 2 * (72 - saved))
    assert store.is_dir()  # kept for the next grid on this output


def test_study_run_fresh_recomputes_everything(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text("[grid]\nnum_train = [20]\nlr = [0.1]\nepoch = [1]\nnum_val = 10\n")
    command = _study("run", spec, "--out", tmp_path / "s.csv", "--jobs", "1", "--quiet", cwd=tmp_path)
    subprocess.run(command, check=True)
    subprocess.run(command + ["--fresh"], check=True)
    meta = json.loads((tmp_path / "s.meta.json").read_text())
    assert meta["chunks_computed"] == 1 and meta["chunks_resumed"] == 0 and meta["runs_reused"] == 0
    assert len(list((tmp_path / "s.csv.store").glob("*.runs"))) == 1  # the old segment was removed


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_run_grid_on_cuda_gives_the_cpu_table_on_stable_runs():
    """A seeded spec gives the same table on a GPU as on a CPU, to max(1e-5, 1e-5 |x|), for the
    runs inside SGD's stability edge (engine.past_stability_edge); the chaotic ones are only
    flagged diverged alike where both diverged."""
    from study.engine import past_stability_edge

    grid = Grid(
        num_train=[5, 33, 200, 1000],
        lr=[0.01, 0.1, 0.4, 2.0],
        loss=["squared", "huber"],
        sigma=[0.5, 1.0],
        reduction=["mean", "sum"],
        noise_kind=["gaussian", "outliers"],
        epoch=[1, 3],
        replicates=3,
        num_val=50,
    )
    gpu = run_grid(grid, device="cuda", progress=False)
    assert len(gpu) == len(grid.runs()) * len(grid.checkpoints)
    cpu = run_grid(grid, device="cpu", n_jobs=1, progress=False)
    stable = ~past_stability_edge(
        cpu["lr"], cpu["loss"], cpu["sigma"], cpu["reduction"], cpu["batch_size"], cpu["num_train"]
    )
    assert stable.mean() > 0.4 and (~stable).sum() > 0
    coords = ["num_train", "lr", "epoch", "loss", "sigma", "reduction", "noise_kind", "replicate", "seed", "steps"]
    pd.testing.assert_frame_equal(gpu[coords], cpu[coords])
    assert (gpu["diverged"][stable] == cpu["diverged"][stable]).all()
    live = stable & ~cpu["diverged"]
    for col in ["w_hat_0", "w_hat_1", "b_hat", "train_loss", "val_mse", "grad_w_norm", "grad_b", "ols_w_err_norm"]:
        a, b = gpu[col][live].to_numpy(), cpu[col][live].to_numpy()
        bad = ~(np.abs(a - b) <= np.maximum(1e-5, 1e-5 * np.abs(b)))
        assert not bad.any(), f"{col}: {bad.sum()} of {len(a)} differ, worst {np.abs(a - b)[bad].max()}"


def test_auto_device_is_the_cpu_for_the_reference_engine_small_grids_and_the_torch_stream():
    from study.runner import AUTO_GPU_MIN_SECONDS, resolve_devices

    assert resolve_devices("auto", "reference") == ["cpu"]
    assert resolve_devices("auto", "batched", small_grid()) == ["cpu"]
    big = Grid(num_train=[10_000], replicates=5000, epoch=[10])
    torch_big = Grid(num_train=[10_000], replicates=5000, epoch=[10], stream="torch")
    assert resolve_devices("auto", "batched", torch_big) == ["cpu"]
    gpus = __import__("torch").cuda.device_count()
    assert resolve_devices("auto", "batched", big) == ([f"cuda:{i}" for i in range(gpus)] or ["cpu"])
    from study.engine import estimated_seconds
    from study.plan import grid_seconds

    assert grid_seconds(big, estimated_seconds) > AUTO_GPU_MIN_SECONDS > grid_seconds(small_grid(), estimated_seconds)


def test_progress_is_printed_as_lines_when_stderr_is_not_a_terminal(monkeypatch, capsys):
    """Under nohup or a batch system stderr is a file: a line every PROGRESS_EVERY_S seconds of
    elapsed time (whatever the estimate said), from a timer, and one at the end; a grid done
    sooner prints none."""
    from study import runner

    grid = Grid(num_train=[20], lr=[0.01, 0.1], epoch=[1], replicates=6, name="lines")
    run_grid(grid, n_jobs=1, progress=True)
    assert capsys.readouterr().err == ""  # done well within PROGRESS_EVERY_S
    monkeypatch.setattr(runner, "PROGRESS_EVERY_S", 0.05)
    slow = runner.engines.train_batched_together

    def slowly(*args, **kwargs):  # a chunk of 0.2 s: the timer's lines come while it trains
        time.sleep(0.2)
        return slow(*args, **kwargs)

    monkeypatch.setattr(runner.engines, "train_batched_together", slowly)
    run_grid(grid, n_jobs=1, progress=True, chunk_size=4)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) >= 4 and lines[0].startswith("study: lines: 0 of 12 runs (0%), ")
    assert lines[-1].startswith("study: lines: 12 of 12 runs (100%), ")
    assert all(re.fullmatch(r"study: lines: \d+ of 12 runs \(\d+%\), \d+ s(, about .* left)?", line) for line in lines)


def test_plan_summary_counts_the_work_and_estimates_by_engine_and_backend():
    from study.runner import REFERENCE_STEP_S, plan_summary

    grid = Grid(num_train=[100, 1000], lr=[0.01, 0.1], epoch=[1, 5], replicates=300, name="s")
    line = plan_summary(grid, n_jobs=1, device="cpu")
    assert line.startswith("s: 1,200 runs, 3,600 rows in ") and line.endswith("the CSV about 1.6 MB")
    steps = 600 * 5 * (4 + 32)  # runs x epochs x steps an epoch, per size: 108,000
    assert f"about {steps * REFERENCE_STEP_S:.0f} s" in plan_summary(grid, n_jobs=1, engine="reference")
    assert "on a Dask cluster; time unknown" in plan_summary(grid, backend="dask")


def test_plan_summary_bounds_the_time_where_the_output_holds_earlier_runs(tmp_path):
    from study.runner import plan_summary

    grid = Grid(num_train=[20], lr=[0.01, 0.1], epoch=[1], replicates=3, name="s")
    out = tmp_path / "s.csv"
    assert "; about " in plan_summary(grid, n_jobs=1, device="cpu", out=out)
    run_grid(grid, out=out, n_jobs=1, progress=False)
    line = plan_summary(grid, n_jobs=1, device="cpu", out=out)
    assert "; at most 1 s (s.csv.store holds earlier runs, which are not trained again);" in line


def test_a_table_of_several_num_inputs_keeps_feature_columns_for_d_up_to_10():
    """Runs of 1, 3 and 40 features in one table: w_hat_j / w_err_j for j < 3 (the largest d <=
    10), missing past a run's own d and for d = 40; w_err_norm and w_err_max for every run, from
    the run's own errors."""
    grid = Grid(num_train=[50], num_inputs=[1, 3, 40], w=0.25, lr=[0.05], epoch=[2], replicates=3, num_val=10)
    df = run_grid(grid, n_jobs=1, progress=False)
    assert [c for c in df.columns if c.startswith("w_hat_")] == ["w_hat_0", "w_hat_1", "w_hat_2"]
    assert len(df) == 3 * 3 * 2 and list(df["num_inputs"].unique()) == [1, 3, 40]
    errors = df[["w_err_0", "w_err_1", "w_err_2"]].to_numpy()
    d = df["num_inputs"].to_numpy()
    assert np.isfinite(errors[d == 3]).all() and np.isfinite(errors[d == 1, 0]).all()
    assert np.isnan(errors[d == 1, 1:]).all() and np.isnan(errors[d == 40]).all()
    small = d <= 3
    np.testing.assert_allclose(df["w_err_max"][small], np.nanmax(np.abs(errors[small]), axis=1), rtol=0)
    np.testing.assert_allclose(df["w_err_norm"][small], np.sqrt(np.nansum(errors[small] ** 2, axis=1)), rtol=1e-6)
    assert (df["w_err_max"] <= df["w_err_norm"] + 1e-7).all() and (df.loc[d == 40, "w_err_max"] > 0).all()
    # A d of one replicate shares its seed with the other ds (not its data): the stream's axes.
    assert df.groupby("replicate")["seed"].nunique().eq(1).all()


def test_num_inputs_refusals_name_w():
    with pytest.raises(
        ValueError,
        match=r"The 'w' parameter of Grid must be one number \(repeated num_inputs times\) "
        r"where num_inputs is \[5\], or a list of that many numbers",
    ):
        Grid(num_inputs=[5])  # the default w has two numbers
    with pytest.raises(ValueError, match=r"The 'num_inputs' parameter of Grid must be an integer >= 1"):
        Grid(num_inputs=[0], w=1.0)
    assert Grid(num_inputs=[2]).w == [2.0, -3.4] and Grid(w=[1.0, 2.0, 3.0]).num_inputs == [3]


def test_sigma_applies_to_huber_runs_only_trained_once_for_squared_and_compared_paired():
    """A grid of both losses at two sigmas trains the squared runs once per stream (σ does not
    apply to them: a missing value in the table). Nothing pools over the σ they lack: a summary
    by loss and sigma has one squared cell, and the comparison with the squared loss by σ pairs
    every Huber σ with the same squared runs."""
    from study.comparisons import compare
    from study.summaries import summarize

    grid = Grid(
        num_train=[40], lr=[0.05], loss=["squared", "huber"], sigma=[0.5, 2.0], epoch=[2], replicates=6, num_val=10
    )
    assert grid.n_runs == 3 * 6
    df = run_grid(grid, n_jobs=1, progress=False)
    last = df[df["epoch"] == 2]
    assert len(last) == 18 and last.loc[last["loss"] == "squared", "sigma"].isna().all()
    cells = summarize(df, by=["loss", "sigma"], epoch=2)
    assert len(cells) == 3 and cells["count"].tolist() == [6, 6, 6]
    rows = compare(df, factor="loss", baseline="squared", by=["sigma"], epoch=2)
    assert rows["sigma"].tolist() == [0.5, 2.0] and rows["streams"].tolist() == [6, 6]
    squared = last[last["loss"] == "squared"].set_index("seed")["w_err_norm"]
    for sigma, row in zip((0.5, 2.0), rows.itertuples()):
        huber = last[(last["loss"] == "huber") & (last["sigma"] == sigma)].set_index("seed")["w_err_norm"]
        assert row.ratio == pytest.approx(float((huber / squared.loc[huber.index]).median()))


def test_an_output_the_disk_has_no_room_for_is_refused_unless_forced(tmp_path, monkeypatch):
    """A grid whose table and store would not fit the disk's free space is refused before any
    work, with both numbers; force=True starts it. (The disk is made small: shutil's answer.)"""
    import collections
    import shutil

    from study.runner import output_bytes

    grid = Grid(num_train=[20], lr=[0.1], epoch=[1], replicates=4, name="room")
    out = tmp_path / "room.parquet"
    need = output_bytes(grid, out)
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**9, 10**9 - need // 2, need // 2))
    with pytest.raises(
        ValueError,
        match=r"^The 'out' parameter of run_grid must be a path on a disk with room for "
        r"the output: the table and its store would take about .*, and .* is free "
        r"there \(force=True, or study run --force, starts anyway\)\.",
    ):
        run_grid(grid, out=out, n_jobs=1, progress=False)
    assert list(tmp_path.iterdir()) == []
    assert len(run_grid(grid, out=out, n_jobs=1, progress=False, force=True)) == 8
    # A grid 10,000 times larger than W's table per run estimates its bytes in proportion.
    assert output_bytes(Grid(num_train=[20], lr=[0.1], epoch=[1], replicates=40_000), out) == pytest.approx(
        10_000 * need, rel=1e-3
    )
