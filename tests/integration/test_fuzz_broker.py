"""10,000 hypothesis-generated messages, valid and hostile, through the real broker and worker.

The expectation for each message comes from the contract's own parser run
locally (the fuzz test of the parser itself is in test_contract.py); this test
proves the worker applies it end to end: every bad message dead-lettered with
its reason, every valid one counted exactly once, the worker alive throughout.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings

from streams.contract import ContractError, decode_dead_letter, decode_event
from streams.kafka.produce import make_producer, publish_raw
from tests.helpers import profile_totals, read_topic, scrape_metric, wait_until
from tests.strategies import messages

pytestmark = pytest.mark.integration
N_MESSAGES = 10_000


def generate_messages() -> list:
    collected = []

    @hsettings(max_examples=N_MESSAGES, database=None, deadline=None, phases=[Phase.generate],
               suppress_health_check=list(HealthCheck))
    @given(messages())
    def collect(msg):
        collected.append(msg)

    collect()
    return collected


def test_fuzzed_messages_through_the_broker(settings, start_worker, redis_client):
    # A window larger than the whole run: expected counts are then simply the
    # distinct (user, event_id) pairs, whatever the interleaving across topics.
    s = settings.replace(dedupe_window=N_MESSAGES * 2)
    generated = generate_messages()
    assert len(generated) >= N_MESSAGES * 0.95, "hypothesis should produce ~10k examples"

    topic_of = {"browse": s.topic_browse, "click": s.topic_click, "purchase": s.topic_purchase}
    now = time.time()
    outgoing, bad_reasons, valid = [], Counter(), {}
    for topic_type, raw, _, _ in generated:
        try:
            ev = decode_event(raw, topic_type, now=now)
            decode_event(raw, topic_type, now=now + 600)  # stable verdict while the worker runs
        except ContractError as err:
            bad_reasons[err.reason] += 1
            outgoing.append((topic_of[topic_type], b"fuzz", raw))
            continue
        valid.setdefault(ev.user_id, set()).add(ev.event_id)
        outgoing.append((topic_of[topic_type], ev.user_id.encode(), raw))
    n_bad = sum(bad_reasons.values())
    assert n_bad > 3000 and len(valid) > 100, "the mix must exercise both sides"
    publish_raw(make_producer(s), outgoing)

    worker = start_worker(s)
    wait_until(lambda: scrape_metric(s, "recostream_events_consumed_total") >= len(outgoing), 120,
               "every message consumed", worker=worker)
    wait_until(lambda: len(read_topic(s, s.topic_dead_letter)) >= n_bad, 30, "dead letters published",
               worker=worker)

    letters = [decode_dead_letter(m.value()) for m in read_topic(s, s.topic_dead_letter)]
    assert len(letters) == n_bad, "100% of bad messages dead-lettered, none twice"
    assert Counter(dl.reason for dl in letters) == bad_reasons
    assert all(dl.detail and dl.value is not None for dl in letters if dl.reason != "empty_value")

    expected = {user: len(ids) for user, ids in valid.items()}
    assert scrape_metric(s, "recostream_events_processed_total") == sum(expected.values())
    wait_until(lambda: profile_totals(redis_client, s, list(expected)) == expected, 30,
               "0 valid messages lost: every distinct valid event counted once", worker=worker)
    assert worker.alive()
