"""The shipped monitoring, checked against a real Prometheus scraping a real worker.

* ``promtool`` accepts ``ops/prometheus/alerts.yml`` and
  ``ops/prometheus/prometheus.yml`` (with its rule file), and the alert rules
  fire, and stay silent, on synthetic series as designed (``promtool test rules``).
* A real ``prometheus`` (Debian's package; .ci/run installs it) scrapes a
  worker started through the fixtures while it processes generated events
  (and a few bad ones) through the embedded broker. Then every PromQL
  expression of the Grafana dashboard and of the alert rules is evaluated
  through Prometheus' HTTP API: all must parse, every dashboard expression
  must return data, and the key ones must return plausible values.

Missing ``prometheus``/``promtool`` is a failure, never a skip.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Producer

from models.ranking import HybridRanker
from streams.kafka.produce import make_producer, publish_catalogue, publish_events
from streams.tools.embedded import free_port
from streams.tools.generator import ShopperSimulator
from streams.tools.up import stop_process
from tests.helpers import wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "ops" / "grafana" / "dashboards" / "recostream.json"
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"
PROM_CONFIG = ROOT / "ops" / "prometheus" / "prometheus.yml"
JOB = "recostream"
# Grafana's $__rate_interval is max(4 x scrape interval, step); the test scrapes every second.
RATE_INTERVAL = "5s"


# --------------------------------------------------------------------- helpers
def tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        pytest.fail(f"`{name}` is not on PATH. The monitoring tests need a real Prometheus: install Debian's "
                    f"package with `apt-get update && apt-get install -y prometheus` (.ci/run does this in CI).")
    return path


def run_tool(*args: str | Path, timeout: float = 60) -> str:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(map(str, args))} failed ({proc.returncode}):\n{out}"
    return out


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(panels: list[dict]):
    for p in panels:
        yield p
        yield from all_panels(p.get("panels", []))


def dashboard_variables(dash: dict) -> dict[str, str]:
    """Each template variable at its default (the "All" value for multi-selects)."""
    values = {"__rate_interval": RATE_INTERVAL, "__interval": "1s"}
    for var in dash["templating"]["list"]:
        current = var.get("current", {}).get("value")
        if current in (["$__all"], "$__all"):
            values[var["name"]] = var["allValue"]
        elif isinstance(current, list):
            values[var["name"]] = "|".join(current)
        else:
            values[var["name"]] = current
    return values


def substitute(expr: str, variables: dict[str, str]) -> str:
    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        assert name in variables, f"dashboard expression uses unknown variable ${name}: {expr}"
        return variables[name]

    out = re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, expr)
    assert "$" not in out, out
    return out


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title / legend, PromQL) for every target of every panel, variables substituted."""
    dash = dashboard()
    variables = dashboard_variables(dash)
    out = []
    for panel in all_panels(dash["panels"]):
        for target in panel.get("targets", []):
            out.append((f"{panel['title']} [{target.get('legendFormat') or target['refId']}]",
                        substitute(target["expr"], variables)))
    return out


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


class PrometheusAPI:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: str) -> dict:
        url = f"{self.base}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            body = urllib.request.urlopen(url, timeout=10).read()
        except urllib.error.HTTPError as err:  # 400 on a PromQL parse error: return the error body
            body = err.read()
        return json.loads(body)

    def query(self, expr: str) -> dict:
        return self.get("/api/v1/query", query=expr)

    def result(self, expr: str) -> list[dict]:
        answer = self.query(expr)
        assert answer["status"] == "success", f"{expr}: {answer.get('errorType')}: {answer.get('error')}"
        return answer["data"]["result"]

    def scalar(self, expr: str) -> float:
        result = self.result(expr)
        return float(result[0]["value"][1]) if result else math.nan

    def ready(self) -> bool:
        try:
            return urllib.request.urlopen(f"{self.base}/-/ready", timeout=1).status == 200
        except (urllib.error.URLError, OSError):
            return False


