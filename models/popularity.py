"""Trending popularity: exponentially time-decayed interaction counts."""

from __future__ import annotations

import math
import sys

import numpy as np

from models.catalog import grow_to

__all__ = ["DecayClock", "TrendingPopularity"]

# Rescale once increments reach e**RESCALE_AT, far below float64 overflow.
RESCALE_AT = 200.0
_LN2 = math.log(2.0)


class DecayClock:
    """Exponential forgetting by *growing the increment* instead of decaying state.

    A count added at time ``t`` is worth ``2 ** ((t - t_ref) / half_life)``.
    Relative to each other, old contributions therefore shrink exactly as if
    every stored value had been multiplied by the decay factor, but an update
    touches one value instead of all of them. When increments grow too large,
    :meth:`increment` reports that the owner must divide its state by
    :attr:`rescale_factor` (amortised: once every ~290 half-lives).

    ``half_life=None`` disables forgetting (the increment is always 1); a
    half-life that is not positive is refused (it would make old counts grow).

    Examples
    --------
    >>> clock = DecayClock(half_life=10.0)
    >>> clock.increment(0.0)
    1.0
    >>> clock.increment(10.0)
    2.0
    >>> clock.decay_to(10.0)  # multiply stored values by this to get decayed counts
    0.5
    >>> DecayClock(half_life=0)
    Traceback (most recent call last):
    ...
    ValueError: half_life must be positive or None (never forgotten), got 0

    """

    def __init__(self, half_life: float | None = None):
        if half_life is not None and not half_life > 0:
            raise ValueError(f"half_life must be positive or None (never forgotten), got {half_life!r}")
        self.half_life = half_life
        self.t_ref: float | None = None
        self.t_last: float | None = None
        self.rescale_factor = 1.0

    def _log_gain(self, t: float) -> float:
        return _LN2 * (t - self.t_ref) / self.half_life

    def increment(self, t: float | None) -> float:
        """Weight of one unit observed at ``t`` (``None``: the latest time seen).

        After the call, a value of :attr:`rescale_factor` different from 1
        means the owner must divide all its stored values by it.
        """
        self.rescale_factor = 1.0
        if self.half_life is None:
            return 1.0
        if t is None:
            t = self.t_last if self.t_last is not None else 0.0
        if self.t_ref is None:
            self.t_ref = t
        self.t_last = t if self.t_last is None else max(self.t_last, t)
        log_gain = self._log_gain(t)
        if log_gain > RESCALE_AT:
            self.rescale_factor = math.exp(log_gain)
            self.t_ref = t
            log_gain = 0.0
        return math.exp(log_gain)

    def increments(self, ts: np.ndarray) -> np.ndarray:
        """:meth:`increment` of ``ts[0]``, ``ts[1]``, ... (float64, no ``None``) one after the
        other, as far as the first unit after ``ts[0]`` that needs a rescale: the weights of that
        prefix (at least one). :attr:`rescale_factor` is then that of ``ts[0]``, which the owner
        applies before any of them; the owner calls again with the rest.

        The same arithmetic as :meth:`increment`, value for value (``math.exp``, not numpy's,
        whose last bit may differ), so folding a run of units in one call or one at a time
        leaves the owner's state bit for bit the same.

        >>> a, b = DecayClock(half_life=10.0), DecayClock(half_life=10.0)
        >>> ts = np.array([0.0, 10.0, 3000.0, 3010.0])  # 300 half-lives on: the third needs a rescale
        >>> a.increments(ts).tolist(), a.rescale_factor
        ([1.0, 2.0], 1.0)
        >>> a.increments(ts[2:]).tolist(), a.rescale_factor > 2.0 ** 299
        ([1.0, 2.0], True)
        >>> [b.increment(t) for t in ts.tolist()]
        [1.0, 2.0, 1.0, 2.0]
        """
        self.rescale_factor = 1.0
        n = len(ts)
        if self.half_life is None:
            return np.ones(n)
        if self.t_ref is None:
            self.t_ref = float(ts[0])
        gains = _LN2 * (ts - self.t_ref) / self.half_life  # (the operations of _log_gain, in its order)
        if gains[0] > RESCALE_AT:
            self.rescale_factor = math.exp(float(gains[0]))
            self.t_ref = float(ts[0])
            gains = _LN2 * (ts - self.t_ref) / self.half_life
        over = np.flatnonzero(gains[1:] > RESCALE_AT)
        m = 1 + int(over[0]) if len(over) else n
        t_max = float(ts[:m].max())
        self.t_last = t_max if self.t_last is None else max(self.t_last, t_max)
        exp = math.exp
        return np.array([exp(g) for g in gains[:m].tolist()])

    def times(self, ts) -> np.ndarray:
        """``ts`` as :meth:`increment` reads them one after the other: ``None`` is the latest time
        seen before it (0.0 before any).

        >>> clock = DecayClock(half_life=10.0)
        >>> _ = clock.increment(5.0)
        >>> clock.times([None, 9.0, None, 7.0]).tolist()
        [5.0, 9.0, 9.0, 7.0]
        """
        if isinstance(ts, np.ndarray) or None not in ts:
            return np.asarray(ts, dtype=np.float64)
        out, last = [], self.t_last
        for t in ts:
            if t is None:
                t = last if last is not None else 0.0
            last = t if last is None else max(last, t)
            out.append(t)
        return np.array(out, dtype=np.float64)

    def units(self, steps: int = 256) -> float:
        """Stored units per unit of decayed count at the latest time (``1 / decay_to()``), rounded
        down to a power of ``2 ** (1 / steps)``: a constant kept in today's units changes once in
        ``half_life / steps``, not with every update.

        >>> clock = DecayClock(half_life=256.0)
        >>> _ = clock.increment(0.0); _ = clock.increment(256.5)
        >>> clock.units(), 1 / clock.decay_to() > 2.0
        (2.0, True)
        """
        if self.half_life is None or self.t_ref is None:
            return 1.0
        return 2.0 ** (math.floor(steps * (self.t_last - self.t_ref) / self.half_life) / steps)

    def __getstate__(self):
        # rescale_factor is a message to the owner about the last increment, not state: left out,
        # a clock that took its units one at a time or together pickles the same.
        return {k: v for k, v in self.__dict__.items() if k != "rescale_factor"}

    def __setstate__(self, state):
        self.__dict__.update({sys.intern(k): v for k, v in state.items()})
        self.rescale_factor = 1.0

    def decay_to(self, t: float | None = None) -> float:
        """Factor turning stored values into counts decayed to time ``t``."""
        if self.half_life is None or self.t_ref is None:
            return 1.0
        t = self.t_last if t is None else t
        return math.exp(-self._log_gain(t))


