"""The changelog protocol's fold, and the consumer-group generation it is built on."""

from __future__ import annotations

import random
import struct
import time
import uuid

import pytest
from confluent_kafka import Consumer

from streams.state.changelog import Restore, gen_header, generation, group_generation, marker_record, position_record


def _profile(user: str, gen: int, value: bytes) -> tuple:
    return user.encode(), value, [gen_header(gen)]


def test_a_stale_owner_cannot_overwrite_or_move_positions_after_the_new_marker():
    log = [
        _profile("u1", 3, b"a-1"), position_record(3, {"click": 10}),
        _profile("u2", 3, b"a-2"),  # written, position not recorded yet: kept (dedupe absorbs the replay)
        marker_record(4, "b"),
        _profile("u1", 3, b"a-stale"), position_record(3, {"click": 99}),  # a resumed after a pause
        _profile("u3", 4, b"b-3"),
        marker_record(3, "a"),  # a's late marker of its older generation raises nothing
        _profile("u1", 3, b"a-stale-2"),
    ]
    r = Restore()
    for key, value, headers in log:
        r.apply(key, value, headers)
    assert r.profiles == {"u1": b"a-1", "u2": b"a-2", "u3": b"b-3"}
    assert r.positions == {"click": 10} and r.gen == 4 and r.stale == 3


def test_tombstones_and_records_written_before_the_protocol():
    r = Restore()
    r.apply(b'"u1"', b"legacy", None)  # Faust's table changelog: JSON key, no headers
    r.apply(b'"u2"', b"legacy", None)
    r.apply(*marker_record(0, "w"))
    r.apply(b'"u3"', b"late-legacy", None)  # after a marker, an unmarked record has no owner: ignored
    r.apply(b"u2", None, [gen_header(0)])  # forgotten
    assert r.profiles == {"u1": b"legacy"} and r.markers == 1


def test_any_interleaving_of_a_stale_owner_keeps_the_new_owners_state():
    """Random logs: owner A (gen 1) writes; B takes over (marker gen 2) and writes; A, stale, keeps
    writing at random places after B's marker. The fold equals A's writes before the marker
    followed by B's, whatever the interleaving."""
    rng = random.Random(7)
    for _ in range(200):
        before = [_profile(f"u{rng.randrange(5)}", 1, f"a{i}".encode()) for i in range(rng.randrange(6))]
        b_writes = [_profile(f"u{rng.randrange(5)}", 2, f"b{i}".encode()) for i in range(rng.randrange(6))]
        stale = [_profile(f"u{rng.randrange(5)}", 1, f"s{i}".encode()) for i in range(rng.randrange(6))]
        after = b_writes + stale
        rng.shuffle(after)
        # B's own writes keep their order among themselves
        order = iter(b_writes)
        after = [next(order) if rec[2] == [gen_header(2)] else rec for rec in after]
        expected: dict = {}
        for key, value, _ in before + b_writes:
            expected[key.decode()] = value
        r = Restore()
        for key, value, headers in before + [marker_record(2, "b")] + after:
            r.apply(key, value, headers)
        assert r.profiles == expected


def test_generation_epoch_orders_above_any_group_generation():
    assert generation(0, epoch=1) > generation(2**31 - 1, epoch=0)


@pytest.mark.integration
def test_librdkafka_group_metadata_layout_gives_the_group_generation(settings):
    """Pins the serialised layout the worker reads its generation from: a library that changes it
    fails here, not in the fencing."""
    group = f"pin-{uuid.uuid4().hex[:6]}"
    conf = {**settings.kafka_client_config(), "group.id": group, "session.timeout.ms": 6000,
            "auto.offset.reset": "earliest"}
    seen: list[int] = []
    first = Consumer(conf)
    assert group_generation(first.consumer_group_metadata()) == -1  # not joined yet
    first.subscribe([settings.topic_click], on_assign=lambda c, p: seen.append(
        group_generation(c.consumer_group_metadata())))
    deadline = time.monotonic() + 30
    while not seen and time.monotonic() < deadline:
        first.consume(10, 0.1)
    first.close()
    second = Consumer(conf)
    second.subscribe([settings.topic_click], on_assign=lambda c, p: seen.append(
        group_generation(c.consumer_group_metadata())))
    deadline = time.monotonic() + 30
    while len(seen) < 2 and time.monotonic() < deadline:
        second.consume(10, 0.1)
    second.close()
    assert len(seen) == 2 and seen[0] >= 0 and seen[1] > seen[0]


def test_group_generation_rejects_an_unknown_layout():
    with pytest.raises(ValueError):
        group_generation(b"CGMDv3:" + struct.pack("=i", 1))
