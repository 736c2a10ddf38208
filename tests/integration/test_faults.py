"""Faults an operator meets, against the real broker and Redis: two or three workers, a continuous
stream, and one fault schedule per test. Every test checks exact per-customer counts in the
changelog (what a new owner restores) and in Redis, and the experiment's counts there (every
purchase once, every customer assigned once), and prints produced / counted / lost /
double-counted / dead-lettered.

Timings come from a seeded generator: ``RECOSTREAM_FAULT_SEED`` (``make soak`` draws a new one per
run) changes when each fault lands.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field

import msgspec
import pytest

from models.effect import EffectCounts
from models.effect.counts import revenue_cents
from models.engine import PersonalisationEngine
from models.engine_update import decode_engine_update
from models.profile import decode_profile
from streams.contract import decode_dead_letter
from streams.kafka.produce import make_producer, publish_catalogue, publish_events, publish_raw
from streams.settings import Settings
from streams.state.changelog import Restore
from streams.tools.embedded import free_port, start_broker, start_redis
from streams.tools.experiment import read_counts
from streams.tools.generator import ShopperSimulator
from streams.tools.scrape import scrape
from tests.helpers import (
    StreamProducer,
    own_topics,
    poll_until,
    profile_totals,
    read_topic,
    scrape_metric,
    wait_until,
)

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("RECOSTREAM_FAULT_SEED", "1"))


def changelog_totals(settings: Settings) -> tuple[dict[str, int], dict[str, int]]:
    """Events counted per customer in the state a new owner would restore from the changelog, and the
    experiment's counts it would restore (:func:`experiment_summary`)."""
    restores: dict[int, Restore] = {}
    for msg in sorted(read_topic(settings, settings.changelog_topic, timeout=30.0),
                      key=lambda m: (m.partition(), m.offset())):
        restores.setdefault(msg.partition(), Restore(experiment=settings.experiment_config.name)).apply(
            msg.key(), msg.value(), msg.headers())
    totals: dict[str, int] = {}
    counts = EffectCounts()
    for restore in restores.values():
        for user, raw in restore.profiles.items():
            totals[user] = sum(decode_profile(raw).counts.values())
        counts = counts.merge(restore.effect)
    return totals, experiment_summary(counts)


def experiment_summary(counts: EffectCounts) -> dict[str, int]:
    """The default experiment's counters that every event moves, whatever the order: its one arm's
    assigned customers, buyers, purchases and revenue."""
    total = counts.total("ranker")
    return {k: getattr(total, k) for k in ("assigned_customers", "buyers", "all_purchases", "all_revenue_cents")}


def expected_summary(stream: StreamProducer) -> dict[str, int]:
    users, buyers, purchases, cents = set(), set(), 0, 0
    for etype, payload in stream.sent:
        users.add(payload["user_id"])
        if etype == "purchase":
            buyers.add(payload["user_id"])
            purchases += 1
            cents += revenue_cents(payload.get("price"), payload.get("quantity") or 1)
    return {"assigned_customers": len(users), "buyers": len(buyers), "all_purchases": purchases,
            "all_revenue_cents": cents}


@dataclass
class Cluster:
    """Named workers of one consumer group; a restarted worker keeps its name, port and checkpoint."""

    settings: Settings
    start_worker: object
    ports: dict[str, int] = field(default_factory=dict)
    handles: dict[str, object] = field(default_factory=dict)

    def settings_for(self, name: str) -> Settings:
        port = self.ports.setdefault(name, free_port())
        return self.settings.replace(worker_id=name, metrics_port=port)

    def start(self, name: str):
        self.handles[name] = self.start_worker(self.settings_for(name))
        return self.handles[name]

    def signal(self, name: str, sig: int) -> None:
        os.killpg(self.handles[name].proc.pid, sig)

    def kill(self, name: str) -> None:
        self.signal(name, signal.SIGKILL)
        self.handles[name].proc.wait(10)

    def stop(self, name: str) -> None:
        assert self.handles[name].stop() == 0, self.handles[name].log()[-3000:]

    def processed(self, name: str) -> float:
        return scrape_metric(self.settings_for(name), "recostream_events_processed_total")

    def wait_processing(self, *names: str, more_than: float = 100, timeout: float = 60) -> None:
        for name in names:
            base = self.processed(name) if self.handles[name].alive() else 0
            wait_until(lambda name=name, base=base: self.processed(name) > base + more_than, timeout,
                       f"worker {name} processing", worker=self.handles[name])

    def wait_log(self, name: str, text: str, after: int, timeout: float = 60, interval: float = 0.02) -> int:
        """Wait for ``text`` in worker ``name``'s log after character ``after``; its position."""
        def found():
            pos = self.handles[name].log().find(text, after)
            return pos + 1 if pos >= 0 else 0
        return wait_until(found, timeout, f"{text!r} in worker {name}'s log", interval=interval,
                          worker=self.handles[name]) - 1


