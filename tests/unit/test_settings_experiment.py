"""Experiment settings: parsed once at start-up; settings that do not add up name the variable and the setting."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from streams.cli import cli
from streams.settings import Settings, SettingsError, settings_env

GOOD = {"name": "ranker-vs-pop", "salt": "2024-05", "holdout": 0.1, "control": "pop",
        "variants": [{"name": "pop", "share": 0.45, "strategy": "popularity"},
                     {"name": "rank", "share": 0.3, "strategy": "ranker"},
                     {"name": "rank-light", "share": 0.15, "strategy": "ranker", "overrides": {"w_popularity": 0.02}}]}


def test_no_experiment_is_one_ranker_variant_with_every_customer():
    exp = Settings().experiment_config
    assert (exp.name, exp.arms, exp.variant("ranker").strategy) == ("default", ("ranker",), "ranker")
    s = Settings()
    assert (s.attribution_click_window_s, s.attribution_purchase_window_s, s.topic_impressions) == (
        1800.0, 86400.0, "impressions")


def test_an_experiment_from_json_or_from_a_file(tmp_path):
    exp = Settings.from_env({"RECOSTREAM_EXPERIMENT": json.dumps(GOOD)}).experiment_config
    assert exp.arms == ("pop", "rank", "rank-light", "holdout") and exp.control == "pop"
    path = tmp_path / "exp.json"
    path.write_text(json.dumps(GOOD))
    assert Settings.from_env({"RECOSTREAM_EXPERIMENT_FILE": str(path)}).experiment_config == exp
    # A child process gets the same experiment from the environment the parent writes.
    assert Settings.from_env(settings_env(Settings(experiment=json.dumps(GOOD)))).experiment_config == exp


def _with(path: list, value) -> dict:
    doc = json.loads(json.dumps(GOOD))
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


@pytest.mark.parametrize("doc, fragments", [
    (_with(["variants", 1, "share"], 0.5), ["RECOSTREAM_EXPERIMENT:", "experiment.variants[].share", "sum to 1.2"]),
    (_with(["variants", 1, "share"], "0.3"), ["RECOSTREAM_EXPERIMENT:", "experiment.variants[1].share"]),
    (_with(["variants", 0, "strategy"], "random"), ["experiment.variants[0].strategy"]),
    (_with(["variants", 2, "overrides"], {"w_pop": 1}), ["experiment.variants[2].overrides.w_pop", "not a ranker"]),
    (_with(["variants", 2, "overrides"], {"exclude": "none"}), ["experiment.variants[2].overrides.exclude"]),
    (_with(["variants", 2, "overrides"], {"decay_clock": "x"}), ["experiment.variants[2].overrides", "refuses"]),
    (_with(["control"], "nope"), ["experiment.control"]),
    ("{not json", ["RECOSTREAM_EXPERIMENT:", "not valid JSON"]),
])
def test_settings_that_do_not_add_up_name_the_variable_and_the_setting(doc, fragments):
    text = doc if isinstance(doc, str) else json.dumps(doc)
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"RECOSTREAM_EXPERIMENT": text})
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_file_errors_name_the_file_setting(tmp_path):
    with pytest.raises(SettingsError, match=r"RECOSTREAM_EXPERIMENT_FILE \(.*missing.json\): experiment: cannot read"):
        Settings.from_env({"RECOSTREAM_EXPERIMENT_FILE": str(tmp_path / "missing.json")})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_with(["holdout"], 1.5)))
    with pytest.raises(SettingsError, match=r"RECOSTREAM_EXPERIMENT_FILE .*experiment.holdout"):
        Settings.from_env({"RECOSTREAM_EXPERIMENT_FILE": str(bad)})
    with pytest.raises(SettingsError, match="not both"):
        Settings.from_env({"RECOSTREAM_EXPERIMENT_FILE": str(bad), "RECOSTREAM_EXPERIMENT": json.dumps(GOOD)})


def test_windows_and_the_impressions_topic_are_validated():
    with pytest.raises(SettingsError, match="RECOSTREAM_ATTRIBUTION_CLICK_WINDOW_S"):
        Settings.from_env({"RECOSTREAM_ATTRIBUTION_CLICK_WINDOW_S": "0"})
    with pytest.raises(SettingsError, match="distinct"):
        Settings(topic_impressions="click")


def test_the_worker_stops_at_start_with_the_message():
    env = {"RECOSTREAM_EXPERIMENT": json.dumps(_with(["variants", 1, "share"], 0.5)),
           "RECOSTREAM_KAFKA_BOOTSTRAP_SERVERS": "localhost:1", "RECOSTREAM_REDIS_URL": "redis://localhost:1"}
    for command in (["worker"], ["settings"], ["experiment", "report"]):
        result = CliRunner().invoke(cli, command, env=env)
        assert result.exit_code == 2, (command, result.output)
        assert "RECOSTREAM_EXPERIMENT: experiment.variants[].share" in result.output
