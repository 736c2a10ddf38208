"""The effect report of an experiment: per arm metrics, treatment against control, the sample-ratio check.

:func:`experiment_report` turns an experiment and its
:class:`~models.effect.counts.EffectCounts` (summed over every day) into
plain, JSON-ready data; :func:`render_report` prints it as a table.

Definitions (per arm; counts from :class:`~models.effect.counts.Counts`)
--------------------------------------------------------------------------
``customers``
    Distinct customers exposed: with at least one impression under the arm.
``ctr``
    ``clicked_impressions / impressions``: the share of impressions with at
    least one attributed click. A proportion (one trial per impression), so
    that its interval and test are defined; ``clicks`` (every attributed
    click, at most one per item and impression) is reported beside it.
``conversion``
    ``converters / customers``: the share of exposed customers with at least
    one attributed purchase. The customer is the unit of randomisation, so
    this is the primary metric and ``p_value`` is its test.
``revenue_per_customer``
    Attributed revenue / exposed customers.
``assigned_customers``, ``assigned_conversion``, ``assigned_revenue_per_customer``
    The same over every customer *assigned* to the arm who had any event,
    and *any* purchase, attributed or not (intention to treat). This is the
    only way to measure the holdout, which sees no list: its ``customers``,
    ``impressions``, ``ctr`` and ``conversion`` are 0 or ``null``, its
    ``assigned_*`` fields are the baseline of "no personalised list", and
    ``vs_holdout`` compares every variant with it on ``assigned_conversion``.

Every p-value is a two-sided, pooled two-proportion z-test at a fixed
horizon: valid only when read once at the sample size planned in advance.

Examples
--------
>>> from models.effect.counts import EffectCounts, Increment
>>> from models.effect.experiment import Experiment
>>> exp = Experiment.from_mapping({"name": "e1", "salt": "s", "variants": [
...     {"name": "pop", "share": 0.5, "strategy": "popularity"},
...     {"name": "rank", "share": 0.5, "strategy": "ranker"}]})
>>> counts = EffectCounts()
>>> counts.apply([Increment("pop", 0, "customers", 100), Increment("pop", 0, "converters", 5),
...               Increment("rank", 0, "customers", 100), Increment("rank", 0, "converters", 8)])
>>> r = experiment_report(exp, counts)
>>> r["control"], r["variants"]["rank"]["conversion"], round(r["comparisons"]["rank"]["conversion_lift"], 2)
('pop', 0.08, 0.6)
"""

from __future__ import annotations

import math
from typing import Any

from models.effect.counts import Counts, EffectCounts, day_label
from models.effect.experiment import HOLDOUT, UNKNOWN, Experiment
from models.effect.statistics import relative_lift, srm_p_value, two_proportion_p_value, wilson_interval

__all__ = ["SRM_ALARM", "METHOD", "experiment_report", "render_report"]

#: Below this sample-ratio p-value the split is treated as broken (the usual threshold).
SRM_ALARM = 0.001

#: How the report's numbers are computed, carried in every report.
METHOD = {
    "ci95": "Wilson score interval, 95 %",
    "p_value": ("two-sided pooled two-proportion z-test, fixed horizon: valid only when read once, "
                "at the sample size planned before the start; repeated looks inflate false positives"),
    "srm_p_value": ("chi-square goodness of fit of assigned customers per arm against the configured shares; "
                    f"below {SRM_ALARM} the split is broken and no other number can be trusted"),
    "ctr": "impressions with at least one attributed click / impressions",
    "conversion": "exposed customers with at least one attributed purchase / exposed customers",
    "assigned_conversion": "assigned customers with any purchase / assigned customers with any event",
}


def _num(x: float) -> float | None:
    return None if math.isnan(x) else x


def _rate(k: int, n: int) -> float | None:
    return k / n if n else None


def _ci(k: int, n: int) -> list[float] | None:
    return list(wilson_interval(k, n)) if n else None


