"""Batched scoring of the hybrid ranker: many users with a history at once.

:class:`_Terms` holds the per-user score terms of a chunk of users,
:class:`_Batch` their candidates and the best ``n`` of them per user.
A user's list never depends on the other users of its chunk.
"""

from __future__ import annotations

import numpy as np

from models.groups import firsts, run_starts, within
from models.ranking.candidates import _Context
from models.ranking.kernels import covisit_neighbourhoods
from models.ranking.topk import _best_k
from models.sets import member, unique_sorted

_GEMM_ROWS = 128  # rows per matrix product (larger ones make OpenBLAS start threads that then spin)
_NO_SCALE = np.zeros(0)


def _histories(ctx: _Context, users) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Histories of ``users`` (most recent first), one after the other: rows, weights
    (``event weight * history_decay ** position``) and lengths."""
    hist, wraw, lens = [], [], []
    for user in users:
        h = user.history
        lens.append(len(h))
        hist.extend(reversed(h))
        wraw.extend(reversed(user.weights))
    lens = np.array(lens, dtype=np.int64)
    H = np.array(hist, dtype=np.int64)
    pos = within(lens)
    return H, np.array(wraw, dtype=np.float64) * ctx.decay_pows[pos], lens


class _Terms:
    """Per-user score terms of a batch of users with a history, all users at once.

    Attributes: ``cv_u, cv_r, cv_v`` the co-visitation score of each
    (user, row) with a positive score, sorted by user then row; ``cvs`` the
    per-user scale of those scores; ``aff`` (``None`` without categories)
    the category affinity per user and category met in the users' histories
    (``cat_ids``, ascending; :meth:`cat_cols` maps category codes to columns),
    with one last zero column for every other category and unknown ones (so
    arrays grow with the categories a batch has met, not with the
    catalogue's); ``Uq, shift`` quantised MF user vectors.
    Sums keep the order of the users' histories, so a user's terms do not
    depend on the other users of the batch.
    """

    def __init__(self, ctx: _Context, user_ids, users, history=None):
        r = ctx.r
        self.ctx = ctx
        self.B = B = len(users)
        if history is None:
            H, W, lens = _histories(ctx, users)
            regions = None
        else:
            H, W, lens, regions = history
        uh = np.repeat(np.arange(B), lens)
        # Co-visitation neighbourhood, summed per (user, row).
        self.cv_u = self.cv_r = np.zeros(0, dtype=np.int64)
        self.cv_v = np.zeros(0)
        self.cvs = np.zeros(B)
        if r.w_covisit:
            self._covisit(ctx, H, W, lens, regions)
        # Category affinity: share of the (decayed) history per category.
        self.aff = None
        nc = ctx.n_cats
        self.cat_ids = np.zeros(0, dtype=np.int64)
        if nc:
            hc = ctx.cats[H]
            known = hc >= 0
            self.cat_ids = ids = unique_sorted(hc[known].astype(np.int64))
            nl = len(ids)
            self._cols = np.full(nc + 1, nl, dtype=np.int64)
            self._cols[ids] = np.arange(nl)
            A = np.zeros((B, nl + 1))
            A[:, :nl] = np.bincount(uh[known] * nl + self._cols[hc[known]], W[known], minlength=B * nl).reshape(B, nl)
            top = A.max(axis=1)
            ok = top > 0
            A[ok] /= top[ok, None]
            self.aff = A
            self.has_cat = A[:, :nl] > 0
        # MF user vectors.
        self.Uq = self.shift = None
        if ctx.mf is not None:
            self.Uq, self.shift = ctx.user_factors(user_ids)

    def cat_cols(self, codes: np.ndarray) -> np.ndarray:
        """Columns of ``aff`` of category ``codes`` (as :meth:`_Context.row_cats` gives them)."""
        return self._cols[codes]

    def _covisit(self, ctx, H, W, lens, regions=None):
        covisit = ctx.r.items.covisit
        sparse = covisit.rows
        mass = covisit.mass(ctx.n_items)
        regions = sparse.regions(H) if regions is None else regions
        if not regions[1].sum():
            return
        # The strongest `score_neighbors` neighbours of each history item.
        idx, per = sparse.strongest(H, ctx.r.score_neighbors, regions)
        alpha = covisit.alpha
        norm = ctx.covisit_norm(mass, len(idx))
        if alpha and norm is None:  # few entries: the scales of the rows they read only (elementwise: the same values)
            norm = np.empty(ctx.n_items)  # (other rows are never read)
            read = np.concatenate((H, sparse.columns[idx]))
            norm[read] = covisit.norm(mass[read])
        norm_h = norm[H] if alpha else np.ones(len(H))
        # Each neighbour value times its history item's weight, summed per (user, row) in history
        # order as CoVisitation.score_sparse sums them, scaled, and cut to each user's strongest.
        cap = ctx.r.neighbor_candidates
        self.cv_u, self.cv_r, v = covisit_neighbourhoods(
            ctx.covisit_scratch, ctx.n_items, firsts(lens), firsts(per), idx.astype(np.int64, copy=False),
            W * norm_h, sparse.columns, sparse.values, norm if alpha else _NO_SCALE, -1 if cap is None else cap)
        self.cv_v = v
        if not len(v):
            return
        ustarts = run_starts(self.cv_u)
        top = np.maximum.reduceat(v, ustarts)
        ok = top > 0
        self.cvs[self.cv_u[ustarts[ok]]] = ctx.r.w_covisit / top[ok]


class _Batch:
    """Candidates and their scores for a chunk of users with a history (see :meth:`HybridRanker.recommend`).

    Candidates of a user are the rows of its blocks (block 0, and the block
    of each category with a positive affinity) and its co-visitation
    neighbours. Neighbours are scored one by one (a flat list sorted by user
    then row); the other block rows as dense ``users x rows`` matrices, one
    matrix product each for MF. Every candidate is scored once per user.

    Most users' best items are all neighbours: a block is only scored for
    the users whose ``n``-th best neighbour could still be beaten by one of
    its rows (bounded by the block's best popularity term, the user's
    category term and its largest MF term in the block). Skipping the others
    changes nothing but the work.
    """

    def __init__(self, ctx: _Context, t: _Terms):
        self.ctx, self.t = ctx, t
        self._place_blocks()
        # Where each neighbour sits in the blocks (-1: in none of its user's blocks).
        self.cv_block, self.cv_pos, self.cv_flat = self.positions(t.cv_u, t.cv_r)
        # MF, scaled per user by its largest |score| over all its candidates.
        # Products of quantised factors are exact integers (M, cv_raw); times
        # 2**shift they are the MF scores, times coef the MF terms (both exact
        # rescalings of the same rounding).
        B = t.B
        self.M = None
        self.block_top = np.zeros((B, self.n_blocks))  # largest |M| of each user in each block
        self.cv_raw = None
        self.mfs = np.zeros(B)
        self.coef = np.zeros(B)
        if ctx.mf is not None:
            self._mf_terms()

    def _place_blocks(self) -> None:
        """The active blocks, ``(block, users, rows, offset in the block buffers)``, and where each
        user's rows of each block are in the buffers (``loc``, ``offset``, ``width``).

        Blocks are numbered for the chunk: 0 is the catalogue-wide block, ``1 + j`` the block of
        category ``t.cat_ids[j]`` (the ``j``-th column of ``t.aff``); ``gb`` maps them to the
        context's blocks and ``lb`` back (-1: a block no user of the chunk has)."""
        ctx, t = self.ctx, self.t
        B = t.B
        widths_g = ctx.block_widths()
        nbg = len(widths_g)
        gb = np.concatenate((np.zeros(1, dtype=np.int64), 1 + t.cat_ids))
        there = gb < nbg
        widths = np.zeros(len(gb), dtype=np.int64)
        widths[there] = widths_g[gb[there]]
        n_blocks = len(gb)
        self.gb = gb
        self.lb = np.full(nbg, -1, dtype=np.int64)
        self.lb[gb[there]] = np.flatnonzero(there)
        # Block-major membership (block 0: everybody; block 1 + j: the users with an affinity to
        # its category), so that its nonzeros come ordered by block, then user: one pass.
        member = np.zeros((n_blocks, B), dtype=bool)
        member[0] = widths[0] > 0
        if n_blocks > 1:
            member[1:] = t.has_cat.T & (widths[1:] > 0)[:, None]
        bs, us = np.nonzero(member)
        counts = np.bincount(bs, minlength=n_blocks)
        active = np.flatnonzero(counts)
        width = np.zeros(n_blocks, dtype=np.int64)
        width[active] = widths[active]
        sizes = counts * width
        ends = np.cumsum(sizes)
        offset = np.zeros(n_blocks, dtype=np.int64)
        offset[active] = (ends - sizes)[active]
        loc = np.full((B, n_blocks), -1, dtype=np.int64)  # row of each user in each block
        loc[us, bs] = np.arange(len(bs)) - (np.cumsum(counts) - counts)[bs]
        groups = np.split(us, np.cumsum(counts[active])[:-1]) if len(active) else []
        self.blocks = [(b, users, ctx.blocks[g], o)
                       for b, g, users, o in zip(active.tolist(), gb[active].tolist(), groups, offset[active].tolist())]
        self.size = int(ends[-1]) if len(ends) else 0
        self.loc, self.offset, self.width, self.n_blocks = loc, offset, width, n_blocks

    def _mf_terms(self) -> None:
        """Exact MF products of every candidate (``M`` per block, ``cv_raw`` per neighbour) and each
        user's MF coefficient ``coef``."""
        ctx, t = self.ctx, self.t
        cu, cr = t.cv_u, t.cv_r
        top = np.zeros(t.B)
        M = self.M = np.empty(self.size)
        for b, users, rows, o in self.blocks:
            Mb = M[o:o + len(users) * len(rows)].reshape(len(users), len(rows))
            Fb, Ub = ctx.block_factors(int(self.gb[b])), t.Uq[users]
            for lo in range(0, len(users), _GEMM_ROWS):  # small products: BLAS stays on one thread
                np.matmul(Ub[lo:lo + _GEMM_ROWS], Fb, out=Mb[lo:lo + _GEMM_ROWS])
            bt = np.abs(Mb).max(axis=1)
            self.block_top[users, b] = bt
            top[users] = np.maximum(top[users], bt)
        if len(cu):
            raw = np.empty(len(cu))
            inside = self.cv_flat >= 0
            raw[inside] = M[self.cv_flat[inside]]
            out = np.flatnonzero(~inside)
            if len(out):
                # Sorted by user: one matrix-vector product per user (exact integer sums,
                # so the same values as any other summation order).
                F = ctx.factor_rows(cr[out])
                uo = cu[out]
                bounds = np.append(run_starts(uo), len(uo)).tolist()
                vals = np.empty(len(out))
                Uq = t.Uq
                for a, b, u in zip(bounds[:-1], bounds[1:], uo[bounds[:-1]].tolist()):
                    np.dot(F[a:b], Uq[u], out=vals[a:b])
                raw[out] = vals
            starts = run_starts(cu)
            users = cu[starts]
            top[users] = np.maximum(top[users], np.maximum.reduceat(np.abs(raw), starts))
            self.cv_raw = raw
        top = np.ldexp(top, t.shift)
        ok = top > 0
        self.mfs[ok] = ctx.r.w_mf / top[ok]
        self.coef = np.ldexp(self.mfs, t.shift)

    def positions(self, users: np.ndarray, rows: np.ndarray):
        """Block (of the chunk), position in it, and position in the block buffers of each (user, row);
        -1 when the row is in none of the user's blocks."""
        ctx = self.ctx
        b = ctx.block_of[rows]
        pos = ctx.block_pos[rows]
        flat = np.full(len(rows), -1, dtype=np.int64)
        sel = np.flatnonzero(b >= 0)  # rows in some block: is it one of the user's?
        bs = self.lb[b[sel]]
        there = bs >= 0
        sel, bs = sel[there], bs[there]
        lu = self.loc.ravel()[users[sel] * self.n_blocks + bs]
        ok = lu >= 0
        sel, bs, lu = sel[ok], bs[ok], lu[ok]
        flat[sel] = self.offset[bs] + lu * self.width[bs] + pos[sel]
        block = np.full(len(rows), -1, dtype=np.int64)
        block[sel] = bs
        return block, pos, flat

    def neighbour_scores(self) -> np.ndarray:
        """``category + base + mf + cv`` of every neighbour (``-inf`` when unavailable)."""
        ctx, t = self.ctx, self.t
        cu, cr = t.cv_u, t.cv_r
        s = ctx.row_base(cr)
        if t.aff is not None:
            s = ctx.r.w_category * t.aff.ravel()[cu * t.aff.shape[1] + t.cat_cols(ctx.row_cats(cr))] + s
        if self.cv_raw is not None:
            s += self.coef[cu] * self.cv_raw
        s += t.cv_v * t.cvs[cu]
        return s

    def top(self, n: int, excluded: list[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Best ``n`` finite-score candidates per user: ``(rows, scores, counts)``, ``users x n``
        matrices sorted by score descending then row ascending, and how many of each row are real.

        Each source (neighbours, blocks) hands over its best ``n`` per user
        into the user's slots, the final choice is among those. Which of
        several candidates tied at a cut-off survive depends only on the
        user's own candidates, never on the other users of the batch.
        """
        t, k = self.t, n
        cs = self.neighbour_scores() if len(t.cv_u) else None
        eu, er = self._exclude(excluded, cs)
        # Each source's best k per user, in the user's slots of (CS, CR):
        # neighbours, block 0, then the user's category blocks.
        slots = np.cumsum(t.has_cat, axis=1) if len(t.cat_ids) else None
        n_slots = 2 + (int(slots[:, -1].max()) if slots is not None and t.B else 0)
        CS = np.full((t.B, k * n_slots), -np.inf)
        CR = np.zeros((t.B, k * n_slots), dtype=np.int64)
        t_cv = self._neighbour_slots(cs, k, CS, CR)
        need = self._blocks_in_play(t_cv)
        if need is not None:
            self._block_slots(need, eu, er, k, slots, CS, CR)
        return self._best_of_slots(CS, CR, k, need)

    def _exclude(self, excluded: list[np.ndarray | None], cs: np.ndarray | None):
        """The excluded (user, row) pairs, as users and rows (``None, None`` without any); the
        excluded neighbours' scores in ``cs`` become ``-inf``. Each user's ``excluded`` rows are sorted."""
        t = self.t
        lens = np.array([0 if e is None else len(e) for e in excluded], dtype=np.int64)
        if not lens.sum():
            return None, None
        N = self.ctx.n_items
        cu, cr = t.cv_u, t.cv_r
        eu = np.repeat(np.arange(t.B), lens)
        er = np.concatenate([e for e in excluded if e is not None and len(e)]).astype(np.int64)
        if cs is not None:
            has = (lens > 0)[cu]  # only neighbours of users with exclusions
            hu, hr = cu[has], cr[has]
            ekeys = eu * N + er  # ascending: users in order, each one's excluded rows sorted
            hit = np.flatnonzero(has)[member(hu * N + hr, ekeys)]
            cs[hit] = -np.inf
        return eu, er

    def _neighbour_slots(self, cs: np.ndarray | None, k: int, CS: np.ndarray, CR: np.ndarray) -> np.ndarray:
        """Put each user's best ``k`` neighbours (scores ``cs``) in its first slot; returns each
        user's ``k``-th best neighbour score (``-inf`` for users with fewer)."""
        t = self.t
        t_cv = np.full(t.B, -np.inf)
        if cs is None:
            return t_cv
        cu, cr = t.cv_u, t.cv_r
        starts = run_starts(cu)
        counts = np.diff(np.append(starts, len(cu)))
        rank = within(counts)
        # Users with at most k neighbours go straight in, the others
        # through a padded matrix (chunks group users of similar sizes).
        small = np.repeat(counts <= k, counts)
        CS[cu[small], rank[small]] = cs[small]
        CR[cu[small], rank[small]] = cr[small]
        big = counts > k
        if big.any():
            users = cu[starts[big]]
            w = int(counts[big].max())
            lw = np.zeros(t.B, dtype=np.int64)
            lw[users] = np.arange(len(users))
            sel = ~small
            P = np.full((len(users), w), -np.inf)
            P.ravel()[lw[cu[sel]] * w + rank[sel]] = cs[sel]
            # Column j of a user's row is its j-th neighbour: rows without a second matrix.
            first = starts[big]
            idx = _best_k(P, k, lambda i, j: cr[np.minimum(first[i] + j, len(cr) - 1)])
            best = np.take_along_axis(P, idx, axis=1)
            arange_k = np.arange(k)
            CS[users[:, None], arange_k] = best
            CR[users[:, None], arange_k] = cr[np.minimum(first[:, None] + idx, len(cr) - 1)]
            t_cv[users] = best.min(axis=1)
        return t_cv

    def _blocks_in_play(self, t_cv: np.ndarray) -> np.ndarray | None:
        """Which (user, block) pairs to score: the blocks with a row that could beat the user's
        ``k``-th neighbour (``t_cv``), bounded by the block's best popularity term, the user's
        category term and its largest MF term in the block. ``None``: no pair."""
        if not self.blocks:
            return None
        ctx, t = self.ctx, self.t
        w_cat = ctx.r.w_category
        tops = ctx.padded_blocks()[4]
        gb = self.gb
        there = gb < len(tops)
        bound = np.zeros((t.B, self.n_blocks))
        bound[:, there] = tops[gb[there]]
        if t.aff is not None:
            bound[:, 0] += w_cat * t.aff.max(axis=1)
            bound[:, 1:] += w_cat * t.aff[:, : self.n_blocks - 1]
        if self.M is not None:
            bound += np.abs(self.coef)[:, None] * self.block_top
        need = (t_cv[:, None] <= bound) & (self.loc >= 0)
        return need if need.any() else None

    def _block_slots(self, need: np.ndarray, eu, er, k: int, slots, CS: np.ndarray, CR: np.ndarray) -> None:
        """Score the (user, block) pairs in play (``need``) and put each pair's best ``k`` rows
        in the block's slot of the user."""
        ctx, t = self.ctx, self.t
        cu = t.cv_u
        # Every (user, block) pair still in play is one row of a padded
        # matrix: block rows (padding scores -inf), their category and
        # popularity terms, and MF gathered from the block products.
        pu, pb = np.nonzero(need)
        pair = np.full((t.B, self.n_blocks), -1, dtype=np.int64)
        pair[pu, pb] = np.arange(len(pu))
        rows_p, base_p, cat_p, wmax, _ = ctx.padded_blocks()
        j = np.arange(wmax)
        g = self.gb[pb]  # the context's blocks
        S = base_p[g]
        if t.aff is not None:
            S = ctx.r.w_category * t.aff.ravel()[(pu * t.aff.shape[1])[:, None] + t.cat_cols(cat_p[g])] + S
        if self.M is not None:
            at = (self.offset[pb] + self.loc[pu, pb] * self.width[pb])[:, None] + np.minimum(j, self.width[pb][:, None] - 1)
            S += self.coef[pu][:, None] * self.M[at]
        # Neighbours are scored above; excluded rows are not candidates.
        # Only the few users with a block in play matter here.
        in_play = need.any(axis=1)
        nb, flat_pair, flat_S = self.n_blocks, pair.ravel(), S.ravel()
        sel = np.flatnonzero(in_play[cu] & (self.cv_block >= 0))
        p = flat_pair[cu[sel] * nb + self.cv_block[sel]]
        ok = p >= 0
        flat_S[p[ok] * wmax + self.cv_pos[sel[ok]]] = -np.inf
        if eu is not None:
            sel = np.flatnonzero(in_play[eu])
            e_block, e_pos, _ = self.positions(eu[sel], er[sel])
            inb = np.flatnonzero(e_block >= 0)
            p = flat_pair[eu[sel[inb]] * nb + e_block[inb]]
            ok = p >= 0
            flat_S[p[ok] * wmax + e_pos[inb[ok]]] = -np.inf
        if wmax > k:
            idx = _best_k(S, k, lambda i, j: rows_p[g[i], j])
            vals, rws = np.take_along_axis(S, idx, axis=1), rows_p[g[:, None], idx]
        else:
            vals, rws = S, rows_p[g]
        slot = np.where(pb > 0, slots[pu, np.maximum(pb - 1, 0)] if slots is not None else 0, 0)
        cols = (k * (1 + slot))[:, None] + np.arange(k)[: vals.shape[1]]
        CS[pu[:, None], cols] = vals
        CR[pu[:, None], cols] = rws

    @staticmethod
    def _best_of_slots(CS: np.ndarray, CR: np.ndarray, k: int, need: np.ndarray | None):
        """The best ``k`` of each user's slots, sorted by score (descending) then row, and how
        many of them are real; users with no block in play (``need``) have them all in their
        first slot."""
        if CS.shape[1] > k:
            mixed = np.flatnonzero(need.any(axis=1)) if need is not None else np.zeros(0, dtype=np.int64)
            CS_k, CR_k = CS[:, :k].copy(), CR[:, :k].copy()
            if len(mixed):
                cs, cr_ = CS[mixed], CR[mixed]
                idx = _best_k(cs, k, lambda i, j: cr_[i, j])
                CS_k[mixed], CR_k[mixed] = np.take_along_axis(cs, idx, axis=1), np.take_along_axis(cr_, idx, axis=1)
            CS, CR = CS_k, CR_k
        order = np.lexsort((CR, -CS), axis=-1)
        CS, CR = np.take_along_axis(CS, order, axis=1), np.take_along_axis(CR, order, axis=1)
        return CR, CS, (CS > -np.inf).sum(axis=1)
