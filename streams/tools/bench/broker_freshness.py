"""``freshness_broker_ms``: the broker's own freshness floor at the bench's offered load.

The same load as the freshness phase (same producer settings, topic layout
and event mix, on topics of its own) read by a plain aiokafka consumer with
the worker's fetch wait; latency = produce call -> consumed. Nothing of the
product runs, so the worker's freshness cannot be lower.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Callable

from models.events import EVENT_TYPES
from streams.settings import Settings
from streams.tools.bench.freshness import offer_events
from streams.tools.bench.references import assigned_consumer
from streams.tools.bench.stats import by_window, percentiles


def broker_reference(settings: Settings) -> Settings:
    """The settings with each input topic replaced by the reference's own, ``<topic>.broker-ref``
    (the same layout: one mixed topic stays one topic)."""
    return settings.replace(**{f"topic_{t}": f"{settings.topic_for(t)}.broker-ref" for t in EVENT_TYPES})


async def _tail(settings: Settings, topics: list[str], received: dict[str, float], ready: threading.Event,
                stop: threading.Event) -> None:
    """Record when each event id arrives, from the end of ``topics`` on, until ``stop``."""
    import msgspec

    decode = msgspec.json.Decoder(dict).decode
    consumer, tps = await assigned_consumer(settings, topics, fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms)
    try:
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        ready.set()
        while not stop.is_set():
            for msgs in (await consumer.getmany(timeout_ms=100)).values():
                now = time.time()
                for m in msgs:
                    received.setdefault(decode(m.value)["event_id"], now)
    finally:
        await consumer.stop()


def measure_broker_freshness(settings: Settings, sim, rate: float, seconds: float,
                             on_progress: Callable[[int], None] | None = None) -> dict:
    """Offer ``rate`` events/s for ``seconds`` to the reference topics: the ``freshness_broker_*`` keys."""
    from streams.kafka.topics import ensure_topics

    ref = broker_reference(settings)
    ensure_topics(ref)
    received: dict[str, float] = {}
    ready, stop = threading.Event(), threading.Event()
    thread = threading.Thread(target=lambda: asyncio.run(_tail(ref, list(ref.input_topics), received, ready, stop)),
                              name="broker-freshness", daemon=True)
    thread.start()
    if not ready.wait(60):
        stop.set()
        raise RuntimeError("broker freshness reference: the consumer did not start within 60 s")
    try:
        produced, achieved = offer_events(ref, list(sim.events(int(rate * seconds))), rate, on_progress)
        deadline = time.monotonic() + 10
        while len(received) < len(produced) and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(10)
    pairs = [(t, (received[eid] - t) * 1000) for _, t, _, eid in produced if eid in received]
    out = percentiles([ms for _, ms in pairs])
    out["unmatched"] = len(produced) - len(pairs)
    return {"freshness_broker_ms": out,
            "freshness_broker_ms_by_window": by_window(pairs, produced[0][1] if produced else 0.0),
            "broker_ref_achieved_rate_eps": round(achieved, 1)}