# ----------------------------------------------------------------- static checks
def test_promtool_accepts_shipped_rules_and_config():
    promtool = tool("promtool")
    assert "SUCCESS" in run_tool(promtool, "check", "rules", ALERTS)
    # check config also loads every rule file the config names (alerts.yml, relative to it).
    out = run_tool(promtool, "check", "config", PROM_CONFIG)
    assert "1 rule files found" in out and "SUCCESS" in out, out

    config = yaml.safe_load(PROM_CONFIG.read_text())
    assert [Path(f).name for f in config["rule_files"]] == ["alerts.yml"]
    assert JOB in {job["job_name"] for job in config["scrape_configs"]}, "dashboards and alerts select job=recostream"

    rules = alert_rules()
    assert len(rules) >= 7
    names = {rule["alert"] for rule in rules}
    for needed in ("RecostreamWorkerDown", "RecostreamNoEvents", "RecostreamFreshnessP99High",
                   "RecostreamDeadLetterSpike", "RecostreamConsumerLagGrowing",
                   "RecostreamModelBelowPopularity", "RecostreamRedisDown",
                   "RecostreamExperimentSampleRatioMismatch"):
        assert needed in names, f"missing alert {needed}"
    docs = (ROOT / "docs" / "MONITORING.md").read_text()
    for rule in rules:
        ann = rule.get("annotations", {})
        assert ann.get("summary") and ann.get("runbook"), f"{rule['alert']} needs summary and runbook annotations"
        assert rule.get("labels", {}).get("severity") in ("page", "ticket"), rule["alert"]
        anchor = f"#{rule['alert'].lower()}"
        assert anchor in ann["runbook"], f"{rule['alert']}: runbook should point to docs/MONITORING.md{anchor}"
        assert f"### {rule['alert']}" in docs, f"docs/MONITORING.md has no runbook section for {rule['alert']}"


