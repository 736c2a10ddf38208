"""`recostream bench-engine`: a tiny smoke run (keys and consistency only, no timing assertions)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from streams.cli import cli
from streams.tools.bench_engine import bench_engine, run_bench_engine

KEYS = {
    "events", "batch", "batches", "generated_users", "generated_items", "catalogue_items", "distinct_users",
    "shoppers", "shoppers_per_batch", "recommended", "learned", "learned_by_type", "duplicates",
    "learn_us_per_event", "segments_us_per_event", "recommend_us_per_event", "recommend_us_per_shopper",
    "encode_us_per_event", "total_us_per_event", "events_per_s", "seconds",
}


def test_help_lists_the_options():
    out = CliRunner().invoke(cli, ["bench-engine", "--help"])
    assert out.exit_code == 0
    for option in ("--events", "--batch", "--json"):
        assert option in out.output


def test_small_run_reports_every_key_and_counts_add_up():
    result = CliRunner().invoke(bench_engine, ["--events", "1200", "--batch", "250", "--users", "300",
                                               "--items", "400", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report) == KEYS
    assert report["events"] == 1200 and report["batch"] == 250 and report["batches"] == 5
    assert report["catalogue_items"] == 400
    # every event is learned or dropped as a duplicate, once
    assert report["learned"] + report["duplicates"] == report["events"]
    assert sum(report["learned_by_type"].values()) == report["learned"]
    # every touched shopper of every batch gets recommendations
    assert report["recommended"] == report["shoppers"] >= report["distinct_users"] > 0
    assert report["shoppers_per_batch"] == round(report["shoppers"] / report["batches"], 1)
    for key in ("learn_us_per_event", "segments_us_per_event", "recommend_us_per_event", "encode_us_per_event",
                "total_us_per_event", "events_per_s"):
        assert isinstance(report[key], float) and report[key] >= 0, key
    parts = sum(report[k] for k in ("learn_us_per_event", "segments_us_per_event", "recommend_us_per_event",
                                    "encode_us_per_event"))
    assert parts <= report["total_us_per_event"] + 0.1  # the phases are inside the total


def test_runs_repeat_the_same_counts():
    a = run_bench_engine(600, batch=200, users=100, items=200, seed=3)
    b = run_bench_engine(600, batch=200, users=100, items=200, seed=3)
    for key in ("learned", "duplicates", "shoppers", "distinct_users", "learned_by_type"):
        assert a[key] == b[key]
