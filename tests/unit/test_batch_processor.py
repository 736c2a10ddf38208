"""The batch processor without a broker: a real engine, store and metrics, its output ports in memory.

The ports (``streams/ports.py``) record what the processor hands them, so
each test states exactly which customers got changelog records,
recommendations and Redis writes, and what reached the dead-letter topic.
The same processor against the real broker and Redis is exercised by the
integration tests.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import pytest

from models.engine import PersonalisationEngine
from models.profile import decode_profile
from streams.contract import decode_dead_letter, decode_recommendation
from streams.metrics import Metrics
from streams.pipeline import BatchProcessor
from streams.ports import PortFailed, RecordOutput, ViewGroup, ViewSink
from streams.settings import Settings
from streams.state.changelog import COUNTS_KEY, gen_header
from streams.state.store import PartitionState, ProfileStore

GEN = 7
ITEMS = [(f"i{k}", "books" if k < 5 else "toys") for k in range(10)]


@dataclass(frozen=True)
class Record:
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None
    headers: list | None


class RecordedOutput:
    """A :class:`~streams.ports.RecordOutput` that keeps every record, queued or flushed."""

    def __init__(self) -> None:
        self.queued: list[Record] = []
        self.flushed: list[Record] = []

    def produce(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None,
                headers: list | None = None) -> None:
        self.queued.append(Record(topic, key, value, partition, headers))

    def flush(self) -> None:
        self.flushed += self.queued
        self.queued = []

    def on(self, topic: str) -> list[Record]:
        return [r for r in self.flushed + self.queued if r.topic == topic]


class RecordedViews:
    """A :class:`~streams.ports.ViewSink` that keeps every write."""

    restarted = False

    def __init__(self) -> None:
        self.writes: list[tuple[list[ViewGroup], dict]] = []
        self.effects: dict[int, bytes] = {}
        self.deleted: list[str] = []

    def write(self, parts: Sequence[ViewGroup], model: Mapping[str, str | int | float],
              effects: Mapping[int, tuple[int, bytes]] | None = None, on_durable=None) -> None:
        self.writes.append((list(parts), dict(model)))
        for partition, (gen, counts) in (effects or {}).items():
            assert gen == GEN
            self.effects[partition] = counts
        if on_durable is not None:
            on_durable()

    def flush(self) -> None:
        pass

    def raise_fence(self, partition: int, gen: int) -> int:
        return gen

    def delete_user(self, user_id: str) -> None:
        self.deleted.append(user_id)

    def users(self) -> dict[int, set[str]]:
        """Customers whose recommendation and profile keys were written, by partition."""
        out: dict[int, set[str]] = {}
        for parts, _ in self.writes:
            for partition, gen, recs, profiles in parts:
                assert gen == GEN and set(recs) == set(profiles)
                out.setdefault(partition, set()).update(recs)
        return out


class Message:
    """What the processor reads of a confluent-kafka message."""

    def __init__(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        self._topic, self._partition, self._offset, self._key, self._value = topic, partition, offset, key, value

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def error(self) -> None:
        return None


def event(etype: str, user: str, item: str, partition: int, offset: int, event_id: str | None = None,
          **fields) -> Message:
    doc = {"event_id": event_id or f"{etype}-{user}-{offset}", "user_id": user, "item_id": item,
           "ts": int(time.time() * 1000) - 60_000, **fields}
    return Message(etype, partition, offset, user.encode(), json.dumps(doc).encode())


@pytest.fixture
def settings() -> Settings:
    return Settings(app_id="unit", top_n=5)


@pytest.fixture
def worker(settings):
    engine = PersonalisationEngine(top_n=settings.top_n, seed=1)
    for item, category in ITEMS:
        engine.upsert_item(item, category)
    store = ProfileStore()
    for partition in (0, 1):
        store.adopt(partition, PartitionState(gen=GEN))
    outputs, views = RecordedOutput(), RecordedViews()
    metrics = Metrics(process_metrics=False)
    processor = BatchProcessor(settings, engine, store, outputs, views, metrics)
    return processor, store, outputs, views, metrics


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_the_ports_are_what_the_worker_plugs_in():
    from streams.sinks.kafka import KafkaSink
    from streams.sinks.overlapped import OverlappedViews
    from streams.sinks.redis import RedisSink

    for port, implementation, fake in ((RecordOutput, KafkaSink, RecordedOutput), (ViewSink, RedisSink, RecordedViews),
                                       (ViewSink, OverlappedViews, RecordedViews)):
        methods = [name for name in dir(port) if not name.startswith("_") and callable(getattr(port, name))]
        assert methods
        for name in methods:
            assert callable(getattr(implementation, name, None)) and callable(getattr(fake, name, None)), name


def test_valid_events_reach_the_changelog_the_recommendations_and_redis_for_exactly_their_customers(
        worker, settings):
    processor, store, outputs, views, metrics = worker
    processor.process([
        event("browse", "u1", "i1", 0, 10),
        event("click", "u2", "i6", 1, 3),
        event("purchase", "u3", "i2", 0, 4, price=9.5, quantity=2, order_id="o1"),
        event("browse", "u1", "i3", 0, 11),
    ])

    changelog = [r for r in outputs.on(settings.changelog_topic) if not r.key.startswith(b"\x00")]
    assert sorted(r.key for r in changelog) == [b"u1", b"u2", b"u3"]
    for record in changelog:
        assert record.headers[0] == gen_header(GEN)
        assert record.partition == {b"u1": 0, b"u2": 1, b"u3": 0}[record.key]
        assert decode_profile(record.value) == store[record.key.decode()]
    # Each customer's first events count them as assigned to the (default) experiment's only arm: every
    # partition that moved gets one counts record after its profile records, and the same total in Redis.
    counts = [r for r in outputs.on(settings.changelog_topic) if r.key == COUNTS_KEY]
    assert sorted(r.partition for r in counts) == [0, 1]
    for partition in (0, 1):
        total = store.partitions[partition].effect
        assert total.total("ranker").assigned_customers == len(views.users()[partition])
        assert views.effects[partition] == total.to_bytes()
    assert store["u1"].counts["browse"] == 2 and store["u2"].counts["click"] == 1
    assert store["u3"].counts["purchase"] == 1 and store["u3"].monetary == 19.0

    recs = {r.key: decode_recommendation(r.value) for r in outputs.on(settings.topic_recommendations)}
    assert set(recs) == {b"u1", b"u2", b"u3"}
    for key, rec in recs.items():
        assert rec.user_id == key.decode() and 0 < len(rec.items) <= settings.top_n
        assert rec.variant == "ranker" and len(rec.rec_id) == 24
    assert "i2" not in {i.item_id for i in recs[b"u3"].items}  # purchased: excluded

    assert views.users() == {0: {"u1", "u3"}, 1: {"u2"}}
    assert outputs.on(settings.topic_dead_letter) == []
    assert sample(metrics, "recostream_events_processed_total", type="browse") == 2


def test_a_malformed_event_is_dead_lettered_with_its_reason_and_the_valid_ones_are_kept(worker, settings):
    processor, store, outputs, views, metrics = worker
    garbage = Message("click", 1, 8, b"u9", b'{"event_id": "e9", oops')
    someone_else = event("browse", "u7", "i1", 0, 12)
    someone_else._key = b"not-u7"
    processor.process([event("browse", "u1", "i1", 0, 10), garbage, someone_else, event("click", "u2", "i6", 1, 9)])

    letters = [decode_dead_letter(r.value) for r in outputs.on(settings.topic_dead_letter)]
    assert [(d.reason, d.topic, d.partition, d.offset) for d in letters] == [
        ("not_json", "click", 1, 8), ("key_mismatch", "browse", 0, 12)]
    assert base64.b64decode(letters[0].value) == garbage.value() and base64.b64decode(letters[0].key) == b"u9"
    assert sample(metrics, "recostream_events_dead_lettered_total", reason="not_json") == 1
    assert sample(metrics, "recostream_events_dead_lettered_total", reason="key_mismatch") == 1

    assert sorted(r.key for r in outputs.on(settings.changelog_topic) if r.key != COUNTS_KEY) == [b"u1", b"u2"]
    assert {r.key for r in outputs.on(settings.topic_recommendations)} == {b"u1", b"u2"}
    assert views.users() == {0: {"u1"}, 1: {"u2"}}
    assert "u7" not in store and "u9" not in store


def test_a_redelivered_event_counts_once(worker, settings):
    processor, store, outputs, views, metrics = worker
    first = event("purchase", "u1", "i2", 0, 5, price=3.0, order_id="o1")
    processor.process([first, event("browse", "u1", "i3", 0, 6)])
    counts = dict(store["u1"].counts)

    processor.process([first])  # the same message again, e.g. after a crash before its position was recorded
    processor.process([event("purchase", "u1", "i2", 0, 7, event_id="purchase-u1-5", price=3.0,
                             order_id="o1")])  # a producer's duplicate: same event id, another offset

    assert store["u1"].counts == counts == {"browse": 1, "click": 0, "purchase": 1}
    assert store["u1"].monetary == 3.0 and store["u1"].orders == 1
    assert sample(metrics, "recostream_events_duplicate_total") == 2
    for record in outputs.on(settings.changelog_topic):  # every record of u1 holds the counts once
        if record.key != COUNTS_KEY:
            assert decode_profile(record.value).counts["purchase"] == 1


def test_an_item_exchange_that_fails_for_good_stops_the_batch_and_parks_no_valid_event(settings):
    """A refused item-update record is the log's failure, not the events': retrying them one by one
    would dead-letter every valid event of the batch. The batch raises before any output is written."""
    engine = PersonalisationEngine(top_n=settings.top_n, seed=1)
    for item, category in ITEMS:
        engine.upsert_item(item, category)
    store = ProfileStore()
    store.adopt(0, PartitionState(gen=GEN))
    outputs, views = RecordedOutput(), RecordedViews()
    exchanges = []

    def refused(update):
        exchanges.append(update)
        raise PortFailed("item-updates: not authorised")

    processor = BatchProcessor(settings, engine, store, outputs, views, Metrics(process_metrics=False),
                               share=refused)
    with pytest.raises(PortFailed):
        processor.process([event("browse", "u1", "i1", 0, 10), event("click", "u2", "i6", 0, 11)])

    assert len(exchanges) == 1  # not retried event by event
    assert outputs.on(settings.topic_dead_letter) == [] and outputs.queued == [] and views.writes == []


def test_a_batch_retried_event_by_event_teaches_each_customer_each_event_once(worker, settings):
    """An event that makes the engine fail is dead-lettered; the others of its batch are learned once,
    not once by the failed attempt and again by the retry."""
    processor, store, outputs, views, metrics = worker
    ranker = processor.engine.ranker
    learn = ranker.learn_one

    def learn_unless_poison(user_id, item_id, *args, **kwargs):
        if item_id == "i9":
            raise ValueError("poison")
        return learn(user_id, item_id, *args, **kwargs)

    ranker.learn_one = learn_unless_poison
    processor.process([event("browse", "u1", "i1", 0, 10), event("click", "u1", "i9", 0, 11),
                       event("browse", "u1", "i3", 0, 12)])

    letters = [decode_dead_letter(r.value) for r in outputs.on(settings.topic_dead_letter)]
    assert [(d.reason, d.offset) for d in letters] == [("processing_error", 11)]
    user = ranker._users["u1"]
    assert [ranker.catalog.item_id(row) for row in user.history] == ["i1", "i3"]
    assert user.counts == (1, 1) and user.n == 2
    assert store["u1"].counts["browse"] == 2
