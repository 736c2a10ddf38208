"""Secure defaults: the compose files, secrets never printed, a password-protected Redis, no user ids
in metric labels or info logs."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from streams.cli import cli
from streams.kafka.produce import make_producer, publish_catalogue, publish_events
from streams.settings import describe
from streams.sinks.redis import RedisKeys
from streams.tools.embedded import free_port, start_redis
from streams.tools.generator import ShopperSimulator
from streams.tools.up import worker_env
from tests.helpers import scrape_metric, wait_until

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {name for name, _, _ in describe()}
_VAR = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")


class Unset(Exception):
    """A `${VAR:?message}` whose variable is not set: compose refuses to start."""


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable substitution: `${VAR}`, `${VAR:-default}`, `${VAR:?error}`."""
    def sub(m: re.Match) -> str:
        name, op, arg = m.groups()
        if env.get(name):
            return env[name]
        if op == "-":
            return arg
        if op == "?":
            raise Unset(f"{name}: {arg}")
        return ""
    return _VAR.sub(sub, value)


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    return {k: str(v) for k, v in (dict(i.split("=", 1) for i in env) if isinstance(env, list) else env).items()}


@pytest.fixture(scope="module")
def base() -> dict:
    return load("docker-compose.yml")


@pytest.fixture(scope="module")
def sasl() -> dict:
    return load("docker-compose.sasl.yml")


SECRETS = {"REDIS_PASSWORD": "r-secret", "GRAFANA_ADMIN_PASSWORD": "g-secret", "KAFKA_SASL_PASSWORD": "k-secret"}


def test_no_service_is_published_on_all_interfaces_by_default(base):
    published = []
    for name, service in base["services"].items():
        for port in service.get("ports", []):
            resolved = interpolate(str(port), SECRETS)
            parts = resolved.split(":")
            assert len(parts) == 3, f"{name}: {port} publishes on every interface"
            published.append((name, parts[0]))
    assert published and all(addr == "127.0.0.1" for _, addr in published), published
    # The operator opts in explicitly:
    assert interpolate(str(base["services"]["redis"]["ports"][0]), {"RECOSTREAM_BIND_ADDRESS": "0.0.0.0"}) \
        .startswith("0.0.0.0:")


def test_redis_requires_a_password_that_has_no_default(base):
    redis_cmd = " ".join(str(c) for c in base["services"]["redis"]["command"])
    assert "--requirepass" in redis_cmd
    with pytest.raises(Unset):
        interpolate(redis_cmd, {})
    assert "r-secret" in interpolate(redis_cmd, SECRETS)
    for name in ("worker", "generator", "topics"):
        service = {**base["x-recostream"], **base["services"][name]}
        url = interpolate(env_of(service)["RECOSTREAM_REDIS_URL"], SECRETS)
        assert url == "redis://:r-secret@redis:6379/0", name
    healthcheck_env = env_of(base["services"]["redis"])
    assert interpolate(healthcheck_env["REDISCLI_AUTH"], SECRETS) == "r-secret"


def test_grafana_has_no_default_admin_password_and_no_anonymous_access(base):
    env = env_of(base["services"]["grafana"])
    with pytest.raises(Unset):
        interpolate(env["GF_SECURITY_ADMIN_PASSWORD"], {})
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert env.get("GF_USERS_ALLOW_SIGN_UP") == "false"


def test_prometheus_lifecycle_api_is_off(base):
    assert not any("enable-lifecycle" in str(c) for c in base["services"]["prometheus"]["command"])


