"""Reading a worker's ``/metrics``: one parser for the tools and the tests."""

from __future__ import annotations

import urllib.request


def scrape(port: int) -> dict[str, float]:
    """``/metrics`` of one worker as ``{sample name with labels: value}`` ({} when not up)."""
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in body.splitlines():
        if not line or line[0] == "#":
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            continue
    return out


def metric_sum(samples: dict[str, float], name: str) -> float:
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


def histogram_buckets(samples: dict[str, float], name: str) -> list[tuple[float, float]]:
    """Cumulative ``(upper bound, count)`` pairs of histogram ``name``."""
    out = []
    prefix = f'{name}_bucket{{le="'
    for k, v in samples.items():
        if k.startswith(prefix):
            le = k[len(prefix):].split('"', 1)[0]
            out.append((float("inf") if le == "+Inf" else float(le), v))
    return sorted(out)
