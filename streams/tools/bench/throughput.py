"""``throughput_eps``: pre-produced events processed by the worker processes, timed on their own metrics."""

from __future__ import annotations

import time
from typing import Callable

import click

from streams.tools.bench.workers import Workers
from streams.tools.scrape import metric_sum

# Polled fast until the workers start (the start time is estimated from the
# polls), then slowly: every scrape costs a worker a full exposition under the
# GIL (at 20 scrapes/s, ~9 % of its samples), and the end time comes from the
# worker's own timestamp, not from a poll.
POLL_START_S = 0.05
POLL_RUNNING_S = 0.5


def measure_throughput(workers: Workers, expect: int, timeout: float,
                       on_progress: Callable[[int], None] | None = None) -> dict:
    """Events/s from the first consumed event to the last batch's Redis write, once ``expect`` events are done.

    The start is the midpoint between the last poll that saw nothing consumed
    and the first that saw something; the end is
    ``recostream_model_last_update_timestamp_seconds``, which a worker sets
    after each batch's Redis write.
    """
    total = workers.total
    last_zero = time.time()
    t_start = None
    seen = 0
    deadline = time.monotonic() + timeout
    while True:
        workers.check_alive()
        now = time.time()
        samples = workers.scrape_all()
        consumed = total(samples, "recostream_events_consumed_total")
        if consumed <= 0 and t_start is None:
            last_zero = now
        elif t_start is None:
            t_start = (last_zero + now) / 2
        if on_progress and consumed > seen:
            on_progress(int(consumed - seen))
            seen = consumed
        done = (total(samples, "recostream_events_processed_total")
                + total(samples, "recostream_events_duplicate_total")
                + total(samples, "recostream_events_dead_lettered_total"))
        if consumed >= expect and done >= expect:
            break
        if time.monotonic() > deadline:
            raise click.ClickException(f"workers processed {done:.0f}/{expect} events in {timeout:.0f}s")
        time.sleep(POLL_START_S if t_start is None else POLL_RUNNING_S)
    t_end = max(metric_sum(s, "recostream_model_last_update_timestamp_seconds") for s in samples)
    span = max(t_end - t_start, 1e-9)
    return {
        "seconds": round(span, 3),
        "eps": expect / span,
        "consumed": int(consumed),
        "processed": int(total(samples, "recostream_events_processed_total")),
        "duplicates": int(total(samples, "recostream_events_duplicate_total")),
        "dead_lettered": int(total(samples, "recostream_events_dead_lettered_total")),
        "recommendations_written": int(total(samples, "recostream_recommendations_written_total")),
    }
