"""Synthetic shoppers with hidden tastes, for the demo, the tests and the benchmark.

Each shopper prefers a few categories (hidden from the engine). They shop in
sessions that follow the funnel browse > click > purchase, mostly inside one of
their preferred categories, picking items by a Zipf-like popularity within the
category. Because the preferences are known here, tests can check that the
recommendations the engine learns favour them over chance.

The simulator is deterministic for a given seed and produces plain dicts in the
wire format of :mod:`streams.contract` (``ts`` in epoch milliseconds).
:mod:`streams.tools.closed_loop` extends it with shoppers who see their
recommendations (``session_records`` is its hook).
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field
from typing import Iterator

CATEGORY_NAMES = (
    "books", "music", "games", "garden", "kitchen", "toys", "sports", "beauty",
    "fashion", "electronics", "pets", "office", "outdoor", "baby", "tools", "health",
)


@dataclass
class ShopperSimulator:
    """Generate a catalogue and a time-ordered stream of shop events.

    Parameters
    ----------
    n_users, n_items, n_categories
        Size of the simulated shop.
    preferred_per_user
        How many categories each shopper prefers.
    taste
        Probability that a session happens in a preferred category.
    unavailable_share
        Share of catalogue items marked unavailable (must never be recommended).
    start_ms
        Time of the first event, epoch milliseconds.
    session_gap_ms, min_session_gap_ms
        Between two sessions of a shopper: ``min_session_gap_ms`` plus an
        exponential wait of mean ``session_gap_ms``.
    seed
        Everything is deterministic for a seed.
    """

    n_users: int = 200
    n_items: int = 500
    n_categories: int = 8
    preferred_per_user: int = 2
    taste: float = 0.85
    unavailable_share: float = 0.02
    start_ms: int = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    session_gap_ms: int = 600_000
    min_session_gap_ms: int = 0
    seed: int = 7
    user_prefix: str = "u"
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.n_categories <= len(CATEGORY_NAMES):
            raise ValueError(f"n_categories must be in 1..{len(CATEGORY_NAMES)}")
        if self.n_items < self.n_categories:
            raise ValueError("n_items must be >= n_categories")
        rng = self._rng = random.Random(self.seed)
        self.categories = list(CATEGORY_NAMES[: self.n_categories])
        self.items: list[dict] = []
        self.items_by_category: dict[str, list[str]] = {c: [] for c in self.categories}
        for i in range(self.n_items):
            cat = self.categories[i % self.n_categories]
            base = {"books": 15, "electronics": 250, "fashion": 60}.get(cat, 35)
            item = {
                "item_id": f"i{i}",
                "category": cat,
                "price": round(base * math.exp(rng.gauss(0, 0.5)), 2),
                "available": rng.random() >= self.unavailable_share,
                "title": f"{cat.title()} item {i}",
            }
            self.items.append(item)
            self.items_by_category[cat].append(item["item_id"])
        self.price = {it["item_id"]: it["price"] for it in self.items}
        self.category_of = {it["item_id"]: it["category"] for it in self.items}
        # Zipf-like popularity inside each category: a few hits, a long tail.
        self._weights = {c: [1.0 / (r + 1) ** 0.8 for r in range(len(ids))]
                         for c, ids in self.items_by_category.items()}
        k = min(self.preferred_per_user, self.n_categories)
        self.preferences: dict[str, list[str]] = {
            self.user_id(u): rng.sample(self.categories, k) for u in range(self.n_users)
        }
        self._event_seq = 0
        self._order_seq = 0
        self._session_seq = 0

    def user_id(self, u: int) -> str:
        return f"{self.user_prefix}{u}"

    # ------------------------------------------------------------------
    def catalogue(self) -> list[dict]:
        """Catalogue records for the compacted ``items`` topic."""
        return [dict(it) for it in self.items]

    def _pick_item(self, category: str) -> str:
        return self._rng.choices(self.items_by_category[category], weights=self._weights[category])[0]

    def new_session_id(self) -> str:
        self._session_seq += 1
        return f"s{self._session_seq}"

    def session(self, user: str, start_ms: int, session_id: str | None = None) -> list[tuple[str, dict]]:
        """One shopping session: browse a few items, click some, maybe buy (``session_id``: continue that one)."""
        rng = self._rng
        prefs = self.preferences[user]
        category = rng.choice(prefs) if rng.random() < self.taste else rng.choice(self.categories)
        session_id = session_id or self.new_session_id()
        out: list[tuple[str, dict]] = []
        t = start_ms
        for _ in range(rng.randint(2, 6)):
            item = self._pick_item(category)
            t += rng.randint(2_000, 40_000)
            out.append(("browse", self._event(user, item, category, session_id, t)))
            if rng.random() < 0.35:
                t += rng.randint(1_000, 10_000)
                out.append(("click", self._event(user, item, category, session_id, t)))
                if rng.random() < 0.25:
                    t += rng.randint(5_000, 60_000)
                    out.append(("purchase", self.purchase(user, item, category, session_id, t, rng)))
        return out

    def session_records(self, user: str, start_ms: int) -> list[tuple[str, dict]]:
        """Everything a shopper does in one session, in time order: here, :meth:`session`."""
        return self.session(user, start_ms)

    def purchase(self, user: str, item: str, category: str | None, session_id: str, ts_ms: int,
                 rng: random.Random) -> dict:
        """A purchase event of one line: the item's price, a quantity drawn from ``rng``, a new order."""
        self._order_seq += 1
        ev = self._event(user, item, category, session_id, ts_ms)
        ev.update(price=self.price.get(item, 1.0), quantity=rng.choice((1, 1, 1, 2)), order_id=f"o{self._order_seq}")
        return ev

    def _event(self, user: str, item: str, category: str | None, session_id: str, ts_ms: int) -> dict:
        self._event_seq += 1
        ev = {"event_id": f"e{self.seed}-{self._event_seq}", "user_id": user, "item_id": item,
              "ts": ts_ms, "session_id": session_id, "category": category}
        if category is None:  # an item outside the simulated catalogue: the worker's catalogue knows it
            del ev["category"]
        return ev

    def events(self, n: int) -> Iterator[tuple[str, dict]]:
        """Yield ``n`` events ``(event_type, payload)`` in global time order.

        Sessions of many users interleave: each user starts a new session a
        random (exponential) while after the previous one ends.
        """
        rng = self._rng
        heap = [(self.start_ms + rng.randint(0, 60_000 * max(1, self.n_users // 50)), u)
                for u in range(self.n_users)]
        heapq.heapify(heap)
        pending: list[tuple[int, int, str, dict]] = []  # merged by ts across sessions
        emitted = 0
        seq = 0
        while emitted < n:
            start, u = heapq.heappop(heap)
            end = start
            for etype, ev in self.session_records(self.user_id(u), start):
                seq += 1
                end = ev["ts"]  # a session's events are in time order
                heapq.heappush(pending, (end, seq, etype, ev))
            gap = self.min_session_gap_ms + int(rng.expovariate(1 / self.session_gap_ms))
            heapq.heappush(heap, (end + gap, u))
            # Everything older than the earliest possible next session start is final.
            horizon = heap[0][0]
            while pending and pending[0][0] <= horizon and emitted < n:
                _, _, etype, ev = heapq.heappop(pending)
                emitted += 1
                yield etype, ev