def fault_settings(settings: Settings, **changes) -> Settings:
    return own_topics(settings, "f", checkpoint_interval_s=2.0, **changes)


def settle_and_report(name: str, s: Settings, stream: StreamProducer, redis_client, live: list,
                      timeout: float = 120.0) -> dict:
    """Wait until the counts match (or ``timeout``), print the report, return it."""
    expected = stream.expected_totals()
    expected_fx = expected_summary(stream)
    users = sorted(expected)
    state: dict = {}

    def exact() -> bool:
        for h in live:
            if not h.alive():
                pytest.fail(f"a worker died:\n{h.log()[-4000:]}")
        state["redis"] = profile_totals(redis_client, s, users)
        state["redis_fx"] = experiment_summary(read_counts(s, redis_client)[0])
        if state["redis"] != expected or state["redis_fx"] != expected_fx:
            return False
        state["changelog"], state["changelog_fx"] = changelog_totals(s)
        return all(state["changelog"].get(u, 0) == n for u, n in expected.items()) and \
            state["changelog_fx"] == expected_fx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not exact():
        time.sleep(0.5)
    if "changelog" not in state:
        state["changelog"], state["changelog_fx"] = changelog_totals(s)
    report = {"produced": sum(expected.values())}
    for where in ("changelog", "redis"):
        got = state[where]
        report[f"counted_{where}"] = sum(got.get(u, 0) for u in users)
        report[f"lost_{where}"] = sum(max(0, n - got.get(u, 0)) for u, n in expected.items())
        report[f"double_{where}"] = sum(max(0, got.get(u, 0) - n) for u, n in expected.items())
        # The experiment's counts (buyers, purchases, revenue), restored from the changelog and in Redis.
        report[f"experiment_{where}_exact"] = state[f"{where}_fx"] == expected_fx
    # The item side: the fold of the item-updates log (what every worker's item side is at its end)
    # learned each event once, whichever worker published it and however often.
    learned = item_log_fold(s).model_version
    report["lost_item_side"] = max(0, report["produced"] - learned)
    report["double_item_side"] = max(0, learned - report["produced"])
    letters = [decode_dead_letter(m.value()) for m in read_topic(s, s.topic_dead_letter)]
    positions = Counter((dl.topic, dl.partition, dl.offset) for dl in letters)
    report["dead_lettered"] = len(positions)
    report["dead_letter_duplicates"] = sum(n - 1 for n in positions.values())
    print(f"\n{name}: " + ", ".join(f"{k} {v}" for k, v in report.items()))
    report["letters"] = letters
    return report


def item_log_fold(s: Settings) -> PersonalisationEngine:
    """A new engine that applied every record of the item-updates log, in order."""
    engine = PersonalisationEngine()
    for msg in sorted(read_topic(s, s.item_updates_topic, timeout=30), key=lambda m: m.offset()):
        if msg.value():
            engine.apply_update(decode_engine_update(msg.value()))
    return engine


def assert_exact(report: dict) -> None:
    assert report["lost_item_side"] == 0 and report["double_item_side"] == 0, {
        k: v for k, v in report.items() if k != "letters"}
    for where in ("changelog", "redis"):
        assert report[f"lost_{where}"] == 0 and report[f"double_{where}"] == 0, {
            k: v for k, v in report.items() if k != "letters"}
        assert report[f"experiment_{where}_exact"], {k: v for k, v in report.items() if k != "letters"}


def _scenario(settings, start_worker, redis_client, run, *, users=300, rate=300.0, names=("a", "b"), preload=0,
              **changes):
    s = fault_settings(settings, **changes)
    sim = ShopperSimulator(n_users=users, n_items=400, seed=SEED)
    producer = make_producer(s)
    publish_catalogue(producer, s, sim.catalogue())
    preloaded: list = []
    if preload:  # a larger changelog: restoring it takes long enough to be interrupted
        publish_events(producer, s, sim.events(preload), live_ts=True, on_delivered=preloaded.append)
    cluster = Cluster(s, start_worker)
    rng = random.Random(SEED)
    with StreamProducer(s, sim, rate=rate) as stream:
        stream.sent.extend(preloaded)
        for name in names:
            cluster.start(name)
        cluster.wait_processing(*names)
        run(cluster, rng)
        time.sleep(rng.uniform(1.0, 3.0))  # the stream goes on after the faults
    live = [h for h in cluster.handles.values() if h.alive()]
    return s, stream, cluster, live


