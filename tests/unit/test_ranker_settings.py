"""RECOSTREAM_RANKER: the product ranker's parameters, checked at start-up, carried by checkpoints, kept by them."""

from __future__ import annotations

import json

import pytest

from models.effect import Experiment
from models.engine import PersonalisationEngine
from streams.settings import Settings, SettingsError, settings_env
from streams.wiring import check_ranker_overrides

SLOW = {"popularity_half_life": 200_000, "covisit_half_life": None}


def test_the_setting_is_parsed_once_and_travels_to_child_processes():
    s = Settings.from_env({"RECOSTREAM_RANKER": json.dumps(SLOW)})
    assert s.ranker_overrides == SLOW and Settings().ranker_overrides == {}
    assert Settings.from_env(settings_env(s)).ranker_overrides == SLOW


@pytest.mark.parametrize("text, says", [
    ('{"popularity_half_life": ', "not JSON"),
    ('[["w_mf", 0]]', "JSON object"),
    ('{"exclude": "none"}', "settings of their own"),
    ('{"seed": 1}', "settings of their own"),
    ('{"w_popularty": 0.3}', "w_popularty"),
    ('{"decay_clock": "weeks"}', "refuses"),
    ('{"popularity_half_life": [2000, 0]}', "refuses"),
    ('{"popularity_half_life": []}', "refuses"),
])
def test_a_ranker_setting_that_does_not_add_up_names_the_variable(text, says):
    with pytest.raises(SettingsError, match="^RECOSTREAM_RANKER: .*" + says):
        Settings.from_env({"RECOSTREAM_RANKER": text})


def test_several_popularity_half_lives_are_a_list_the_ranker_chooses_among():
    s = Settings.from_env({"RECOSTREAM_RANKER": '{"popularity_half_life": [4000000, 16000000, null]}'})
    engine = PersonalisationEngine(ranker_overrides=s.ranker_overrides)
    assert engine.ranker.items.popularity.half_lives == (4_000_000, 16_000_000, None)
    restored = PersonalisationEngine.loads(engine.dumps())
    check_ranker_overrides(restored, s.ranker_overrides)  # the same setting: no complaint
    assert restored.ranker.served_popularity_half_life == 4_000_000


def test_the_engine_builds_its_rankers_with_them_and_variants_add_their_own():
    engine = PersonalisationEngine(ranker_overrides=SLOW)
    assert engine.ranker.popularity_half_life == 200_000 and engine.ranker.covisit_half_life is None
    assert engine.ranker.exclude == "purchased" and engine.ranker.share_items
    engine.set_experiment(Experiment.from_mapping(
        {"name": "e", "salt": "s", "variants": [
            {"name": "a", "share": 0.5, "strategy": "ranker"},
            {"name": "b", "share": 0.5, "strategy": "ranker", "overrides": {"popularity_half_life": 2_000}}]}))
    variant = engine.variant_rankers["b"][1]
    assert variant.popularity_half_life == 2_000 and variant.covisit_half_life is None


def test_a_checkpoint_keeps_the_parameters_and_a_different_setting_stops_the_worker():
    engine = PersonalisationEngine.loads(PersonalisationEngine(ranker_overrides=SLOW).dumps())
    assert engine.ranker_overrides == SLOW and engine.ranker.popularity_half_life == 200_000
    check_ranker_overrides(engine, SLOW)  # the same: fine
    check_ranker_overrides(engine, {})  # not set: the checkpoint's are kept
    with pytest.raises(SettingsError, match="RECOSTREAM_RANKER: .*learned with .*RECOSTREAM_APP_ID"):
        check_ranker_overrides(engine, {"popularity_half_life": 20_000})
    with pytest.raises(SettingsError, match="RECOSTREAM_RANKER"):
        check_ranker_overrides(PersonalisationEngine(), SLOW)  # defaults checkpointed, overrides asked


def test_a_checkpoint_from_before_the_setting_has_the_defaults():
    import pickle

    state = pickle.loads(PersonalisationEngine().dumps())
    del state["params"]["ranker_overrides"]
    engine = PersonalisationEngine.loads(pickle.dumps(state))
    assert engine.ranker_overrides == {}
    check_ranker_overrides(engine, {})


def test_commands_stop_on_a_ranker_setting_that_does_not_add_up():
    from click.testing import CliRunner

    from streams.cli import cli

    env = {"RECOSTREAM_RANKER": '{"popularity_half_life": -5}', "RECOSTREAM_KAFKA_BOOTSTRAP_SERVERS": "localhost:1",
           "RECOSTREAM_REDIS_URL": "redis://localhost:1"}
    for command in (["settings"], ["worker"]):
        result = CliRunner().invoke(cli, command, env=env)
        assert result.exit_code == 2 and "RECOSTREAM_RANKER: the ranker refuses them" in result.output, result.output
