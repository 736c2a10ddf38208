"""Every Prometheus metric of the worker, in one place.

Names are namespaced ``recostream_``, in base units (seconds, bytes), with
``_total`` only on counters, and labels drawn from small fixed sets (event
type, dead-letter reason, model, segment id, topic/partition): never a user or
item id. Children of labelled metrics are created once and cached, so the hot
path pays a plain ``inc()`` rather than a ``labels()`` lookup, several times
dearer (docs/BENCHMARKS.md, Metrics). Counts are observed once per
micro-batch where that is exact.

The experiment's gauges (``recostream_experiment_*``, label ``variant``: the
configured variants, ``holdout`` and ``unknown``) are the totals of the
partitions this worker owns (their changelog-restored counts, advanced by
every batch), set after each batch that changed them and after every
rebalance; summed over the workers of a group they are the experiment's
totals. ``recostream experiment report`` gives the report itself.

Two families are computed when Prometheus scrapes, not on the hot path:

* consumer lag per partition (:class:`ConsumerLagCollector`), read from a
  callable: the worker's own positions and the high-water marks its consumer
  last saw (``streams.loop.StreamLoop.lag_rows``);
* the standard ``process_*`` metrics (CPU, resident memory, open fds, start
  time) of the worker process.

docs/MONITORING.md describes every metric, the dashboard and the alerts.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from models.effect import HOLDOUT, UNKNOWN, Counts, Experiment
from models.effect.statistics import srm_p_value
from models.events import EVENT_TYPES
from streams.contract import REASONS

# Consumed messages are counted before decoding: on a single mixed input topic
# (all three RECOSTREAM_TOPIC_* equal) their type is not known yet; impressions
# have a topic of their own.
CONSUMED_TYPES = (*EVENT_TYPES, "mixed", "impression")
# Experiment gauge -> (counter of models.effect.Counts, scale to base units).
EFFECT_GAUGES = {
    "impressions": ("impressions", 1.0, "Impressions counted under the variant."),
    "items_shown": ("items_shown", 1.0, "Items in the impressions counted under the variant."),
    "clicks": ("clicks", 1.0, "Clicks attributed to impressions of the variant."),
    "purchases": ("purchases", 1.0, "Purchase lines attributed to impressions of the variant."),
    "revenue": ("revenue_cents", 0.01, "Revenue (price x quantity, currency units) of the purchases attributed to the variant."),
    "customers": ("customers", 1.0, "Distinct customers exposed to the variant (at least one impression under it)."),
}
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

log = logging.getLogger(__name__)

# (topic, partition, end offset, consumer position) of one assigned partition;
# the position is the next offset the group will process (Kafka's committed
# offset convention). Either may be None while unknown (nothing fetched yet).
Position = tuple[str, int, "int | None", "int | None"]


class ConsumerLagCollector(Collector):
    """Consumer lag per partition, computed at scrape time from ``source``.

    ``source()`` returns ``(topic, partition, end_offset, position)`` rows for
    the partitions this worker owns. Lag is ``end_offset - position`` (messages
    on the log this worker has not yet processed and committed), never
    negative, and is left out while either offset is unknown; every row counts
    as an assigned partition. A failing source yields no samples rather than a
    failed scrape: a worker in the middle of a rebalance has nothing to report.

    >>> from prometheus_client import CollectorRegistry, generate_latest
    >>> r = CollectorRegistry()
    >>> _ = r.register(ConsumerLagCollector(lambda: [("click", 0, 120, 100), ("click", 1, 7, None)]))
    >>> r.get_sample_value("recostream_consumer_lag_messages", {"topic": "click", "partition": "0"})
    20.0
    >>> r.get_sample_value("recostream_consumer_assigned_partitions", {"topic": "click"})
    2.0
    """

    def __init__(self, source: Callable[[], Iterable[Position]]) -> None:
        self.source = source

    def describe(self) -> list[GaugeMetricFamily]:
        # Names only, so registering never calls the source.
        return list(self._families())

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        lag = GaugeMetricFamily("recostream_consumer_lag_messages",
                                "Messages in a partition this worker owns that it has not processed and committed yet.",
                                labels=["topic", "partition"])
        assigned = GaugeMetricFamily("recostream_consumer_assigned_partitions",
                                     "Partitions of each input topic assigned to this worker.", labels=["topic"])
        return lag, assigned

    def collect(self) -> Iterable[GaugeMetricFamily]:
        lag, assigned = self._families()
        try:
            rows = list(self.source())
        except Exception:  # a scrape must not fail because the consumer is rebalancing
            log.debug("consumer lag unavailable", exc_info=True)
            rows = []
        per_topic: dict[str, int] = {}
        for topic, partition, end, position in sorted(rows, key=lambda row: (row[0], row[1])):
            per_topic[topic] = per_topic.get(topic, 0) + 1
            if end is not None and position is not None:
                lag.add_metric([topic, str(partition)], float(max(0, end - position)))
        for topic, n in sorted(per_topic.items()):
            assigned.add_metric([topic], float(n))
        yield lag
        yield assigned


class Metrics:
    """The worker's metrics on their own registry (one registry per worker process)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, process_metrics: bool = True) -> None:
        r = self.registry = registry or CollectorRegistry()
        ns = "recostream"
        self.events_consumed = Counter("events_consumed_total", "Messages read from input topics (type: the topic's event type, or mixed).", ["type"], namespace=ns, registry=r)
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
        self.kafka_produce_errors = Counter("kafka_produce_errors_total", "Output records Kafka did not acknowledge (each is produced again).", namespace=ns, registry=r)
        self.item_updates_published = Counter("item_updates_published_total", "Item-side update records this worker published to the item-updates topic (heartbeats included).", namespace=ns, registry=r)
        self.item_update_bytes_published = Counter("item_update_published_bytes_total", "Bytes of the item-side update records this worker published.", namespace=ns, registry=r)
        self.item_updates_applied = Counter("item_updates_applied_total", "Item-side update records (any worker's, this one's included) applied to this worker's models.", namespace=ns, registry=r)
        self.item_update_events_applied = Counter("item_update_events_applied_total", "Events the item side learned from applied update records.", namespace=ns, registry=r)
        self.item_update_events_skipped = Counter("item_update_events_skipped_total", "Events of applied update records the item side had learned already (a batch processed again).", namespace=ns, registry=r)
        self.item_updates_rejected = Counter("item_updates_rejected_total", "Records of the item-updates topic that are not updates (skipped by every worker).", namespace=ns, registry=r)
        self.consumer_gaps = Counter("consumer_gaps_total", "Input messages delivered past their partition's position: read again from the position (outcome=reread), or stepped over once reading again confirmed no record is there (outcome=stepped_over).", ["outcome"], namespace=ns, registry=r)
        self.item_updates_missed = Counter("item_updates_missed_total", "Item-updates records deleted by retention before this worker applied them.", namespace=ns, registry=r)
        self.item_update_exchange_seconds = Histogram("item_update_exchange_seconds", "Publishing a batch's item-side update until the log is applied through it.", namespace=ns, registry=r, buckets=LATENCY_BUCKETS)
        self.item_updates_peer_last = Gauge("item_updates_peer_last_timestamp_seconds", "When the newest applied record of each worker (heartbeats included) was published (Unix time).", ["peer"], namespace=ns, registry=r)
        self.outputs_parked_total = Counter("outputs_parked_total", "Output records refused for good (too large, not authorised) and parked: logged with their source, not retried.", ["topic"], namespace=ns, registry=r)
        self.fenced_writes = Counter("fenced_writes_total", "Redis keys not written because a newer owner holds their partition (this worker had lost it).", namespace=ns, registry=r)
        self.takeovers = Counter("partition_takeovers_total", "Partitions this worker took over (marker written, state restored).", namespace=ns, registry=r)
        self.restored_records = Counter("changelog_records_restored_total", "Changelog records read while taking partitions over.", namespace=ns, registry=r)
        self.stale_records = Counter("changelog_stale_records_total", "Changelog records ignored on restore: written by an owner that had already lost the partition.", namespace=ns, registry=r)
        self.restore_seconds = Histogram("partition_restore_seconds", "Time to take one partition over (marker, changelog read, model catch-up).", namespace=ns, registry=r, buckets=LATENCY_BUCKETS)
        self.live_evaluated = Counter("live_evaluated_total", "Events judged by the live prequential hit rate.", namespace=ns, registry=r)
        self.live_hits = Counter("live_hits_total", "Events whose item was in the top-K shown before it happened.", ["model"], namespace=ns, registry=r)
        self.users = Gauge("users", "Customers with a profile in this worker.", namespace=ns, registry=r)
        self.items = Gauge("items", "Items known to this worker's models.", namespace=ns, registry=r)
        self.model_version = Gauge("model_version", "Interactions learned by this worker's ranker.", namespace=ns, registry=r)
        self.popularity_half_life = Gauge("ranker_popularity_half_life", "Half-life of the popularity the ranker serves, in its decay clock's unit (learned events by default; +Inf: never forgotten).", namespace=ns, registry=r)
        self.model_updated = Gauge("model_last_update_timestamp_seconds", "When the models last learned.", namespace=ns, registry=r)
        self.checkpoints = Counter("model_checkpoints_total", "Model checkpoints by outcome (written, failed).", ["outcome"], namespace=ns, registry=r)
        self.checkpoint_time = Gauge("model_last_checkpoint_timestamp_seconds", "When this worker last wrote a model checkpoint (Unix time; 0: none yet).", namespace=ns, registry=r)
        self.segment_size = Gauge("segment_customers", "Customers whose latest segment assignment is this segment (customers touched since start).", ["segment"], namespace=ns, registry=r)
        self.build_info = Info("build", "recostream version running in this worker.", namespace=ns, registry=r)
        self.build_info.info({"version": _version()})
        if process_metrics:
            ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        self.redis_up.set(1)
        # Cached children: no label lookups per event. Every label value that
        # can occur exists from the start (at 0), so rate() and alerts see the
        # series before the first occurrence.
        self.consumed_by_type = {t: self.events_consumed.labels(t) for t in CONSUMED_TYPES}
        self.processed_by_type = {t: self.events_processed.labels(t) for t in EVENT_TYPES}
        self.hits_model = self.live_hits.labels("ranker")
        self.hits_popularity = self.live_hits.labels("popularity")
        self.checkpoints_written = self.checkpoints.labels("written")
        self.checkpoints_failed = self.checkpoints.labels("failed")
        self._dead_by_reason: dict[str, Counter] = {r_: self.dead_lettered.labels(r_) for r_ in sorted(REASONS)}
        self._segment_of: dict[str, int] = {}
        self._segment_counts: dict[int, int] = {}
        self._segment_gauges: dict[int, Gauge] = {}
        self._lag_collector: ConsumerLagCollector | None = None
        self.effect_gauges = {name: Gauge(f"experiment_{name}", f"{help} Totals of the partitions this worker owns.",
                                          ["variant"], namespace=ns, registry=r)
                              for name, (_, _, help) in EFFECT_GAUGES.items()}
        self.srm_p_value = Gauge("experiment_srm_p_value", "Sample-ratio mismatch p-value of the customers assigned "
                                 "per arm in the partitions this worker owns, against the configured shares "
                                 "(NaN while no customer is assigned; below 0.001 the split is not the configured one).",
                                 namespace=ns, registry=r)
        self._experiment: Experiment | None = None
        self._effect_children: dict[str, dict[str, Gauge]] = {}

    def peer_seen(self, peer: str, published_at: float) -> None:
        """A record of worker ``peer`` published at ``published_at`` was applied (label: a worker id,
        as bounded as the number of workers)."""
        self.item_updates_peer_last.labels(peer).set(published_at)

    def forget_peer(self, peer: str) -> None:
        """Worker ``peer`` left cleanly: its series goes (no alert for a worker that is gone on purpose)."""
        try:
            self.item_updates_peer_last.remove(peer)
        except KeyError:
            pass

    def set_experiment(self, experiment: Experiment) -> None:
        """Create the experiment gauges' children: one per configured variant, ``holdout`` and ``unknown``."""
        self._experiment = experiment
        arms = [*(v.name for v in experiment.variants), HOLDOUT, UNKNOWN]
        self._effect_children = {name: {arm: gauge.labels(arm) for arm in arms}
                                 for name, gauge in self.effect_gauges.items()}
        self.observe_effect({})

    def observe_effect(self, by_arm: Mapping[str, Counts]) -> None:
        """Set the experiment gauges from the owned partitions' counts per arm, summed over days
        (``ProfileStore.by_arm``); arms outside the label set are left out."""
        if self._experiment is None:
            return
        zero = Counts()
        for name, (counter, scale, _) in EFFECT_GAUGES.items():
            for arm, child in self._effect_children[name].items():
                child.set(getattr(by_arm.get(arm, zero), counter) * scale)
        shares = self._experiment.shares  # nan with one arm or nobody assigned yet
        self.srm_p_value.set(srm_p_value([by_arm.get(arm, zero).assigned_customers for arm in shares],
                                         list(shares.values())))

    def dead_letter(self, reason: str) -> None:
        child = self._dead_by_reason.get(reason)
        if child is None:  # ContractError only allows REASONS; guard the label set anyway
            child = self._dead_by_reason["other"] = self.dead_lettered.labels("other")
        child.inc()

    def observe_segments(self, profiles: Mapping[str, Any]) -> None:
        """Count customers per segment from a batch's updated profiles (anything with ``.segment``).

        Keeps each customer's latest segment (one small int per customer this
        worker has touched) and moves them between segment gauges only when it
        changes: O(customers in the batch), no scan of the table.
        """
        seg_of, counts = self._segment_of, self._segment_counts
        changed = set()
        for user, profile in profiles.items():
            new = profile.segment
            if new is None:
                continue
            old = seg_of.get(user)
            if old == new:
                continue
            seg_of[user] = new
            counts[new] = counts.get(new, 0) + 1
            changed.add(new)
            if old is not None:
                counts[old] -= 1
                changed.add(old)
        for seg in changed:
            gauge = self._segment_gauges.get(seg)
            if gauge is None:
                gauge = self._segment_gauges[seg] = self.segment_size.labels(str(seg))
            gauge.set(counts[seg])

    def forget_customer(self, user: str) -> None:
        """Drop an erased customer from the segment counts."""
        seg = self._segment_of.pop(user, None)
        if seg is not None:
            self._segment_counts[seg] -= 1
            self._segment_gauges[seg].set(self._segment_counts[seg])

    def watch_consumer_lag(self, source: Callable[[], Iterable[Position]]) -> ConsumerLagCollector:
        """Expose consumer lag per partition from ``source`` (see :class:`ConsumerLagCollector`)."""
        if self._lag_collector is not None:
            self._lag_collector.source = source
        else:
            self._lag_collector = ConsumerLagCollector(source)
            self.registry.register(self._lag_collector)
        return self._lag_collector

    def outputs_parked(self, topic: str) -> None:
        self.outputs_parked_total.labels(topic).inc()

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("recostream")
    except Exception:  # running from a source tree
        return "unknown"
