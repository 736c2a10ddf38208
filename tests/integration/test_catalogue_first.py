"""A worker takes the whole catalogue before its first event, in the same order as every other worker
(real broker).

Items get their model rows in the order they first reach the models, and workers that number items
alike serve the same lists (docs/SCALING.md). The catalogue follower hands over the records the items
topic holds when it starts together, in (partition, offset) order, and only then says it is caught up;
the worker's loop waits for that before the item-updates log and its first event.
"""

from __future__ import annotations

import threading

import pytest

from streams.catalogue import CatalogueFollower
from streams.kafka.produce import make_producer, publish_catalogue
from streams.tools.generator import ShopperSimulator
from tests.helpers import own_topics

pytestmark = pytest.mark.integration


class _Follow:
    """A follower on its own thread, recording what it handed over when it said it was caught up."""

    def __init__(self, settings):
        self.items: list[str] = []
        self.at_caught_up: list[str] | None = None
        follow = self

        class Recording(threading.Event):
            def set(self):
                follow.at_caught_up = list(follow.items)
                super().set()

        self.follower = CatalogueFollower(settings, on_item=lambda item: self.items.append(item.item_id),
                                          on_removed=lambda item_id: None, poll_s=0.2, caught_up=Recording())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.follower.run, args=(self._stop.is_set,), daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)


def test_the_catalogue_the_topic_holds_is_handed_over_whole_and_in_the_same_order_before_caught_up(settings):
    s = own_topics(settings, "catfirst")
    # More records than one poll of the follower returns (5,000), in multi-record batches.
    catalogue = ShopperSimulator(n_users=10, n_items=12_000, seed=5).catalogue()
    assert publish_catalogue(make_producer(s), s, catalogue) == 12_000
    orders = []
    for _ in range(2):  # two workers' followers
        with _Follow(s) as f:
            assert f.follower.caught_up.wait(30), "caught up"
            assert f.at_caught_up is not None and sorted(f.at_caught_up) == sorted(item["item_id"] for item in catalogue)
            orders.append(f.at_caught_up)
    assert orders[0] == orders[1]


def test_an_empty_catalogue_does_not_hold_a_worker_back(settings):
    s = own_topics(settings, "catempty")
    with _Follow(s) as f:
        assert f.follower.caught_up.wait(10), "caught up at once"
        assert f.at_caught_up == []
