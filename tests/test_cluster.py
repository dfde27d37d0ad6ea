"""The Dask backend against real `dask scheduler` and `dask worker` processes on 127.0.0.1:
the same CSV as a local run, a worker SIGKILLed mid-grid, a chunk that kills every worker it
lands on, and a LocalCluster run (no address) that is the same again and leaves nothing behind.

Every test carries a timeout, so a hang fails the suite instead of stalling it.
"""

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

pytest.importorskip("distributed")

from distributed import Client  # noqa: E402
from specs import default_sigint, long_spec

from study.cli import main  # noqa: E402
from study.grid import load_grid  # noqa: E402
from study.runner import run_grid  # noqa: E402

HERE = Path(__file__).resolve().parent
SPEC = """\
name = "cluster"
[grid]
num_train = [20, 100, 500]
lr = [0.01, 0.1]
loss = ["squared", "huber"]
epoch = [2, 5]
replicates = 4
num_val = 50
"""
#: Long enough (about 5 s on two workers) that a worker can be killed in the middle of it.
LONG_SPEC = long_spec("long")
CRASH_SPEC = """\
name = "crash"
[grid]
num_train = [13, 20, 50, 100, 200]
lr = [0.01, 0.1]
epoch = [1, 3]
replicates = 4
num_val = 50
"""


def _study(*args) -> list[str]:
    return [sys.executable, "-m", "study", *map(str, args)]


