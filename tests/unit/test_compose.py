"""docker-compose.yml, Dockerfile and the Grafana provisioning hold together.

No Docker engine runs here, so this checks what can be checked without one:
the compose file parses, every service can be built or pulled, every file it
mounts exists in the repository, the commands it runs exist in the CLI with
the options given, the environment it sets is made of real settings, host
ports do not clash, and Prometheus/Grafana point at the services and paths
compose actually provides.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from streams.cli import cli
from streams.settings import describe

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SETTINGS = {name for name, _, _ in describe()} | {"KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL"}


@pytest.fixture(scope="module")
def compose() -> dict:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict) and isinstance(doc.get("services"), dict), "docker-compose.yml has no services"
    return doc


def _command(service: dict) -> list[str]:
    cmd = service.get("command", [])
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _bind_mounts(service: dict) -> list[tuple[str, str]]:
    """(host path, container path) of every bind mount (named volumes excluded)."""
    out = []
    for vol in service.get("volumes", []):
        if isinstance(vol, dict):
            if vol.get("type") == "bind":
                out.append((vol["source"], vol["target"]))
            continue
        source, target = vol.split(":")[:2]
        if source.startswith((".", "/")):
            out.append((source, target))
    return out


def _host_ports(service: dict) -> list[int]:
    ports = []
    for p in service.get("ports", []):
        if isinstance(p, dict):
            if "published" in p:
                ports.append(int(p["published"]))
            continue
        parts = str(p).split(":")
        if len(parts) >= 2:
            ports.append(int(parts[-2]))
    return ports


def _recostream_services(compose: dict) -> dict[str, dict]:
    return {name: s for name, s in compose["services"].items() if s.get("image") == "recostream:local"}


def test_every_service_can_be_built_or_pulled(compose):
    for name, service in compose["services"].items():
        assert service.get("image") or service.get("build"), f"service {name} has neither image nor build"
        if service.get("build"):
            context = service["build"] if isinstance(service["build"], str) else service["build"].get("context", ".")
            assert (ROOT / context / "Dockerfile").is_file(), f"{name}: no Dockerfile in build context {context}"
        for dep in service.get("depends_on", []):
            assert dep in compose["services"], f"{name} depends on unknown service {dep}"
    for vol in (v for s in compose["services"].values() for v in s.get("volumes", []) if isinstance(v, str)):
        source = vol.split(":")[0]
        if not source.startswith((".", "/")):
            assert source in (compose.get("volumes") or {}), f"named volume {source} is not declared"


def test_the_stack_has_what_the_product_needs(compose):
    services = compose["services"]
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = _env(kafka)
    assert "controller" in env["KAFKA_PROCESS_ROLES"] and "broker" in env["KAFKA_PROCESS_ROLES"], "KRaft mode"
    assert "ZOOKEEPER" not in " ".join(env)
    assert re.fullmatch(r"redis:7[\w.-]*", services["redis"]["image"])
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")

    worker = services["worker"]
    assert _command(worker)[:2] == ["recostream", "worker"]
    assert worker.get("deploy", {}).get("replicas", 1) >= 2, "two worker replicas"
    assert not worker.get("ports"), "worker replicas must not publish host ports (scaling would clash)"
    wenv = _env(worker)
    assert wenv["RECOSTREAM_METRICS_PORT"] == "9464"
    assert wenv["RECOSTREAM_KAFKA_BOOTSTRAP_SERVERS"].split(":")[0] == "kafka"
    assert wenv["RECOSTREAM_REDIS_URL"].endswith("@redis:6379/0")
    assert _command(services["generator"])[:2] == ["recostream", "produce"]
    assert "--rate" in _command(services["generator"])

    topics = services["topics"]
    assert topics.get("restart") == "no", "topic creation is one-shot"
    for svc in ("worker", "generator"):
        assert services[svc]["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_environment_is_made_of_real_settings(compose):
    for name, service in _recostream_services(compose).items():
        unknown = {k for k in _env(service) if k.startswith("RECOSTREAM_") and k not in SETTINGS}
        assert not unknown, f"{name} sets unknown settings {unknown} (see `recostream settings`)"


def test_cli_commands_exist_with_those_options(compose):
    runner = CliRunner()
    for name, service in _recostream_services(compose).items():
        cmd = _command(service)
        if cmd[0] != "recostream":
            continue
        sub, args = cmd[1], cmd[2:]
        result = runner.invoke(cli, [sub, "--help"])
        assert result.exit_code == 0, f"{name}: `recostream {sub} --help` failed:\n{result.output}"
        # Parse (and type-convert) the exact arguments without running the command.
        command = cli.get_command(None, sub)
        ctx = command.make_context(sub, list(args), resilient_parsing=False)
        assert ctx.params is not None
        ctx.close()


def test_topic_creation_step_runs_real_code(compose):
    cmd = _command(compose["services"]["topics"])
    assert cmd[:2] == ["python", "-c"]
    code = cmd[2]
    compile(code, "<topics>", "exec")
    for module, attr in re.findall(r"from ([\w.]+) import (\w+)", code):
        mod = __import__(module, fromlist=[attr])
        assert hasattr(mod, attr), f"{module}.{attr} does not exist"


def test_host_ports_do_not_clash(compose):
    seen: dict[int, str] = {}
    for name, service in compose["services"].items():
        for port in _host_ports(service):
            assert port not in seen, f"host port {port} used by {seen[port]} and {name}"
            seen[port] = name
    assert {9090, 3000} <= set(seen), "Prometheus on 9090 and Grafana on 3000"


def test_mounted_files_exist_and_match_their_consumers(compose):
    for name, service in compose["services"].items():
        for source, _ in _bind_mounts(service):
            assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repository"

    # Prometheus: the config and the rule file it names both land in /etc/prometheus.
    prom_mounts = dict((t, s) for s, t in _bind_mounts(compose["services"]["prometheus"]))
    config_path = next(a.split("=", 1)[1] for a in _command(compose["services"]["prometheus"])
                       if a.startswith("--config.file="))
    assert config_path in prom_mounts
    config = yaml.safe_load((ROOT / prom_mounts[config_path]).read_text())
    for rule_file in config["rule_files"]:
        assert str(Path(config_path).parent / rule_file) in prom_mounts, f"rule file {rule_file} is not mounted"
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "recostream")
    sd = job["dns_sd_configs"][0]
    assert sd["names"] == ["worker"] and sd["port"] == int(_env(compose["services"]["worker"])["RECOSTREAM_METRICS_PORT"])

    # Grafana: provisioning dir, a dashboards provider whose path is the
    # mounted dashboards dir, and a datasource that every panel refers to.
    graf_mounts = dict((t, s) for s, t in _bind_mounts(compose["services"]["grafana"]))
    prov = ROOT / graf_mounts["/etc/grafana/provisioning"]
    providers = yaml.safe_load((prov / "dashboards" / "dashboards.yml").read_text())["providers"]
    dash_dir = providers[0]["options"]["path"]
    assert dash_dir in graf_mounts, f"dashboards provider reads {dash_dir}, which is not mounted"
    dashboards = list((ROOT / graf_mounts[dash_dir]).glob("*.json"))
    assert [d.name for d in dashboards] == ["recostream.json"]
    home = _env(compose["services"]["grafana"]).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    assert home == f"{dash_dir}/recostream.json"

    datasources = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text())["datasources"]
    (ds,) = datasources
    host, port = re.fullmatch(r"http://([\w-]+):(\d+)", ds["url"]).groups()
    assert host in compose["services"] and int(port) == 9090
    dash = json.loads(dashboards[0].read_text())
    uids = {p["datasource"]["uid"] for p in dash["panels"] if "datasource" in p}
    uids |= {t["datasource"]["uid"] for p in dash["panels"] for t in p.get("targets", [])}
    assert uids == {ds["uid"]}


def test_dockerfile_builds_the_package():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"pip install \.(\s|$)", text)
    assert "recostream" in text.splitlines()[-1], "default command runs recostream"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored
