"""Malformed messages go to the dead-letter topic with a reason; valid ones are all processed."""

from __future__ import annotations

import base64
import hashlib
import json

import msgspec
import pytest

from streams.contract import REASONS, decode_dead_letter
from streams.kafka.produce import make_producer, publish_raw
from streams.sinks.redis import RedisKeys
from tests.helpers import read_topic, scrape_metric, wait_until

pytestmark = pytest.mark.integration

NOW_MS = 1_767_225_600_000  # 2026-01-01


def valid(i: int, user: str, **extra) -> bytes:
    return json.dumps({"event_id": f"ok-{i}", "user_id": user, "item_id": f"i{i % 7}", "ts": NOW_MS + i, **extra}).encode()


def bad_messages(s) -> list[tuple[str, bytes | None, bytes | None, str]]:
    """(topic, key, value, expected reason) for ~20 kinds of malformed input."""
    b, c, p = s.topic_browse, s.topic_click, s.topic_purchase
    base = {"event_id": "bad", "user_id": "ub", "item_id": "i1", "ts": NOW_MS}

    def j(**kw):
        d = {**base, **kw}
        return json.dumps({k: v for k, v in d.items() if v is not ...}).encode()

    return [
        (b, b"ub", b"this is not json", "not_json"),
        (b, b"ub", b"", "empty_value"),
        (b, b"ub", b"[1, 2, 3]", "not_object"),
        (b, b"ub", b'"just a string"', "not_object"),
        (b, b"ub", j(event_id=...), "missing_field"),
        (b, b"ub", j(item_id=...), "missing_field"),
        (b, b"ub", j(ts=...), "missing_field"),
        (c, b"ub", j(item_id=42), "wrong_type"),
        (c, b"ub", j(user_id=None), "missing_field"),
        (p, b"ub", j(price=-3.5), "invalid_value"),
        (p, b"ub", b'{"event_id":"x","user_id":"ub","item_id":"i1","ts":1767225600000,"price":NaN}', "not_json"),
        (p, b"ub", j(price="12.0"), "wrong_type"),
        (p, b"ub", j(quantity=0), "invalid_value"),
        (p, b"ub", j(quantity=True), "wrong_type"),
        (b, b"ub", j(type="wishlist"), "unknown_type"),
        (b, b"ub", j(type="purchase"), "type_mismatch"),
        (b, b"ub", j(ts="yesterday-ish"), "invalid_value"),
        (b, b"ub", j(ts=4102444800000), "ts_out_of_range"),  # 2100
        (b, b"ub", j(ts=0), "ts_out_of_range"),
        (b, b"ub", j(item_id="x" * 10_000), "id_too_long"),
        (b, b"ub", b"\xff\xfe not utf-8", "bad_encoding"),
        (b, b"ub", b'{"a":' * 5000 + b"1" + b"}" * 5000, "too_deep"),
        (b, b"ub", b'{"pad": "' + b"x" * 70_000 + b'"}', "oversized"),
        (b, b"somebody-else", j(user_id="ub"), "key_mismatch"),
        (b, None, j(event_id="no-key"), "key_mismatch"),  # unkeyed: it may reach a worker not owning "ub"
        (p, b"ub", j(price=3.0)[:-1] + b', "price": -5}', "duplicate_field"),
        (b, b"ub", j(ts=str(NOW_MS)), "invalid_value"),  # epoch ms as a string
        (b, b"ub", j(ts="2026-01-01T00:00:00"), "invalid_value"),  # no offset
    ]


def test_bad_messages_are_dead_lettered_and_valid_ones_processed(settings, start_worker, redis_client):
    bad = bad_messages(settings)
    assert {reason for *_, reason in bad} <= REASONS
    good = [(settings.topic_click, f"u{i % 5}".encode(), valid(i, f"u{i % 5}")) for i in range(100)]
    # Interleave: bad messages must not disturb the valid ones around them.
    mixed = []
    for i, msg in enumerate(good):
        mixed.append(msg)
        if i < len(bad):
            mixed.append(bad[i][:3])
    publish_raw(make_producer(settings), mixed)

    worker = start_worker(settings)
    keys = RedisKeys(settings.redis_prefix)

    def processed_users():
        return all(redis_client.get(keys.profile(f"u{k}")) for k in range(5)) and \
            scrape_metric(settings, "recostream_events_dead_lettered_total") >= len(bad)

    wait_until(processed_users, 90, "valid events processed and bad ones dead-lettered", worker=worker)
    wait_until(lambda: len(read_topic(settings, settings.topic_dead_letter)) >= len(bad), 30,
               "dead letters on the topic", worker=worker)

    letters = [decode_dead_letter(m.value()) for m in read_topic(settings, settings.topic_dead_letter)]
    assert len(letters) == len(bad)
    by_digest = {}
    for dl in letters:
        assert dl.reason in REASONS and dl.detail
        assert dl.topic in settings.input_topics and dl.offset >= 0 and dl.partition >= 0
        kept = base64.b64decode(dl.value) if dl.value is not None else b""
        # Whole when it fits the input limit, else its first bytes (identified by size and digest).
        assert dl.truncated == (dl.value_size > settings.max_message_bytes)
        assert len(kept) == min(dl.value_size, settings.max_message_bytes)
        by_digest[dl.value_sha256] = dl
    for topic, _key, value, reason in bad:
        dl = by_digest.get(hashlib.sha256(value or b"").hexdigest() if value is not None else None)
        assert dl is not None, f"bad message not dead-lettered: {value[:60]!r}"
        assert dl.reason == reason, f"{value[:60]!r}: expected {reason}, got {dl.reason} ({dl.detail})"
        assert dl.topic == topic

    total = 0
    for k in range(5):
        counts = msgspec.json.decode(redis_client.get(keys.profile(f"u{k}")))["counts"]
        total += sum(counts.values())
    assert total == len(good), "every valid event must be counted exactly once"
    assert worker.alive()
