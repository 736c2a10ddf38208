"""The bench's shop events: many shoppers active at once, as in a real shop (also used by ``bench-engine``)."""

from __future__ import annotations

import heapq
import time
from typing import Callable

from streams.tools.generator import ShopperSimulator

# One simulator staggers its shoppers' first sessions over users / 50 minutes,
# so a short stream from one simulator would see only a few thousand of them.
SHOPPERS_PER_SIMULATOR = 2500


def generate_events(n: int, users: int, items: int, seed: int, on_progress: Callable[[int], None] | None = None):
    """``(simulator, [(event_type, payload), ...])``: ``n`` generated events in time order.

    The shoppers are split over simulators of at most
    :data:`SHOPPERS_PER_SIMULATOR` (distinct seeds and user-id prefixes, the
    same catalogue ids and categories) whose streams are merged by time.
    The first simulator is returned for its catalogue and for more events.
    """
    n_sims = max(1, -(-users // SHOPPERS_PER_SIMULATOR))
    sims = [ShopperSimulator(n_users=-(-users // n_sims), n_items=items, n_categories=16, seed=seed + k,
                             user_prefix=f"u{k}-" if n_sims > 1 else "u") for k in range(n_sims)]
    per_sim = -(-n // n_sims)

    def keyed(k: int, sim: ShopperSimulator):
        for etype, ev in sim.events(per_sim):
            yield ev["ts"], k, etype, ev

    events = []
    for _, _, etype, ev in heapq.merge(*(keyed(k, sim) for k, sim in enumerate(sims))):
        events.append((etype, ev))
        if on_progress and len(events) % 10_000 == 0:
            on_progress(10_000)
        if len(events) >= n:
            break
    if on_progress and len(events) % 10_000:
        on_progress(len(events) % 10_000)
    return sims[0], events


def stamp_now(events: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """The same events in the same order, stamped with the current wall clock (ms, increasing):
    the worker's contract checks reject event times far from now."""
    base = int(time.time() * 1000) - len(events)
    return [(etype, {**payload, "ts": base + k}) for k, (etype, payload) in enumerate(events)]
