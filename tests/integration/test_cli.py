"""The command line: every command has --help; `produce --csv` publishes a CSV log."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from streams.cli import cli
from streams.settings import settings_env
from tests.helpers import read_topic

COMMANDS = sorted(cli.list_commands(click.Context(cli)))


def test_expected_commands_exist():
    assert {"up", "worker", "produce", "replay", "convert", "bench", "bench-engine", "forget", "settings"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and len(result.output.splitlines()) > 4


def test_settings_json_masks_secrets():
    result = CliRunner().invoke(cli, ["settings", "--json"], env={
        "RECOSTREAM_KAFKA_SASL_PASSWORD": "hunter2", "RECOSTREAM_REDIS_URL": "redis://:pw@host:6379/0"})
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["kafka_sasl_password"] == "***" and "pw" not in data["redis_url"]


def test_invalid_setting_is_a_clear_error():
    result = CliRunner().invoke(cli, ["settings"], env={"RECOSTREAM_TOP_N": "zero"})
    assert result.exit_code != 0 and "RECOSTREAM_TOP_N" in result.output


def test_worker_without_services_explains_what_to_set():
    result = CliRunner().invoke(cli, ["worker"], env={"RECOSTREAM_KAFKA_BOOTSTRAP_SERVERS": "", "KAFKA_BOOTSTRAP_SERVERS": ""})
    assert result.exit_code != 0 and "RECOSTREAM_KAFKA_BOOTSTRAP_SERVERS" in result.output


@pytest.mark.integration
def test_produce_csv_publishes_rows_and_reports_bad_ones(settings, tmp_path):
    csv = tmp_path / "log.csv"
    csv.write_text(
        "timestamp,user_id,item_id,event_type,price,category\n"
        "2024-05-01T10:00:00Z,u1,i1,browse,,books\n"
        "2024-05-01T10:01:00Z,u1,i1,purchase,9.5,\n"
        "not-a-time,u2,i2,click,,\n"
        "1714557720000,u2,i3,click,,\n"
        "2024-05-01T10:03:00Z,u3,i4,wishlist,,\n"
    )
    result = CliRunner().invoke(cli, ["produce", "--csv", str(csv)], env=settings_env(settings))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["events"] == 3 and summary["bad_rows"] == 2
    assert any("line 4" in b for b in summary["bad_row_examples"])
    assert any("line 6" in b for b in summary["bad_row_examples"])
    counts = {t: len(read_topic(settings, t)) for t in (settings.topic_browse, settings.topic_click, settings.topic_purchase)}
    assert counts == {settings.topic_browse: 1, settings.topic_click: 1, settings.topic_purchase: 1}
    purchase = json.loads(read_topic(settings, settings.topic_purchase)[0].value())
    assert purchase["user_id"] == "u1" and purchase["type"] == "purchase" and purchase["ts"] == 1714557660000
    assert purchase["price"] == 9.5 and purchase["category"] == "books"  # the item's, as replay reads it
    click = json.loads(read_topic(settings, settings.topic_click)[0].value())
    assert "category" not in click


def test_the_worker_process_loads_no_tool():
    """Benchmark, demo launcher, embedded servers, generator, replay and convert stay out of a worker."""
    import subprocess
    import sys

    code = ("import sys, streams.cli as c; c.cli.get_command(None, 'worker'); import streams.worker; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('streams.'))))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
                 .stdout.split())
    tools = {"streams.tools.bench", "streams.tools.bench_engine", "streams.tools.up", "streams.tools.embedded", "streams.tools.generator",
             "streams.tools.replay", "streams.tools.convert", "streams.tools.producing"}
    assert "streams.worker" in loaded and not loaded & tools, loaded & tools
