"""Whether a model beats the baselines of the same replay: the quality rule, and paired intervals.

The rule (docs/QUALITY.md) compares the model with the **best baseline** of
the run, the one with the highest HR@K (ties: higher MRR@K): the model's
HR@K must be at least ``LIFT`` (1.05) times that baseline's and its MRR@K at
least that baseline's, wherever that HR@K is at least ``SMALL_HR`` (0.02);
below it, where a handful of hits decide, only "not below" is asked.

Point estimates alone do not say whether a difference is more than chance.
Every model of a replay is judged on the same events, so the comparison is
paired: :func:`paired_difference` gives the mean difference of per-event
hits (or reciprocal ranks) with a 95 % interval whose variance is summed
per customer (a customer's events are not independent of each other: the
same history, the same tastes), the cluster-robust sandwich estimate with
the ``G / (G - 1)`` small-sample factor. An interval above 0 means the model
measurably beats that baseline on this log; one that contains 0 means the
log cannot tell them apart.

Where lists may show a customer's own items again, most hits can be returns
(events of an item the customer had met before), which a list hits by
listing the customer's recent items. :func:`discovery_needed` gives the
least discovery HR@K any list needs to meet the rule even if it hits every
return: a floor that holds for every model, not only the one compared.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from models.effect.statistics import Z95
from models.evaluation import Evaluation, Event, returning
from models.sets import unique_inverse

__all__ = ["LIFT", "SMALL_HR", "best_baseline", "margins", "paired_difference", "customer_clusters",
           "discovery_needed", "compare", "finite_or_none"]

LIFT = 1.05  # HR@K the rule asks of the model, relative to the best baseline's
SMALL_HR = 0.02  # below this best-baseline HR@K the rule asks only "not below"


def best_baseline(blocks: dict, part: str | None = None) -> tuple[str, dict]:
    """The baseline of ``blocks`` (name -> ``{"hr", "mrr", ...}``, or name -> part -> that) with the
    highest HR@K, ties to the higher MRR@K: ``(name, its numbers)``.

    >>> best_baseline({"pop": {"hr": 0.1, "mrr": 0.05}, "cooc": {"hr": 0.1, "mrr": 0.06}})
    ('cooc', {'hr': 0.1, 'mrr': 0.06})
    """
    pick = (lambda name: blocks[name]) if part is None else (lambda name: blocks[name][part])
    name = max(blocks, key=lambda b: (pick(b)["hr"], pick(b)["mrr"]))
    return name, pick(name)


def margins(model: dict, best: dict) -> tuple[float, float, bool]:
    """``(hr_ratio, mrr_ratio, meets)`` of a model's ``{"hr", "mrr"}`` against the best baseline's.

    >>> hr_ratio, mrr_ratio, meets = margins({"hr": 0.21, "mrr": 0.1}, {"hr": 0.2, "mrr": 0.1})
    >>> round(hr_ratio, 6), mrr_ratio, meets  # 1.05 x the HR (up to rounding), the same MRR: met
    (1.05, 1.0, True)
    >>> margins({"hr": 0.003, "mrr": 0.001}, {"hr": 0.003, "mrr": 0.0011})[2]  # small HR: not below
    False
    """
    hr_ratio = model["hr"] / best["hr"] if best["hr"] > 0 else float("inf")
    mrr_ratio = model["mrr"] / best["mrr"] if best["mrr"] > 0 else float("inf")
    need = LIFT if best["hr"] >= SMALL_HR else 1.0
    return hr_ratio, mrr_ratio, hr_ratio >= need - 1e-12 and mrr_ratio >= 1.0


def paired_difference(x: np.ndarray, y: np.ndarray, clusters: np.ndarray, z: float = Z95) -> tuple[float, float, float]:
    """Mean of ``x - y`` over paired observations and its interval (95 % by default), the variance
    summed per cluster (``clusters``: a non-negative int label per observation); ``nan`` bounds with
    fewer than two clusters.

    >>> x = np.array([1.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    >>> y = np.array([0.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    >>> d, lo, hi = paired_difference(x, y, np.array([0, 0, 1, 1, 2, 2]))
    >>> round(d, 4), round(lo, 4), round(hi, 4)
    (0.3333, 0.0067, 0.66)
    """
    d = np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64)
    n = len(d)
    if not n:
        return float("nan"), float("nan"), float("nan")
    mean = float(d.mean())
    labels, at = unique_inverse(np.asarray(clusters, dtype=np.int64))
    g = len(labels)
    if g < 2:
        return mean, float("nan"), float("nan")
    sums = np.bincount(at, d - mean, minlength=g)
    se = math.sqrt(g / (g - 1) * float(sums @ sums)) / n
    return mean, mean - z * se, mean + z * se


def customer_clusters(events: Sequence[Event], positions: np.ndarray) -> np.ndarray:
    """The customer of each judged event (``positions`` into ``events``) as an int label, for
    :func:`paired_difference`.

    >>> customer_clusters([(0, "a", "x", "click"), (1, "b", "x", "click"), (2, "a", "y", "click")],
    ...                   np.array([1, 2])).tolist()
    [0, 1]
    """
    index: dict[str, int] = {}
    return np.fromiter((index.setdefault(events[p][1], len(index)) for p in positions.tolist()),
                       dtype=np.int64, count=len(positions))


def discovery_needed(best: dict, returns: int, discovery: int) -> float:
    """The least discovery HR@K with which a list meets the rule against the ``best`` baseline
    (``{"hr", "n"}``) even if it hits every return; ``returns`` and ``discovery`` count the judged
    events of each kind (:func:`~models.evaluation.returning`). ``inf`` where no list can meet it.

    >>> round(discovery_needed({"hr": 0.4, "n": 1000}, returns=400, discovery=600), 4)  # 420 hits: 20 of 600
    0.0333
    >>> discovery_needed({"hr": 0.01, "n": 1000}, returns=0, discovery=1000)  # small HR: not below
    0.01
    """
    need = (LIFT if best["hr"] >= SMALL_HR else 1.0) * best["hr"] * best["n"]
    short = max(0.0, need - returns)
    return short / discovery if discovery else (0.0 if short <= 1e-9 else math.inf)


def compare(ev: Evaluation, model: str, events: Sequence[Event], returns: np.ndarray | None = None) -> dict:
    """``model`` of the replay ``ev`` of ``events`` against every other model of it (the baselines),
    paired on the events all of them were judged on, clustered by customer.

    Returns ``best_baseline``, ``rule_met``, ``hr_ratio`` and ``mrr_ratio`` (against the best
    baseline), per baseline ``hr_diff`` / ``mrr_diff`` (model minus baseline) with their
    ``*_ci95`` intervals ``[low, high]`` (``None`` where undefined: JSON has no NaN), and
    ``discovery_hr_needed`` (:func:`discovery_needed`, with no return hit where the rule is
    ``interacted``; ``returns``: :func:`~models.evaluation.returning` of the judged events, computed
    if not given) next to ``discovery_hr_best``, the best discovery HR@K of any list of the run.
    """
    mine = ev.models[model]
    clusters = customer_clusters(events, mine.positions)
    if returns is None:
        returns = returning(events, mine.positions)
    n_returns = int(returns.sum())
    hittable = 0 if ev.exclude == "interacted" else n_returns  # (that rule never shows a customer's own items)
    others = {name: score for name, score in ev.models.items() if name != model}
    best, numbers = best_baseline({name: score.summary() for name, score in others.items()})
    hr_ratio, mrr_ratio, met = margins(mine.summary(), numbers)
    vs = {}
    for name, score in others.items():
        hr, hr_lo, hr_hi = paired_difference(mine.rr > 0, score.rr > 0, clusters)
        mrr, mrr_lo, mrr_hi = paired_difference(mine.rr, score.rr, clusters)
        vs[name] = {"hr_diff": finite_or_none(hr), "hr_diff_ci95": [finite_or_none(hr_lo), finite_or_none(hr_hi)],
                    "mrr_diff": finite_or_none(mrr), "mrr_diff_ci95": [finite_or_none(mrr_lo), finite_or_none(mrr_hi)]}
    needed = discovery_needed(numbers, hittable, len(returns) - n_returns)
    discovery = ~returns
    best_discovery = max(score.where(discovery)["hr"] for score in ev.models.values())
    return {"best_baseline": best, "rule_met": met, "hr_ratio": finite_or_none(hr_ratio), "mrr_ratio": finite_or_none(mrr_ratio),
            "discovery_hr_needed": finite_or_none(needed), "discovery_hr_best": best_discovery, "vs": vs}


def finite_or_none(x: float) -> float | None:
    """``x``, or ``None`` where it is not finite (JSON has no NaN)."""
    return x if math.isfinite(x) else None
