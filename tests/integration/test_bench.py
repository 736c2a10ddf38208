"""`recostream bench`: a small smoke run on the embedded stack (keys and types only, no timing assertions)."""

from __future__ import annotations

import json
import math

from click.testing import CliRunner

from streams.tools.bench.command import bench
from streams.tools.bench.stats import histogram_quantile, percentiles


def test_histogram_quantile_and_percentiles():
    buckets = [(0.01, 0.0), (0.1, 50.0), (1.0, 100.0), (float("inf"), 100.0)]
    assert math.isclose(histogram_quantile(buckets, 0.5), 0.1)
    assert 0.1 < histogram_quantile(buckets, 0.99) <= 1.0
    assert histogram_quantile([], 0.5) is None
    p = percentiles([1.0, 2.0, 3.0])
    assert p["p50"] == 2.0 and p["n"] == 3
    assert percentiles([])["p99"] is None


def test_help_lists_the_options():
    out = CliRunner().invoke(bench, ["--help"])
    assert out.exit_code == 0
    for option in ("--events", "--rate", "--workers", "--json", "--freshness-seconds"):
        assert option in out.output


def test_small_bench_run_reports_every_key(tmp_path, monkeypatch):
    # The bench starts its own embedded broker and Redis unless these are set.
    monkeypatch.delenv("RECOSTREAM_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("RECOSTREAM_REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(bench, ["--events", "3000", "--rate", "200", "--freshness-seconds", "3",
                                        "--users", "500", "--items", "1000", "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("throughput_eps", "bare_loop_eps", "faust_default_eps", "raw_consume_eps"):
        assert isinstance(report[key], float) and report[key] > 0, (key, report[key])
    fresh = report["freshness_ms"]
    assert set(fresh) >= {"p50", "p95", "p99", "n"}
    assert fresh["n"] > 0 and all(isinstance(fresh[q], float) and fresh[q] >= 0 for q in ("p50", "p95", "p99"))
    windows = report["freshness_ms_by_window"]
    assert windows and windows[0]["from_s"] == 0 and sum(w["n"] for w in windows) == fresh["n"]
    # The broker's floor: the same load read by a plain consumer; every event arrives.
    broker = report["freshness_broker_ms"]
    assert broker["n"] == 600 and broker["unmatched"] == 0 and broker["p99"] >= broker["p50"] >= 0
    assert sum(w["n"] for w in report["freshness_broker_ms_by_window"]) == broker["n"]
    assert isinstance(report["freshness_checkpoints"], int) and report["freshness_checkpoints"] >= 0
    assert isinstance(report["peak_rss_mb"], float) and report["peak_rss_mb"] > 0
    assert isinstance(report["users_in_state"], int) and report["users_in_state"] > 0
    assert isinstance(report["items_in_state"], int) and report["items_in_state"] > 0
    assert report["events"] == 3000 and report["processed"] + report["duplicates"] + report["dead_lettered"] == 3000


def test_py_spy_option_without_py_spy_is_a_usage_error(monkeypatch, tmp_path):
    import streams.tools.bench.command as command

    monkeypatch.setattr(command, "py_spy_command", lambda: None)
    result = CliRunner().invoke(bench, ["--py-spy", str(tmp_path / "prof"), "--events", "100"])
    assert result.exit_code == 2 and "pip install py-spy" in result.output
    assert not (tmp_path / "prof").exists()  # refused before anything started


def test_free_models_engine_learns_nothing_and_gives_everyone_one_list():
    """The engine of `--free-models`: the worker's bookkeeping runs, the models do nothing."""
    from types import SimpleNamespace as E

    from streams.tools.bench.free_models import FreeModelsEngine

    engine = FreeModelsEngine(top_n=3)
    for k in range(5):
        engine.upsert_item(f"i{k}", "books" if k % 2 else "toys")
    events = [E(event_id=f"e{k}", user_id=f"u{k % 3}", item_id=f"i{k % 5}", type="click", ts=1.7e9 + k,
                category=None, price=None, quantity=1, order_id=None) for k in range(9)]
    out = engine.process([*events, events[0]], profiles={})
    assert out.learned == 9 and out.duplicates == 1  # dedupe and profiles still run
    recs = out.recommendations
    assert set(recs.users) == {"u0", "u1", "u2"}
    assert (recs.ids == recs.ids[0]).all() and (recs.scores == recs.scores[0]).all() and recs.ids.shape[1] == 3
    assert {p.segment for p in out.profiles.values()} == {0}
    assert (recs.scores == 0.0).all()  # no popularity learned: the cold list, unscored
