"""A closed-loop shop: simulated shoppers who see their recommendations, and the experiment `up` runs on them.

At the start of a session a shopper of :class:`ClosedLoopShop` reads the list
the worker last wrote for it (``{prefix}:recs:{user_id}`` in Redis), is shown
its top ``shown`` items (an impression on the ``impressions`` topic, naming
the list's ``rec_id``), clicks shown items with a probability set by its hidden
tastes (the simulator's preferred categories) and by the position (position
bias), buys some of what it clicked, then browses as every simulated shopper
does. A shopper without a list (new, or in the holdout: an empty list) only
browses. So which strategy ranked the list changes what the shopper does,
and the experiment's report measures it (docs/EXPERIMENTS.md).

Clicks and purchases of shown items carry the list's ``rec_id`` with
probability ``echo_rec_id``; the others are attributed by last touch, so
both attribution paths run.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import msgspec

from models.effect import IMPRESSION
from streams.contract import Recommendation, decode_recommendation
from streams.sinks.redis import RedisKeys
from streams.tools.generator import ShopperSimulator

#: What `recostream up --closed-loop` runs unless an experiment is configured: the ranker against
#: trending popularity (the control), with a small holdout that sees no list.
CLOSED_LOOP_EXPERIMENT = {
    "name": "closed-loop",
    "salt": "closed-loop-1",
    "variants": [{"name": "ranker", "share": 0.45, "strategy": "ranker"},
                 {"name": "popularity", "share": 0.45, "strategy": "popularity"}],
    "holdout": 0.1,
    "control": "popularity",
}

_encode = msgspec.json.Encoder().encode


class RedisLists:
    """The list the worker last wrote for a customer, or ``None`` (none yet, or Redis not answering)."""

    def __init__(self, client: Any, keys: RedisKeys) -> None:
        self.client, self.keys = client, keys

    def __call__(self, user_id: str) -> Recommendation | None:
        import redis

        try:
            raw = self.client.get(self.keys.recs(user_id))
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return None  # a shopper who cannot be shown a list browses
        return decode_recommendation(raw) if raw else None


@dataclass
class ClosedLoopShop(ShopperSimulator):
    """:class:`ShopperSimulator` whose shoppers are shown their recommendations (see the module doc).

    Parameters (besides the simulator's)
    ------------------------------------
    lists
        ``user_id -> Recommendation | None``: the list a shopper is shown (e.g. :class:`RedisLists`).
    shown
        Items of the list displayed (its top ``shown``).
    click_rate
        Probability of clicking a shown item the shopper likes, at the top position.
    off_taste
        Appeal of an item outside the shopper's preferred categories, relative to one inside.
    position_decay
        Position bias: the click probability at position ``pos`` (0 = top) is divided by
        ``(1 + pos) ** position_decay``.
    buy_rate
        Probability of buying a clicked shown item the shopper likes (times ``off_taste`` otherwise).
    echo_rec_id
        Probability that a click or purchase of a shown item carries the list's ``rec_id``.
    """

    lists: Callable[[str], Recommendation | None] | None = None
    shown: int = 5
    click_rate: float = 0.15
    off_taste: float = 0.1
    position_decay: float = 0.7
    buy_rate: float = 0.3
    echo_rec_id: float = 0.7
    stats: Counter = field(init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        # Draws of the loop of their own: the browsing part of the stream stays what it was.
        self._loop_rng = random.Random(f"closed-loop:{self.seed}")
        self._last_rec_id: dict[str, str] = {}
        self._impression_seq = 0
        self.stats = Counter()

    def appeal(self, user: str, item: str) -> float:
        """The shopper's hidden taste for an item: 1 in a preferred category, ``off_taste`` elsewhere."""
        return 1.0 if self.category_of.get(item) in self.preferences[user] else self.off_taste

    def click_probability(self, user: str, item: str, position: int) -> float:
        return self.click_rate * self.appeal(user, item) / (1 + position) ** self.position_decay

    def session_records(self, user: str, start_ms: int) -> list[tuple[str, dict]]:
        self.stats["sessions"] += 1
        rec = self.lists(user) if self.lists is not None else None
        # An unchanged list was shown already: a new impression of it would name one rec_id twice.
        if rec is None or not rec.items or not rec.rec_id or self._last_rec_id.get(user) == rec.rec_id:
            return self.session(user, start_ms)
        self._last_rec_id[user] = rec.rec_id
        session_id = self.new_session_id()
        shown = [i.item_id for i in rec.items[: self.shown]]
        self._impression_seq += 1
        out: list[tuple[str, dict]] = [(IMPRESSION, {
            "event_id": f"imp{self.seed}-{self._impression_seq}", "user_id": user, "rec_id": rec.rec_id,
            "items": shown, "ts": start_ms, "surface": "home"})]
        self.stats["impressions"] += 1
        t = self._react(user, rec.rec_id, shown, session_id, start_ms, out)
        return out + self.session(user, t + self._loop_rng.randint(2_000, 40_000), session_id)

    def _react(self, user: str, rec_id: str, shown: list[str], session_id: str, t: int,
               out: list[tuple[str, dict]]) -> int:
        """Clicks and purchases of shown items, appended to ``out`` in time order; the time of the last."""
        rng = self._loop_rng
        for position, item in enumerate(shown):
            if rng.random() >= self.click_probability(user, item, position):
                continue
            category = self.category_of.get(item)
            t += rng.randint(2_000, 20_000)
            click = self._event(user, item, category, session_id, t)
            if rng.random() < self.echo_rec_id:
                click["rec_id"] = rec_id
            out.append(("click", click))
            self.stats["shown_clicks"] += 1
            if rng.random() < self.buy_rate * self.appeal(user, item):
                t += rng.randint(5_000, 60_000)
                purchase = self.purchase(user, item, category, session_id, t, rng)
                if rng.random() < self.echo_rec_id:
                    purchase["rec_id"] = rec_id
                out.append(("purchase", purchase))
                self.stats["shown_purchases"] += 1
        return t
