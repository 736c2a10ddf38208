"""Memory per customer of the models and profiles, at the margin, in one process (no broker, no Redis).

Customers arrive one after another (``--active`` of them shopping at any time, each doing
``--events-per-customer`` events on a Zipf-popular catalogue of ``--items`` items in 16 categories)
and are processed by :meth:`models.engine.PersonalisationEngine.process` in micro-batches of
``--batch``, with their profiles kept as encoded bytes in the worker's own
:class:`~streams.state.store.ProfileStore`, as a worker keeps them. The resident set size is read
(after a full garbage collection) at ten points, with the item side's own memory (:func:`item_side_bytes`:
its arrays, and the co-visitation rows' Python dicts with their int objects). The margin is the slope
over the second half: what one more customer costs, their events' growth of the item side
excluded (``margin_kib_per_customer``; the item side grows with items and saturates at
``2 x max_neighbors`` co-visits per item, whatever the customers) and included
(``margin_kib_per_customer_with_item_growth``). ``--warm`` bounds the customers whose own model state
stays in memory (``RECOSTREAM_WARM_CUSTOMERS``; beyond it a customer costs their profile). Also
reported: the mean encoded profile, the customers whose model state is held in memory, and the
co-visitation entries.

    .venv/bin/python benchmarks/memory.py --customers 100000 --json

Progress goes to stderr; ``--json`` prints one JSON object to stdout.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from types import SimpleNamespace

import numpy as np

from models.engine import PersonalisationEngine
from models.profile import encode_profile
from streams.state.store import PartitionState, ProfileStore

CATEGORIES = 16


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def stream(customers: int, per_customer: int, active: int, items: int, seed: int):
    """``(event, position)`` pairs: customers in arrival order, ``active`` of them interleaved."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, items + 1, dtype=np.float64)
    popularity = 1.0 / ranks
    popularity /= popularity.sum()
    types = np.array(["browse", "click", "purchase"])
    n = customers * per_customer
    # Event k belongs to customer k // per_customer shuffled within windows of `active` customers.
    owner = np.repeat(np.arange(customers), per_customer)
    for lo in range(0, n, active * per_customer):
        window = owner[lo:lo + active * per_customer]
        owner[lo:lo + active * per_customer] = window[rng.permutation(len(window))]
    item = rng.choice(items, size=n, p=popularity)
    kind = rng.choice(3, size=n, p=[0.7, 0.25, 0.05])
    t0 = 1.7e9
    for k in range(n):
        user, i = int(owner[k]), int(item[k])
        yield SimpleNamespace(event_id=f"e{k}", user_id=f"c{user}", item_id=f"i{i}", type=str(types[kind[k]]),
                              ts=t0 + k * 0.01, category=f"cat{i % CATEGORIES}", price=10.0 if kind[k] == 2 else None,
                              quantity=1, order_id=None, rec_id=None), (("events", 0), k)


def item_side_bytes(engine: PersonalisationEngine) -> int:
    """What the ranker's item side holds: every numpy array of the catalogue, popularity, co-visits,
    successors and item factors, plus the co-visitation rows' slot dicts: their tables, and an int
    object per value (a slab position; the keys are the rows' own int objects, shared)."""
    ranker = engine.ranker
    total = 0
    seen: set[int] = set()

    def arrays(obj) -> int:
        n = 0
        for value in vars(obj).values():
            if isinstance(value, np.ndarray) and id(value) not in seen:
                seen.add(id(value))
                n += value.nbytes
        return n

    for matrix in (ranker.items.covisit, ranker.items.successors):
        rows = matrix.rows
        total += arrays(matrix) + arrays(rows)
        total += sum(sys.getsizeof(slots) for slots in rows._slots) + 28 * rows.nnz
        total += 8 * (len(rows._start) + len(rows._cap))
    total += arrays(ranker.items.popularity) + arrays(ranker.catalog)
    if ranker.mf is not None:
        total += ranker.mf.item_factors.nbytes
    return total


def run(customers: int, per_customer: int, active: int, items: int, batch: int, seed: int, warm: int,
        progress=lambda done, total: None) -> dict:
    engine = PersonalisationEngine()
    engine.warm_customers = warm
    for i in range(items):
        engine.upsert_item(f"i{i}", f"cat{i % CATEGORIES}", True)
    store = ProfileStore()
    store.adopt(0, PartitionState(gen=0))
    total = customers * per_customer
    marks = [round(total * f / 10) for f in range(1, 11)]
    points = []
    chunk, positions = [], []
    done = 0
    began = time.perf_counter()

    def flush():
        nonlocal done
        out = engine.process(chunk, store, positions=positions)
        for user, profile in out.profiles.items():
            store.put(user, encode_profile(profile), 0)
        done += len(chunk)
        chunk.clear()
        positions.clear()
        if marks and done >= marks[0]:
            marks.pop(0)
            gc.collect()
            points.append((len(store), rss_mib(), item_side_bytes(engine) / 2**20))
        progress(done, total)

    for event, position in stream(customers, per_customer, active, items, seed):
        chunk.append(event)
        positions.append(position)
        if len(chunk) == batch:
            flush()
    if chunk:
        flush()
    (c0, r0, i0), (c1, r1, i1) = points[len(points) // 2 - 1], points[-1]
    sizes = [len(store.raw(u)) for u in store]
    # What the store holds per customer, exactly: the key, the encoded profile, the dict's slot.
    held = sum(sys.getsizeof(u) + sys.getsizeof(store.raw(u)) for u in store) + sum(
        sys.getsizeof(state.profiles) for state in store.partitions.values())
    covisit = engine.ranker.items.covisit
    return {
        "customers": len(store), "events": total, "events_per_customer": per_customer, "items": items,
        "warm_bound": warm,
        "seconds": round(time.perf_counter() - began, 1),
        "rss_mib": [round(r, 1) for _, r, _ in points], "customers_at": [c for c, _, _ in points],
        "item_side_mib": [round(i, 1) for _, _, i in points],
        "margin_kib_per_customer": round((r1 - r0 - (i1 - i0)) * 1024 / (c1 - c0), 3),
        "margin_kib_per_customer_with_item_growth": round((r1 - r0) * 1024 / (c1 - c0), 3),
        "profile_bytes_mean": round(float(np.mean(sizes)), 1),
        "store_kib_per_customer": round(held / 1024 / len(store), 3),
        "customers_with_model_state": engine.ranker.n_users,
        "covisit_entries": covisit.rows.nnz,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--customers", type=int, default=100_000, help="customers (default 100000)")
    ap.add_argument("--events-per-customer", type=int, default=8, help="events per customer (default 8)")
    ap.add_argument("--active", type=int, default=2000, help="customers shopping at once (default 2000)")
    ap.add_argument("--items", type=int, default=20_000, help="catalogue size (default 20000)")
    ap.add_argument("--batch", type=int, default=1000, help="events per micro-batch (default 1000)")
    ap.add_argument("--warm", type=int, default=100_000,
                    help="customers whose model state stays in memory (RECOSTREAM_WARM_CUSTOMERS; default 100000)")
    ap.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    ap.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    a = ap.parse_args(argv)

    def progress(done, total):
        if done % (100 * a.batch) == 0 or done == total:
            print(f"\r{done:,}/{total:,} events", end="", file=sys.stderr, flush=True)

    result = run(a.customers, a.events_per_customer, a.active, a.items, a.batch, a.seed, a.warm, progress)
    print(file=sys.stderr)
    print(json.dumps(result) if a.json else "\n".join(f"{k}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
