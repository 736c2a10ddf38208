"""Soak test, run by `make soak`, not by `make test`: a rebalance under load.

Two workers share a continuous stream; one is stopped with SIGTERM mid-stream
and the other takes over its partitions. Expected: every produced event
counted exactly once. KNOWN BUG (see docs/RELIABILITY.md): in about 2 of 10
runs a few customers end one event short, on both the stopped worker's and
the survivor's partitions, so the profile table recovered during the
rebalance missed a last update. It is kept here, reproducible, until fixed;
it is not in the default suite because it does not pass reliably yet.
"""

from __future__ import annotations

import pytest

from streams.generator import ShopperSimulator
from streams.produce import make_producer, publish_catalogue
from tests.conftest import StreamProducer, scrape_metric, wait_until
from tests.test_reliability import wait_exact_totals

pytestmark = pytest.mark.integration


def test_rebalance_when_one_of_two_workers_stops(settings, start_worker, redis_client):
    s = settings.replace(partitions=4, app_id=settings.app_id + "-rb")
    from streams.topics import ensure_topics

    s = s.replace(**{f"topic_{t}": f"{s.redis_prefix}.rb.{t}" for t in
                     ("browse", "click", "purchase", "items", "recommendations", "dead_letter", "control")})
    ensure_topics(s)
    sim = ShopperSimulator(n_users=120, n_items=300, seed=23)
    publish_catalogue(make_producer(s), s, sim.catalogue())
    from streams.embedded import free_port

    s_a = s.replace(worker_id="a", metrics_port=free_port())
    s_b = s.replace(worker_id="b", metrics_port=free_port())
    with StreamProducer(s, sim, rate=300) as stream:
        a = start_worker(s_a)
        b = start_worker(s_b)
        wait_until(lambda: scrape_metric(s_a, "recostream_events_processed_total") > 200
                   and scrape_metric(s_b, "recostream_events_processed_total") > 200,
                   60, "both workers processing", worker=b)
        assert a.stop() == 0, "SIGTERM must stop a worker cleanly"
        processed_b = scrape_metric(s_b, "recostream_events_processed_total")
        wait_until(lambda: scrape_metric(s_b, "recostream_events_processed_total") > processed_b + 600, 60,
                   "the remaining worker to take over", worker=b)
    wait_exact_totals(redis_client, s, stream, b)