def test_sasl_override_is_consistent(base, sasl):
    kafka = {**env_of(base["services"]["kafka"]), **env_of(sasl["services"]["kafka"])}
    listeners = dict(re.fullmatch(r"(\w+)://[\w.-]*:(\d+)", item).groups()
                     for item in kafka["KAFKA_LISTENERS"].split(","))
    protocols = dict(item.split(":") for item in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    advertised = dict(re.fullmatch(r"(\w+)://([\w.-]+:\d+)", item).groups()
                      for item in kafka["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert set(listeners) <= set(protocols)
    assert set(advertised) == set(listeners) - {"CONTROLLER"}
    # What is published goes through SASL; PLAINTEXT stays inside the compose network.
    published = [str(p).rsplit(":", 2)[-1] for p in base["services"]["kafka"]["ports"]]
    for port in published:
        name = next(n for n, p in listeners.items() if p == port)
        assert protocols[name].startswith("SASL"), f"published listener {name} is {protocols[name]}"
    mechanisms = kafka["KAFKA_SASL_ENABLED_MECHANISMS"].split(",")
    for name in ("worker", "generator", "topics"):
        env = {**env_of(base["x-recostream"]), **env_of(base["services"][name]), **env_of(sasl["services"][name])}
        host, port = env["RECOSTREAM_KAFKA_BOOTSTRAP_SERVERS"].split(":")
        listener = next(n for n, p in listeners.items() if p == port)
        assert advertised[listener] == f"{host}:{port}"
        assert protocols[listener] == env["RECOSTREAM_KAFKA_SECURITY_PROTOCOL"]
        assert env["RECOSTREAM_KAFKA_SASL_MECHANISM"] in mechanisms
        assert {k for k in env if k.startswith("RECOSTREAM_")} <= SETTINGS, name
        with pytest.raises(Unset):
            interpolate(env["RECOSTREAM_KAFKA_SASL_PASSWORD"], {})
    users = " ".join(sasl["services"]["kafka-users"]["command"])
    assert "SCRAM-SHA-512" in users and "--entity-name recostream" in users
    for mechanism in mechanisms:  # a JAAS entry for each SASL listener and mechanism
        for name, protocol in protocols.items():
            if protocol.startswith("SASL"):
                key = f"KAFKA_LISTENER_NAME_{name}_{mechanism.replace('-', '___')}_SASL_JAAS_CONFIG"
                assert key in kafka, key


def test_settings_command_masks_every_secret():
    env = {"RECOSTREAM_KAFKA_SASL_PASSWORD": "k-secret", "RECOSTREAM_PSEUDONYMIZE_KEY": "p-secret",
           "RECOSTREAM_REDIS_URL": "redis://:r-secret@localhost:6379/0"}
    for args in (["settings"], ["settings", "--json"]):
        out = CliRunner().invoke(cli, args, env=env).output
        assert "***" in out and not any(s in out for s in ("k-secret", "p-secret", "r-secret")), out


@pytest.mark.integration
def test_worker_against_a_password_protected_redis(settings, start_worker, tmp_path):
    """A worker with the right password works and logs its settings masked; with a wrong one it stops
    at once, says which setting, and writes nothing."""
    import redis

    password = "p4ss-" + "x" * 20
    own = start_redis(tmp_path / "redis", password=password)
    client = redis.Redis.from_url(f"redis://:{password}@127.0.0.1:{own.port}/0")
    try:
        s = settings.replace(redis_url=f"redis://:{password}@127.0.0.1:{own.port}/0",
                             kafka_sasl_password="k-secret-unused")
        wrong = s.replace(redis_url=f"redis://:wrong@127.0.0.1:{own.port}/0", metrics_port=free_port())
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "streams.cli", "worker"], env=worker_env(wrong),
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and "RECOSTREAM_REDIS_URL" in proc.stderr, proc.stderr[-2000:]
        assert time.monotonic() - started < 30, "a wrong password must fail fast, not retry"
        assert "wrong" not in proc.stderr.replace("WRONGPASS", "")  # the password itself is never printed
        assert client.dbsize() == 0

        sim = ShopperSimulator(n_users=20, n_items=50, seed=3)
        producer = make_producer(s)
        publish_catalogue(producer, s, sim.catalogue())
        events = list(sim.events(300))
        publish_events(producer, s, events, live_ts=True)
        worker = start_worker(s)
        keys = RedisKeys(s.redis_prefix)
        users = sorted({p["user_id"] for _, p in events})
        wait_until(lambda: all(client.exists(keys.recs(u)) for u in users), 60,
                   "recommendations in the protected Redis", worker=worker)
        log = worker.log()
        assert password not in log and "k-secret-unused" not in log
        assert re.search(r"settings: .*\"redis_url\": \"redis://\*\*\*@", log), "start-up settings, masked"
        # No user id in any metric label or any info line.
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{s.metrics_port}/metrics", timeout=5).read().decode()
        assert scrape_metric(s, "recostream_events_processed_total") == len(events)
        for user in users:
            assert f'"{user}"' not in metrics and user not in log, user
    finally:
        client.close()
        own.stop()


def test_forget_names_no_customer_in_its_log_line():
    source = (ROOT / "streams" / "pipeline.py").read_text()
    line = next(x for x in source.splitlines() if "log.info(\"forgot" in x)
    assert "user_id" not in line, line


def test_the_run_env_file_is_private(tmp_path):
    from streams.tools.up import write_env_file

    url = "redis://:s3cr$t'x@127.0.0.1:1/0"
    path = write_env_file(tmp_path, {"RECOSTREAM_REDIS_URL": url})
    assert path.stat().st_mode & 0o077 == 0
    sourced = subprocess.run(["bash", "-c", f'. "{path}" && printf %s "$RECOSTREAM_REDIS_URL"'],
                             capture_output=True, text=True, check=True).stdout
    assert sourced == url
