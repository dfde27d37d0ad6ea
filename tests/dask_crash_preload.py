"""A Dask worker preload for tests/test_cluster.py: a faulty worker. It dies whenever it trains a
chunk of ``num_train == CRASH_NUM_TRAIN``, as the kernel's OOM killer would kill it (SIGKILL, no
cleanup), and hangs (for an hour) in a chunk of ``num_train == HANG_NUM_TRAIN``.

``dask worker --preload tests/dask_crash_preload.py`` runs this module in every worker process,
and again in each process its nanny restarts. Nothing in the package knows of it: the fault
lives in the test's workers, not behind a switch in the code a user runs.
"""

from __future__ import annotations

import os
import signal
import time

import study.engine as engine

CRASH_NUM_TRAIN = 13
HANG_NUM_TRAIN = 17


def _crashing(train):
    def train_or_die(runs, checkpoints, device="cpu", options=None):
        if runs[0].num_train == CRASH_NUM_TRAIN:
            os.kill(os.getpid(), signal.SIGKILL)
        if runs[0].num_train == HANG_NUM_TRAIN:
            time.sleep(3600)
        return train(runs, checkpoints, device)

    train_or_die.crashes = True
    return train_or_die


# Dask may run a preload more than once in a process: wrap the engine once only.
if not getattr(engine.train_batched, "crashes", False):
    engine.train_batched = _crashing(engine.train_batched)
