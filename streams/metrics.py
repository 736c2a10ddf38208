"""Every Prometheus metric of the worker, in one place.

Names are namespaced ``recostream_``, in base units (seconds, bytes), with
``_total`` only on counters, and labels drawn from small fixed sets (event
type, dead-letter reason, partition): never a user or item id. Children of
labelled metrics are created once and cached, so the hot path pays a plain
``inc()`` (~0.6 µs) rather than a ``labels()`` lookup (~2.4 µs). Counts are
observed once per micro-batch where that is exact.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

EVENT_TYPES = ("browse", "click", "purchase")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """The worker's metrics on their own registry (one registry per worker process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        ns = "recostream"
        self.events_consumed = Counter("events_consumed_total", "Messages read from input topics.", ["type"], namespace=ns, registry=r)
        self.events_processed = Counter("events_processed_total", "Valid events learned from.", ["type"], namespace=ns, registry=r)
        self.dead_lettered = Counter("events_dead_lettered_total", "Messages sent to the dead-letter topic.", ["reason"], namespace=ns, registry=r)
        self.duplicates = Counter("events_duplicate_total", "Valid events dropped as duplicates of an event_id already counted.", namespace=ns, registry=r)
        self.batch_size = Histogram("batch_size_events", "Events per micro-batch.", namespace=ns, registry=r,
                                    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000))
        self.batch_seconds = Histogram("batch_duration_seconds", "Wall time to process one micro-batch end to end.", namespace=ns, registry=r, buckets=LATENCY_BUCKETS)
        self.freshness = Histogram("freshness_seconds", "Event time to its customer's recommendations written to Redis.", namespace=ns, registry=r, buckets=LATENCY_BUCKETS)
        self.recommendations_written = Counter("recommendations_written_total", "Top-N lists written to Redis and the recommendations topic.", namespace=ns, registry=r)
        self.redis_errors = Counter("redis_errors_total", "Failed Redis write attempts (each is retried).", namespace=ns, registry=r)
        self.redis_up = Gauge("redis_up", "1 when the last Redis write succeeded, 0 during an outage.", namespace=ns, registry=r)
        self.live_evaluated = Counter("live_evaluated_total", "Events judged by the live prequential hit rate.", namespace=ns, registry=r)
        self.live_hits = Counter("live_hits_total", "Events whose item was in the top-K shown before it happened.", ["model"], namespace=ns, registry=r)
        self.users = Gauge("users", "Customers with a profile in this worker.", namespace=ns, registry=r)
        self.items = Gauge("items", "Items known to this worker's models.", namespace=ns, registry=r)
        self.model_version = Gauge("model_version", "Interactions learned by this worker's ranker.", namespace=ns, registry=r)
        self.model_updated = Gauge("model_last_update_timestamp_seconds", "When the models last learned.", namespace=ns, registry=r)
        self.segment_size = Gauge("segment_customers", "Customers assigned to each segment (touched since start).", ["segment"], namespace=ns, registry=r)
        self.redis_up.set(1)
        # Cached children: no label lookups per event.
        self.consumed_by_type = {t: self.events_consumed.labels(t) for t in EVENT_TYPES}
        self.processed_by_type = {t: self.events_processed.labels(t) for t in EVENT_TYPES}
        self.hits_model = self.live_hits.labels("ranker")
        self.hits_popularity = self.live_hits.labels("popularity")
        self._dead_by_reason: dict[str, Counter] = {}

    def dead_letter(self, reason: str) -> None:
        child = self._dead_by_reason.get(reason)
        if child is None:
            child = self._dead_by_reason[reason] = self.dead_lettered.labels(reason)
        child.inc()

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