def _arm(c: Counts, strategy: str | None, share: float | None) -> dict[str, Any]:
    revenue = c.revenue_cents / 100
    all_revenue = c.all_revenue_cents / 100
    return {
        "strategy": strategy,
        "share": share,
        "customers": c.customers,
        "impressions": c.impressions,
        "items_shown": c.items_shown,
        "clicks": c.clicks,
        "clicked_impressions": c.clicked_impressions,
        "ctr": _rate(c.clicked_impressions, c.impressions),
        "ctr_ci95": _ci(c.clicked_impressions, c.impressions),
        "purchases": c.purchases,
        "converters": c.converters,
        "conversion": _rate(c.converters, c.customers),
        "conversion_ci95": _ci(c.converters, c.customers),
        "revenue": revenue,
        "revenue_per_customer": revenue / c.customers if c.customers else None,
        "assigned_customers": c.assigned_customers,
        "buyers": c.buyers,
        "assigned_conversion": _rate(c.buyers, c.assigned_customers),
        "assigned_conversion_ci95": _ci(c.buyers, c.assigned_customers),
        "all_purchases": c.all_purchases,
        "all_revenue": all_revenue,
        "assigned_revenue_per_customer": all_revenue / c.assigned_customers if c.assigned_customers else None,
    }


def _lift(a: dict[str, Any], b: dict[str, Any], key: str) -> float | None:
    if a[key] is None or b[key] is None:
        return None
    return _num(relative_lift(a[key], b[key]))


def _compare(t: Counts, c: Counts, tr: dict[str, Any], cr: dict[str, Any], control: str) -> dict[str, Any]:
    return {
        "control": control,
        "ctr_lift": _lift(tr, cr, "ctr"),
        "ctr_p_value": _num(two_proportion_p_value(t.clicked_impressions, t.impressions,
                                                   c.clicked_impressions, c.impressions)),
        "conversion_lift": _lift(tr, cr, "conversion"),
        "p_value": _num(two_proportion_p_value(t.converters, t.customers, c.converters, c.customers)),
        "revenue_per_customer_lift": _lift(tr, cr, "revenue_per_customer"),
        "assigned_conversion_lift": _lift(tr, cr, "assigned_conversion"),
        "assigned_p_value": _num(two_proportion_p_value(t.buyers, t.assigned_customers,
                                                        c.buyers, c.assigned_customers)),
    }


def _against_holdout(t: Counts, h: Counts, tr: dict[str, Any], hr: dict[str, Any]) -> dict[str, Any]:
    return {
        "assigned_conversion_lift": _lift(tr, hr, "assigned_conversion"),
        "p_value": _num(two_proportion_p_value(t.buyers, t.assigned_customers, h.buyers, h.assigned_customers)),
        "assigned_revenue_per_customer_lift": _lift(tr, hr, "assigned_revenue_per_customer"),
    }


def experiment_report(experiment: Experiment, counts: EffectCounts) -> dict[str, Any]:
    """The report of an experiment over every counted day, as JSON-ready data.

    Parameters
    ----------
    experiment
        The experiment's settings (arms, shares, control).
    counts
        Its counters; arms the experiment does not know (a variant since
        removed) are left out, ``unknown`` is shown when it counted anything.

    Returns
    -------
    dict
        ``{"experiment", "control", "days", "variants": {arm: {...}},
        "comparisons": {treatment: {...}}, "vs_holdout": {variant: {...}},
        "srm_p_value", "srm_alarm", "method"}``; undefined numbers are ``None``.

    Examples
    --------
    >>> from models.effect.counts import EffectCounts
    >>> exp = Experiment.from_mapping({"name": "e1", "salt": "s", "holdout": 0.1, "variants": [
    ...     {"name": "a", "share": 0.9, "strategy": "ranker"}]})
    >>> r = experiment_report(exp, EffectCounts())
    >>> list(r["variants"]), r["comparisons"], r["srm_p_value"], r["days"]
    (['a', 'holdout'], {}, None, None)
    """
    totals = {arm: counts.total(arm) for arm in (*experiment.arms, UNKNOWN)}
    variants: dict[str, dict[str, Any]] = {}
    for v in experiment.variants:
        variants[v.name] = _arm(totals[v.name], v.strategy, v.share)
    if experiment.holdout > 0:
        variants[HOLDOUT] = _arm(totals[HOLDOUT], None, experiment.holdout)
    if UNKNOWN in counts.arms():
        variants[UNKNOWN] = _arm(totals[UNKNOWN], None, None)
    control = experiment.control
    comparisons = {v.name: _compare(totals[v.name], totals[control], variants[v.name], variants[control], control)
                   for v in experiment.variants if v.name != control}
    vs_holdout = {}
    if experiment.holdout > 0:
        vs_holdout = {v.name: _against_holdout(totals[v.name], totals[HOLDOUT], variants[v.name], variants[HOLDOUT])
                      for v in experiment.variants}
    shares = experiment.shares
    srm = _num(srm_p_value([totals[a].assigned_customers for a in shares], list(shares.values())))
    days = counts.days()
    return {
        "experiment": experiment.name,
        "control": control,
        "days": {"first": day_label(days[0]), "last": day_label(days[-1])} if days else None,
        "variants": variants,
        "comparisons": comparisons,
        "vs_holdout": vs_holdout,
        "srm_p_value": srm,
        "srm_alarm": srm is not None and srm < SRM_ALARM,
        "method": dict(METHOD),
    }


