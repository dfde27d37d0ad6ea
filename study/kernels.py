"""The steps of an epoch as one compiled loop (Numba), on a CPU, and the random numbers and sums around them.

The batched engine's step is a dozen tensor operations over a chunk's runs; on a CPU each costs
a microsecond or two of dispatch whatever its size, which is most of a small chunk's time. Here
the same arithmetic runs as one compiled loop per epoch: for each stream, each step, each run
of the stream, the minibatch's residuals, their products and the update, in the very order of
the tensor path, with the fused multiply-adds where it has them (``torch.addcmul`` is one on
the CPU: checked bit for bit in tests/test_kernels.py). A run's numbers are the tensor path's,
bit for bit, so neither the engine's revision nor any stored run changes. A minibatch of 32 (the
default) is a handful of 32-wide LLVM vector operations rather than loops (see ``_v_start``).

Compiled too, the same integers and floats: the counter stream's permutations (Philox words and
a linear-time sort, :func:`permutations`), every Philox word and uniform study.streams draws on a
CPU (:func:`philox_rows`), and a checkpoint's sums (each stream's second moments, a Huber run's
loss and gradient over every training example), summed by study.sums' pairwise trees.

Compiled once per machine (``cache=True``: Numba keeps the machine code beside this file, or in
``NUMBA_CACHE_DIR``), on first use, never on import: ``study --help`` does not pay for it. Where
Numba is not installed or cannot compile here, :data:`AVAILABLE` is False and the engine keeps
its tensor path, saying so once.
"""

# mypy: disable-error-code="call-arg,misc"
# (mypy reads a Numba intrinsic's typing signature as its call signature, and the fallbacks below
# as redefinitions of the compiled functions; the compiled code itself is typed by Numba.)
from __future__ import annotations

import warnings

import numpy as np

__all__: list[str] = []  # private: see study/__init__.py

try:
    import numba
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic, overload

    AVAILABLE = True
except ImportError:  # an unsupported platform, or installed without it: the tensor path serves
    AVAILABLE = False
_said = False


def say_unavailable() -> None:
    """One line, once a process, where the compiled loop cannot serve."""
    global _said
    if not _said:
        _said = True
        warnings.warn(
            "Numba is not available here: the batched engine takes its tensor path on the CPU (the same numbers, slower)",
            RuntimeWarning,
            stacklevel=3,
        )