class _Cluster:
    """A `dask scheduler` and two single-threaded `dask worker` processes on 127.0.0.1."""

    def __init__(self, folder: Path, worker_args: tuple[str, ...] = ()) -> None:
        self.folder = folder
        self.scheduler_file = folder / "scheduler.json"
        self.procs: list[subprocess.Popen] = []
        # Dask's scratch space in the test's folder, not in the machine's /tmp.
        self.env = {**os.environ, "DASK_TEMPORARY_DIRECTORY": str(folder / "scratch")}
        folder.mkdir(parents=True, exist_ok=True)
        try:
            self._start(worker_args)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, name: str, *args: str) -> None:
        log = open(self.folder / f"{name}.log", "wb")
        self.procs.append(
            subprocess.Popen(
                [sys.executable, "-m", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        )
        log.close()

    def _start(self, worker_args: tuple[str, ...]) -> None:
        # Loopback only, free ports: --dashboard-address places the HTTP server each starts anyway.
        loopback = ("--host", "127.0.0.1", "--no-dashboard", "--dashboard-address", "127.0.0.1:0")
        self._spawn(
            "scheduler",
            "distributed.cli.dask_scheduler",
            *loopback,
            "--port",
            "0",
            "--scheduler-file",
            str(self.scheduler_file),
        )
        deadline = time.time() + 60
        while time.time() < deadline and not self.scheduler_file.exists():
            time.sleep(0.1)
        for i in range(2):
            self._spawn(
                f"worker{i}",
                "distributed.cli.dask_worker",
                "--scheduler-file",
                str(self.scheduler_file),
                *loopback,
                "--nthreads",
                "1",
                "--nworkers",
                "1",
                "--local-directory",
                str(self.folder / f"worker{i}"),
                *worker_args,
            )
        with self.client() as client:
            client.wait_for_workers(2, timeout=60)
        self.address = json.loads(self.scheduler_file.read_text())["address"]
        assert self.address.startswith("tcp://127.0.0.1:")

    def client(self) -> Client:
        return Client(scheduler_file=str(self.scheduler_file), timeout=30, set_as_default=False)

    def worker_pids(self) -> list[int]:
        with self.client() as client:
            return sorted(client.run(os.getpid).values())

    def stop(self) -> None:
        for proc in reversed(self.procs):  # workers first, then the scheduler
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the group: nanny and worker processes alike
            proc.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = _Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def crashing_cluster(tmp_path):
    """Workers that die (SIGKILL, as from the OOM killer) whenever they train num_train == 13."""
    cluster = _Cluster(tmp_path / "crashing", ("--preload", str(HERE / "dask_crash_preload.py")))
    try:
        yield cluster
    finally:
        cluster.stop()


def _local_csv(folder: Path, spec_text: str, chunk_size: int) -> tuple[Path, bytes]:
    spec = folder / "spec.toml"
    spec.write_text(spec_text)
    local = folder / "local.csv"
    run_grid(load_grid(spec), out=local, n_jobs=1, chunk_size=chunk_size, progress=False)
    return spec, local.read_bytes()


@pytest.mark.timeout(180)
def test_study_run_on_a_dask_cluster_gives_the_local_csv_byte_for_byte(cluster, tmp_path):
    spec, local = _local_csv(tmp_path, SPEC, chunk_size=4)
    out = tmp_path / "dask.csv"
    done = subprocess.run(
        _study(
            "run",
            spec,
            "--out",
            out,
            "--backend",
            "dask",
            "--scheduler",
            cluster.address,
            "--chunk-size",
            "4",
            "--quiet",
        ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == local
    meta = json.loads((tmp_path / "dask.meta.json").read_text())
    assert (meta["backend"], meta["scheduler"], meta["workers"]) == ("dask", cluster.address, 2)
    assert meta["chunks_computed"] == 12  # 48 runs in chunks of 4
    # The scheduler file a `dask scheduler --scheduler-file` writes names the cluster as well.
    assert (
        main(
            [
                "run",
                str(spec),
                "--out",
                str(tmp_path / "by_file.csv"),
                "--backend",
                "dask",
                "--scheduler",
                str(cluster.scheduler_file),
                "--chunk-size",
                "4",
                "--quiet",
            ]
        )
        == 0
    )
    assert (tmp_path / "by_file.csv").read_bytes() == local


@pytest.mark.timeout(180)
def test_a_worker_sigkilled_mid_grid_still_gives_the_same_csv(cluster, tmp_path):
    spec, local = _local_csv(tmp_path, LONG_SPEC, chunk_size=2)
    out, store = tmp_path / "dask.csv", tmp_path / "dask.csv.store"
    pids = cluster.worker_pids()
    proc = subprocess.Popen(
        _study(
            "run",
            spec,
            "--out",
            out,
            "--backend",
            "dask",
            "--scheduler",
            cluster.address,
            "--chunk-size",
            "2",
            "--quiet",
        ),
        cwd=tmp_path,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not (store.is_dir() and len(list(store.glob("*.runs"))) >= 10):
        time.sleep(0.02)
    os.kill(pids[0], signal.SIGKILL)  # the worker process itself, mid-task: its nanny starts another
    killed_at = len(list(store.glob("*.runs")))
    assert proc.wait(timeout=120) == 0
    assert 10 <= killed_at < 72  # it died in the middle of the grid
    assert not psutil.pid_exists(pids[0]) or psutil.Process(pids[0]).status() == psutil.STATUS_ZOMBIE
    assert out.read_bytes() == local
    with cluster.client() as client:
        client.wait_for_workers(2, timeout=60)  # the cluster is whole again for the next test


@pytest.mark.timeout(240)
def test_a_chunk_that_kills_every_worker_fails_alone_within_the_bound(crashing_cluster, tmp_path):
    spec, local = _local_csv(tmp_path, CRASH_SPEC, chunk_size=8)
    out = tmp_path / "crash.csv"
    timeout = 60
    started = time.time()
    done = subprocess.run(
        _study(
            "run",
            spec,
            "--out",
            out,
            "--backend",
            "dask",
            "--scheduler",
            crashing_cluster.address,
            "--chunk-size",
            "8",
            "--chunk-timeout",
            timeout,
            "--quiet",
        ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=200,
    )
    elapsed = time.time() - started
    # The documented bound: two attempts of at most --chunk-timeout each (and start-up).
    assert elapsed < 2 * timeout + 20, elapsed
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 2, done.stderr
    assert lines[0].startswith("study: failed: chunk ")
    assert "(8 runs: num_train=13, batch_size=32, lr=[0.01, 0.1], replicate=0..3): KilledWorker:" in lines[0]
    assert "alone on the cluster too" in lines[0]
    assert lines[1].startswith("study: failed: 1 of 5 chunks (8 of 40 runs) failed; the runs that finished are in")
    # The other chunks are kept and written: the partial CSV is the local one without num_train 13.
    assert not out.exists()
    partial = (tmp_path / "crash.partial.csv").read_bytes().splitlines(keepends=True)
    whole = local.splitlines(keepends=True)
    assert partial == [whole[0], *(line for line in whole[1:] if not line.startswith(b"13,"))]
    failed = json.loads((tmp_path / "crash.partial.meta.json").read_text())["failed_chunks"]
    assert [(f["runs"], f["reason"].split(":")[0]) for f in failed] == [(8, "KilledWorker")]

    # A rerun computes only the failed chunk (here on this machine: chunks do not depend on where they ran).
    assert main(["run", str(spec), "--out", str(out), "--jobs", "1", "--chunk-size", "8", "--quiet"]) == 0
    assert out.read_bytes() == local
    meta = json.loads((tmp_path / "crash.meta.json").read_text())
    assert (meta["chunks_computed"], meta["chunks_resumed"]) == (1, 4)
    assert not (tmp_path / "crash.partial.csv").exists()


@pytest.mark.timeout(180)
def test_a_chunk_that_hangs_is_given_up_after_chunk_timeout_and_its_worker_freed(crashing_cluster, tmp_path):
    spec_text = CRASH_SPEC.replace("num_train = [13, 20, 50, 100, 200]", "num_train = [17, 20, 50, 100, 200, 300]")
    spec, local = _local_csv(tmp_path, spec_text, chunk_size=8)
    out = tmp_path / "hang.csv"
    started = time.time()
    done = subprocess.run(
        _study(
            "run",
            spec,
            "--out",
            out,
            "--backend",
            "dask",
            "--scheduler",
            crashing_cluster.address,
            "--chunk-size",
            "8",
            "--chunk-timeout",
            "6",
            "--quiet",
        ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert time.time() - started < 6 + 30
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 2, done.stderr
    assert "(8 runs: num_train=17," in lines[0]
    assert lines[0].endswith("no result within 6 s (chunk_timeout); the chunk was cancelled and its worker restarted")
    partial = (tmp_path / "hang.partial.csv").read_bytes().splitlines(keepends=True)
    whole = local.splitlines(keepends=True)
    assert partial == [whole[0], *(line for line in whole[1:] if not line.startswith(b"17,"))]
    with crashing_cluster.client() as client:
        client.wait_for_workers(2, timeout=60)
        assert all(not keys for keys in client.processing().values())  # no thread is left stuck in it


@pytest.mark.timeout(60)
def test_an_unreachable_scheduler_is_a_failure_at_run_time_that_writes_nothing(tmp_path, capsys, monkeypatch):
    import socket

    import study.cluster

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(study.cluster, "DASK_CONNECT_TIMEOUT", 2)
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    before = set(tmp_path.rglob("*"))
    code = main(
        [
            "run",
            str(spec),
            "--out",
            str(tmp_path / "r.csv"),
            "--backend",
            "dask",
            "--scheduler",
            f"127.0.0.1:{port}",
            "--quiet",
        ]
    )
    err = capsys.readouterr().err.splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("study: failed: "), err
    assert f"127.0.0.1:{port}" in err[0]
    assert set(tmp_path.rglob("*")) == before


def _descendants_seen(proc: subprocess.Popen, until) -> set[int]:
    seen: set[int] = set()
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not until():
        with contextlib.suppress(psutil.NoSuchProcess):
            seen |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
        time.sleep(0.02)
    return seen


def _alive(pids: set[int]) -> list[int]:
    alive = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
    return alive


@pytest.mark.timeout(180)
def test_same_csv_with_loky_1_loky_2_and_a_local_dask_cluster_which_leaves_nothing_behind(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    grid = load_grid(spec)
    run_grid(grid, out=tmp_path / "loky1.csv", n_jobs=1, chunk_size=4, progress=False)
    run_grid(grid, out=tmp_path / "loky2.csv", n_jobs=2, chunk_size=4, progress=False)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "dask.csv"
    proc = subprocess.Popen(
        _study("run", spec, "--out", out, "--backend", "dask", "--jobs", "2", "--chunk-size", "4", "--quiet"),
        cwd=tmp_path,
        env={**os.environ, "TMPDIR": str(tmp)},
    )
    seen = _descendants_seen(proc, lambda: False)
    assert proc.wait(timeout=120) == 0
    assert len(seen) >= 2  # its LocalCluster's worker processes
    local = (tmp_path / "loky1.csv").read_bytes()
    assert (tmp_path / "loky2.csv").read_bytes() == local
    assert out.read_bytes() == local
    meta = json.loads((tmp_path / "dask.meta.json").read_text())
    assert (meta["backend"], meta["scheduler"], meta["workers"]) == ("dask", "LocalCluster on 127.0.0.1", 2)
    time.sleep(0.5)
    assert _alive(seen) == []
    assert list(tmp.iterdir()) == []  # no dask-scratch-space, no worker folders
    assert list((tmp_path / "dask.csv.store").glob("*.runs"))  # kept for the next call


def _start_long_dask_run(tmp_path, **popen):
    """The long spec started by `study run` on a local Dask cluster of 2 workers (chunks of 2
    runs), with TMPDIR in tmp_path/tmp: (the process, the spec, that tmp folder, the
    environment, the output's store)."""
    spec = tmp_path / "long.toml"
    # Four times the long spec's replicates: these runs are stopped a few chunks in, and must
    # still be running then however slow the machine's other work makes the test's polling.
    spec.write_text(LONG_SPEC.replace("replicates = 24", "replicates = 96"))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    out = tmp_path / "long.csv"
    proc = subprocess.Popen(
        _study("run", spec, "--out", out, "--backend", "dask", "--jobs", "2", "--chunk-size", "2", "--quiet"),
        cwd=tmp_path,
        env=env,
        **popen,
    )
    return proc, spec, tmp, env, tmp_path / "long.csv.store"


@pytest.mark.timeout(120)
def test_a_local_cluster_run_killed_outright_leaves_no_process_and_its_scratch_goes_with_the_next_run(tmp_path):
    proc, spec, tmp, env, store = _start_long_dask_run(tmp_path, stderr=subprocess.DEVNULL)
    seen = _descendants_seen(proc, lambda: store.is_dir() and len(list(store.glob("*.runs"))) >= 4)
    proc.kill()
    proc.wait()
    deadline = time.time() + 15
    while time.time() < deadline and _alive(seen):
        time.sleep(0.1)
    assert _alive(seen) == []  # the workers leave with their parent
    assert [p.name.split("-")[2] for p in tmp.iterdir()] == [str(proc.pid)]  # its scratch folder, left
    spec.write_text(SPEC)
    done = subprocess.run(
        _study("run", spec, "--out", tmp_path / "next.csv", "--backend", "dask", "--jobs", "1", "--quiet"),
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0
    assert list(tmp.iterdir()) == []


@pytest.mark.timeout(180)
def test_ctrl_c_on_a_local_dask_cluster_exits_130_quietly_and_leaves_nothing_behind(tmp_path):
    proc, _, tmp, _, store = _start_long_dask_run(
        tmp_path, start_new_session=True, preexec_fn=default_sigint, stderr=subprocess.PIPE, text=True
    )
    seen = _descendants_seen(proc, lambda: store.is_dir() and len(list(store.glob("*.runs"))) >= 6)
    interrupted = time.time()
    os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C does: the whole process group
    stderr = proc.communicate(timeout=60)[1]
    assert time.time() - interrupted < 15
    assert proc.returncode == 130
    kept = len(list(store.glob("*.runs")))
    assert stderr.splitlines() == [
        f"study: interrupted; {kept} finished chunks are kept in {store}; run the same command again to resume"
    ], stderr
    time.sleep(0.5)
    assert _alive(seen) == []
    assert list(tmp.iterdir()) == []
