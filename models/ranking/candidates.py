"""Candidate pools of the hybrid ranker, and the catalogue-wide arrays its scoring reads.

:class:`_Context` is a cache of :class:`~models.ranking.hybrid.HybridRanker`,
kept up to date incrementally between calls to ``recommend``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from models.catalog import grow_to
from models.groups import run_starts, within
from models.ranking.factors import _QuantisedFactors
from models.ranking.kernels import Scratch
from models.sets import member, union_sorted, unique_sorted

if TYPE_CHECKING:
    from models.ranking.hybrid import HybridRanker


class _Context:
    """Catalogue-wide state of :meth:`HybridRanker.recommend`, kept up to date between calls.

    A cache, never model state (not serialised): everything in it is a
    function of the model, rebuilt from scratch after a restore and kept
    incrementally otherwise, so a restored model and the live one recommend
    exactly alike.

    * Candidate pools: the ``n_candidates`` most popular available items
      (block 0) and, per category, its ``n_candidates`` most popular and
      ``n_new_candidates`` newest available items minus block 0 (block
      ``1 + c``). Popularity values only grow between rescales, so the new
      top lists are found among the old ones and the rows updated since the
      previous call (:meth:`TrendingPopularity.track_changes`); a change of
      availability or category, or a rescale, rebuilds them. All categories
      are merged at once (:meth:`_merge_cats`), and only the blocks of the
      categories whose lists changed, or that gained or lost a block-0 row,
      are recomputed (:meth:`_cat_blocks`). A row's first category named by
      an event (:meth:`Catalog.fill_category`) does not rebuild them: the row
      joins its category's newest-items list at the next read and its top
      list at the next update (:meth:`_take_fills`); any other catalogue
      change rebuilds them at the next read.
    * Derived arrays that change less often than every call (padded blocks,
      block factors, category codes, co-visitation norms) are kept across
      calls, keyed by what they derive from (``keep``); the norms are
      recomputed only for rows whose co-visitation mass moved.
    * MF item factors quantised to integers times a power of two (cached per
      factor update, :class:`~models.ranking.factors._QuantisedFactors`), so
      that every dot product is exact: scores do not depend on how users are
      batched or on the BLAS kernel used.
    """

    def __init__(self, ranker: "HybridRanker"):
        self.r = ranker
        self.catalog = None
        self.popularity = None
        self.n_items = 0  # rows the scores' terms cover
        self.pool_n = 0  # rows the pools have seen (new rows beyond it join the newest-items pools)
        self.base: dict | None = None  # the pools as last brought up to date (_keep_base)
        self.cat_version = -1  # the catalogue's version_without_fills when the pools were built
        self.fills_seen = 0  # the catalogue's fills the pools had taken in at their last update
        self.fills_newest = 0  # ... and those the newest-items lists have taken in since
        self.top = np.zeros(0, dtype=np.int64)  # rows of block 0, ascending
        self.in_cat_top = np.zeros(0, dtype=bool)  # rows in their category's top list
        self.cat_top: list[np.ndarray] = []
        self.cat_new: list[np.ndarray] = []
        self.cat_mat = None  # cat_top as a matrix (see _cat_matrix)
        self.cat_cnt = np.zeros(0, dtype=np.int64)
        self.blocks: list[np.ndarray] = []  # rows of each block, ascending
        self.block_of = np.zeros(0, dtype=np.int64)  # block of each row (-1: none)
        self.block_pos = np.zeros(0, dtype=np.int64)  # position of each row in its block
        self.n_cats = 0
        self.order = None  # every available row by popularity, when a cold list longer than block 0 was asked
        self.ids = np.zeros(0, dtype=object)  # item ids by row, as an object array (fast gathers)
        self.ids_n = 0
        self.factors = _QuantisedFactors()
        self.blocks_version = 0  # bumped whenever a block changes
        self.norm = None
        self.norm_entries = 0
        self._norm_all = None  # (covisit, (alpha, prior), mass as of the last computation, its norm)
        self.covisit_scratch = Scratch()  # (work arrays of the co-visitation loop)
        self.keep: dict = {}  # derived arrays kept across calls: key -> (token, value)
        # history_decay ** position as running products: the weights enter the
        # scores, whose last bits depend on how they are computed.
        pows = [1.0]
        for _ in range(max(1, ranker.history_size)):
            pows.append(pows[-1] * ranker.history_decay)
        self.decay_pows = np.array(pows)

    # -- pools ----------------------------------------------------------------

    def refresh(self, n_items: int, many: bool = False, pools: bool = True) -> None:
        """Bring the cache up to date; ``many``: the call scores many users, so catalogue-wide
        arrays computed once for the call pay off. ``pools=False``: the candidate pools (blocks)
        may stay as they are (a learning step ranks without them); only the scores' terms are
        brought up to date, unless the catalogue changed."""
        self.many = many
        r = self.r
        cat, pop = r.catalog, r.items.popularity
        version = cat.version_without_fills
        if (not pools and cat is self.catalog and pop is self.popularity and version == self.cat_version
                and n_items >= self.pool_n):
            changed = ()  # the pools' changes stay with the popularity for the next full refresh
        else:
            changed = pop.track_changes()
        self.pop = pop.scores(n_items)
        self.base_scale = r.w_popularity / pop.max_value if pop.max_value > 0 else 0.0
        if cat is not self.catalog:
            self.ids_n = 0
        if changed == ():
            self.n_items = n_items  # (before _admit: block keys pack rows below it)
            if n_items > self.pool_n:
                self._admit(n_items)
        elif (changed is None or cat is not self.catalog or pop is not self.popularity
                or version != self.cat_version or n_items < self.pool_n):
            self._build(n_items)
            self._keep_base()
        else:
            self._update(n_items, changed)
            self._keep_base()
        self._grow_categories()
        self._admit_fills()
        self.available = cat.available
        self.cats = cat.category
        self.norm, self.norm_entries = None, 0  # covisit_norm() of this call
        self.call_cache: dict = {}
        self.factors.refresh(r.mf, self.n_items)

    @property
    def mf(self):
        """The ranker's MF model (``None`` without MF)."""
        return self.factors.mf

    def _keep_base(self) -> None:
        """Remember the pools as brought up to date (what :meth:`_admit` starts from)."""
        self.base = {"cat_version": self.cat_version, "cat_fills": self.fills_seen, "n": self.pool_n, "top": self.top,
                     "cat_top": list(self.cat_top), "cat_new": list(self.cat_new)}

    def pools_state(self) -> dict | None:
        """The candidate pools as last brought up to date, as plain arrays, for the ranker's
        checkpoint (``None`` before any); the rows admitted since follow from them."""
        return self.base

    def seed(self, pools: dict) -> None:
        """Start from pools saved by :meth:`pools_state` (a restored ranker serves and learns with
        the pools it had, not with pools made from its state at the time of the restore)."""
        r = self.r
        self.catalog, self.popularity = r.catalog, r.items.popularity
        self.cat_version, self.n_items = pools["cat_version"], pools["n"]
        self.fills_seen = self.fills_newest = pools.get("cat_fills", len(r.catalog.fills))
        self.pool_n = pools["n"]
        self.top = pools["top"]
        self.cat_top, self.cat_new = list(pools["cat_top"]), list(pools["cat_new"])
        self.n_cats = len(self.cat_top)
        self.in_cat_top = np.zeros(self.pool_n, dtype=bool)
        for rows in self.cat_top:
            self.in_cat_top[rows] = True
        self.cat_mat = None
        self._set_blocks(self.pool_n, None)
        self.base = pools

    def _kept(self, key, token):
        """A derived array kept across calls, if it was derived from the same ``token`` (else ``None``)."""
        entry = self.keep.get(key)
        if entry is not None and len(entry[0]) == len(token) and all(a is b or (type(a) is int and a == b)
                                                                     for a, b in zip(entry[0], token)):
            return entry[1]
        return None

    def _key_order(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` by popularity, descending, ties to the lower row."""
        return rows[np.lexsort((rows, -self.pop[rows]))]

    def _build(self, n_items: int) -> None:
        r = self.r
        cat = r.catalog
        self.catalog, self.popularity = cat, r.items.popularity
        self.cat_version, self.n_items, self.pool_n = cat.version_without_fills, n_items, n_items
        self.fills_seen = self.fills_newest = len(cat.fills)
        p, q = r.n_candidates, r.n_new_candidates
        avail = np.flatnonzero(cat.available)
        order = self._key_order(avail)
        self.order = order
        self.top = np.sort(order[:p])
        self.n_cats = cat.n_categories if r.w_category else 0
        self.cat_top, self.cat_new = [], []
        self.cat_mat = None
        self.in_cat_top = np.zeros(n_items, dtype=bool)
        if self.n_cats:
            cats = cat.category
            by_cat = order[np.argsort(cats[order], kind="stable")]
            bounds = np.searchsorted(cats[by_cat], np.arange(self.n_cats + 1))
            newest = avail[::-1]
            newest = newest[np.argsort(cats[newest], kind="stable")]
            nbounds = np.searchsorted(cats[newest], np.arange(self.n_cats + 1))
            for c in range(self.n_cats):
                self.cat_top.append(np.sort(by_cat[bounds[c]:min(bounds[c + 1], bounds[c] + p)]))
                self.cat_new.append(newest[nbounds[c]:min(nbounds[c + 1], nbounds[c] + q)])
                self.in_cat_top[self.cat_top[-1]] = True
        self._set_blocks(n_items, None)

    def _update(self, n_items: int, changed: list[int]) -> None:
        r = self.r
        cat = r.catalog
        p = r.n_candidates
        old_n = self.pool_n
        self.n_items = self.pool_n = n_items
        rows = np.array(changed, dtype=np.int64)
        if len(rows) > 1:
            rows = unique_sorted(rows)
        new_rows = None
        if n_items > old_n:
            new_rows = np.arange(old_n, n_items)
            rows = union_sorted(rows, new_rows)
        filled = self._take_fills()
        if filled is not None:
            rows = union_sorted(rows, filled)
        if not len(rows):
            if len(self.block_of) < n_items:
                self._set_blocks(n_items, (), False)
            return
        avail = cat.available
        rows = rows[avail[rows]]
        self.order = None
        dirty: set[int] = set()
        # Rows already in a top list only moved up inside it.
        known = len(self.block_of)
        if len(rows) and rows[-1] >= known:
            in_top = np.zeros(len(rows), dtype=bool)
            old_rows = rows < known
            in_top[old_rows] = self.block_of[rows[old_rows]] == 0
        else:
            in_top = self.block_of[rows] == 0
        old_top = self.top
        self.top, top_changed = self._merge(self.top, rows[~in_top], p)
        cats = None
        if self.r.w_category and cat.n_categories:
            cats = cat.category
            while len(self.cat_top) < cat.n_categories:
                self.cat_top.append(np.zeros(0, dtype=np.int64))
                self.cat_new.append(np.zeros(0, dtype=np.int64))
            self.n_cats = cat.n_categories
            if len(self.in_cat_top) < n_items:
                self.in_cat_top = grow_to(self.in_cat_top, n_items, fill=False)
            rows = rows[~self.in_cat_top[rows]]
            rc = cats[rows]
            known_cat = rc >= 0
            if p > 0 and known_cat.any():
                dirty.update(self._merge_cats(rows[known_cat], rc[known_cat], p))
            newest = new_rows[avail[new_rows]] if new_rows is not None else np.zeros(0, dtype=np.int64)
            if filled is not None:
                newest = union_sorted(newest, filled[avail[filled]])
            dirty.update(self._newest_with(newest))
        if top_changed and self.n_cats:
            # A category block is its top and newest rows minus block 0: only the
            # categories of the rows that entered or left block 0 change.
            moved = np.setxor1d(old_top, self.top, assume_unique=True)
            mc = cat.category[moved]
            dirty.update(unique_sorted(mc[(mc >= 0) & (mc < self.n_cats)]).tolist())
        if top_changed or dirty or len(self.block_of) < n_items or len(self.blocks) < 1 + self.n_cats:
            self._set_blocks(n_items, dirty, top_changed)

    def _grow_categories(self) -> None:
        """Empty lists and blocks for the categories the catalogue has named since the pools last
        took them in (a first category named by an event waits for the next update to join its
        lists, but scoring reads a block for every category a customer has met)."""
        n = self.r.catalog.n_categories if self.r.w_category else 0
        if n <= self.n_cats:
            return
        while len(self.cat_top) < n:
            self.cat_top.append(np.zeros(0, dtype=np.int64))
            self.cat_new.append(np.zeros(0, dtype=np.int64))
        self.n_cats = n
        self.cat_mat = None
        self._set_blocks(self.pool_n, set(), False)

    def _take_fills(self) -> np.ndarray | None:
        """The rows that got their first category since the last update, ascending (``None``: none);
        from the update on they are taken in like rows whose popularity changed.

        Between updates they are category-less to :meth:`_admit` and join only the newest-items
        lists (:meth:`_admit_fills`): which rows those hold is a function of the set of rows, never of
        when they were read, so the pools at a read follow from the last update's, the rows that exist
        and the fills since, and a restored ranker (which starts from the update's) reads the same."""
        if len(self.r.catalog.fills) == self.fills_seen:
            return None
        rows = self._fills_since(self.fills_seen)
        self.fills_seen = self.fills_newest = len(self.r.catalog.fills)
        return rows

    def _fills_since(self, start: int) -> np.ndarray:
        """The distinct rows of the catalogue's fills from the ``start``-th on, ascending."""
        return unique_sorted(np.array(self.r.catalog.fills[start:], dtype=np.int64))

    def _admit_fills(self) -> None:
        """Rows named a first category since the last read join their category's newest-items list."""
        fills = self.r.catalog.fills
        if len(fills) == self.fills_newest or not (self.r.w_category and self.n_cats):
            return
        rows = self._fills_since(self.fills_newest)
        self.fills_newest = len(fills)
        rows = rows[self.r.catalog.available[rows]]
        dirty = self._newest_with(rows)
        if dirty:
            self._set_blocks(self.pool_n, dirty, False)

    def _newest_with(self, rows: np.ndarray) -> list[int]:
        """Put ``rows`` (available, ascending) in their categories' newest-items lists, which hold each
        category's ``n_new_candidates`` highest rows, highest first; returns the categories whose list
        changed. (All categories at once: a batch can name hundreds.)"""
        cats, q = self.r.catalog.category, self.r.n_new_candidates
        rc = cats[rows]
        named = rc >= 0
        rows, rc = rows[named], rc[named].astype(np.int64)
        if not len(rows) or q <= 0:
            return []
        touched = unique_sorted(rc)
        old = [self.cat_new[c] for c in touched.tolist()]
        lens = np.fromiter((len(o) for o in old), dtype=np.int64, count=len(old))
        allc = np.concatenate((np.repeat(touched, lens), rc))
        allr = np.concatenate(old + [rows]).astype(np.int64, copy=False)
        order = np.lexsort((-allr, allc))  # by category, then row, highest first
        allc, allr = allc[order], allr[order]
        distinct = np.ones(len(allr), dtype=bool)
        distinct[1:] = (allc[1:] != allc[:-1]) | (allr[1:] != allr[:-1])
        allc, allr = allc[distinct], allr[distinct]
        starts = run_starts(allc)
        kept = within(np.diff(np.append(starts, len(allc)))) < q
        allc, allr = allc[kept], allr[kept]
        bounds = np.append(run_starts(allc), len(allc)).tolist()
        out = []
        for c, o, lo, hi in zip(touched.tolist(), old, bounds[:-1], bounds[1:]):
            new = allr[lo:hi]
            if not np.array_equal(new, o):
                self.cat_new[c] = new
                out.append(c)
        return out

    def _admit(self, n_items: int) -> None:
        """Rows new since the pools were last brought up to date join them without looking at
        popularity: the newest-items pools of their categories, and block 0 and their category's top
        list while those have room, in row order (the rest wait for the next :meth:`_update`).

        So the pools between two updates are a function of the pools at the last update and of the
        rows that exist, whenever they are read; and every row of a pool at an update is still in it,
        so :meth:`_update`'s merge stays exact (rows not in a top list and not changed since cannot
        beat its last one)."""
        r, cat = self.r, self.r.catalog
        p, q = r.n_candidates, r.n_new_candidates
        new = np.arange(self.pool_n, n_items)
        new = new[cat.available[new]]
        self.pool_n = n_items
        if len(self.block_of) < n_items:
            self.block_of = grow_to(self.block_of, n_items, fill=-1)
            self.block_pos = grow_to(self.block_pos, n_items)
        if len(self.in_cat_top) < n_items:
            self.in_cat_top = grow_to(self.in_cat_top, n_items, fill=False)
        if not len(new):
            return
        self.order = None
        room = p - len(self.top)
        top_changed = room > 0
        if top_changed:
            self.top = np.concatenate((self.top, new[:room]))  # new rows are above every old one
        dirty: set[int] = set()
        if r.w_category and cat.n_categories:
            while len(self.cat_top) < cat.n_categories:
                self.cat_top.append(np.zeros(0, dtype=np.int64))
                self.cat_new.append(np.zeros(0, dtype=np.int64))
            self.n_cats = cat.n_categories
            nc = cat.category[new]
            if len(cat.fills) > self.fills_seen:  # (rows named since the update join by _admit_fills)
                nc = np.where(member(new, self._fills_since(self.fills_seen)), -1, nc)
            for c in unique_sorted(nc[nc >= 0]).tolist():
                rows = new[nc == c]
                self.cat_new[c] = np.concatenate((rows[::-1], self.cat_new[c]))[:q]
                room_c = p - len(self.cat_top[c])
                if room_c > 0:
                    self.cat_top[c] = np.concatenate((self.cat_top[c], rows[:room_c]))
                    self.in_cat_top[rows[:room_c]] = True
                dirty.add(c)
            self.cat_mat = None
        if top_changed and self.n_cats:
            mc = cat.category[new[:room]]
            dirty.update(unique_sorted(mc[(mc >= 0) & (mc < self.n_cats)]).tolist())
        self._set_blocks(n_items, dirty, top_changed)

    def _cat_matrix(self, p: int) -> tuple[np.ndarray, np.ndarray]:
        """The category top lists as one ``n_cats x p`` matrix of rows (ascending, padded
        with -1) and their lengths; kept in step with ``cat_top``."""
        M = self.cat_mat
        if M is None or len(M) != len(self.cat_top) or M.shape[1] != p:
            n = len(self.cat_top)
            M = np.full((n, p), -1, dtype=np.int64)
            cnt = np.array([len(t) for t in self.cat_top], dtype=np.int64)
            if n:
                M[np.arange(p) < cnt[:, None]] = np.concatenate(self.cat_top)
            self.cat_mat, self.cat_cnt = M, cnt
        return self.cat_mat, self.cat_cnt

    def _merge_cats(self, rows: np.ndarray, rc: np.ndarray, p: int) -> list[int]:
        """:meth:`_merge` of every category's top list with its new ``rows`` (categories ``rc``,
        none of them in a top list yet), all categories at once; returns the changed categories."""
        pop = self.pop
        M, cnt = self._cat_matrix(p)
        # Only rows that can beat their category's last one (values only grew).
        V = pop[np.maximum(M, 0)]
        V[M < 0] = np.inf
        thr = V.min(axis=1)
        thr[cnt < p] = -np.inf
        keep = pop[rows] >= thr[rc]
        if not keep.any():
            return []
        rows, rc = rows[keep], rc[keep]
        order = np.argsort(rc, kind="stable")  # rows ascending within each category
        rows, rc = rows[order], rc[order]
        starts = run_starts(rc)
        cats = rc[starts]
        nx = np.diff(np.append(starts, len(rc)))
        # One line per category: its top list (padded to p), then its new rows.
        m, w = len(cats), p + int(nx.max())
        R = np.full((m, w), -1, dtype=np.int64)
        R[:, :p] = M[cats]
        line = np.repeat(np.arange(m), nx)
        R[line, p + np.arange(len(rows)) - np.repeat(starts, nx)] = rows
        V = pop[np.maximum(R, 0)]
        V[R < 0] = -np.inf
        idx = np.lexsort((R, -V), axis=-1)[:, :p]  # the p best, ties to the lower row
        sel = np.take_along_axis(R, idx, axis=1)
        real = sel >= 0
        changed = (real & (idx >= p)).any(axis=1)  # a new row got in
        if not changed.any():
            return []
        ch = np.flatnonzero(changed)
        cats, sel, real = cats[ch], sel[ch], real[ch]
        big = np.iinfo(np.int64).max
        S = np.sort(np.where(real, sel, big), axis=1)
        newcnt = real.sum(axis=1)
        old = M[cats]
        self.in_cat_top[old[old >= 0]] = False
        self.in_cat_top[S[S != big]] = True
        M[cats] = np.where(S == big, -1, S)
        cnt[cats] = newcnt
        out = cats.tolist()
        for i, (c, k) in enumerate(zip(out, newcnt.tolist())):
            self.cat_top[c] = S[i, :k]
        return out

    def _merge(self, top: np.ndarray, rows: np.ndarray, p: int) -> tuple[np.ndarray, bool]:
        """The ``p`` best of ``top`` (ascending, all rows' values only grew) and new ``rows``
        (ascending, none in ``top``); returns them ascending, and whether they changed."""
        if not len(rows):
            return top, False
        pop = self.pop
        if len(top) >= p:
            rows = rows[pop[rows] >= pop[top].min()]  # the others cannot get in
            if not len(rows):
                return top, False
        both = np.concatenate((top, rows))
        vals = pop[both]
        if len(both) > p:
            both = both[np.lexsort((both, -vals))[:p]]
            both.sort()
            if len(both) == len(top) and np.array_equal(both, top):
                return top, False
        else:
            both.sort()
        return both, True

    def _set_blocks(self, n_items: int, dirty, top_changed: bool = True) -> None:
        """(Re)compute the blocks listed in ``dirty`` (``None``: all), block 0 when ``top_changed``,
        and the row -> block maps."""
        self.blocks_version += 1
        if len(self.block_of) < n_items:
            self.block_of = grow_to(self.block_of, n_items, fill=-1)
            self.block_pos = grow_to(self.block_pos, n_items)
        if dirty is None or not self.blocks:
            old = self.blocks
            self.block_of[np.concatenate(old) if old else []] = -1
            top = np.sort(self.top)
            self.blocks = [top]
            for c in range(self.n_cats):
                self.blocks.append(self._cat_block(c, top))
            todo = range(len(self.blocks))
        else:
            while len(self.blocks) < 1 + self.n_cats:  # categories seen since the last build
                dirty = set(dirty) | {len(self.blocks) - 1}
                self.blocks.append(np.zeros(0, dtype=np.int64))
            dl = sorted(dirty)
            old = [self.blocks[1 + c] for c in dl]
            if top_changed:
                old.append(self.blocks[0])
                self.blocks[0] = self.top
            if old:
                self.block_of[np.concatenate(old)] = -1
            if top_changed:
                top = self.top
                self.block_of[top] = 0
                self.block_pos[top] = np.arange(len(top))
            if dl:
                self._cat_blocks(dl)
            return
        for b in todo:
            rows = self.blocks[b]
            self.block_of[rows] = b
            self.block_pos[rows] = np.arange(len(rows))

    def _cat_blocks(self, dl: list[int]) -> None:
        """:meth:`_cat_block` of the categories ``dl`` (ascending), all at once, and their rows' maps."""
        parts = [self.cat_top[c] for c in dl] + [self.cat_new[c] for c in dl]
        lens = [len(x) for x in parts]
        labels = np.array(dl + dl, dtype=np.int64)
        n = max(self.n_items, 1)
        key = np.repeat(labels, lens) * n + np.concatenate(parts) if sum(lens) else np.zeros(0, dtype=np.int64)
        key = unique_sorted(key, kind="stable")  # by category, then row, no repeats (merges the sorted runs)
        lab = key // n
        rows = key - lab * n
        top = self.blocks[0]
        if len(top) and len(rows):
            at = np.searchsorted(top, rows)
            at[at == len(top)] = 0
            keep = top[at] != rows
            rows, lab = rows[keep], lab[keep]
        dla = np.array(dl, dtype=np.int64)
        lo = np.searchsorted(lab, dla)
        hi = np.searchsorted(lab, dla, side="right")
        for c, a, b in zip(dl, lo.tolist(), hi.tolist()):
            self.blocks[1 + c] = rows[a:b]
        self.block_of[rows] = 1 + lab
        self.block_pos[rows] = np.arange(len(rows)) - np.repeat(lo, hi - lo)

    def _cat_block(self, c: int, top: np.ndarray) -> np.ndarray:
        rows = np.concatenate((self.cat_top[c], self.cat_new[c]))
        if not len(rows):
            return rows
        rows = unique_sorted(rows)
        if len(top):
            at = np.searchsorted(top, rows)
            at[at == len(top)] = 0
            rows = rows[top[at] != rows]
        return rows

    def item_ids(self, rows: np.ndarray) -> np.ndarray:
        """Item ids of ``rows``, in an array of their shape (gathered from an object array of the
        catalogue's ids, grown as it grows)."""
        ids = self.r.catalog.ids
        n = self.ids_n
        if n < len(ids):
            if len(self.ids) < len(ids):
                grown = np.empty(max(len(ids), 2 * len(self.ids)), dtype=object)
                grown[:n] = self.ids[:n]
                self.ids = grown
            self.ids[n:len(ids)] = ids[n:]
            self.ids_n = len(ids)
        return self.ids[rows]

    def cold(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows and scores of a user without history: trending popularity only."""
        if n > len(self.top) and len(self.top) == self.r.n_candidates:
            if self.order is None:
                self.order = self._key_order(np.flatnonzero(self.r.catalog.available))
            rows = self.order[:n]
        else:
            rows = self._key_order(self.top)[:n]
        return rows, self.pop[rows] * self.base_scale

    # -- derived arrays ---------------------------------------------------------

    def block_factors(self, b: int) -> np.ndarray:
        """Quantised factors of block ``b``'s rows, transposed, in float64 (kept while blocks and factors are unchanged)."""
        token = (self.blocks_version, self.factors.version, self.factors.Fq)
        kept = self._kept("F", token)
        if kept is None:
            # Every block's factors at once, transposed: block b is a slice of columns.
            widths = [len(x) for x in self.blocks]
            offsets = np.cumsum([0] + widths).tolist()
            rows = np.concatenate(self.blocks) if self.blocks else np.zeros(0, dtype=np.int64)
            FT = self.factor_rows(rows).T  # a transposed view: BLAS takes it as is (exact integer sums)
            kept = (FT, offsets)
            self.keep["F"] = ((self.blocks_version, self.factors.version, self.factors.Fq), kept)
        FT, offsets = kept
        return FT[:, offsets[b]:offsets[b + 1]]

    def block_widths(self) -> np.ndarray:
        """How many rows each block holds (kept while the blocks are unchanged)."""
        token = (self.blocks_version, len(self.blocks))
        widths = self._kept("widths", token)
        if widths is None:
            widths = np.fromiter((len(b) for b in self.blocks), dtype=np.int64, count=len(self.blocks))
            self.keep["widths"] = (token, widths)
        return widths

    def padded_blocks(self):
        """Every block as one row of a padded matrix (cached per call): rows (padding: row 0),
        popularity terms (padding: -inf), category indices (padding: ``n_cats``), the width, and
        each block's largest popularity term (0 for an empty block). Rows and categories are kept
        across calls while the blocks and the catalogue are unchanged."""
        out = self.call_cache.get("padded")
        if out is None:
            token = (self.blocks_version, self.catalog.version, self.n_cats, self.catalog)
            kept = self._kept("padded", token)
            if kept is None:
                widths = np.array([len(b) for b in self.blocks], dtype=np.int64)
                wmax = int(widths.max()) if len(widths) else 0
                nb = len(self.blocks)
                pad = np.arange(wmax) >= widths[:, None]
                rows = np.zeros((nb, wmax), dtype=np.int64)
                if nb:
                    rows[~pad] = np.concatenate(self.blocks)
                # Block b > 0 holds category b - 1; block 0 its rows' own categories.
                cats = np.where(pad, self.n_cats, np.arange(nb)[:, None] - 1)
                if nb:
                    cats[0, : widths[0]] = self.block_cats(0)
                kept = (rows, cats, wmax, pad, widths)
                self.keep["padded"] = (token, kept)
            rows, cats, wmax, pad, widths = kept
            # Popularity terms of every block row, elementwise as pop[rows] * base_scale.
            base = self.pop[rows] * self.base_scale
            base[pad] = -np.inf
            top = base.max(axis=1) if wmax else np.zeros(len(rows))
            top[widths == 0] = 0.0
            out = self.call_cache["padded"] = (rows, base, cats, wmax, top)
        return out

    def row_base(self, rows: np.ndarray) -> np.ndarray:
        """Popularity term of ``rows``, ``-inf`` for unavailable ones (a new array)."""
        if self.many:
            base = self.call_cache.get("base")
            if base is None:
                base = self.call_cache["base"] = np.where(self.available, self.pop * self.base_scale, -np.inf)
            return base[rows]
        base = self.pop[rows] * self.base_scale
        base[~self.available[rows]] = -np.inf
        return base

    def row_cats(self, rows: np.ndarray) -> np.ndarray:
        """Category index of ``rows``, ``n_cats`` for unknown ones."""
        if self.many:
            token = (self.catalog.version, self.n_items, self.n_cats, self.catalog)
            cats = self._kept("cats", token)
            if cats is None:
                cats = np.where(self.cats >= 0, self.cats, self.n_cats)
                self.keep["cats"] = (token, cats)
            return cats[rows]
        c = self.cats[rows]
        return np.where(c >= 0, c, self.n_cats)

    def block_cats(self, b: int) -> np.ndarray:
        """Category of block ``b``'s rows, unknown ones as ``n_cats`` (cached per call)."""
        rows = self.blocks[b]
        token = (rows, self.catalog.version, self.n_cats, self.catalog)
        c = self._kept(("cats", b), token)
        if c is None:
            c = self.cats[rows]
            c = np.where(c >= 0, c, self.n_cats)
            self.keep[("cats", b)] = (token, c)
        return c

    def covisit_norm(self, mass: np.ndarray, entries: int) -> np.ndarray | None:
        """:meth:`~models.covisit.CoVisitation.norm` of every row, computed once per call when the
        call needs more of them than there are rows (else ``None``: compute the few needed)."""
        if self.norm is None and (self.norm_entries + entries) > self.n_items:
            covisit = self.r.items.covisit
            alpha, prior = covisit.alpha, covisit.prior_now()
            kept = self._norm_all
            if (kept is not None and kept[0] is covisit and kept[1] == (alpha, prior)
                    and len(kept[2]) == len(mass)):
                # Kept from an earlier call: recompute the rows whose mass moved (elementwise, so
                # the same values as computing them all).
                prev, norm = kept[2], kept[3]
                moved = np.flatnonzero(mass != prev)
                if len(moved):
                    m = mass[moved]
                    norm[moved] = covisit.norm(m, prior)
                    prev[moved] = m
            else:
                norm = covisit.norm(mass, prior)
                self._norm_all = (covisit, (alpha, prior), mass.copy(), norm)
            self.norm = norm
        self.norm_entries += entries
        return self.norm

    def factor_rows(self, rows: np.ndarray) -> np.ndarray:
        """Quantised MF factors of item ``rows`` (see :class:`~models.ranking.factors._QuantisedFactors`)."""
        return self.factors.rows(rows, self.n_items)

    def user_factors(self, user_ids) -> tuple[np.ndarray, np.ndarray]:
        """Quantised MF vectors of users and the exponents turning products into MF scores."""
        return self.factors.users(user_ids)
