"""The bench's result: one JSON-friendly dict with every number of a run, and its table on a console."""

from __future__ import annotations

import os
import platform
from typing import Any

from streams.settings import Settings
from streams.tools.scrape import metric_sum


def _rounded(value: float | None) -> float | None:
    return round(value, 1) if value else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def build_report(settings: Settings, plan, shop: dict, refs: dict, measured: dict, external: dict) -> dict[str, Any]:
    """Every number of the run, under the keys ``recostream bench --json`` prints.

    ``plan`` is the run's :class:`~streams.tools.bench.run.Plan`; ``shop`` what
    was pre-produced; ``refs`` the references (empty without them);
    ``measured`` the workers' phases.
    """
    thr, fresh, broker = measured["throughput"], measured["freshness"], refs.get("broker", {})
    final = measured["final_samples"]
    bare, faust, raw = (refs[k]["eps"] if k in refs else None for k in ("bare_loop", "faust_default", "raw"))
    worker_settings = {"batch_max_events": settings.batch_max_events, "batch_max_wait_s": settings.batch_max_wait_s,
                       "top_n": settings.top_n, "checkpoint_interval_s": settings.checkpoint_interval_s}
    if plan.free_models:  # only then: a default run's keys stay the same
        worker_settings["models"] = "free (streams/tools/bench/free_models.py): an upper bound"
    return {
        "events": plan.n_events,
        "workers": plan.workers,
        "partitions": settings.partitions,
        "generated_users": plan.users,
        "generated_items": plan.items,
        "distinct_users_in_events": shop["distinct_users"],
        "distinct_items_in_events": shop["distinct_items"],
        "throughput_eps": round(thr["eps"], 1),
        "throughput_seconds": thr["seconds"],
        "bare_loop_eps": _rounded(bare),
        "faust_default_eps": _rounded(faust),
        "raw_consume_eps": _rounded(raw),
        "throughput_vs_bare": _ratio(thr["eps"], bare),
        "bare_loop_vs_faust_default": _ratio(bare, faust),
        "freshness_ms": fresh.get("freshness_ms"),
        "freshness_ms_by_window": fresh.get("freshness_ms_by_window"),
        "freshness_worker_histogram_ms": fresh.get("freshness_worker_histogram_ms"),
        "freshness_worker_cpu_cores": fresh.get("freshness_worker_cpu_cores"),
        "freshness_checkpoints": fresh.get("freshness_checkpoints"),
        # The same load read by a plain consumer, no product: the broker's floor.
        "freshness_broker_ms": broker.get("freshness_broker_ms"),
        "freshness_broker_ms_by_window": broker.get("freshness_broker_ms_by_window"),
        "offered_rate_eps": plan.rate if fresh else None,
        "achieved_rate_eps": fresh.get("achieved_rate_eps"),
        "peak_rss_mb": round(max(measured["peak_rss"]), 1),
        "peak_rss_mb_per_worker": [round(r, 1) for r in measured["peak_rss"]],
        "rss_mb_at_end": [None if r is None else round(r, 1) for r in measured["rss_now"]],
        "users_in_state": int(sum(metric_sum(s, "recostream_users") for s in final)),
        "items_in_state": int(max(metric_sum(s, "recostream_items") for s in final)),
        "processed": thr["processed"],
        "duplicates": thr["duplicates"],
        "dead_lettered": thr["dead_lettered"],
        "recommendations_written": thr["recommendations_written"],
        "preproduce_eps": round(plan.n_events / shop["produce_s"], 1) if shop["produce_s"] else None,
        "worker_settings": worker_settings,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "services": "external" if any(external.values()) else "embedded"},
    }


def print_report(console, r: dict) -> None:
    """The main numbers of a report as a rich table."""
    from rich.table import Table

    title = f"recostream bench: {r['events']} events, {r['workers']} worker(s), {r['partitions']} partitions"
    if "models" in r["worker_settings"]:
        title += ", FREE MODELS (upper bound)"
    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("worker throughput (events/s)", r["throughput_eps"]),
        ("the worker's loop doing nothing", r["bare_loop_eps"]),
        ("no-op Faust agent, Faust defaults", r["faust_default_eps"]),
        ("raw aiokafka consumer", r["raw_consume_eps"]),
        ("throughput / the bare loop", r["throughput_vs_bare"]),
    ]
    f = r.get("freshness_ms") or {}
    rows += [(f"freshness p{q} (ms) at {r['offered_rate_eps']} ev/s", f.get(f"p{q}")) for q in (50, 95, 99)]
    rows += [(f"  p99 of events produced from {w['from_s']} s", w["p99"]) for w in r.get("freshness_ms_by_window") or ()]
    rows += [("peak worker RSS (MiB)", r["peak_rss_mb"]),
             ("users / items in state", f"{r['users_in_state']} / {r['items_in_state']}")]
    for name, value in rows:
        table.add_row(name, "-" if value is None else str(value))
    console.print(table)
