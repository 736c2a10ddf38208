"""Counters, deltas and the experiment report: shape, definitions, holdout, unknown, sample ratio
(models/effect/counts.py, models/effect/report.py)."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.effect.counts import COUNTERS, Counts, EffectCounts, Increment, merge_deltas, revenue_cents
from models.effect.experiment import Experiment
from models.effect.report import experiment_report, render_report
from models.effect.statistics import srm_p_value, two_proportion_p_value, wilson_interval

EXP = Experiment.from_mapping({
    "name": "ranker-vs-pop", "salt": "s", "control": "pop", "holdout": 0.1,
    "variants": [{"name": "pop", "share": 0.45, "strategy": "popularity"},
                 {"name": "rank", "share": 0.45, "strategy": "ranker"}],
})
DAY = 19844

ARM_KEYS = {"strategy", "share", "customers", "impressions", "items_shown", "clicks", "clicked_impressions", "ctr",
            "ctr_ci95", "purchases", "converters", "conversion", "conversion_ci95", "revenue",
            "revenue_per_customer", "assigned_customers", "buyers", "assigned_conversion",
            "assigned_conversion_ci95", "all_purchases", "all_revenue", "assigned_revenue_per_customer"}


def table_of(rows: dict[str, dict[str, int]], day: int = DAY) -> EffectCounts:
    t = EffectCounts()
    t.apply([Increment(arm, day, c, n) for arm, counters in rows.items() for c, n in counters.items()])
    return t


ROWS = {
    "pop": dict(customers=1000, impressions=5000, items_shown=50_000, clicks=600, clicked_impressions=500,
                purchases=60, revenue_cents=300_000, converters=50, assigned_customers=1100, buyers=120,
                all_purchases=150, all_revenue_cents=700_000, daily_customers=1500),
    "rank": dict(customers=1010, impressions=5050, items_shown=50_500, clicks=700, clicked_impressions=606,
                 purchases=80, revenue_cents=404_000, converters=70, assigned_customers=1090, buyers=140,
                 all_purchases=170, all_revenue_cents=800_000, daily_customers=1500),
    "holdout": dict(assigned_customers=250, buyers=25, all_purchases=30, all_revenue_cents=120_000),
    "unknown": dict(customers=3, impressions=4, items_shown=40),
}


def test_report_shape_and_definitions():
    r = experiment_report(EXP, table_of(ROWS))
    assert {"experiment", "control", "variants", "comparisons", "srm_p_value"} <= set(r)
    assert (r["experiment"], r["control"], r["days"]) == ("ranker-vs-pop", "pop",
                                                          {"first": "2024-05-01", "last": "2024-05-01"})
    assert list(r["variants"]) == ["pop", "rank", "holdout", "unknown"]
    assert all(set(m) == ARM_KEYS for m in r["variants"].values())
    rank = r["variants"]["rank"]
    assert rank["ctr"] == 606 / 5050 and rank["ctr_ci95"] == list(wilson_interval(606, 5050))
    assert rank["conversion"] == 70 / 1010 and rank["conversion_ci95"] == list(wilson_interval(70, 1010))
    assert rank["revenue"] == 4040.0 and rank["revenue_per_customer"] == 4040.0 / 1010
    assert rank["assigned_conversion"] == 140 / 1090 and rank["assigned_revenue_per_customer"] == 8000.0 / 1090
    assert (rank["strategy"], rank["share"]) == ("ranker", 0.45)
    # treatment vs control only; the control is not compared with itself
    assert list(r["comparisons"]) == ["rank"]
    c = r["comparisons"]["rank"]
    assert c["control"] == "pop"
    assert c["conversion_lift"] == pytest.approx((70 / 1010) / (50 / 1000) - 1)
    assert c["ctr_lift"] == pytest.approx((606 / 5050) / (500 / 5000) - 1)
    assert c["p_value"] == two_proportion_p_value(70, 1010, 50, 1000)
    assert c["ctr_p_value"] == two_proportion_p_value(606, 5050, 500, 5000)
    assert c["assigned_p_value"] == two_proportion_p_value(140, 1090, 120, 1100)
    # SRM over the configured arms' assigned customers (unknown is not an arm)
    assert r["srm_p_value"] == srm_p_value([1100, 1090, 250], [0.45, 0.45, 0.1])
    assert r["srm_alarm"] is False
    assert "fixed horizon" in r["method"]["p_value"]
    json.dumps(r, allow_nan=False)


def test_holdout_is_measured_by_its_assigned_customers_and_any_purchase():
    r = experiment_report(EXP, table_of(ROWS))
    h = r["variants"]["holdout"]
    assert (h["strategy"], h["share"], h["customers"], h["impressions"], h["ctr"], h["conversion"]) == (
        None, 0.1, 0, 0, None, None)
    assert (h["assigned_customers"], h["buyers"], h["all_purchases"], h["all_revenue"]) == (250, 25, 30, 1200.0)
    assert h["assigned_conversion"] == 0.1
    assert set(r["vs_holdout"]) == {"pop", "rank"}
    assert r["vs_holdout"]["rank"]["assigned_conversion_lift"] == pytest.approx((140 / 1090) / 0.1 - 1)
    assert r["vs_holdout"]["rank"]["p_value"] == two_proportion_p_value(140, 1090, 25, 250)


def test_empty_and_degenerate_reports_are_valid_json():
    for table in (EffectCounts(), table_of({"pop": dict(customers=5), "rank": dict(impressions=3)})):
        r = experiment_report(EXP, table)
        json.dumps(r, allow_nan=False)
        render_report(r)
    r = experiment_report(EXP, EffectCounts())
    assert r["srm_p_value"] is None and r["srm_alarm"] is False and "unknown" not in r["variants"]
    assert r["comparisons"]["rank"]["conversion_lift"] is None


def test_sample_ratio_mismatch_raises_the_alarm():
    skewed = {**ROWS, "rank": {**ROWS["rank"], "assigned_customers": 700}}
    r = experiment_report(EXP, table_of(skewed))
    assert r["srm_p_value"] < 0.001 and r["srm_alarm"] is True
    assert "SAMPLE RATIO MISMATCH" in render_report(r)


def test_render_has_every_arm_the_comparisons_and_the_fixed_horizon_warning():
    text = render_report(experiment_report(EXP, table_of(ROWS)))
    lines = text.splitlines()
    assert lines[0].startswith("experiment ranker-vs-pop (2024-05-01 to 2024-05-01), control: pop")
    for arm in ("pop", "rank", "holdout", "unknown"):
        assert any(line.startswith(arm + " ") for line in lines[2:6])
    assert any(line.startswith("rank vs pop: conversion +") for line in lines)
    assert any(line.startswith("rank vs holdout: assigned conversion") for line in lines)
    assert "fixed horizon" in lines[-1]


def test_counts_over_several_days_sum_in_the_report():
    t = table_of({"rank": dict(customers=1, impressions=2)}, DAY)
    t.apply([Increment("rank", DAY + 3, "impressions", 5), Increment("rank", DAY + 3, "daily_customers", 1)])
    r = experiment_report(EXP, t)
    assert r["variants"]["rank"]["impressions"] == 7 and r["days"]["last"] == "2024-05-04"


def test_revenue_in_hundredths():
    assert revenue_cents(19.99, 3) == 5997 and revenue_cents(0.1 + 0.2, 1) == 30 and revenue_cents(None, 1) == 0


INCREMENTS = st.lists(st.builds(Increment, st.sampled_from(["a", "b", "unknown"]), st.integers(0, 3),
                                st.sampled_from(COUNTERS), st.integers(-3, 50)), max_size=40)


@settings(max_examples=200, deadline=None, database=None)
@given(INCREMENTS, st.integers(0, 2**32))
def test_counts_do_not_depend_on_the_order_of_increments_or_on_merging(incs, seed):
    one = EffectCounts()
    one.apply(incs)
    shuffled = list(incs)
    random.Random(seed).shuffle(shuffled)
    half = len(shuffled) // 2
    left, right = EffectCounts(), EffectCounts()
    left.apply(shuffled[:half])
    right.apply(shuffled[half:])
    merged = left.merge(right)
    assert merged == one
    assert merged.to_bytes() == one.to_bytes()  # same cells, same sums, same bytes
    folded = EffectCounts()
    folded.apply(merge_deltas(shuffled[:half], shuffled[half:]))
    assert folded == one
    for arm in one.arms():
        total = Counts()
        for day in one.days():
            total = total + one.cell(arm, day)
        assert total == one.total(arm)


def test_counts_encoding_and_unknown_counters():
    t = table_of(ROWS)
    again = EffectCounts.from_bytes(t.to_bytes())
    assert again == t and again.to_bytes() == t.to_bytes()
    with pytest.raises(KeyError):
        t.apply([Increment("a", 1, "refunds", 1)])
    left = EffectCounts()
    left.merge(t)
    assert left == EffectCounts()  # merge returns a new table, neither input changes
