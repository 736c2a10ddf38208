"""`recostream up` driven as a user drives it: a subprocess, signals, ports, the summary."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from models.engine import PersonalisationEngine
from streams.cli import cli

pytestmark = pytest.mark.integration


def _children(pid: int) -> set[int]:
    """Every live process whose parent is ``pid``."""
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.add(int(entry.name))
    return out


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _start_up(tmp_path: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECOSTREAM_") and k not in
           ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL")}
    return subprocess.Popen([sys.executable, "-m", "streams.cli", "up", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_recommendations(proc: subprocess.Popen, tmp_path: Path, timeout: float = 60.0) -> set[int]:
    """Wait until the worker wrote recommendations; the children of ``up`` at that moment."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        logs = list(tmp_path.glob("run/up-*/worker.log"))
        if logs and "worker ready" in logs[0].read_text(errors="replace"):
            children = _children(proc.pid)
            if len(children) >= 3:  # broker, Redis, worker
                time.sleep(2)  # a few batches
                return children
        time.sleep(0.2)
    pytest.fail("`up` did not get its worker ready")


def _assert_gone(pids: set[int], timeout: float = 45.0) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(pids), f"processes outlived `up`: {_alive(pids)}"


def test_sigterm_stops_everything_and_prints_the_summary(tmp_path):
    # A taken default metrics port must not matter: `up` picks a free one.
    with socket.socket() as taken:
        try:
            taken.bind(("127.0.0.1", 9464))
        except OSError:
            pass  # already taken by someone else: same situation
        proc = _start_up(tmp_path, "--json", "--rate", "300")
        children = _wait_for_recommendations(proc, tmp_path)
        _use_the_env_file(tmp_path)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    _assert_gone(children)
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    for key in ("seconds", "started_at", "events_produced", "users_with_recommendations",
                "time_to_first_recommendation_s", "model", "sample_user", "redis_keys", "metrics_url", "env_file"):
        assert key in summary, key
    assert summary["users_with_recommendations"] > 0
    assert not summary["metrics_url"].endswith(":9464/metrics")
    assert summary["model"]["updated_at_iso"].endswith("Z")
    env_file = tmp_path / summary["env_file"]
    assert env_file.stat().st_mode & 0o077 == 0 and "RECOSTREAM_REDIS_URL" in env_file.read_text()


def _use_the_env_file(tmp_path: Path) -> None:
    """Another process joins the running stack through run/up-<pid>/env: produce works, Redis needs the
    run's password."""
    import redis

    env_file = next(tmp_path.glob("run/up-*/env"))
    script = f'. "{env_file}" && "{sys.executable}" -m streams.cli produce --events 50 --no-create-topics'
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if not k.startswith("RECOSTREAM_")})
    assert done.returncode == 0 and json.loads(done.stdout.strip().splitlines()[-1])["events"] == 50, done.stderr
    url = subprocess.run(["bash", "-c", f'. "{env_file}" && printf %s "$RECOSTREAM_REDIS_URL"'],
                         capture_output=True, text=True, check=True).stdout
    assert redis.Redis.from_url(url).ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis.from_url(url.replace(url.split("@")[0], "redis://:wrong")).ping()
    with pytest.raises((redis.exceptions.AuthenticationError, redis.exceptions.ResponseError)):  # no password
        redis.Redis.from_url("redis://" + url.split("@")[1]).get("x")


def test_closed_loop_summary_ends_with_the_experiment_report(tmp_path):
    proc = _start_up(tmp_path, "--closed-loop", "--json", "--duration", "40", "--rate", "300", "--users", "150")
    out, err = proc.communicate(timeout=150)
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    report = summary["experiment"]  # the keys of `recostream experiment report --json`
    assert set(report) == {"experiment", "control", "days", "variants", "comparisons", "vs_holdout",
                           "srm_p_value", "srm_alarm", "method", "partitions"}
    assert (report["experiment"], report["control"], report["partitions"]) == ("closed-loop", "popularity", [0, 1, 2, 3])
    assert set(report["variants"]) == {"ranker", "popularity", "holdout"}, report["variants"].keys()
    shown = sum(arm["impressions"] for arm in report["variants"].values())
    # what the shop generated last may not have been sent when `up` stopped it
    assert 0 < shown <= summary["closed_loop"]["impressions"]
    assert report["variants"]["ranker"]["impressions"] and report["variants"]["popularity"]["impressions"]
    assert report["variants"]["holdout"]["assigned_customers"] > 0 == report["variants"]["holdout"]["impressions"]
    env = (tmp_path / summary["env_file"]).read_text()
    assert "RECOSTREAM_EXPERIMENT=" in env and "closed-loop-1" in env and "RECOSTREAM_TOPIC_IMPRESSIONS=" in env
    assert "first recommendations in Redis" in err and "impressions" in err


def test_sigkill_of_up_leaves_no_process_behind(tmp_path):
    proc = _start_up(tmp_path, "--rate", "300")
    children = _wait_for_recommendations(proc, tmp_path)
    proc.kill()
    proc.wait(10)
    _assert_gone(children)


def test_a_taken_metrics_port_is_a_clear_error_before_anything_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        taken.listen()
        started = time.monotonic()
        proc = _start_up(tmp_path, "--metrics-port", str(port), "--duration", "5")
        out, err = proc.communicate(timeout=30)
    assert proc.returncode != 0 and f"metrics port {port} is in use" in err, err
    assert time.monotonic() - started < 15 and not list(tmp_path.glob("run/up-*"))


def test_a_command_that_cannot_reach_kafka_names_the_setting():
    result = CliRunner().invoke(cli, ["produce", "--events", "5"],
                                env={"RECOSTREAM_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    assert result.exit_code == 1 and "RECOSTREAM_KAFKA_BOOTSTRAP_SERVERS" in result.output, result.output


def test_forget_without_redis_says_which_setting_is_missing():
    result = CliRunner().invoke(cli, ["forget", "u1"], env={"RECOSTREAM_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
                                                            "RECOSTREAM_REDIS_URL": ""})
    assert result.exit_code == 2 and "RECOSTREAM_REDIS_URL" in result.output


def test_profile_categories_come_from_the_catalogue_when_events_carry_none():
    from types import SimpleNamespace as E

    engine = PersonalisationEngine(top_n=3)
    engine.upsert_item("g1", "garden")
    engine.upsert_item("b1", "books")
    events = [E(event_id=f"e{k}", user_id="u1", item_id="g1" if k < 13 else "b1", type="browse", ts=1.7e9 + k,
                category=None, price=None, quantity=1, order_id=None) for k in range(15)]
    events[14].category = "toys"  # an event's own category wins
    profile = engine.process(events, profiles={}).profiles["u1"]
    assert profile.category_counts == {"garden": 13.0, "books": 1.0, "toys": 1.0}
