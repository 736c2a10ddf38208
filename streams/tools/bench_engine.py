"""``recostream bench-engine``: cost of the pure model code per event, without Kafka or Redis.

Generates the event mix of ``recostream bench`` (its
:func:`~streams.tools.bench.events.generate_events`: simulators of 2,500 shoppers merged by
time, a 20,000-item catalogue in 16 categories, Zipf popularity) and runs
:meth:`models.engine.PersonalisationEngine.process` over it in micro-batches,
the way a worker does:

* the catalogue is upserted first (the worker follows the ``items`` topic);
* profiles are kept as encoded bytes in a dict and decoded on read through the
  worker's own :class:`~streams.state.store.ProfileStore`; the updated
  profiles of each batch are encoded back (``encode_profile``);
* every event carries a source position (topic-partition, offset), so the
  exactly-once bookkeeping runs as in production.

Reported per event: ``learn_us`` (dedupe, profile updates including decoding,
model learning, live evaluation), ``segments_us``, ``recommend_us`` (top-N of
every touched shopper, batched), ``encode_us`` and ``total_us`` (all of it,
wall clock); plus shoppers per batch and events/s. Phase times come from the
engine's own ``timings`` counters.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Callable

import click

PARTITIONS = 4


def to_events(raw: list[tuple[str, dict]]) -> tuple[list[Any], list[tuple[tuple[str, int], int]]]:
    """Generated ``(type, payload)`` pairs as validated events (``ts`` in seconds) and their source positions.

    Events go to the topic of their type, partitioned by user id (as the
    producer keys them), with consecutive offsets per topic-partition.
    """
    from models.sharded import shard_of
    from streams.contract import Event

    events, positions = [], []
    offsets: dict[tuple[str, int], int] = {}
    for etype, p in raw:
        part = (etype, shard_of(p["user_id"], PARTITIONS))
        offset = offsets.get(part, 0)
        offsets[part] = offset + 1
        events.append(Event(event_id=p["event_id"], user_id=p["user_id"], item_id=p["item_id"], type=etype,
                            ts=p["ts"] / 1000.0, session_id=p.get("session_id"), category=p.get("category"),
                            price=p.get("price"), quantity=p.get("quantity", 1), order_id=p.get("order_id")))
        positions.append((part, offset))
    return events, positions


def run_bench_engine(n_events: int = 60_000, batch: int = 1000, users: int = 50_000, items: int = 20_000,
                     seed: int = 7, on_generated: Callable[[int], None] | None = None,
                     on_processed: Callable[[int], None] | None = None) -> dict:
    """Generate the events, process them in micro-batches and return the report (a JSON-friendly dict)."""
    from models.engine import PersonalisationEngine
    from models.profile import encode_profile
    from streams.settings import Settings
    from streams.state.store import PartitionState, ProfileStore
    from streams.tools.bench.events import generate_events

    sim, raw = generate_events(n_events, users, items, seed, on_generated)
    events, positions = to_events(raw)
    del raw
    s = Settings.from_env()
    engine = PersonalisationEngine(top_n=s.top_n, exclude=s.exclude, n_segments=s.n_segments,
                                   dedupe_window=s.dedupe_window, seed=s.seed)
    for item in sim.catalogue():
        engine.upsert_item(item["item_id"], item["category"], item["available"])

    profiles = ProfileStore()
    profiles.adopt(0, PartitionState(gen=0))
    clock = time.perf_counter
    process_s = encode_s = 0.0
    shoppers = learned = duplicates = recommended = n_batches = 0
    learned_by_type: dict[str, int] = {}
    for start in range(0, len(events), batch):
        chunk = events[start:start + batch]
        t0 = clock()
        out = engine.process(chunk, profiles, positions=positions[start:start + batch])
        t1 = clock()
        for user, profile in out.profiles.items():
            profiles.put(user, encode_profile(profile), 0)
        t2 = clock()
        process_s += t1 - t0
        encode_s += t2 - t1
        n_batches += 1
        shoppers += len(out.profiles)
        recommended += len(out.recommendations)
        learned += out.learned
        duplicates += out.duplicates
        for etype, k in out.learned_by_type.items():
            learned_by_type[etype] = learned_by_type.get(etype, 0) + k
        if on_processed:
            on_processed(len(chunk))

    n = len(events)
    t = engine.timings
    total_s = process_s + encode_s

    def per_event(seconds: float) -> float:
        return round(1e6 * seconds / n, 2) if n else 0.0

    return {
        "events": n,
        "batch": batch,
        "batches": n_batches,
        "generated_users": users,
        "generated_items": items,
        "catalogue_items": engine.ranker.n_items,
        "distinct_users": len(profiles),
        "shoppers": shoppers,
        "shoppers_per_batch": round(shoppers / n_batches, 1) if n_batches else 0.0,
        "recommended": recommended,
        "learned": learned,
        "learned_by_type": learned_by_type,
        "duplicates": duplicates,
        "learn_us_per_event": per_event(t["learn"]),
        "segments_us_per_event": per_event(t["segments"]),
        "recommend_us_per_event": per_event(t["recommend"]),
        "recommend_us_per_shopper": round(1e6 * t["recommend"] / shoppers, 2) if shoppers else 0.0,
        "encode_us_per_event": per_event(encode_s),
        "total_us_per_event": per_event(total_s),
        "events_per_s": round(n / total_s, 1) if total_s > 0 else None,
        "seconds": round(total_s, 3),
    }


@click.command("bench-engine")
@click.option("--events", "n_events", default=60_000, show_default=True, type=click.IntRange(min=1),
              help="Generated events to process.")
@click.option("--batch", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Events per micro-batch (one engine.process call).")
@click.option("--users", default=50_000, show_default=True, type=click.IntRange(min=1), help="Simulated shoppers.")
@click.option("--items", "n_items", default=20_000, show_default=True, type=click.IntRange(min=16),
              help="Catalogue size.")
@click.option("--seed", default=7, show_default=True, help="Simulator seed.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object to stdout.")
def bench_engine(n_events: int, batch: int, users: int, n_items: int, seed: int, as_json: bool) -> None:
    """Benchmark the pure engine (models/) on the bench's event mix: us per event by phase.

    No broker, no Redis: events are generated as `recostream bench` generates
    them and fed to PersonalisationEngine.process in micro-batches of --batch,
    with profiles kept as encoded bytes, as the worker keeps them. Progress
    goes to stderr; --json prints one JSON object to stdout.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    err = Console(stderr=True)
    with Progress(TextColumn("{task.description:<20}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=False) as progress:
        gen = progress.add_task("generating events", total=n_events)
        proc = progress.add_task("processing", total=n_events)
        result = run_bench_engine(n_events, batch, users, n_items, seed,
                                  on_generated=lambda k: progress.advance(gen, k),
                                  on_processed=lambda k: progress.advance(proc, k))
    if as_json:
        click.echo(json.dumps(result))
        return
    from rich.table import Table

    table = Table(title=f"recostream bench-engine: {result['events']} events, batches of {result['batch']}, "
                        f"{result['shoppers_per_batch']} shoppers per batch")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key in ("learn_us_per_event", "segments_us_per_event", "recommend_us_per_event", "recommend_us_per_shopper",
                "encode_us_per_event", "total_us_per_event", "events_per_s"):
        table.add_row(key.replace("_", " "), str(result[key]))
    (Console() if sys.stdout.isatty() else err).print(table)