def test_kill_minus_9_and_restart(settings, start_worker, redis_client):
    def run(cluster: Cluster, rng: random.Random) -> None:
        time.sleep(rng.uniform(0.5, 3.0))
        cluster.kill("a")  # mid-batch, outputs in flight, no positions written
        time.sleep(rng.uniform(0.0, 8.0))  # before or after the group notices
        cluster.start("a")
        cluster.wait_processing("a")

    s, stream, cluster, live = _scenario(settings, start_worker, redis_client, run)
    assert_exact(settle_and_report("kill -9 and restart", s, stream, redis_client, live))


def test_paused_past_the_session_timeout_then_resumed(settings, start_worker, redis_client):
    def run(cluster: Cluster, rng: random.Random) -> None:
        time.sleep(rng.uniform(0.5, 3.0))
        cluster.signal("a", signal.SIGSTOP)  # a long GC pause, a stalled VM, a debugger
        time.sleep(s_timeout * rng.uniform(2.0, 3.0))
        cluster.wait_processing("b")  # b owns everything now
        cluster.signal("a", signal.SIGCONT)  # a resumes mid-batch and writes as the old owner
        cluster.wait_processing("a", "b")

    s_timeout = settings.kafka_session_timeout_s
    s, stream, cluster, live = _scenario(settings, start_worker, redis_client, run)
    report = settle_and_report("SIGSTOP past the session timeout, SIGCONT", s, stream, redis_client, live)
    assert_exact(report)


def test_rolling_restart_with_sigterm(settings, start_worker, redis_client):
    def run(cluster: Cluster, rng: random.Random) -> None:
        for name in ("a", "b"):
            time.sleep(rng.uniform(0.5, 3.0))
            cluster.stop(name)  # SIGTERM: finish the batch, write positions, leave the group
            cluster.start(name)
            cluster.wait_processing(name)

    s, stream, cluster, live = _scenario(settings, start_worker, redis_client, run)
    assert_exact(settle_and_report("SIGTERM rolling restart", s, stream, redis_client, live))


def test_worker_killed_while_restoring_partitions(settings, start_worker, redis_client):
    landed: list[bool] = []

    def kill_while_restoring(cluster: Cluster, name: str, after: int) -> None:
        """Freeze ``name`` as soon as it starts a takeover, note whether it is still restoring, kill it."""
        at = cluster.wait_log(name, "taking partitions", after, interval=0.002)
        cluster.signal(name, signal.SIGSTOP)
        landed.append("took partitions" not in cluster.handles[name].log()[at:])
        cluster.kill(name)

    def run(cluster: Cluster, rng: random.Random) -> None:
        time.sleep(rng.uniform(0.5, 2.0))
        # c joins: every worker restores; c is killed in the middle of its restore ...
        cluster.start("c")
        kill_while_restoring(cluster, "c", 0)
        # ... then b, while it restores what the next assignment gives it.
        kill_while_restoring(cluster, "b", len(cluster.handles["b"].log()))
        cluster.wait_processing("a")
        cluster.start("b")
        cluster.start("c")
        cluster.wait_processing("a", "b", "c")

    s, stream, cluster, live = _scenario(settings, start_worker, redis_client, run, preload=40_000)
    report = settle_and_report("killed while restoring", s, stream, redis_client, live)
    print(f"kills that landed mid-restore: {sum(landed)} of {len(landed)}")
    assert_exact(report)
    assert any(landed), "no kill landed while a worker was restoring: the scenario did not happen"


def test_redis_killed_and_restarted(settings, start_worker, redis_client, tmp_path):
    own = start_redis(tmp_path / "redis")
    import redis as redis_lib

    client = redis_lib.Redis.from_url(f"redis://127.0.0.1:{own.port}/0")

    def run(cluster: Cluster, rng: random.Random) -> None:
        nonlocal own
        time.sleep(rng.uniform(0.5, 3.0))
        os.kill(own.proc.pid, signal.SIGKILL)  # no shutdown: the append-only file loses its last second
        own.proc.wait(10)
        time.sleep(rng.uniform(10.0, 20.0))
        own = start_redis(tmp_path / "redis", port=own.port)
        cluster.wait_processing("a", "b", timeout=90)

    try:
        s, stream, cluster, live = _scenario(settings, start_worker, client, run,
                                             redis_url=f"redis://127.0.0.1:{own.port}/0")
        assert_exact(settle_and_report("Redis killed and restarted", s, stream, client, live))
    finally:
        client.close()
        own.stop()


