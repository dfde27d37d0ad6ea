"""Study 3: what its answer, tables and figures say, read back from its raw table."""

from __future__ import annotations

from study.exercises.ex3_gradients import gradient_access


def test_gradient_access_reads_the_last_minibatch_gradient():
    table = gradient_access(epochs=1)
    assert list(table["examples"]) == [8, 1000]  # 1000 = 31 * 32 + 8: the ragged last minibatch
    assert table["grad_w_0"].notna().all() and table.loc[0, "grad_w_0"] != table.loc[1, "grad_w_0"]