class TrendingPopularity:
    """Exponentially time-decayed item counts in a numpy array.

    Parameters
    ----------
    half_life
        Half-life of a count, in the unit of the timestamps (seconds for the
        product). ``None`` gives cumulative (never forgotten) counts.

    Examples
    --------
    >>> pop = TrendingPopularity(half_life=3600.0)
    >>> pop.update(0, 1.0, t=0.0)
    >>> pop.update(1, 1.0, t=3600.0)
    >>> pop.update(1, 1.0, t=3600.0)
    >>> pop.counts(n_items=3).round(3).tolist()
    [0.5, 2.0, 0.0]

    """

    def __init__(self, half_life: float | None = 7 * 24 * 3600.0):
        self.half_life = half_life
        self.clock = DecayClock(half_life)
        self._values = np.zeros(0, dtype=np.float64)
        self._init_tracking()

    def _init_tracking(self) -> None:
        # Change tracking for readers that keep derived structures (rankings)
        # up to date incrementally; not model state, never serialised.
        self._changed: list[int] | None = None  # rows updated since the reader last looked
        self._max = 0.0  # largest stored value, while tracking

    def track_changes(self) -> list[int] | None:
        """Rows updated since the previous call (with repeats), and the largest value in :attr:`max_value`.

        The first call, and any call after the values were rescaled or too
        many updates piled up, returns ``None``: the caller must rebuild
        whatever it derives from :meth:`scores`. Reading never changes the
        model (the log is transient and not serialised).
        """
        changed = self._changed
        self._changed = []
        if changed is None:
            self._max = float(self._values.max()) if len(self._values) else 0.0
        return changed

    def stop_tracking(self) -> None:
        """Make the next :meth:`track_changes` return ``None``: whoever reads next rebuilds (a reader
        that derived its structures from other values, e.g. another counter)."""
        self._changed = None

    @property
    def max_value(self) -> float:
        """Largest stored value (tracked after :meth:`track_changes`, else computed)."""
        if self._changed is None:
            return float(self._values.max()) if len(self._values) else 0.0
        return self._max

    def update(self, row: int, weight: float = 1.0, t: float | None = None, novel: bool = True) -> None:
        """Count ``weight`` of ``row`` at ``t``. (``novel``, whether the event is a discovery, is what
        :class:`~models.adaptive_popularity.AdaptivePopularity` chooses by; a fixed half-life needs no evidence.)"""
        inc = self.clock.increment(t)
        if self.clock.rescale_factor != 1.0:
            self._values /= self.clock.rescale_factor
            self._changed = None  # every value moved: readers rebuild
        values = self._values
        if row >= len(values):
            values = self._values = grow_to(values, row + 1)
        v = float(values[row]) + weight * inc  # the same IEEE addition as `values[row] += ...`
        values[row] = v
        changed = self._changed
        if changed is not None:
            changed.append(row)
            if v > self._max:
                self._max = v
            if len(changed) > 1_000_000:  # nobody is reading: stop tracking
                self._changed = None

    def update_many(self, rows: np.ndarray, weights: np.ndarray, ts, novel: np.ndarray | None = None) -> None:
        """:meth:`update` of each ``(rows[k], weights[k], ts[k])`` in turn, with the same result to the
        last bit (weights positive): the clock's increments are taken together and the counts
        added in order (``np.add.at`` adds repeated rows one after the other). (``novel``: as
        :meth:`update`'s.)

        >>> a, b = TrendingPopularity(half_life=2.0), TrendingPopularity(half_life=2.0)
        >>> rows, weights, ts = [2, 0, 2], [1.0, 3.0, 0.5], [0.0, 1.0, 4.0]
        >>> a.update_many(np.array(rows), np.array(weights), ts)
        >>> for r, w, t in zip(rows, weights, ts):
        ...     b.update(r, w, t)
        >>> a.scores(3).tolist() == b.scores(3).tolist(), a.scores(3).round(4).tolist()
        (True, [4.2426, 0.0, 3.0])
        """
        if not len(rows):
            return
        ts = self.clock.times(ts)
        values = self._values = grow_to(self._values, int(rows.max()) + 1)
        start = 0
        while start < len(rows):
            inc = self.clock.increments(ts[start:])
            if self.clock.rescale_factor != 1.0:
                values /= self.clock.rescale_factor
                self._changed = None  # every value moved: readers rebuild
            stop = start + len(inc)
            part = rows[start:stop]
            np.add.at(values, part, weights[start:stop] * inc)
            changed = self._changed
            if changed is not None:
                changed.extend(part.tolist())
                self._max = max(self._max, float(values[part].max()))  # (counts only grow between rescales)
                if len(changed) > 1_000_000:  # nobody is reading: stop tracking
                    self._changed = None
            start = stop

    def scores(self, n_items: int) -> np.ndarray:
        """Scaled counts for the first ``n_items`` rows (ranking-equivalent to
        the decayed counts; a view, do not mutate)."""
        self._values = grow_to(self._values, n_items)
        return self._values[:n_items]

    def counts(self, n_items: int, t: float | None = None) -> np.ndarray:
        """Counts decayed to time ``t`` (default: the latest time seen)."""
        return self.scores(n_items) * self.clock.decay_to(t)

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_changed", None)
        state.pop("_max", None)
        # Trim spare capacity so equal models serialise to equal bytes.
        nz = np.flatnonzero(self._values)
        state["_values"] = self._values[: (nz[-1] + 1) if len(nz) else 0].copy()
        return state

    def __setstate__(self, state):
        # Interned keys, as pickle's default BUILD does: byte-identical re-dumps.
        self.__dict__.update({sys.intern(k): v for k, v in state.items()})
        self._init_tracking()