# Synthetic series (1-minute steps) and what each alert must do with them.
# Annotations are stripped before `promtool test rules` (it would compare
# their rendered text); labels, expressions and `for` are what is tested.
ALERT_SCENARIOS = """
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - {series: 'up{job="recostream", instance="w1:9464"}', values: '1 1 0x10'}
      - {series: 'up{job="recostream", instance="w2:9464"}', values: '1x12'}
    alert_rule_test:
      - {eval_time: 2m, alertname: RecostreamWorkerDown, exp_alerts: []}
      - eval_time: 4m
        alertname: RecostreamWorkerDown
        exp_alerts: [{exp_labels: {severity: page, job: recostream, instance: "w1:9464"}}]
      - {eval_time: 10m, alertname: RecostreamNoWorkerUp, exp_alerts: []}
  - interval: 1m
    input_series:
      - {series: 'up{job="recostream", instance="w1:9464"}', values: '0x10'}
    alert_rule_test:
      - {eval_time: 1m, alertname: RecostreamNoWorkerUp, exp_alerts: []}
      - eval_time: 5m
        alertname: RecostreamNoWorkerUp
        exp_alerts: [{exp_labels: {severity: page}}]
  - interval: 1m
    input_series:
      - {series: 'recostream_events_consumed_total{job="recostream", instance="w1:9464", type="browse"}', values: '0+100x10 1000x30'}
      - {series: 'recostream_events_processed_total{job="recostream", instance="w1:9464", type="browse"}', values: '0+100x40'}
      - {series: 'recostream_recommendations_written_total{job="recostream", instance="w1:9464"}', values: '0x40'}
    alert_rule_test:
      - {eval_time: 15m, alertname: RecostreamNoEvents, exp_alerts: []}
      - eval_time: 30m
        alertname: RecostreamNoEvents
        exp_alerts: [{exp_labels: {severity: page}}]
      - eval_time: 30m
        alertname: RecostreamRecommendationsStalled
        exp_alerts: [{exp_labels: {severity: page}}]
  - interval: 1m
    input_series:
      - {series: 'recostream_events_consumed_total{instance="w1:9464", type="browse"}', values: '0+100x40'}
      - {series: 'recostream_events_processed_total{instance="w1:9464", type="browse"}', values: '0+100x40'}
      - {series: 'recostream_recommendations_written_total{instance="w1:9464"}', values: '0+50x40'}
      - {series: 'recostream_redis_up{instance="w1:9464"}', values: '1x40'}
      - {series: 'recostream_redis_errors_total{instance="w1:9464"}', values: '0x40'}
    alert_rule_test:
      - {eval_time: 30m, alertname: RecostreamNoEvents, exp_alerts: []}
      - {eval_time: 30m, alertname: RecostreamRecommendationsStalled, exp_alerts: []}
      - {eval_time: 30m, alertname: RecostreamRedisDown, exp_alerts: []}
      - {eval_time: 30m, alertname: RecostreamRedisWriteErrors, exp_alerts: []}
  - interval: 1m
    input_series:
      - {series: 'recostream_redis_up{job="recostream", instance="w1:9464"}', values: '1 1 0x20'}
      - {series: 'recostream_redis_errors_total{job="recostream", instance="w1:9464"}', values: '0 0 0+12x20'}
    alert_rule_test:
      - eval_time: 5m
        alertname: RecostreamRedisDown
        exp_alerts: [{exp_labels: {severity: page, job: recostream, instance: "w1:9464"}}]
      - eval_time: 20m
        alertname: RecostreamRedisWriteErrors
        exp_alerts: [{exp_labels: {severity: ticket, instance: "w1:9464"}}]
  - interval: 1m
    input_series:
      - {series: 'recostream_freshness_seconds_bucket{instance="w1:9464", le="1"}', values: '0+60x30'}
      - {series: 'recostream_freshness_seconds_bucket{instance="w1:9464", le="5"}', values: '0+60x30'}
      - {series: 'recostream_freshness_seconds_bucket{instance="w1:9464", le="10"}', values: '0+120x30'}
      - {series: 'recostream_freshness_seconds_bucket{instance="w1:9464", le="+Inf"}', values: '0+120x30'}
      - {series: 'recostream_freshness_seconds_bucket{instance="w2:9464", le="1"}', values: '0+6000x30'}
      - {series: 'recostream_freshness_seconds_bucket{instance="w2:9464", le="5"}', values: '0+6000x30'}
      - {series: 'recostream_freshness_seconds_bucket{instance="w2:9464", le="10"}', values: '0+6000x30'}
      - {series: 'recostream_freshness_seconds_bucket{instance="w2:9464", le="+Inf"}', values: '0+6000x30'}
    alert_rule_test:
      # w1 alone is slow (half its events > 5 s), but it is 1/51 of the traffic: p99 over all is <= 5 s.
      - {eval_time: 25m, alertname: RecostreamFreshnessP99High, exp_alerts: []}
  - interval: 1m
    input_series:
      - {series: 'recostream_freshness_seconds_bucket{instance="w1:9464", le="1"}', values: '0+60x30'}
      - {series: 'recostream_freshness_seconds_bucket{instance="w1:9464", le="5"}', values: '0+60x30'}
      - {series: 'recostream_freshness_seconds_bucket{instance="w1:9464", le="10"}', values: '0+120x30'}
      - {series: 'recostream_freshness_seconds_bucket{instance="w1:9464", le="+Inf"}', values: '0+120x30'}
    alert_rule_test:
      - {eval_time: 8m, alertname: RecostreamFreshnessP99High, exp_alerts: []}
      - eval_time: 25m
        alertname: RecostreamFreshnessP99High
        exp_alerts: [{exp_labels: {severity: page}}]
  - interval: 1m
    input_series:
      - {series: 'recostream_consumer_lag_messages{instance="w1:9464", topic="browse", partition="0"}', values: '0+100x40'}
      - {series: 'recostream_consumer_lag_messages{instance="w1:9464", topic="click", partition="0"}', values: '5000x40'}
      - {series: 'recostream_consumer_lag_messages{instance="w1:9464", topic="purchase", partition="0"}', values: '0+10x40'}
    alert_rule_test:
      # browse: large and growing; click: large but steady; purchase: growing but small.
      - eval_time: 35m
        alertname: RecostreamConsumerLagGrowing
        exp_alerts: [{exp_labels: {severity: page, topic: browse}}]
  - interval: 1m
    input_series:
      - {series: 'recostream_events_consumed_total{instance="w1:9464", type="browse"}', values: '0+6000x90'}
      - {series: 'recostream_events_dead_lettered_total{instance="w1:9464", reason="not_json"}', values: '0+6x60 366+600x30'}
    alert_rule_test:
      # 0.1% dead-lettered for an hour is the baseline, then 10%.
      - {eval_time: 55m, alertname: RecostreamDeadLetterSpike, exp_alerts: []}
      - eval_time: 80m
        alertname: RecostreamDeadLetterSpike
        exp_alerts: [{exp_labels: {severity: ticket}}]
  - interval: 1m
    input_series:
      - {series: 'recostream_events_consumed_total{instance="w1:9464", type="browse"}', values: '0+6000x90'}
      - {series: 'recostream_events_dead_lettered_total{instance="w1:9464", reason="not_json"}', values: '0+600x90'}
    alert_rule_test:
      # A steady 10% is bad input, but not a spike: no page-storm from a known chronic producer.
      - {eval_time: 85m, alertname: RecostreamDeadLetterSpike, exp_alerts: []}
  - interval: 1m
    input_series:
      - {series: 'recostream_live_evaluated_total{instance="w1:9464"}', values: '0+100x150'}
      - {series: 'recostream_live_hits_total{instance="w1:9464", model="ranker"}', values: '0+5x150'}
      - {series: 'recostream_live_hits_total{instance="w1:9464", model="popularity"}', values: '0+10x150'}
    alert_rule_test:
      - eval_time: 120m
        alertname: RecostreamModelBelowPopularity
        exp_alerts: [{exp_labels: {severity: ticket}}]
  - interval: 1m
    input_series:
      - {series: 'recostream_live_evaluated_total{instance="w1:9464"}', values: '0+100x150'}
      - {series: 'recostream_live_hits_total{instance="w1:9464", model="ranker"}', values: '0+20x150'}
      - {series: 'recostream_live_hits_total{instance="w1:9464", model="popularity"}', values: '0+10x150'}
    alert_rule_test:
      - {eval_time: 120m, alertname: RecostreamModelBelowPopularity, exp_alerts: []}
  - interval: 1m
    input_series:
      - {series: 'recostream_live_evaluated_total{instance="w1:9464"}', values: '0+1x150'}
      - {series: 'recostream_live_hits_total{instance="w1:9464", model="ranker"}', values: '0x150'}
      - {series: 'recostream_live_hits_total{instance="w1:9464", model="popularity"}', values: '0+1x150'}
    alert_rule_test:
      # Too few judged events (60/h) to call the model worse.
      - {eval_time: 120m, alertname: RecostreamModelBelowPopularity, exp_alerts: []}
  - interval: 1m
    input_series:
      # A checkpoint fails at minute 10; the next ones (every 5 min) are written.
      - {series: 'recostream_model_checkpoints_total{instance="w1:9464", outcome="failed"}', values: '0x9 1x60'}
      - {series: 'recostream_model_checkpoints_total{instance="w1:9464", outcome="written"}', values: '0+0.2x60'}
    alert_rule_test:
      - {eval_time: 9m, alertname: RecostreamCheckpointFailing, exp_alerts: []}
      - eval_time: 12m
        alertname: RecostreamCheckpointFailing
        exp_alerts: [{exp_labels: {severity: ticket, instance: "w1:9464", outcome: failed}}]
      # Half an hour later it has cleared.
      - {eval_time: 50m, alertname: RecostreamCheckpointFailing, exp_alerts: []}
  - interval: 1m
    input_series:
      # One dead letter parked at minute 5.
      - {series: 'recostream_outputs_parked_total{instance="w1:9464", topic="dead-letter"}', values: '0x4 1x60'}
    alert_rule_test:
      - {eval_time: 4m, alertname: RecostreamOutputsParked, exp_alerts: []}
      - eval_time: 6m
        alertname: RecostreamOutputsParked
        exp_alerts: [{exp_labels: {severity: ticket, instance: "w1:9464", topic: dead-letter}}]
      - {eval_time: 40m, alertname: RecostreamOutputsParked, exp_alerts: []}
  - interval: 1m
    input_series:
      # w1's split breaks at minute 10; w2 dips below 0.001 for 5 minutes only; w3 runs one arm (NaN).
      - {series: 'recostream_experiment_srm_p_value{job="recostream", instance="w1:9464"}', values: '0.4x9 0.0002x40'}
      - {series: 'recostream_experiment_srm_p_value{job="recostream", instance="w2:9464"}', values: '0.3x9 0.0005x4 0.2x30'}
      - {series: 'recostream_experiment_srm_p_value{job="recostream", instance="w3:9464"}', values: 'NaNx40'}
    alert_rule_test:
      - {eval_time: 20m, alertname: RecostreamExperimentSampleRatioMismatch, exp_alerts: []}
      - eval_time: 30m
        alertname: RecostreamExperimentSampleRatioMismatch
        exp_alerts: [{exp_labels: {severity: ticket, job: recostream, instance: "w1:9464"}}]
  - interval: 1m
    input_series:
      # w2 publishes (a timestamp each minute) until minute 10, then nothing; w3 goes on; w1 is up.
      - {series: 'recostream_item_updates_peer_last_timestamp_seconds{job="recostream", instance="w1:9464", peer="w2"}', values: '0+60x10 600x30'}
      - {series: 'recostream_item_updates_peer_last_timestamp_seconds{job="recostream", instance="w1:9464", peer="w3"}', values: '0+60x40'}
      - {series: 'up{job="recostream", instance="w1:9464"}', values: '1x40'}
    alert_rule_test:
      - {eval_time: 12m, alertname: RecostreamPeerUpdatesStopped, exp_alerts: []}
      - eval_time: 18m
        alertname: RecostreamPeerUpdatesStopped
        exp_alerts: [{exp_labels: {severity: ticket, job: recostream, instance: "w1:9464", peer: w2}}]
"""
# promtool's series notation repeats numbers (`0.4x9`) but not NaN: spelled out.
ALERT_SCENARIOS = ALERT_SCENARIOS.replace("'NaNx40'", repr(" ".join(["NaN"] * 40)))