def _pct(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x * 100:+.1f}%" if signed else f"{x * 100:.2f}%"


def _with_ci(rate: float | None, ci: list[float] | None) -> str:
    if rate is None or ci is None:
        return "-"
    return f"{rate * 100:.2f}% [{ci[0] * 100:.2f}, {ci[1] * 100:.2f}]"


def _p(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def _money(x: float | None) -> str:
    return "-" if x is None else f"{x:,.2f}"


_COLUMNS = ("arm", "customers", "impressions", "clicks", "ctr [95% CI]", "purchases", "conversion [95% CI]",
            "rev/customer", "assigned", "buyers", "assigned conv.")


def render_report(report: dict[str, Any]) -> str:
    """The report as a plain-text table, comparisons and the fixed-horizon warning below it.

    Examples
    --------
    >>> from models.effect.counts import EffectCounts, Increment
    >>> exp = Experiment.from_mapping({"name": "e1", "salt": "s", "variants": [
    ...     {"name": "a", "share": 0.5, "strategy": "popularity"}, {"name": "b", "share": 0.5, "strategy": "ranker"}]})
    >>> c = EffectCounts()
    >>> c.apply([Increment("a", 0, "impressions", 10), Increment("a", 0, "clicked_impressions", 1)])
    >>> text = render_report(experiment_report(exp, c))
    >>> "10.00% [1.79, 40.42]" in text, "fixed horizon" in text
    (True, True)
    """
    rows = [_COLUMNS]
    for name, m in report["variants"].items():
        rows.append((name, f"{m['customers']:,}", f"{m['impressions']:,}", f"{m['clicks']:,}",
                     _with_ci(m["ctr"], m["ctr_ci95"]), f"{m['purchases']:,}",
                     _with_ci(m["conversion"], m["conversion_ci95"]), _money(m["revenue_per_customer"]),
                     f"{m['assigned_customers']:,}", f"{m['buyers']:,}", _pct(m["assigned_conversion"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    lines = []
    days = report["days"]
    span = f"{days['first']} to {days['last']}" if days else "no data"
    lines.append(f"experiment {report['experiment']} ({span}), control: {report['control']}")
    for r in rows:
        cells = [cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    for name, c in report["comparisons"].items():
        lines.append(f"{name} vs {c['control']}: conversion {_pct(c['conversion_lift'], True)} (p {_p(c['p_value'])}), "
                     f"ctr {_pct(c['ctr_lift'], True)} (p {_p(c['ctr_p_value'])}), "
                     f"revenue/customer {_pct(c['revenue_per_customer_lift'], True)}, "
                     f"assigned conversion {_pct(c['assigned_conversion_lift'], True)} (p {_p(c['assigned_p_value'])})")
    for name, c in report["vs_holdout"].items():
        lines.append(f"{name} vs holdout: assigned conversion {_pct(c['assigned_conversion_lift'], True)} "
                     f"(p {_p(c['p_value'])}), assigned revenue/customer "
                     f"{_pct(c['assigned_revenue_per_customer_lift'], True)}")
    alarm = "  SAMPLE RATIO MISMATCH: do not trust this report" if report["srm_alarm"] else ""
    lines.append(f"sample ratio p {_p(report['srm_p_value'])}{alarm}")
    lines.append("p-values: " + report["method"]["p_value"] + ".")
    return "\n".join(lines)
