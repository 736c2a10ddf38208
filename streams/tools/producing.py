"""The `produce` command's two sources: the shopper simulator and CSV files."""

from __future__ import annotations

import time
from pathlib import Path

from rich.progress import Progress

from streams.contract import epoch_ms
from streams.kafka.produce import make_producer, publish_catalogue, publish_events
from streams.settings import Settings
from streams.tools.generator import ShopperSimulator


def _progress() -> Progress:
    from rich.console import Console

    return Progress(console=Console(stderr=True), transient=True)


def produce_generated(settings: Settings, *, n_events: int, rate: float | None, users: int, items: int,
                      seed: int, live_ts: bool) -> dict:
    sim = ShopperSimulator(n_users=users, n_items=items, seed=seed)
    producer = make_producer(settings)
    n_items = publish_catalogue(producer, settings, sim.catalogue())
    started = time.monotonic()
    with _progress() as progress:
        task = progress.add_task("producing events", total=n_events)
        n = publish_events(producer, settings, sim.events(n_events), rate=rate, live_ts=live_ts,
                           on_progress=lambda k: progress.advance(task, k))
    elapsed = time.monotonic() - started
    return {"events": n, "items": n_items, "users": users, "seconds": round(elapsed, 3),
            "events_per_s": round(n / elapsed, 1) if elapsed else None}


def produce_csv(settings: Settings, path: Path, *, rate: float | None) -> dict:
    """Publish a CSV event log (the replay format) to the input topics.

    Each row's ``event_id`` is derived from the file name and the row's
    position in time order, so publishing the same file twice is deduplicated
    by the workers rather than double-counted. A ``category`` column gives
    each event its item's category, as ``recostream replay`` reads it.
    """
    from streams.tools.replay import read_events

    bad: list[str] = []
    categories: dict[str, str] = {}
    events, n_bad = read_events(str(path), on_bad_row=lambda line, why: bad.append(f"line {line}: {why}"),
                                with_price=True, categories=categories)
    producer = make_producer(settings)
    started = time.monotonic()

    def pairs():
        for i, (ts, user, item, event_type, price) in enumerate(events):
            payload = {"event_id": f"{path.name}:{i}", "user_id": user, "item_id": item, "ts": epoch_ms(ts)}
            if price is not None:
                payload["price"] = price
            if item in categories:
                payload["category"] = categories[item]
            yield event_type, payload

    with _progress() as progress:
        task = progress.add_task(f"producing {path.name}", total=len(events))
        n = publish_events(producer, settings, pairs(), rate=rate, on_progress=lambda k: progress.advance(task, k))
    elapsed = time.monotonic() - started
    return {"events": n, "bad_rows": n_bad, "bad_row_examples": bad[:20], "seconds": round(elapsed, 3)}