if AVAILABLE:

    @intrinsic
    def _fma(typingctx, a, b, c):
        """a·b + c rounded once (LLVM's fma), as torch.addcmul computes it on a CPU."""
        sig = types.float32(types.float32, types.float32, types.float32)

        def codegen(context, builder, signature, args):
            f32 = ir.FloatType()
            fn = builder.module.declare_intrinsic("llvm.fma", [f32], ir.FunctionType(f32, [f32, f32, f32]))
            return builder.call(fn, args)

        return sig, codegen

    # A minibatch of 32 (the default) as LLVM vectors: a residual's chain, its clamp and each
    # coordinate's products and pairwise tree (study.sums.tree_levels(32) halves: 16, 8, 4, 2, 1)
    # written as 32-wide vector operations, where the loops over a minibatch cost their set-up
    # more than their arithmetic. The same operations on the same values, so the same bits.
    _W = 32
    _F32 = ir.FloatType()
    _VEC = ir.VectorType(_F32, _W)
    _I32 = ir.IntType(32)

    def _rows_of_32(*arrays) -> bool:
        """Typing: float32 arrays in C order (the vectors below read rows of 32 from them)."""
        return all(isinstance(a, types.Array) and a.dtype == types.float32 and a.layout == "C" for a in arrays)

    def _row(context, builder, arrty, arr, row):
        """A pointer to row ``row`` (32 floats) of a C-ordered float32 array."""
        data = context.make_array(arrty)(context, builder, arr).data
        offset = builder.mul(row, ir.Constant(row.type, _W))
        return builder.bitcast(builder.gep(data, [offset]), _VEC.as_pointer())

    def _first(context, builder, arrty, arr):
        return _row(context, builder, arrty, arr, ir.Constant(ir.IntType(64), 0))

    def _splat(builder, x):
        v = builder.insert_element(ir.Constant(_VEC, ir.Undefined), x, ir.Constant(_I32, 0))
        every = ir.Constant(ir.VectorType(_I32, _W), [0] * _W)
        return builder.shuffle_vector(v, ir.Constant(_VEC, ir.Undefined), every)

    def _vfma(builder, a, b, c):
        fn = builder.module.declare_intrinsic(f"llvm.fma.v{_W}f32", (), ir.FunctionType(_VEC, [_VEC, _VEC, _VEC]))
        return builder.call(fn, [a, b, c])

    @intrinsic
    def _v_start(typingctx, r, z, x_row, y_row, w):
        """r = fma(w, z[x_row], z[y_row]): a residual's first link, from −y."""
        if not _rows_of_32(r, z):
            return None
        sig = types.void(r, z, x_row, y_row, w)

        def codegen(context, builder, signature, args):
            rt, zt = signature.args[:2]
            x = builder.load(_row(context, builder, zt, args[1], args[2]), align=4)
            y = builder.load(_row(context, builder, zt, args[1], args[3]), align=4)
            builder.store(
                _vfma(builder, _splat(builder, args[4]), x, y), _first(context, builder, rt, args[0]), align=4
            )
            return context.get_dummy_value()

        return sig, codegen

    @intrinsic
    def _v_link(typingctx, r, z, x_row, w):
        """r = fma(w, z[x_row], r): a residual's next link."""
        if not _rows_of_32(r, z):
            return None
        sig = types.void(r, z, x_row, w)

        def codegen(context, builder, signature, args):
            rt, zt = signature.args[:2]
            x = builder.load(_row(context, builder, zt, args[1], args[2]), align=4)
            rp = _first(context, builder, rt, args[0])
            builder.store(_vfma(builder, _splat(builder, args[3]), x, builder.load(rp, align=4)), rp, align=4)
            return context.get_dummy_value()

        return sig, codegen

    @intrinsic
    def _v_bias_clamp(typingctx, r, b, lo, hi):
        """r = clamp(r + b, lo, hi), torch.clamp's (NaN stays NaN; ∓inf: no clamp)."""
        if not _rows_of_32(r):
            return None
        sig = types.void(r, b, lo, hi)

        def codegen(context, builder, signature, args):
            rp = _first(context, builder, signature.args[0], args[0])
            v = builder.fadd(builder.load(rp, align=4), _splat(builder, args[1]))
            low, high = _splat(builder, args[2]), _splat(builder, args[3])
            v = builder.select(builder.fcmp_ordered("<", v, low), low, v)
            v = builder.select(builder.fcmp_ordered(">", v, high), high, v)
            builder.store(v, rp, align=4)
            return context.get_dummy_value()

        return sig, codegen

    @intrinsic
    def _v_dot_tree(typingctx, z, row, r):
        """Σ z[row]·r over the 32: the products rounded, then summed by the pairwise tree."""
        if not _rows_of_32(z, r):
            return None
        sig = types.float32(z, row, r)

        def codegen(context, builder, signature, args):
            zt, _, rt = signature.args
            x = builder.load(_row(context, builder, zt, args[0], args[1]), align=4)
            v = builder.fmul(x, builder.load(_first(context, builder, rt, args[2]), align=4))
            n = _W
            while n > 1:  # v[:h] + v[h:n], h = n // 2: tree_levels(32)
                h = n // 2
                undef = ir.Constant(ir.VectorType(_F32, n), ir.Undefined)
                low = builder.shuffle_vector(v, undef, ir.Constant(ir.VectorType(_I32, h), list(range(h))))
                high = builder.shuffle_vector(v, undef, ir.Constant(ir.VectorType(_I32, h), list(range(h, n))))
                v = builder.fadd(low, high)
                n = h
            return builder.extract_element(v, ir.Constant(_I32, 0))

        return sig, codegen

    _U32 = np.uint64(0xFFFFFFFF)
    _M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
    _W0, _W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
    _PERMUTATION = np.uint64(6)  # study.streams.PURPOSES["permutation"]

    @numba.njit(cache=True, nogil=True)
    def _schedule(seed, ks):  # pragma: no cover - compiled
        """ks[r] = the key (k0, k1) of Philox's round r for ``seed`` (its two 32-bit halves, then
        the Weyl increments): computed once a seed, so that the rounds over a row of blocks are
        the same straight-line code for every block, which the compiler vectorises."""
        useed = np.uint64(seed)
        k0, k1 = useed & _U32, useed >> np.uint64(32)
        for r in range(10):
            ks[r, 0] = k0
            ks[r, 1] = k1
            k0 = (k0 + _W0) & _U32
            k1 = (k1 + _W1) & _U32

    @numba.njit(cache=True, nogil=True, inline="always")
    def _philox(c0, c1, c2, c3, ks):  # pragma: no cover - compiled
        """Philox4x32-10 on one block (study.streams.philox4x32), words in uint64 < 2**32, the
        rounds' keys ``ks`` (:func:`_schedule`)."""
        for r in range(10):
            p0 = c0 * _M0
            p1 = c2 * _M1
            c0, c1, c2, c3 = (
                (p1 >> np.uint64(32)) ^ c1 ^ ks[r, 0],
                p1 & _U32,
                (p0 >> np.uint64(32)) ^ c3 ^ ks[r, 1],
                p0 & _U32,
            )
        return c0, c1, c2, c3

    _NINE, _HALF, _ULP = np.uint64(9), np.float32(0.5), np.float32(2.0**-23)

    def _from_word(w, out):  # the Python stub of the overload below
        raise NotImplementedError

    @overload(_from_word, inline="always")
    def _from_word_typed(w, out):
        """A word as ``out`` holds it: the word itself (uint64 or int64), or
        study.streams._to_uniform's float, ((w >> 9) + 0.5)·2⁻²³, each step exact in float32."""
        if out.dtype == types.float32:
            return lambda w, out: (np.float32(w >> _NINE) + _HALF) * _ULP
        if out.dtype == types.uint64:
            return lambda w, out: w
        return lambda w, out: np.int64(w)

    @numba.njit(cache=True, nogil=True)
    def _philox_row(seed, epoch, purpose, ks, row):  # pragma: no cover - compiled
        """row[4j + lane] = lane ``lane`` of Philox block j of ``seed`` for ``purpose`` and
        ``epoch``, as ``row`` holds it (_from_word), for every block the row has room for."""
        e, p = np.uint64(epoch), np.uint64(purpose)
        _schedule(seed, ks)
        for block in range(row.shape[0] // 4):
            b = np.uint64(block)
            w0, w1, w2, w3 = _philox(b & _U32, b >> np.uint64(32), e, p, ks)
            row[4 * block] = _from_word(w0, row)
            row[4 * block + 1] = _from_word(w1, row)
            row[4 * block + 2] = _from_word(w2, row)
            row[4 * block + 3] = _from_word(w3, row)

    @numba.njit(cache=True, nogil=True)
    def philox_rows(seeds, purpose, epochs, out):  # pragma: no cover - compiled
        """out[e·S + s] = :func:`_philox_row` of seed s for ``purpose`` and epochs[e]:
        study.streams.words' integers (int64), or its uniforms (float32), in its rows before they
        are cut to ``count``. seeds, epochs: int64; out: (E·S, 4·B)."""
        S = seeds.shape[0]
        ks = np.empty((10, 2), np.uint64)
        for e in range(epochs.shape[0]):
            for s in range(S):
                _philox_row(seeds[s], epochs[e], purpose, ks, out[e * S + s])

    @numba.njit(cache=True, nogil=True)
    def _sorted_keys(seed, epoch, n, words, start, keys, ks):  # pragma: no cover - compiled
        """keys[:n] = word·2³² + index of the seed's n Philox words for ``epoch``, sorted: the low
        32 bits of keys[a] are entry a of its permutation of range(n) (study.streams.permutations),
        the order of the words, ties broken by the index. A counting sort on the words'
        top bits (n buckets, one word each on average, filled in index order) of the keys
        word·2³² + index (``keys``: so one comparison orders both), then a pass that swaps each
        pair out of order without a branch (most ties are pairs), then an insertion sort, which
        seldom has anything left to move: linear time. Buffers: words (n + 3 uint64), start
        (n + 1), keys (n uint64), ks (Philox's key schedule)."""
        _philox_row(seed, epoch, _PERMUTATION, ks, words[: 4 * ((n + 3) // 4)])
        un = np.uint64(n)
        start[: n + 1] = 0
        for j in range(n):
            start[np.int64((words[j] * un) >> np.uint64(32)) + 1] += 1  # the bucket, monotone in the word
        for i in range(n):
            start[i + 1] += start[i]
        for j in range(n):
            word = words[j]
            q = np.int64((word * un) >> np.uint64(32))
            at = start[q]
            keys[at] = (word << np.uint64(32)) | np.uint64(j)
            start[q] = at + 1
        if n == 0:
            return
        # One bubble pass, min and max (no branch to mispredict): a tie's pair in order. What it
        # leaves (some ties of three or more) the insertion sort finishes; the result is the
        # sorted keys either way (they are distinct), 25% faster than the insertion sort alone.
        carry = keys[0]
        for a in range(1, n):
            key = keys[a]
            keys[a - 1] = min(carry, key)
            carry = max(carry, key)
        keys[n - 1] = carry
        for a in range(1, n):
            key = keys[a]
            if keys[a - 1] < key:
                continue  # in order already: almost always
            c = a - 1
            while c >= 0 and keys[c] > key:
                keys[c + 1] = keys[c]
                c -= 1
            keys[c + 1] = key

    @numba.njit(cache=True, nogil=True)
    def _permute(seed, epoch, n, words, start, keys, ks, row):  # pragma: no cover - compiled
        """row[:n] = the seed's permutation of range(n) for ``epoch`` (:func:`_sorted_keys`)."""
        _sorted_keys(seed, epoch, n, words, start, keys, ks)
        for a in range(n):
            row[a] = np.int64(keys[a] & _U32)

    @numba.njit(cache=True, nogil=True)
    def _sort_buffers(n):  # pragma: no cover - compiled
        return (
            np.empty(n + 3, np.uint64),
            np.empty(n + 1, np.int32),
            np.empty(n, np.uint64),
            np.empty((10, 2), np.uint64),
        )

    @numba.njit(cache=True, nogil=True)
    def permutations(seeds, n, epochs, out):  # pragma: no cover - compiled
        """out[e, s] = study.streams.permutations(seeds, n, epochs)[e, s], the same integers."""
        words, start, keys, ks = _sort_buffers(n)
        for e in range(epochs.shape[0]):
            for s in range(seeds.shape[0]):
                _permute(seeds[s], epochs[e], n, words, start, keys, ks, out[e, s])

    @numba.njit(cache=True, nogil=True, error_model="numpy")
    def _stream_epoch(
        Zpad, row, s, T, bs, theta, steps, lo, hi, clamp, levels, feature_levels, wide, blocks, r, prod, xw
    ):  # pragma: no cover - compiled
        """One epoch's steps of stream s's runs (see :func:`plain_epoch`), its order the low 32
        bits of ``row``'s entries (an int64 order, or :func:`_sorted_keys`' keys).

        The epoch's examples are first gathered in its order, y negated, into ``blocks`` (T, d+2,
        bs), a minibatch's block z each, one coordinate at a time (a pass reads one row of Zpad:
        16-22% less a run-step than gathering each step's minibatch as it comes). Then the stream's m runs
        step over each block: each run's operations are the tensor path's, in its order, over
        contiguous rows of bs values (which the compiler vectorises)."""
        d, n = Zpad.shape[1] - 2, Zpad.shape[2] - 1
        m = theta.shape[1]
        full = min(T, n // bs)  # the blocks with no padding: no test of e < n
        for j in range(d + 2):
            src = Zpad[s, j]
            for t in range(full):
                dst, at = blocks[t, j], row[t * bs : t * bs + bs]
                if j == d + 1:
                    for i in range(bs):
                        dst[i] = -src[np.uint32(at[i])]
                else:
                    for i in range(bs):
                        dst[i] = src[np.uint32(at[i])]
            for t in range(full, T):
                dst = blocks[t, j]
                for i in range(bs):
                    e = t * bs + i
                    dst[i] = src[np.uint32(row[e]) if e < n else np.uint32(n)]  # past n: the padding's zeros
                if j == d + 1:
                    for i in range(bs):
                        dst[i] = -dst[i]
        for t in range(T):
            last = 1 if t == T - 1 else 0  # the epoch's last minibatch may be short: its own step size
            z = blocks[t]
            if bs == _W and not wide:  # the minibatch as vectors (same operations, same bits)
                for k in range(m):
                    _v_start(r, z, 0, d + 1, theta[s, k, 0])
                    for j in range(1, d):
                        _v_link(r, z, j, theta[s, k, j])
                    _v_bias_clamp(r, theta[s, k, d], lo[s, k], hi[s, k])
                    step = steps[s, last, k]
                    for j in range(d + 1):
                        theta[s, k, j] = _fma(_v_dot_tree(z, j, r), step, theta[s, k, j])
                continue
            for k in range(m):
                if wide:
                    for j in range(d):
                        w_j = theta[s, k, j]
                        for i in range(bs):
                            xw[j, i] = z[j, i] * w_j
                    for lv in range(feature_levels.shape[0]):
                        h, top = feature_levels[lv, 0], feature_levels[lv, 1]
                        for a in range(h):
                            low, high = xw[a], xw[top - h + a]
                            for i in range(bs):
                                low[i] = low[i] + high[i]
                    for i in range(bs):
                        r[i] = xw[0, i] + z[d + 1, i]
                else:
                    w_0 = theta[s, k, 0]
                    for i in range(bs):
                        r[i] = _fma(w_0, z[0, i], z[d + 1, i])
                    for j in range(1, d):
                        w_j = theta[s, k, j]
                        for i in range(bs):
                            r[i] = _fma(w_j, z[j, i], r[i])
                b = theta[s, k, d]
                for i in range(bs):
                    r[i] = r[i] + b
                if clamp:
                    # torch.clamp's: NaN stays NaN (no comparison holds for it)
                    lo_k, hi_k = lo[s, k], hi[s, k]
                    for i in range(bs):
                        if r[i] < lo_k:
                            r[i] = lo_k
                        elif r[i] > hi_k:
                            r[i] = hi_k
                for j in range(d + 1):
                    for i in range(bs):
                        prod[j, i] = z[j, i] * r[i]
                step = steps[s, last, k]
                for j in range(d + 1):
                    theta[s, k, j] = _fma(_tree_sum(prod[j], levels), step, theta[s, k, j])

    @numba.njit(cache=True, nogil=True)
    def _buffers(d, bs, T):  # pragma: no cover - compiled
        return (
            np.empty((T, d + 2, bs), np.float32),
            np.empty(bs, np.float32),
            np.empty((d + 1, bs), np.float32),
            np.empty((max(d, 1), bs), np.float32),
        )

    @numba.njit(cache=True, nogil=True)
    def plain_epoch(
        Zpad, order, T, bs, theta, steps, lo, hi, clamp, levels, feature_levels, wide
    ):  # pragma: no cover - compiled
        """One epoch's steps of plain SGD for a chunk's runs, in place on ``theta``.

        Zpad: (S, d+2, n+1) float32, each stream's examples z = (x, 1, y) and a last column of
        zeros (the ragged minibatch's padding); order: (S, n) int64, the epoch's order (its first
        T·bs only, with drop_last); theta: (S, m, d+2) float32, θ = (w, b, −1) per slot; steps:
        (S, 2, m) float32, the step sizes of a full minibatch and of the epoch's last (which may
        be short); lo, hi: (S, m) Huber's clamp, applied where ``clamp``; levels and
        feature_levels: the pairwise trees (h, s) over the minibatch and over the features;
        ``wide``: the residual's products by the features' tree.
        """
        blocks, r, prod, xw = _buffers(Zpad.shape[1] - 2, bs, T)
        for s in range(Zpad.shape[0]):
            _stream_epoch(
                Zpad, order[s], s, T, bs, theta, steps, lo, hi, clamp, levels, feature_levels, wide, blocks, r, prod, xw
            )

    @numba.njit(cache=True, nogil=True)
    def plain_epochs(
        Zpad, seeds, marks, T, bs, theta, steps, lo, hi, clamp, levels, feature_levels, wide, kept
    ):  # pragma: no cover - compiled
        """Every epoch to the last checkpoint of plain SGD on the counter stream, each epoch's
        order drawn here (:func:`permutations`' integers); kept[c] = θ after epoch marks[c] (the
        checkpoints' epochs, ascending, each > 0), θ itself left at the last. One call a chunk,
        stream by stream: a stream's examples, runs and order buffers stay in the core's cache
        from one epoch to the next (epoch by epoch over all streams, they were fetched again from
        memory each epoch: 30% more time at n = 1,000 to 10,000). The other arguments are
        plain_epoch's."""
        n = Zpad.shape[2] - 1
        blocks, r, prod, xw = _buffers(Zpad.shape[1] - 2, bs, T)
        words, start, keys, ks = _sort_buffers(n)
        for s in range(Zpad.shape[0]):
            c = 0
            for epoch in range(1, marks[-1] + 1):
                _sorted_keys(seeds[s], epoch, n, words, start, keys, ks)
                _stream_epoch(  # the order: the keys' low 32 bits
                    Zpad, keys, s, T, bs, theta, steps, lo, hi, clamp, levels, feature_levels, wide, blocks, r, prod, xw
                )
                if epoch == marks[c]:
                    kept[c, s] = theta[s]
                    c += 1

    @numba.njit(cache=True, nogil=True)
    def _tree_sum(buf, levels):  # pragma: no cover - compiled
        """study.sums.tree_sum_ on one vector, in place: buf[:h] += buf[s-h:s] level by level."""
        for lv in range(levels.shape[0]):
            h, top = levels[lv, 0], levels[lv, 1]
            # Two views, so that the compiler sees the halves apart (and vectorises)
            low, high = buf[:h], buf[top - h : top]
            for a in range(h):
                low[a] = low[a] + high[a]
        return buf[0]  # a length of 0 is the caller's (its sums are 0)

    @numba.njit(cache=True, nogil=True)
    def second_moments(Z, lo, hi, levels, G):  # pragma: no cover - compiled
        """G[s] = Σ z zᵀ over examples lo..hi of stream s, in float64, each entry's products
        summed by study.sums.tree_sum_'s tree (``levels``, for hi − lo): the tensor path's
        ``second_moments``, bit for bit. Z: (S, d+2, n_total) float32; G: (S, d+2, d+2)."""
        count = hi - lo
        if count == 0:
            G[:] = 0.0
            return
        # The tree's first level (x[a] += x[a + count − h], a < h) added as the products are
        # made: the same additions, half the buffer.
        h, off = count // 2, count - count // 2
        buf = np.empty(off, np.float64)
        rest = levels[1:]
        for s in range(Z.shape[0]):
            for j in range(Z.shape[1]):
                zj = Z[s, j, lo:hi]
                for k in range(j + 1):
                    zk = Z[s, k, lo:hi]
                    for a in range(h):
                        b = a + off
                        buf[a] = np.float64(zj[a]) * np.float64(zk[a]) + np.float64(zj[b]) * np.float64(zk[b])
                    for a in range(h, off):  # the middle one, where count is odd
                        buf[a] = np.float64(zj[a]) * np.float64(zk[a])
                    G[s, j, k] = G[s, k, j] = _tree_sum(buf, rest)

    @numba.njit(cache=True, nogil=True)
    def squared_sums(theta, G_both, G_train, levels_outer, levels_row, sums, grad):  # pragma: no cover - compiled
        """A checkpoint's sums from the second moments (study.engine's ``checkpoint``), in float64:
        sums[s, k, g] = Σ_e (θ_j θ_l)·G_both[s, g, e] over e = (j, l), and grad[s, k, j] =
        Σ_l G_train[s, j, l]·θ_l for j ≤ d, each summed by study.sums' tree (``levels_outer`` for
        (d+2)², ``levels_row`` for d+2): the tensor path's products and trees, so its bits.
        theta: (S, m, d+2) float32; G_both: (S, 2, (d+2)²); G_train: (S, d+2, d+2); sums:
        (S, m, 2); grad: (S, m, d+1)."""
        D = theta.shape[2]
        outer = np.empty(D * D)
        buf = np.empty(D * D)
        row = np.empty(D)
        for s in range(theta.shape[0]):
            for k in range(theta.shape[1]):
                th = theta[s, k]
                for j in range(D):
                    for i in range(D):
                        outer[j * D + i] = np.float64(th[j]) * np.float64(th[i])
                for g in range(2):
                    for e in range(D * D):
                        buf[e] = outer[e] * G_both[s, g, e]
                    sums[s, k, g] = _tree_sum(buf, levels_outer)
                for j in range(D - 1):
                    for i in range(D):
                        row[i] = G_train[s, j, i] * np.float64(th[i])
                    grad[s, k, j] = _tree_sum(row, levels_row)

    @numba.njit(cache=True, nogil=True, error_model="numpy")
    def _huber_sums_general(theta, h0, Z, n, lo, hi, levels, out):  # pragma: no cover - compiled
        """huber_sums for any d: r, q and each sum's terms a pass over the examples each."""
        D = Z.shape[1]  # d + 2
        r = np.empty(n, np.float32)
        q = np.empty(n, np.float32)
        buf = np.empty(n, np.float32)
        for s in range(Z.shape[0]):
            for k in range(out.shape[1]):
                th = theta[s, h0 + k]
                t0 = th[0]
                for i in range(n):
                    r[i] = t0 * Z[s, 0, i]
                for j in range(1, D):
                    tj = th[j]
                    for i in range(n):
                        r[i] = _fma(tj, Z[s, j, i], r[i])
                lo_k, hi_k = lo[s, k], hi[s, k]
                for i in range(n):
                    v = r[i]
                    # torch.clamp's: NaN stays NaN (no comparison holds for it)
                    if v < lo_k:
                        v = lo_k
                    elif v > hi_k:
                        v = hi_k
                    q[i] = v
                for i in range(n):
                    buf[i] = q[i] * (q[i] + np.float32(-2.0) * r[i])
                out[s, k, 0] = _tree_sum(buf, levels)
                for j in range(D - 1):
                    for i in range(n):
                        buf[i] = q[i] * Z[s, j, i]
                    out[s, k, 1 + j] = _tree_sum(buf, levels)

    @numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
    def _huber_terms(th, Zs, i, lo_k, hi_k):  # pragma: no cover - compiled
        """Example i's four terms for d = 2 (z = x_0, x_1, 1, y): q(q − 2r), q x_0, q x_1, q, with
        r and q formed as _huber_sums_general forms them."""
        r = th[0] * Zs[0, i]
        r = _fma(th[1], Zs[1, i], r)
        r = _fma(th[2], Zs[2, i], r)
        r = _fma(th[3], Zs[3, i], r)
        q = r
        if q < lo_k:  # torch.clamp's: NaN stays NaN
            q = lo_k
        elif q > hi_k:
            q = hi_k
        return q * (q + np.float32(-2.0) * r), q * Zs[0, i], q * Zs[1, i], q * Zs[2, i]

    @numba.njit(cache=True, nogil=True, error_model="numpy")
    def _huber_sums_d2(theta, h0, Z, n, lo, hi, levels, out):  # pragma: no cover - compiled
        """huber_sums for d = 2 (the book's model), n > 1: an example's four terms in one pass,
        and the tree's first level (x[a] += x[a + n − h], a < h = n // 2) added as they are made:
        the same values and additions as _huber_sums_general, without its passes over buffers
        of n (2.4x faster at n = 10,000)."""
        h, off = n // 2, n - n // 2
        B = np.empty((4, off), np.float32)
        for s in range(Z.shape[0]):
            Zs = Z[s]
            for k in range(out.shape[1]):
                th = theta[s, h0 + k]
                lo_k, hi_k = lo[s, k], hi[s, k]
                for a in range(h):
                    a0, a1, a2, a3 = _huber_terms(th, Zs, a, lo_k, hi_k)
                    b0, b1, b2, b3 = _huber_terms(th, Zs, a + off, lo_k, hi_k)
                    B[0, a] = a0 + b0
                    B[1, a] = a1 + b1
                    B[2, a] = a2 + b2
                    B[3, a] = a3 + b3
                for a in range(h, off):  # the middle example, where n is odd
                    B[0, a], B[1, a], B[2, a], B[3, a] = _huber_terms(th, Zs, a, lo_k, hi_k)
                for j in range(4):
                    out[s, k, j] = _tree_sum(B[j], levels[1:])

    @numba.njit(cache=True, nogil=True, error_model="numpy")
    def huber_sums(theta, h0, Z, n, lo, hi, levels, out):  # pragma: no cover - compiled
        """A checkpoint's sums for the Huber slots h0.. of each stream (study.engine's
        ``checkpoint``): with r = θ·z over the n training examples (a product, then fused
        multiply-adds) and q = clamp(r, lo, hi), out[s, k] = (Σ q (q − 2r), Σ q z_0, ..., Σ q z_d),
        each summed by the tree ``levels`` (for n), in float32: the tensor path's bits.
        theta: (S, m, d+2); Z: (S, d+2, n_total); lo, hi: (S, m − h0); out: (S, m − h0, d+2)."""
        if Z.shape[1] == 4 and n > 1:
            _huber_sums_d2(theta, h0, Z, n, lo, hi, levels, out)
        else:
            _huber_sums_general(theta, h0, Z, n, lo, hi, levels, out)

else:  # pragma: no cover - exercised where Numba is missing

    def plain_epoch(*args, **kwargs):
        raise RuntimeError("Numba is not available")

    def permutations(*args, **kwargs):
        raise RuntimeError("Numba is not available")

    def philox_rows(*args, **kwargs):
        raise RuntimeError("Numba is not available")

    def plain_epochs(*args, **kwargs):
        raise RuntimeError("Numba is not available")

    def second_moments(*args, **kwargs):
        raise RuntimeError("Numba is not available")

    def huber_sums(*args, **kwargs):
        raise RuntimeError("Numba is not available")

    def squared_sums(*args, **kwargs):
        raise RuntimeError("Numba is not available")


def tree_array(levels: list[tuple[int, int]]) -> np.ndarray:
    """study.sums.tree_levels as the (L, 2) int64 array the loops take."""
    return np.asarray(levels, dtype=np.int64).reshape(-1, 2)
