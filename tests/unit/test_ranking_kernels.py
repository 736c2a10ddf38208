"""The ranker's compiled loops against numpy: the co-visitation sums and cut, and the per-group selection."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from models.groups import strongest_in_groups
from models.ranking.kernels import Scratch, covisit_neighbourhoods, reduceat_sum


def numpy_neighbourhoods(lens, per, entries, hist_weight, columns, values, col_scale, cap):
    """The reference: every entry's worth, stably sorted by customer then column, ``np.add.reduceat``
    per group, scaled, then each customer's ``cap`` strongest (``strongest_in_groups``)."""
    uh = np.repeat(np.arange(len(lens)), lens)
    cols = columns[entries].astype(np.int64)
    vals = values[entries] * np.repeat(hist_weight, per)
    us = np.repeat(uh, per)
    order = np.lexsort((cols, us))  # (stable)
    us, cols = us[order], cols[order]
    if not len(cols):
        return us, cols, vals
    starts = np.flatnonzero(np.concatenate(([True], (cols[1:] != cols[:-1]) | (us[1:] != us[:-1]))))
    u, c, v = us[starts], cols[starts], np.add.reduceat(vals[order], starts)
    if len(col_scale):
        v = v * col_scale[c]
    if cap >= 0 and len(v) > cap:
        at = strongest_in_groups(u, v, cap)
        u, c, v = u[at], c[at], v[at]
    return u, c, v


@st.composite
def neighbourhoods(draw):
    n_cols = draw(st.integers(1, 40))
    n_rows = draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    tied = draw(st.booleans())  # small integer values: ties everywhere, at the cut too
    row_cols = [rng.choice(n_cols, size=int(rng.integers(0, n_cols + 1)), replace=False) for _ in range(n_rows)]
    lengths = np.array([len(c) for c in row_cols], dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1])) + 3  # (a slab with a gap in front)
    columns = np.zeros(int(lengths.sum()) + 3, dtype=np.int32)
    values = np.zeros(len(columns))
    for r, cs in enumerate(row_cols):
        columns[starts[r]:starts[r] + len(cs)] = cs
        values[starts[r]:starts[r] + len(cs)] = (rng.integers(1, 4, size=len(cs)) if tied else
                                                 rng.random(len(cs)) * 10.0 ** rng.uniform(-6, 6, size=len(cs)))
    lens = rng.integers(0, 25, size=int(rng.integers(1, 6)))  # up to 24 items: groups past numpy's 8-way unrolling
    hist = rng.integers(0, n_rows, size=int(lens.sum()))
    per = lengths[hist]
    entries = np.concatenate([np.arange(starts[h], starts[h] + lengths[h]) for h in hist] or [np.zeros(0, int)])
    hist_weight = np.ones(len(hist)) if tied else rng.random(len(hist))
    col_scale = rng.random(n_cols) if draw(st.booleans()) else np.zeros(0)
    cap = draw(st.sampled_from([-1, 1, 2, 5, 100]))
    return lens, per, entries.astype(np.int64), hist_weight, columns, values, col_scale, cap


@settings(max_examples=300, deadline=None, database=None)
@given(neighbourhoods())
def test_compiled_neighbourhoods_are_numpys_bit_for_bit(case):
    lens, per, entries, hist_weight, columns, values, col_scale, cap = case
    n_cols = int(columns.max(initial=0)) + 1
    firsts = (np.concatenate(([0], np.cumsum(lens))).astype(np.int64),
              np.concatenate(([0], np.cumsum(per))).astype(np.int64))
    want = numpy_neighbourhoods(lens, per, entries, hist_weight, columns, values, col_scale, cap)
    scratch = Scratch()
    for _ in range(2):  # the second call reuses the work arrays the first left
        got = covisit_neighbourhoods(scratch, n_cols, *firsts, entries, hist_weight, columns, values, col_scale, cap)
        for a, b in zip(got, want):
            assert a.tolist() == b.tolist()
        assert all(not s.any() for s in scratch.per_item)  # left zero for the next call


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(st.floats(-1e12, 1e12), min_size=1, max_size=300))
def test_reduceat_sum_is_numpys(values):
    a = np.array(values)
    assert reduceat_sum(a, 0, len(a)) == np.add.reduceat(a, [0])[0]


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.sampled_from([0.0, 1.0, 2.0, 2.5, -np.inf])), max_size=80),
       st.integers(-1, 12))
def test_strongest_in_groups_is_a_stable_sort_per_group(entries, k):
    """The reference: per group, a stable sort by value (best first, the earliest of equal ones first)."""
    entries.sort(key=lambda e: e[0])  # (stable: positions within a group keep their draw order)
    groups = np.array([g for g, _ in entries], dtype=np.int64)
    values = np.array([v for _, v in entries])
    want = []
    for g in np.unique(groups).tolist():
        at = np.flatnonzero(groups == g)
        want += at[np.argsort(-values[at], kind="stable")[:max(k, 0)]].tolist()
    assert strongest_in_groups(groups, values, k).tolist() == sorted(want)