def test_alert_rules_fire_as_designed(tmp_path):
    promtool = tool("promtool")
    doc = yaml.safe_load(ALERTS.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    scenarios = yaml.safe_load(ALERT_SCENARIOS)
    scenarios["rule_files"] = ["alerts.yml"]
    tested = {t["alertname"] for case in scenarios["tests"] for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert tested == {rule["alert"] for rule in alert_rules()}, "every alert needs a scenario where it fires"
    (tmp_path / "alerts_test.yml").write_text(yaml.safe_dump(scenarios, sort_keys=False))
    run_tool(promtool, "test", "rules", tmp_path / "alerts_test.yml")


# ------------------------------------------------------------------ live checks
def _bad_messages(settings) -> int:
    """A few messages that break the contract: they must show up as dead letters by reason."""
    producer = Producer(settings.kafka_client_config())
    bad = [(b"u-bad-1", b"{this is not json"), (b"u-bad-2", b"[1, 2, 3]"), (b"u-bad-3", b"{broken")]
    for key, value in bad:
        producer.produce(settings.topic_browse, key=key, value=value)
    assert producer.flush(10) == 0
    return sum(1 for _, v in bad if v.startswith(b"{"))  # the not_json ones


def _impressions(settings) -> list[dict]:
    """Impressions naming a list the worker never sent, counted under the arm `unknown`, for two shoppers of the
    simulator (an impression alone gives a customer a profile, but no segment)."""
    imps = [{"event_id": f"imp-{k}", "user_id": f"u{k % 2}", "rec_id": "never-sent",
             "items": ["i1", "i2"][: 1 + k % 2], "ts": int(time.time() * 1000)} for k in range(3)]
    producer = Producer(settings.kafka_client_config())
    for imp in imps:
        producer.produce(settings.topic_impressions, key=imp["user_id"].encode(), value=json.dumps(imp).encode())
    assert producer.flush(10) == 0
    return imps


def test_dashboard_shows_every_experiment_metric():
    from streams.metrics import EFFECT_GAUGES

    exprs = " ".join(expr for _, expr in dashboard_queries())
    for name in [*EFFECT_GAUGES, "srm_p_value"]:
        assert f"recostream_experiment_{name}{{" in exprs, f"no panel shows recostream_experiment_{name}"


def test_dashboard_and_alert_queries_against_live_worker(settings, start_worker, tmp_path):
    prometheus = tool("prometheus")
    queries = dashboard_queries()
    assert len(queries) >= 20, "the dashboard lost its panels"

    sim = ShopperSimulator(n_users=40, n_items=150, n_categories=6, seed=5)
    producer = make_producer(settings)
    publish_catalogue(producer, settings, sim.catalogue())
    n_not_json = _bad_messages(settings)
    impressions = _impressions(settings)
    events = sim.events(10**7)
    publish_events(producer, settings, (next(events) for _ in range(1500)), live_ts=True)

    worker = start_worker(settings)
    # Live traffic while Prometheus watches, so every rate() window has data.
    stop = threading.Event()
    live = threading.Thread(target=publish_events, args=(make_producer(settings), settings, events),
                            kwargs={"rate": 150.0, "live_ts": True, "should_stop": stop.is_set}, daemon=True)
    live.start()

    prom_port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{settings.metrics_port}"]}]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = open(tmp_path / "prometheus.log", "wb")
    prom = subprocess.Popen(
        [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    api = PrometheusAPI(prom_port)

    def prom_log() -> str:
        return (tmp_path / "prometheus.log").read_text(errors="replace")[-3000:]

    try:
        wait_until(lambda: prom.poll() is not None or api.ready(), 20, "Prometheus to be ready")
        assert prom.poll() is None, f"prometheus exited with {prom.returncode}:\n{prom_log()}"

        # Prometheus has scraped the worker after it wrote recommendations ...
        wait_until(lambda: api.scalar(f'sum(recostream_recommendations_written_total{{job="{JOB}"}})') > 0,
                   60, "Prometheus to scrape recommendations written by the worker", worker=worker)
        # ... and after it dead-lettered the bad messages ...
        wait_until(lambda: api.scalar(f'sum(recostream_events_dead_lettered_total{{job="{JOB}"}})') >= n_not_json + 1,
                   30, "Prometheus to scrape the dead-lettered bad messages", worker=worker)
        # ... and enough later scrapes exist for the short rate() windows.
        wait_until(lambda: api.scalar(f'sum(rate(recostream_recommendations_written_total{{job="{JOB}"}}[{RATE_INTERVAL}]))') > 0,
                   20, "a non-zero recommendations rate", worker=worker)

        # Every dashboard expression parses and returns data.
        empty: list[str] = []
        deadline = time.monotonic() + 20
        while True:
            empty = [f"{title}: {expr}" for title, expr in queries if not api.result(expr)]
            if not empty or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert not empty, ("dashboard expressions without data:\n" + "\n".join(empty) + "\n(consumer lag and segment "
                           "sizes need the worker's wiring: Metrics.watch_consumer_lag(loop.lag_rows) in streams/wiring.py, "
                           "and Metrics.observe_segments(outcome.profiles) per micro-batch)")

        # The template variable's query (label_values(<selector>, instance)) finds this worker.
        dash = dashboard()
        var = next(v for v in dash["templating"]["list"] if v["name"] == "instance")
        selector = re.fullmatch(r"label_values\((.+),\s*instance\)", var["definition"]).group(1)
        assert {s["metric"]["instance"] for s in api.result(selector)} == {f"127.0.0.1:{settings.metrics_port}"}

        # Key panels show plausible values, not just series.
        sel = f'job="{JOB}"'
        assert api.scalar(f"sum(rate(recostream_events_consumed_total{{{sel}}}[{RATE_INTERVAL}]))") > 0
        assert api.scalar(f"sum(rate(recostream_events_processed_total{{{sel}}}[{RATE_INTERVAL}]))") > 0
        p99 = api.scalar(f"histogram_quantile(0.99, sum by (le) (rate(recostream_freshness_seconds_bucket{{{sel}}}[1m])))")
        assert 0 < p99 < 60, f"freshness p99 {p99} (60 s is the largest finite bucket)"
        assert api.scalar(f'sum(recostream_events_dead_lettered_total{{{sel}, reason="not_json"}})') == n_not_json
        assert api.scalar(f'sum(recostream_events_dead_lettered_total{{{sel}, reason="not_object"}})') == 1
        lag = api.result(f"recostream_consumer_lag_messages{{{sel}}}")
        assert {s["metric"]["topic"] for s in lag} >= set(settings.input_topics), lag
        assert all(float(s["value"][1]) >= 0 for s in lag)
        assigned = {s["metric"]["topic"]: float(s["value"][1])
                    for s in api.result(f"recostream_consumer_assigned_partitions{{{sel}}}")}
        assert assigned == {t: float(settings.partitions)
                            for t in [*settings.input_topics, settings.topic_impressions, settings.topic_control,
                                      settings.topic_items]}
        segments = api.result(f"sum by (segment) (recostream_segment_customers{{{sel}}})")
        assert sum(float(s["value"][1]) for s in segments) == api.scalar(f"sum(recostream_users{{{sel}}})")
        assert api.scalar(f"sum(recostream_live_evaluated_total{{{sel}}})") > 0
        assert api.scalar(f"max(recostream_model_version{{{sel}}})") > 0
        served = api.scalar(f"max(recostream_ranker_popularity_half_life{{{sel}}})")
        assert served in HybridRanker().popularity_half_life, served  # one of the default candidates
        assert api.scalar(f"min(recostream_redis_up{{{sel}}})") == 1
        assert api.scalar(f"sum(up{{{sel}}})") == 1
        # The experiment's gauges: the default experiment (one arm, `ranker`) and impressions of unknown lists.
        unknown = f'{sel}, variant="unknown"'
        wait_until(lambda: api.scalar(f"sum(recostream_experiment_impressions{{{unknown}}})") == len(impressions),
                   30, "Prometheus to scrape the impressions counted", worker=worker)
        assert api.scalar(f"sum(recostream_experiment_items_shown{{{unknown}}})") == sum(
            len(i["items"]) for i in impressions)
        assert api.scalar(f"sum(recostream_experiment_customers{{{unknown}}})") == len({i["user_id"] for i in impressions})
        assert {s["metric"]["variant"] for s in api.result(f"recostream_experiment_clicks{{{sel}}}")} == {
            "ranker", "holdout", "unknown"}
        srm = api.result(f"recostream_experiment_srm_p_value{{{sel}}}")
        assert len(srm) == 1 and math.isnan(float(srm[0]["value"][1])), srm  # one arm: no split to check

        # Every alert expression parses and evaluates; Prometheus itself loaded
        # the rule file and evaluates each rule without error.
        for rule in alert_rules():
            answer = api.query(rule["expr"])
            assert answer["status"] == "success", f"{rule['alert']}: {answer.get('error')}"

        def rules_evaluated():
            groups = api.get("/api/v1/rules")["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            return len(rules) == len(alert_rules()) and all(
                r["health"] == "ok" and not r["lastEvaluation"].startswith("0001") for r in rules) and rules

        rules = wait_until(rules_evaluated, 10, "Prometheus to evaluate every alert rule without error")
        firing = [r["name"] for r in rules if r["state"] == "firing"]
        assert not firing, f"alerts firing on a healthy worker: {firing}"
    finally:
        stop.set()
        stop_process(prom, timeout=10)
        log.close()
        live.join(10)
    assert prom.poll() is not None, "prometheus must not outlive the test"
    assert worker.alive()
