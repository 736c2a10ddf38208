"""A block of users ranked at once from the first entries of their history rows and bounds on the rest."""

from __future__ import annotations

from itertools import chain

import numpy as np

from models.baselines.heads import Heads
from models.baselines.selection import SLACK, best_per_user, group_max, kth_floor, popcount
from models.covisit import concat_ranges
from models.ranking.topk import _stable_order
from models.sets import unique_inverse

__all__ = ["TIE", "BlockRanking"]

# Above every popularity tiebreak (pop * 1e-9 / max pop is at most 1e-9 up to rounding).
TIE = 1.000001e-9
_LOOKUP_COST = 16  # gathered entries one (row, column) look-up costs, roughly (it misses the caches)


class BlockRanking:
    """One block of users of :class:`~models.baselines.cooccurrence_lists.CooccurrenceLists`, ranked at once.

    Each history row contributes its first entries: all of them (``heads``
    ``None``; every score is then exact) or its head to depth
    ``heads.sizes[level]``. Per user, items among those entries are
    candidates: their sum over those entries is a lower bound of their
    score, and adding the bounds of the rows that miss them gives an upper
    bound; an item that no row lists scores at most the user's weighted sum of
    bounds (plus a tiebreak). The candidates whose lower bounds make the
    likely list are scored exactly first (entries the heads miss are looked
    up), then every candidate whose upper bound reaches the ``need``-th best
    of those exact scores. The list is theirs if that many exact scores beat
    every bound; otherwise the user is left to a deeper level or to
    :meth:`~models.baselines.cooccurrence_lists.CooccurrenceLists.full`.
    """

    def __init__(self, lists, heads: Heads | None, level: int, ks, need, extra, want_max):
        self.lists, self.heads, self.level = lists, heads, level
        self.request, self.cooc = lists.request, lists.cooc
        self.ks, self.need, self.extra, self.want_max = ks, need, extra, want_max
        self.n_users, self.n_items = len(ks), lists.n_items

    def run(self, at: np.ndarray) -> np.ndarray:
        """Rank the block's users; True where done (results added to the lists at positions ``at``)."""
        self._pairs()
        self._candidates()
        self._bounds()
        chosen = self._resolve()
        return self._finish(chosen, at)

    def _pairs(self) -> None:
        """One entry per (user, history item): user, recency (0: latest), row, weight, and what the row lists."""
        hist = [self.request.users[k].history for k in self.ks]
        m = np.fromiter(map(len, hist), dtype=np.int64, count=len(hist))
        self.m = m
        self.p_row = np.fromiter(chain.from_iterable(h[::-1] for h in hist), dtype=np.int64, count=int(m.sum()))
        self.p_u = np.repeat(np.arange(self.n_users), m)
        self.first = np.cumsum(m) - m
        self.p_i = np.arange(len(self.p_row)) - np.repeat(self.first, m)
        self.p_w = self.lists.weights(m[self.p_u], self.p_i)
        rows, inv = unique_inverse(self.p_row)
        starts, lens = self.cooc.regions(rows)
        self.p_start = starts[inv]
        if self.heads is None:  # every entry: exact, nothing left to bound
            self.p_line, self.p_count, self.p_bound = -np.ones(len(inv), dtype=np.int64), lens[inv], np.zeros(len(inv))
        else:
            line = self.heads.lookup(self.cooc, self.lists.index, rows, self.lists.head_norm)
            count = np.minimum(self.heads.count[line], self.heads.sizes[self.level])
            self.p_line, self.p_count = line[inv], count[inv]
            self.p_bound = self.heads.bounds[self.level, rows][inv]
        # Look-ups a user may spend before what comes next (deeper heads, else every entry) is cheaper.
        deeper = self.heads is not None and self.level + 1 < len(self.heads.sizes)
        then = np.minimum(lens[inv], self.heads.sizes[self.level + 1]) if deeper else lens[inv]
        self.budget = np.bincount(self.p_u, then, minlength=self.n_users) // _LOOKUP_COST

    def _candidates(self) -> None:
        """Sum the listed entries per (user, column): partial sums, bounds of the rest, rows covered.

        An entry's group is the last entry of its (user, column), found by writing every entry's
        index into a scratch cell per (user, column) and reading it back; ``np.bincount`` then sums
        each group in the entries' order, history order, as ``_scores`` does.
        """
        cnt = self.p_count
        if self.heads is None:
            at = concat_ranges(self.p_start, cnt)
            col = self.cooc.columns[at].astype(np.int64)
        else:  # whole lines of the heads (a copy per line), cut to each row's count
            listed = np.arange(self.heads.size)[None, :] < cnt[:, None]
            col = self.heads.cols[self.p_line][listed].astype(np.int64)
            at = (self.heads.slots[self.p_line] + self.p_start[:, None])[listed]
        val = self.cooc.values[at]
        if self.lists.decay is not None:
            val = val * np.repeat(self.p_w, cnt)
        e = np.repeat(np.arange(len(cnt)), cnt)
        u = np.repeat(self.p_u, cnt)
        cell = u * self.n_items + col
        mark = self.lists.model._scratch(self.n_users * self.n_items, ("mark",))[0]
        ar = np.arange(len(e))
        mark[cell] = ar  # of an entry's (user, column), the last entry's index stays
        group = mark[cell]
        last = np.flatnonzero(group == ar)  # one entry per group (its last), by user then history order
        wb = self.p_w * self.p_bound
        self.b_sum = np.bincount(self.p_u, wb, minlength=self.n_users)
        inc = self.p_bound > 0
        self.inc_mask = np.bincount(self.p_u[inc], np.exp2(self.p_i[inc]), minlength=self.n_users).astype(np.int64)
        self.lb = np.bincount(group, val, minlength=len(e))[last]
        # A row lists a column once: adding the rows' bits is OR-ing them.
        if inc.any():
            self.s_in = np.bincount(group, np.repeat(wb, cnt), minlength=len(e))[last]
            self.bits = np.bincount(group, np.repeat(np.exp2(self.p_i), cnt), minlength=len(e))[last].astype(np.int64)
        else:
            self.s_in, self.bits = np.zeros(len(last)), 0
        self.c_u, self.c_col = u[last], col[last]
        self.e, self.e_val, self.group, self.c_entry = e, val, group, last

    def _bounds(self) -> None:
        """Lower and upper bounds of each candidate's score, and which candidates may be listed."""
        u = self.c_u
        self.lo = self.lists.score(self.c_col, self.lb)  # exact where no incomplete row misses it
        miss = np.maximum(self.b_sum[u] - self.s_in, 0.0) + self.b_sum[u] * SLACK
        self.hi = (self.lo + miss) * (1 + SLACK)
        skip_user, skip_rows = self.request.exclusions(self.ks)
        x_user = np.repeat(np.arange(self.n_users), [len(x) for x in self.extra])
        x_rows = np.concatenate(self.extra) if self.extra else np.zeros(0, dtype=np.int64)
        skip = np.concatenate((skip_user * self.n_items + skip_rows, x_user * self.n_items + x_rows))
        flag = self.lists.model._scratch(self.n_users * self.n_items, ("flag",))[0]
        flag[skip] = True  # (scratch cells are left False)
        self.ok = ~self.request.blocked[self.c_col] & ~flag[self.c_u * self.n_items + self.c_col]
        flag[skip] = False

    def _keep(self, which: np.ndarray) -> None:
        """Keep only the candidates ``which`` (the others cannot make a list), and find where the
        listed entries of those whose score is not exact yet are (:meth:`_exact_sums` adds them up)."""
        at = np.flatnonzero(which)
        for name in ("c_u", "c_col", "c_entry", "lo", "hi", "ok", "s_in"):
            setattr(self, name, getattr(self, name)[at])
        if not isinstance(self.bits, int):
            self.bits = self.bits[at]
        mask = self.inc_mask[self.c_u]
        self.exact = (self.bits & mask) == mask
        candidate = np.full(len(self.e), -1, dtype=np.int64)
        candidate[self.c_entry[~self.exact]] = np.flatnonzero(~self.exact)
        candidate = candidate[self.group]
        self.x_entry = np.flatnonzero(candidate >= 0)
        self.x_cand = candidate[self.x_entry]

    def _resolve(self) -> np.ndarray:
        """Exact scores of the candidates that may make a list (or the best score): which they are."""
        u, n_users, need = self.c_u, self.n_users, self.need
        tau = kth_floor(u, np.where(self.ok, self.lo, -np.inf), n_users, need)
        tau_max = np.where(self.want_max, group_max(u, self.lo, n_users), np.inf)
        # Too few candidates: the list needs items without co-occurrence, left to the full path.
        self.hopeless = ((need > 0) & (tau == -np.inf)) | (tau_max == -np.inf)
        listing = (need > 0) & ~self.hopeless
        tau, tau_max = np.where(listing, tau, np.inf), np.where(self.hopeless, np.inf, tau_max)
        # Users whose upper bounds cannot beat their floor (see _finish) are given up now.
        floor = self.b_sum * (1 + SLACK) + TIE
        beat = self.hi > floor[u]
        can = np.bincount(u[self.ok & beat], minlength=n_users) >= need
        if self.want_max.any():
            can &= ~self.want_max | (np.bincount(u[beat], minlength=n_users) > 0)
        self.hopeless |= ~can
        tau, tau_max = np.where(self.hopeless, np.inf, tau), np.where(self.hopeless, np.inf, tau_max)
        # Only candidates whose upper bound reaches the floor of the list (or of the best) matter.
        self._keep((self.ok & (self.hi >= tau[u])) | (self.hi >= tau_max[u]))
        u = self.c_u
        self.s, self.settled = self.lo.copy(), self.exact.copy()
        likely = (self.ok & (self.lo >= tau[u])) | (self.lo >= tau_max[u])
        self._settle(likely)
        # Exact scores of the likely list: only candidates that may beat them are left to settle.
        exact_ok = np.where(likely & self.ok, self.s, -np.inf)
        listing &= ~self.hopeless
        tau = np.where(listing, np.maximum(tau, kth_floor(u[likely], exact_ok[likely], n_users, need)), np.inf)
        tau_max = np.where(self.want_max & ~self.hopeless, group_max(u[likely], self.s[likely], n_users), np.inf)
        chosen = likely | (self.ok & (self.hi >= tau[u])) | (self.hi >= tau_max[u])
        self._settle(chosen)
        return chosen

    def _settle(self, which: np.ndarray) -> None:
        """Exact scores of the candidates ``which`` whose score is not known exactly yet
        (users who would need more look-ups than their budget are given up: ``hopeless``)."""
        todo = np.flatnonzero(which & ~self.settled & ~self.hopeless[self.c_u])
        if not len(todo):
            return
        u = self.c_u[todo]
        missing = self.inc_mask[u] & ~self.bits[todo]
        cost = np.bincount(u, popcount(missing), minlength=self.n_users)
        over = cost > self.budget
        if over.any():
            self.hopeless |= over
            todo = todo[~over[u]]
        self.budget -= cost
        if len(todo):
            self.s[todo] = self.lists.score(self.c_col[todo], self._exact_sums(todo))
            self.settled[todo] = True

    def _exact_sums(self, todo: np.ndarray) -> np.ndarray:
        """Co-occurrence sums of candidates ``todo``, entries looked up where the heads miss them."""
        u, m = self.c_u[todo], self.m
        missing = self.inc_mask[u] & ~self.bits[todo]
        mu = m[u]
        rep = np.repeat(np.arange(len(todo)), mu)
        i = np.arange(len(rep)) - np.repeat(np.cumsum(mu) - mu, mu)
        sel = (np.right_shift(missing[rep], i) & 1).astype(bool)
        rep, i = rep[sel], i[sel]
        pair = self.first[u[rep]] + i
        found = self.lists.index.values(self.cooc, self.p_row[pair], self.c_col[todo][rep], self.p_start[pair])
        vals = found * self.p_w[pair] if self.lists.decay is not None else found
        # ... and the listed entries they have (each group's entries are in history order), all
        # summed in history order.
        which_of = np.full(len(self.c_entry), -1, dtype=np.int64)
        which_of[todo] = np.arange(len(todo))
        listed = which_of[self.x_cand]
        has = self.x_entry[listed >= 0]
        which = np.concatenate((listed[listed >= 0], rep))
        recency = np.concatenate((self.p_i[self.e[has]], i))
        v = np.concatenate((self.e_val[has], vals))
        order = _stable_order(recency, 64)
        return np.bincount(which[order], v[order], minlength=len(todo))

    def _finish(self, chosen: np.ndarray, at: np.ndarray) -> np.ndarray:
        """Check each user's bounds; add the lists (and best scores) of those that hold."""
        u = self.c_u[chosen]
        s, col, ok = self.s[chosen], self.c_col[chosen], self.ok[chosen]
        floor = self.b_sum * (1 + SLACK) + TIE  # no other item scores above this
        above = np.bincount(u[ok & (s > floor[u])], minlength=self.n_users)
        done = ((self.need <= 0) | (above >= self.need)) & ~self.hopeless
        if self.want_max.any():
            best = group_max(u, s, self.n_users)
            done &= ~self.want_max | (best > floor)
            self.lists.best[at] = np.where(self.want_max & done, best, self.lists.best[at])
        listed = ok & done[u]
        # Only entries at or above a bound of the need-th best one can make the list.
        listed[listed] &= s[listed] >= kth_floor(u[listed], s[listed], self.n_users, self.need)[u[listed]]
        users, ranks, idx = best_per_user(u[listed], col[listed], s[listed], self.n_users, self.need)
        self.lists.add(at[users], ranks, col[listed][idx], s[listed][idx])
        return done
