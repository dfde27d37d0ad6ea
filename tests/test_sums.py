import numpy as np
import pytest
import torch

from study.sums import tree_sum_


def test_tree_sum_adds_in_an_order_fixed_by_the_length_alone():
    # x[:h] += x[s-h:s]: (1e16 + -1e16) + (1 + 1) = 2, where adding left to right gives 1.
    assert tree_sum_(torch.tensor([1e16, 1.0, -1e16, 1.0], dtype=torch.float64)).item() == 2.0
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 5, 8, 13, 1000):
        row = rng.standard_normal(n) * 10.0 ** rng.integers(-8, 8, n)
        vals, size = list(row), n  # the same tree, written out in Python floats
        while size > 1:
            h = size // 2
            vals[:h] = [a + b for a, b in zip(vals[:h], vals[size - h : size])]
            size -= h
        for rows in (1, 7, 300):  # the row among others, in the middle: the same bits
            x = torch.as_tensor(rng.standard_normal((rows, n)))
            x[rows // 2] = torch.as_tensor(row)
            assert tree_sum_(x)[rows // 2].item() == vals[0]
    assert tree_sum_(torch.ones(3, 0)).tolist() == [0.0, 0.0, 0.0]


def test_tree_sum_gives_a_row_the_same_bits_in_any_layout():
    """Rows summed as the columns of a transposed (non-contiguous) tensor, or in a batch of
    another shape, give the bits they give alone, which torch.sum does not promise."""
    x = torch.randn(37, 1001, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 1e3
    alone = torch.stack([tree_sum_(row.clone()) for row in x])
    assert torch.equal(tree_sum_(x.clone()), alone)
    assert torch.equal(tree_sum_(x.T.contiguous().T), alone)  # each row strided in memory
    assert torch.equal(tree_sum_(x.clone().view(37, 1, 1001).expand(37, 3, 1001).clone())[:, 2], alone)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_tree_sum_on_cuda_gives_the_cpu_bits():
    x = torch.randn(300, 777, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert torch.equal(tree_sum_(x.cuda()).cpu(), tree_sum_(x.clone()))
