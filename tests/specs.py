"""Specs that several fault tests share (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import signal

#: 144 runs that take a few seconds with the compiled step loop (minutes with the tensor path):
#: long enough to be killed or interrupted midway. Two runs a
#: stream, so that ``--chunk-size 2`` cuts it into 72 chunks.
LONG_GRID = """\
[grid]
num_train = [500, 1000, 2000]
lr = [0.03]
loss = ["squared", "huber"]
epoch = [5, 2000]
replicates = 24
num_val = 100
"""


def long_spec(name: str) -> str:
    return f'name = "{name}"\n' + LONG_GRID


def default_sigint() -> None:
    """In the child: Ctrl-C's default action, even when this run inherited SIGINT ignored (as the
    background jobs of a non-interactive shell do, and Python then never raises KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