def test_broker_paused_mid_stream(settings, start_worker, redis_client, tmp_path):
    """The broker stops answering (a stalled VM, a network partition) for up to twice the session
    timeout while workers and producers wait on it, then comes back: whatever the group makes of
    the gap (members expired at once, or kept), every event is counted once."""
    own = start_broker(tmp_path / "broker")

    def run(cluster: Cluster, rng: random.Random) -> None:
        time.sleep(rng.uniform(0.5, 3.0))
        os.killpg(own.proc.pid, signal.SIGSTOP)  # in-memory storage: a restart would lose the topics
        time.sleep(rng.uniform(2.0, 2.0 * settings.kafka_session_timeout_s))
        os.killpg(own.proc.pid, signal.SIGCONT)
        cluster.wait_processing("a", "b", timeout=120)

    workers: list = []
    try:
        s, stream, cluster, live = _scenario(settings.replace(kafka_bootstrap_servers=f"127.0.0.1:{own.port}"),
                                             start_worker, redis_client, run)
        workers = list(cluster.handles.values())
        assert_exact(settle_and_report("broker paused, resumed", s, stream, redis_client, live))
    finally:
        for h in workers:  # before their broker goes: a clean stop publishes and commits
            h.stop()
        own.stop()


def test_oversized_and_malformed_messages_during_a_rebalance(settings, start_worker, redis_client):
    bad: list[tuple[str, bytes | None, bytes, str]] = []

    def run(cluster: Cluster, rng: random.Random) -> None:
        s = cluster.settings
        producer = make_producer(s, **{"message.max.bytes": 6_000_000})
        topics = sorted(s.input_topics)
        bad.extend([
            (topics[0], b"u1", b"{" + b'"pad": "' + b"x" * 800_000 + b'"}', "oversized"),
            (topics[1], b"u2", b"{" + b'"pad": "' + b"y" * 5_000_000 + b'"}', "oversized"),
            (topics[2], b"u3", b"{not json", "not_json"),
            (topics[0], b"u4", b'{"event_id": "e", "user_id": "u4"}', "missing_field"),
            (topics[1], None, b"\xff\xfe binary", "bad_encoding"),
        ])
        time.sleep(rng.uniform(0.5, 2.0))
        cluster.start("c")  # a rebalance starts; the bad messages arrive during it
        time.sleep(rng.uniform(0.0, 3.0))
        publish_raw(producer, [(topic, key, value) for topic, key, value, _ in bad])
        cluster.wait_processing("a", "b", "c")

    s, stream, cluster, live = _scenario(settings, start_worker, redis_client, run)
    digests = {hashlib.sha256(value).hexdigest() for _, _, value, _ in bad}

    def dead_lettered() -> bool:  # the valid counts can settle before the largest message is fetched
        return digests <= {decode_dead_letter(m.value()).value_sha256 for m in read_topic(s, s.topic_dead_letter)}

    # As long as the counts may take (settle_and_report): a worker busy with its models on a loaded
    # machine fetches the 5 MB message late, but must fetch it. The counts are reported either way.
    poll_until(dead_lettered, 120)
    report = settle_and_report("oversized and malformed during a rebalance", s, stream, redis_client, live)
    by_digest = {dl.value_sha256: dl for dl in report["letters"]}
    missing = [f"{reason} message of {len(value)} bytes on {topic}" for topic, _, value, reason in bad
               if hashlib.sha256(value).hexdigest() not in by_digest]
    if missing:  # what each worker counted, where the messages are, and the topic read once more
        where = {len(m.value()): (m.topic(), m.partition(), m.offset())
                 for topic in sorted({t for t, _, _, _ in bad}) for m in read_topic(s, topic, timeout=30)
                 if len(m.value() or b"") > 100_000}
        counted = {name: {k: v for k, v in scrape(cluster.settings_for(name).metrics_port).items()
                          if "dead_lettered" in k and v} for name in cluster.handles}
        again = len(read_topic(s, s.topic_dead_letter, timeout=30))
        pytest.fail(f"not dead-lettered within 120 s: {missing}; large messages at {where}; dead letters "
                    f"counted by the workers {counted}; on the topic {again}")
    assert_exact(report)
    for topic, _, value, reason in bad:
        dl = by_digest[hashlib.sha256(value).hexdigest()]
        assert dl.topic == topic and dl.reason == reason and dl.value_size == len(value)
        if reason == "oversized":
            assert dl.truncated and len(msgspec.json.encode(dl)) < 2 * s.max_message_bytes
    assert report["dead_lettered"] == len(bad) and report["dead_letter_duplicates"] == 0
