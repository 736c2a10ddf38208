"""Percentiles of latency samples and of Prometheus histograms."""

from __future__ import annotations

from typing import Any

# Freshness percentiles are also reported per window of this many seconds of produce time.
WINDOW_S = 5


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Prometheus-style ``histogram_quantile`` over cumulative ``(le, count)`` pairs (linear inside a bucket)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    prev_le, prev_c = 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if le == float("inf"):
                return prev_le
            if c == prev_c:
                return le
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
        prev_le, prev_c = le, c
    return prev_le


def percentiles(values: list[float], qs=(50, 95, 99)) -> dict[str, Any]:
    """``{"p50": .., "p95": .., "p99": .., "max": .., "n": ..}`` of ``values`` (``None`` each when empty)."""
    import numpy as np

    if not values:
        return {f"p{q}": None for q in qs} | {"n": 0}
    arr = np.asarray(values)
    out: dict[str, Any] = {f"p{q}": round(float(np.percentile(arr, q)), 2) for q in qs}
    out["max"] = round(float(arr.max()), 2)
    out["n"] = len(values)
    return out


def by_window(latencies: list[tuple[float, float]], t0: float) -> list[dict]:
    """p50/p99 of ``(produce time, latency ms)`` pairs per :data:`WINDOW_S` of produce time from ``t0``:
    shows whether latency drifts while the load stays the same."""
    windows: dict[int, list[float]] = {}
    for t, ms in latencies:
        windows.setdefault(int((t - t0) // WINDOW_S), []).append(ms)
    return [{"from_s": k * WINDOW_S, **percentiles(v, (50, 99))} for k, v in sorted(windows.items())]
