"""Tests of the counter-based random streams (:mod:`study.streams`).

Three layers: the generator itself (Random123's published known-answer vectors and an
independent NumPy implementation), the documented layout of counters and keys, and the
distributions built on top (uniforms, Box-Muller normals, sort-key permutations). Every number
here is a pure function of seed, purpose, epoch and index, so the statistical tests are
deterministic: each tolerance is a stated multiple of the statistic's standard error (or a
tabulated 0.1 % / 1 % critical value), chosen once, never retried.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from study.streams import PURPOSES, _to_uniform, normals, permutations, philox4x32, seed_keys, uniforms, words
from study.vocabulary import STREAMS

MASK32 = 0xFFFFFFFF

# ---------------------------------------------------------------------------------------------
# Known-answer vectors
# ---------------------------------------------------------------------------------------------

# Copied (numbers only) from Random123, github.com/DEShawResearch/random123, file
# tests/kat_vectors (lines "philox4x32 7 ..." and "philox4x32 10 ..."): counter gen(0, 0),
# gen(0xfff.., 0xfff..) and gen(digits of pi, more digits of pi).
# Columns: rounds, counter (c0..c3), key (k0, k1), expected output (x0..x3), all hex.
KAT_VECTORS = """
7  00000000 00000000 00000000 00000000  00000000 00000000  5f6fb709 0d893f64 4f121f81 4f730a48
7  ffffffff ffffffff ffffffff ffffffff  ffffffff ffffffff  5207ddc2 45165e59 4d8ee751 8c52f662
7  243f6a88 85a308d3 13198a2e 03707344  a4093822 299f31d0  4dfccaba 190a87f0 c47362ba b6b5242a
10 00000000 00000000 00000000 00000000  00000000 00000000  6627e8d5 e169c58d bc57ac4c 9b00dbd8
10 ffffffff ffffffff ffffffff ffffffff  ffffffff ffffffff  408f276d 41c83b0e a20bc7c6 6d5451fd
10 243f6a88 85a308d3 13198a2e 03707344  a4093822 299f31d0  d16cfe09 94fdcceb 5001e420 24126ea1
"""

# A few more from the same repository's tests/old_kat_vectors (the vectors the paper's Crush
# results were produced with; its header says later versions still satisfy them). They use
# one-bit keys, in particular in the high key word k1, which is where a seed >= 2**32 lands.
OLD_KAT_VECTORS = """
10 00000001 00000000 00000000 00000000  00000001 00000000  ac08141b dfc5ccbe 79c07a47 a7f66093
10 243f6a88 85a308d3 13198a2e 03707344  00000001 00000000  38527b8f fad9a48c 20e675c0 f2fea26a
10 00000000 00000000 00000000 ffffffff  00000000 00000001  36241728 4d42c858 fea737d6 49f40347
10 a4093822 299f31d0 082efa98 ec4e6c89  00000000 ffffffff  9fcce05d 837d3f3c 5cdf3e61 db2544c0
10 00000000 00000000 80000000 00000000  00000000 80000000  ae56ca02 7609ba67 25abd7df 46ce39a3
7  452821e6 38d01377 be5466cf 34e90c6c  00000000 80000000  b30a1fd9 3149f07f 59ede6aa 95d62ce2
"""


def _parse(table: str) -> list[tuple[int, tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    rows = []
    for line in table.strip().splitlines():
        rounds, *hexes = line.split()
        values = tuple(int(h, 16) for h in hexes)
        rows.append((int(rounds), values[:4], values[4:6], values[6:]))
    return rows


KATS = _parse(KAT_VECTORS) + _parse(OLD_KAT_VECTORS)


def _torch_philox(counter, key, rounds=10, device="cpu"):
    """study.streams.philox4x32 on python ints / int arrays, returned as a (4, ...) numpy int64 array."""
    as_t = lambda v: torch.as_tensor(np.asarray(v, dtype=np.int64), device=device)  # noqa: E731
    out = philox4x32(tuple(as_t(c) for c in counter), tuple(as_t(k) for k in key), rounds=rounds)
    return np.stack([o.cpu().numpy() for o in torch.broadcast_tensors(*out)])


# ---------------------------------------------------------------------------------------------
# An independent reference: Philox4x32 in NumPy uint64
# ---------------------------------------------------------------------------------------------

# Constants of Philox4x32 as in the paper and Random123's include/Random123/philox.h.
REF_M0, REF_M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
REF_W0, REF_W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
REF_MASK = np.uint64(MASK32)


def ref_philox4x32(counter, key, rounds: int = 10) -> np.ndarray:
    """Philox4x32-R in NumPy: a 32 x 32-bit product is < 2**64, exact in uint64 (no wrapping).

    A round maps (c0, c1, c2, c3) to (hi(M1*c2) ^ c1 ^ k0, lo(M1*c2), hi(M0*c0) ^ c3 ^ k1,
    lo(M0*c0)); the key is bumped by the Weyl constants after every round. Returns (4, ...) uint64.
    """
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) for c in counter)
    k0, k1 = (np.asarray(k, dtype=np.uint64) for k in key)
    for _ in range(rounds):
        prod0 = REF_M0 * c0
        prod1 = REF_M1 * c2
        c0, c1, c2, c3 = (
            (prod1 >> np.uint64(32)) ^ c1 ^ k0,
            prod1 & REF_MASK,
            (prod0 >> np.uint64(32)) ^ c3 ^ k1,
            prod0 & REF_MASK,
        )
        k0, k1 = (k0 + REF_W0) & REF_MASK, (k1 + REF_W1) & REF_MASK
    return np.stack(np.broadcast_arrays(c0, c1, c2, c3))


def ref_words(seeds: list[int], purpose: str, count: int, epoch: int) -> np.ndarray:
    """(S, count) words at the layout of the streams module's docstring, from the reference.

    Word j of a row is lane j % 4 of block i = j // 4, with counter
    (i mod 2**32, i // 2**32, epoch, purpose code) and key (seed mod 2**32, seed // 2**32).
    """
    j = np.arange(count, dtype=np.uint64)
    block = j // np.uint64(4)
    lane = (j % np.uint64(4)).astype(np.int64)
    rows = []
    for seed in seeds:
        key = (seed % 2**32, seed // 2**32)
        counter = (
            block & REF_MASK,
            block >> np.uint64(32),
            np.full_like(block, epoch),
            np.full_like(block, PURPOSES[purpose]),
        )
        out = ref_philox4x32(counter, key)  # (4, count): every lane of word j's block
        rows.append(out[lane, np.arange(count)])
    return np.stack(rows).astype(np.int64)


# A long, awkward list of seeds: small, adjacent, at 2**32 - 1 / 2**32 (the key's carry) and
# large, so that the high key word k1 = seed // 2**32 matters.
SEEDS = [0, 1, 2, 12345, 2**31, 2**32 - 1, 2**32, 2**32 + 1, 2**62 + 12345, 2**63 - 1]


@pytest.mark.parametrize("rounds,counter,key,expected", KATS)
def test_philox_matches_the_random123_known_answers(rounds, counter, key, expected):
    """The module's Philox4x32 gives the published outputs (also for 7 rounds)."""
    got = _torch_philox(counter, key, rounds=rounds)
    assert [int(v) for v in got] == list(expected)


@pytest.mark.parametrize("rounds,counter,key,expected", KATS)
def test_numpy_reference_matches_the_random123_known_answers(rounds, counter, key, expected):
    """The reference below is itself anchored to the published vectors, not just to the module."""
    assert [int(v) for v in ref_philox4x32(counter, key, rounds=rounds)] == list(expected)


def test_philox_matches_the_numpy_reference_on_random_and_extreme_inputs():
    """Thousands of counters and keys, many at the edges where int64 wrapping could go wrong."""
    rng = np.random.default_rng(20240611)
    n = 4000
    inputs = rng.integers(0, 2**32, size=(6, n), dtype=np.uint64)
    # Overwrite a quarter of the entries by edge values: 0, 1, 2**31 +- 1, 2**32 - 2, 2**32 - 1.
    edges = np.array([0, 1, 2**31 - 1, 2**31, 2**31 + 1, 2**32 - 2, 2**32 - 1], dtype=np.uint64)
    at = rng.random(size=inputs.shape) < 0.25
    inputs[at] = rng.choice(edges, size=int(at.sum()))
    inputs[:, :7] = edges  # and every edge value in every word at once
    for rounds in (10, 7, 1):
        expected = ref_philox4x32(inputs[:4], inputs[4:], rounds=rounds)
        got = _torch_philox(inputs[:4].astype(np.int64), inputs[4:].astype(np.int64), rounds=rounds)
        assert got.dtype == np.int64
        assert got.min() >= 0 and got.max() <= MASK32
        np.testing.assert_array_equal(got, expected.astype(np.int64))


def test_philox_broadcasts_counters_against_keys():
    """A (1, B) row of counters against (S, 1) keys, as ``words`` uses it, gives the (S, B) table."""
    rng = np.random.default_rng(7)
    ctr = rng.integers(0, 2**32, size=(4, 1, 9), dtype=np.uint64)
    key = rng.integers(0, 2**32, size=(2, 5, 1), dtype=np.uint64)
    got = _torch_philox(ctr.astype(np.int64), key.astype(np.int64))
    assert got.shape == (4, 5, 9)
    np.testing.assert_array_equal(got, ref_philox4x32(ctr, key).astype(np.int64))


# ---------------------------------------------------------------------------------------------
# The documented layout of counters and keys
# ---------------------------------------------------------------------------------------------


def test_seed_keys_split_the_seed_into_two_32_bit_words():
    k0, k1 = seed_keys(torch.tensor(SEEDS))
    assert k0.shape == k1.shape == (len(SEEDS), 1)
    assert k0[:, 0].tolist() == [s % 2**32 for s in SEEDS]
    assert k1[:, 0].tolist() == [s // 2**32 for s in SEEDS]


@pytest.mark.parametrize("purpose", sorted(PURPOSES))
def test_words_follow_the_documented_counter_layout(purpose):
    """words() == the reference at (i mod 2**32, i // 2**32, epoch, code), key (seed lo, seed hi)."""
    for count, epoch in ((1, 0), (11, 0), (24, 3), (7, 2**31 + 5)):
        got = words(torch.tensor(SEEDS), purpose, count, epoch)
        assert got.dtype == torch.int64 and got.shape == (len(SEEDS), count)
        np.testing.assert_array_equal(got.numpy(), ref_words(SEEDS, purpose, count, epoch))


def test_purpose_codes_are_distinct_32_bit_words():
    """A shared code would silently make two purposes draw the same numbers."""
    codes = list(PURPOSES.values())
    assert len(set(codes)) == len(codes)
    assert all(0 <= c <= MASK32 for c in codes)
    assert STREAMS == ("counter", "torch")


def test_word_j_does_not_depend_on_count():
    """Prefix property: asking for more numbers never changes the first ones (words, uniforms, normals)."""
    seeds = torch.tensor(SEEDS)
    long = words(seeds, "features", 103, epoch=1)
    for count in (1, 2, 3, 4, 5, 8, 50, 102):
        assert torch.equal(words(seeds, "features", count, epoch=1), long[:, :count])
    long_u = uniforms(seeds, "outlier_hit", 41)
    long_z = normals(seeds, "noise", 41)
    for count in (1, 2, 3, 4, 5, 17, 40):  # odd counts: Box-Muller pairs must not shift
        assert torch.equal(uniforms(seeds, "outlier_hit", count), long_u[:, :count])
        assert torch.equal(normals(seeds, "noise", count), long_z[:, :count])


def test_a_seeds_numbers_do_not_depend_on_the_other_seeds_in_the_batch():
    """Runs sharing a chunk (in any order, with duplicates) get the numbers they would get alone."""
    batch = torch.tensor([2**62 + 12345, 3, 3, 0, 2**32])
    together = words(batch, "chi2", 30, epoch=2)
    for row, seed in enumerate(batch.tolist()):
        assert torch.equal(together[row], words(torch.tensor([seed]), "chi2", 30, epoch=2)[0])
    z = normals(batch, "init", 9)
    assert torch.equal(z[1], z[2])
    assert torch.equal(z[0], normals(batch[:1], "init", 9)[0])


def test_purposes_epochs_and_seeds_give_different_words():
    """No word coincides between streams that differ in one coordinate (a coincidence has p ~ 2**-32)."""
    seeds = torch.tensor(SEEDS)
    count = 64
    by_purpose = {p: words(seeds, p, count) for p in PURPOSES}
    names = sorted(by_purpose)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not (by_purpose[a] == by_purpose[b]).any(), (a, b)
    by_epoch = [words(seeds, "permutation", count, epoch=e) for e in (0, 1, 2, 2**31)]
    for i in range(len(by_epoch)):
        for j in range(i + 1, len(by_epoch)):
            assert not (by_epoch[i] == by_epoch[j]).any()
    # Seeds differing only in the low word, only in the high word, or by 2**32 - 1 apart.
    w = words(seeds, "features", count)
    for a in range(len(SEEDS)):
        for b in range(a + 1, len(SEEDS)):
            assert not (w[a] == w[b]).any(), (SEEDS[a], SEEDS[b])
    # And within a row, the words are not a repeat of one block.
    assert all(len(set(row)) == count for row in w.tolist())


def test_uniforms_are_the_top_23_bits_plus_a_half_strictly_inside_0_1():
    seeds = torch.tensor(SEEDS)
    w = words(seeds, "outlier_hit", 999, epoch=4)
    u = uniforms(seeds, "outlier_hit", 999, epoch=4)
    assert u.dtype == torch.float32 and u.shape == w.shape
    expected = ((w.numpy() >> 9).astype(np.float64) + 0.5) / 2**23  # exact in float64
    np.testing.assert_array_equal(u.numpy().astype(np.float64), expected)  # and exact in float32
    assert (u > 0).all() and (u < 1).all()


@pytest.mark.skipif(
    not torch.__version__.startswith("2.13.0"), reason="the digest was taken with torch 2.13.0's CPU log, sin and cos"
)
def test_normals_keep_their_bits():
    """The counter stream's normals on a CPU, as every stored run was drawn with them: their
    digest, taken from the code before Box-Muller's products were written in place (issue 22).
    A change here moves every run's data: it needs a new engine revision (study.store)."""
    import hashlib

    z = normals(torch.tensor([0, 1, 2**40 + 3, 2**63 - 1]), "features", 1001, epoch=3)
    assert z[0, :4].tolist() == [0.32016175985336304, 0.14518389105796814, -0.14146485924720764, -0.7530910968780518]
    digest = hashlib.sha256(z.contiguous().numpy().tobytes()).hexdigest()
    assert digest == "1f7be5f8cb134b1bcbe0fce34000014560827242120e58eba319a5162d1341ef"


def test_uniform_extremes_stay_inside_0_1_in_float32():
    """The extreme words 0 and 2**32 - 1 (2**-24 likely each) map neither to 0 nor to 1.

    These words are too rare to meet through a seed, so the module's private conversion is
    called directly; ``uniforms`` is checked to use it on real words above.
    """
    w = torch.tensor([0, 255, 256, 2**31 - 1, 2**31, MASK32 - 256, MASK32 - 255, MASK32])
    u = _to_uniform(w)
    assert u.dtype == torch.float32
    expected = ((w.numpy() >> 9) + 0.5) / 2**23
    np.testing.assert_array_equal(u.numpy().astype(np.float64), expected)
    assert (u > 0).all() and (u < 1).all()


# ---------------------------------------------------------------------------------------------
# Statistics of the normals
# ---------------------------------------------------------------------------------------------


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    erf = np.frompyfunc(math.erf, 1, 1)
    return 0.5 * (1.0 + erf(x / math.sqrt(2.0)).astype(np.float64))


def _ks_statistic(x: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance between the sample's empirical CDF and the standard normal's."""
    x = np.sort(x)
    n = x.size
    f = _normal_cdf(x)
    i = np.arange(1, n + 1)
    return float(max((i / n - f).max(), (f - (i - 1) / n).max()))


@pytest.fixture(scope="module")
def many_normals() -> np.ndarray:
    """200,000 normals: 20 seeds x 10,000 (float64 copies of the float32 draws)."""
    return normals(torch.arange(20), "noise", 10_000).double().numpy()


def test_normals_have_the_moments_of_a_standard_normal(many_normals):
    """Mean, variance, skewness and excess kurtosis within 4 standard errors of 0, 1, 0, 0.

    For n iid N(0, 1): SE(mean) = 1/sqrt(n), SE(var) = sqrt(2/n), SE(skew) ~ sqrt(6/n),
    SE(excess kurtosis) ~ sqrt(24/n). The tails cut at 5.9 sigma change the kurtosis by ~1e-6.
    """
    x = many_normals.ravel()
    n = x.size
    assert n == 200_000 and np.isfinite(x).all()
    mean = x.mean()
    centred = x - mean
    var = (centred**2).mean()
    skew = (centred**3).mean() / var**1.5
    kurt = (centred**4).mean() / var**2 - 3.0
    assert abs(mean) < 4 / math.sqrt(n)
    assert abs(var - 1) < 4 * math.sqrt(2 / n)
    assert abs(skew) < 4 * math.sqrt(6 / n)
    assert abs(kurt) < 4 * math.sqrt(24 / n)
    assert np.abs(x).max() < math.sqrt(2 * math.log(2.0**25)) + 1e-4  # the documented radius bound


def test_normals_pass_kolmogorov_smirnov(many_normals):
    """D_n below the asymptotic 1 % critical value 1.628/sqrt(n) (sqrt(-ln(0.005)/2) = 1.6276)."""
    x = many_normals.ravel()
    assert _ks_statistic(x) < 1.63 / math.sqrt(x.size)


def test_consecutive_normals_are_uncorrelated(many_normals):
    """Lag-1 (and lag-2, lag-4) correlation within rows, and the Box-Muller partners' squares.

    For independent variables sqrt(m) * r is asymptotically N(0, 1): |r| < 4/sqrt(m). The
    squares test catches a pair sharing its radius wrongly (cos and sin of the same angle are
    uncorrelated but z1**2 + z2**2 = R**2; for a correct Box-Muller z1, z2 are still independent).
    """
    z = many_normals
    for lag in (1, 2, 4):
        a, b = z[:, :-lag].ravel(), z[:, lag:].ravel()
        assert abs(np.corrcoef(a, b)[0, 1]) < 4 / math.sqrt(a.size), lag
    first, second = z[:, 0::2].ravel(), z[:, 1::2].ravel()
    assert abs(np.corrcoef(first**2, second**2)[0, 1]) < 4 / math.sqrt(first.size)
    assert abs(np.corrcoef(np.abs(first), np.abs(second))[0, 1]) < 4 / math.sqrt(first.size)


def test_normals_of_different_seeds_are_uncorrelated():
    """Adjacent seeds, seeds 2**32 apart (only the high key word differs) and a large one."""
    seeds = torch.tensor([0, 1, 2, 2**32, 2**32 + 1, 2**62 + 12345])
    z = normals(seeds, "features", 40_000).double().numpy()
    r = np.corrcoef(z)
    off = r[~np.eye(len(seeds), dtype=bool)]
    assert np.abs(off).max() < 4 / math.sqrt(z.shape[1])


def test_normals_across_seeds_at_a_fixed_index_are_standard_normal():
    """Column 0 over 100,000 consecutive seeds (only the key varies): KS, and column 0 vs 1 uncorrelated."""
    z = normals(torch.arange(100_000), "init", 3).double().numpy()
    assert _ks_statistic(z[:, 0]) < 1.63 / math.sqrt(z.shape[0])
    assert _ks_statistic(z[:, 2]) < 1.63 / math.sqrt(z.shape[0])  # from the second block's lanes
    assert abs(np.corrcoef(z[:, 0], z[:, 1])[0, 1]) < 4 / math.sqrt(z.shape[0])
    assert abs(np.corrcoef(z[:, 0], z[:, 2])[0, 1]) < 4 / math.sqrt(z.shape[0])


# ---------------------------------------------------------------------------------------------
# Permutations
# ---------------------------------------------------------------------------------------------

# Upper 0.1 % quantiles of chi-square, computed here by bisection on the regularized incomplete
# gamma function (series; no scipy): chi2(49) 85.351, chi2(55) 93.168. Tables agree (85.35, 93.17).
CHI2_49_Q999 = 85.35
CHI2_55_Q999 = 93.17


@pytest.fixture(scope="module")
def perms8() -> np.ndarray:
    """Permutations of range(8) for 40,000 consecutive seeds, epoch 0."""
    return permutations(torch.arange(40_000), 8, epoch=0).numpy()


def test_each_row_is_a_permutation():
    for n, epoch in ((1, 0), (2, 0), (8, 5), (1000, 3)):
        p = permutations(torch.tensor(SEEDS), n, epoch)
        assert p.dtype == torch.int64 and p.shape == (len(SEEDS), n)
        assert torch.equal(p.sort(dim=1).values, torch.arange(n).expand(len(SEEDS), n))


def test_permutation_is_the_stable_argsort_of_the_permutation_words():
    """The documented definition: the order of the n keys, ties by index (a stable sort). From
    500 keys a row the CPU sorts by a radix pass on the top 16 bits first: the same order."""
    seeds = torch.tensor(SEEDS)
    for n, epoch in ((8, 0), (257, 2), (499, 1), (500, 1), (5000, 4)):
        w = words(seeds, "permutation", n, epoch)
        assert torch.equal(permutations(seeds, n, epoch), torch.argsort(w, dim=1, stable=True))


def test_the_bucketed_sort_breaks_ties_within_a_bucket_and_between_equal_words():
    """Keys built to collide: words equal in their top 16 bits (one bucket), and equal words,
    whose order is the index's."""
    from study.streams import _sort_rows

    rng = np.random.default_rng(5)
    n = 600
    w = (rng.integers(0, 4, size=(3, n)) << 16 | rng.integers(0, 2**16, size=(3, n))).astype(np.int64)
    w[2] = w[2, 0]  # every word equal: the identity
    keys = w << 31 | np.arange(n)
    np.testing.assert_array_equal(_sort_rows(keys.copy()), np.sort(keys, axis=1))
    np.testing.assert_array_equal(_sort_rows(keys.copy())[2] & (2**31 - 1), np.arange(n))


def test_several_epochs_at_once_are_each_epoch_alone():
    seeds = torch.tensor(SEEDS)
    for n in (7, 600):
        together = permutations(seeds, n, range(3, 7))
        assert together.shape == (4, len(SEEDS), n)
        for i, epoch in enumerate(range(3, 7)):
            assert torch.equal(together[i], permutations(seeds, n, epoch))
    np.testing.assert_array_equal(words(seeds, "noise", 9, [0, 5])[1], words(seeds, "noise", 9, 5))


def test_permutation_positions_are_uniform(perms8):
    """Counts of value v at position p: chi-square over the 8 x 8 table.

    Every position holds one value and every value one position per row, so the table's rows and
    columns are fixed: (8-1)**2 = 49 degrees of freedom. For a uniformly random permutation the
    covariance of the indicator matrix is (P (x) P)/(n-1), P = I - J/n, so Pearson's statistic is
    n/(n-1) times a chi2(49) (its mean is 64 * 7/8 = 56, not 49): scale it by (n-1)/n.
    """
    s, n = perms8.shape
    assert (np.sort(perms8, axis=1) == np.arange(n)).all()
    counts = np.zeros((n, n))
    np.add.at(counts, (np.broadcast_to(np.arange(n), perms8.shape), perms8), 1)
    expected = s / n
    pearson = ((counts - expected) ** 2 / expected).sum()
    assert (n - 1) / n * pearson < CHI2_49_Q999, pearson


def test_permutation_relative_order_is_fair(perms8):
    """P(value a comes before value b) = 1/2, within 4 standard errors (SE = 0.5/sqrt(S))."""
    s = perms8.shape[0]
    position = np.argsort(perms8, axis=1)  # position[row, v] = where value v sits
    for a, b in ((0, 1), (0, 7), (3, 4), (6, 2), (5, 1)):
        frac = (position[:, a] < position[:, b]).mean()
        assert abs(frac - 0.5) < 4 * 0.5 / math.sqrt(s), (a, b, frac)


def test_permutation_first_two_values_are_uniform_over_ordered_pairs(perms8):
    """Joint counts of (value at 0, value at 1): 56 ordered pairs a != b, each 1/56.

    A plain multinomial over 56 cells (no further constraint), so chi-square with 55 dof.
    """
    s, n = perms8.shape
    assert (perms8[:, 0] != perms8[:, 1]).all()
    counts = np.bincount(perms8[:, 0] * n + perms8[:, 1], minlength=n * n).reshape(n, n)
    cells = counts[~np.eye(n, dtype=bool)]
    assert cells.size == 56
    expected = s / 56
    assert ((cells - expected) ** 2 / expected).sum() < CHI2_55_Q999


def test_permutations_differ_between_epochs_and_repeat_for_equal_inputs():
    seeds = torch.tensor(SEEDS)
    by_epoch = [permutations(seeds, 50, e) for e in range(5)]
    for i in range(5):
        assert torch.equal(by_epoch[i], permutations(seeds, 50, i))  # deterministic
        for j in range(i + 1, 5):
            assert (by_epoch[i] != by_epoch[j]).any(dim=1).all(), (i, j)  # every seed reshuffles
    # Different seeds in one epoch give different permutations too.
    rows = {tuple(r) for r in by_epoch[0].tolist()}
    assert len(rows) == len(SEEDS)
    # Equal seeds in one batch get equal permutations, equal to the one drawn alone.
    dup = permutations(torch.tensor([9, 4, 9]), 50, 1)
    assert torch.equal(dup[0], dup[2])
    assert torch.equal(dup[1], permutations(torch.tensor([4]), 50, 1)[0])


# ---------------------------------------------------------------------------------------------
# CPU vs CUDA
# ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_streams_match_the_cpu():
    """Words, uniforms and permutations bit-identical; normals within max(1e-6, 1e-6 |x|).

    Transcendentals (log, sqrt, cos, sin) may round differently by an ulp or so on the GPU.
    """
    cpu_seeds = torch.tensor(SEEDS + list(range(100, 164)))
    gpu_seeds = cpu_seeds.cuda()
    for rounds, counter, key, expected in KATS:
        assert [int(v) for v in _torch_philox(counter, key, rounds=rounds, device="cuda")] == list(expected)
    for purpose in PURPOSES:
        for epoch in (0, 7):
            w_gpu = words(gpu_seeds, purpose, 1001, epoch)
            assert w_gpu.is_cuda
            assert torch.equal(w_gpu.cpu(), words(cpu_seeds, purpose, 1001, epoch))
    assert torch.equal(uniforms(gpu_seeds, "outlier_hit", 513).cpu(), uniforms(cpu_seeds, "outlier_hit", 513))
    for n, epoch in ((8, 0), (1000, 3)):
        assert torch.equal(permutations(gpu_seeds, n, epoch).cpu(), permutations(cpu_seeds, n, epoch))
    z_cpu = normals(cpu_seeds, "features", 10_001, epoch=1)
    z_gpu = normals(gpu_seeds, "features", 10_001, epoch=1).cpu()
    tol = torch.clamp(1e-6 * z_cpu.abs(), min=1e-6)
    assert ((z_gpu - z_cpu).abs() <= tol).all(), (z_gpu - z_cpu).abs().max().item()
