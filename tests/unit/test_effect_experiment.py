"""Experiment settings: validation naming the setting, deterministic and stable assignment,
observed shares (models/effect/experiment.py)."""

from __future__ import annotations

import copy
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.effect.experiment import HOLDOUT, Experiment, ExperimentError, assignment_point
from models.effect.statistics import srm_p_value

GOOD = {
    "name": "ranker-vs-pop",
    "salt": "2024-05",
    "variants": [
        {"name": "control", "share": 0.2, "strategy": "popularity"},
        {"name": "ranker", "share": 0.3, "strategy": "ranker"},
        {"name": "ranker-light", "share": 0.4, "strategy": "ranker", "overrides": {"w_popularity": 0.02}},
    ],
    "holdout": 0.1,
    "control": "control",
}


def settings_with(path: list, value) -> dict:
    """GOOD with the setting at ``path`` replaced (``...`` as value: removed)."""
    data = copy.deepcopy(GOOD)
    node = data
    for key in path[:-1]:
        node = node[key]
    if value is ...:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


def test_good_settings_load_and_round_trip():
    exp = Experiment.from_mapping(GOOD)
    assert exp.arms == ("control", "ranker", "ranker-light", HOLDOUT)
    assert exp.shares == {"control": 0.2, "ranker": 0.3, "ranker-light": 0.4, "holdout": 0.1}
    assert exp.variant("ranker-light").overrides_dict == {"w_popularity": 0.02}
    assert Experiment.from_json(json.dumps(exp.to_mapping())) == exp
    assert hash(exp) == hash(Experiment.from_mapping(GOOD))  # frozen and hashable


def test_defaults_holdout_zero_and_control_first_variant():
    exp = Experiment.from_mapping({"name": "e", "salt": "s", "variants": [
        {"name": "b", "share": 0.5, "strategy": "ranker"}, {"name": "a", "share": 0.5, "strategy": "popularity"}]})
    assert (exp.holdout, exp.control, exp.arms) == (0.0, "b", ("b", "a"))


def test_from_file(tmp_path):
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(GOOD))
    assert Experiment.from_file(path) == Experiment.from_mapping(GOOD)


BAD = [
    ([], "x", "experiment"),  # replaced whole below
    (["holdot"], 0.1, "experiment.holdot"),
    (["name"], ..., "experiment.name"),
    (["name"], "has space", "experiment.name"),
    (["salt"], "", "experiment.salt"),
    (["salt"], 7, "experiment.salt"),
    (["variants"], [], "experiment.variants"),
    (["variants"], {"a": 1}, "experiment.variants"),
    (["variants", 0], "control", "experiment.variants[0]"),
    (["variants", 0, "weight"], 1, "experiment.variants[0].weight"),
    (["variants", 1, "share"], "0.3", "experiment.variants[1].share"),
    (["variants", 1, "share"], True, "experiment.variants[1].share"),
    (["variants", 1, "share"], 0, "experiment.variants[1].share"),
    (["variants", 1, "share"], -0.3, "experiment.variants[1].share"),
    (["variants", 1, "share"], 1.5, "experiment.variants[1].share"),
    (["variants", 1, "share"], float("nan"), "experiment.variants[1].share"),
    (["variants", 1, "share"], ..., "experiment.variants[1].share"),
    (["variants", 1, "strategy"], "random", "experiment.variants[1].strategy"),
    (["variants", 1, "strategy"], ..., "experiment.variants[1].strategy"),
    (["variants", 2, "name"], "ranker", "experiment.variants[2].name"),
    (["variants", 0, "name"], "holdout", "experiment.variants[0].name"),
    (["variants", 0, "name"], "unknown", "experiment.variants[0].name"),
    (["variants", 0, "overrides"], {"w_mf": 0.1}, "experiment.variants[0].overrides"),
    (["variants", 2, "overrides"], [1], "experiment.variants[2].overrides"),
    (["variants", 2, "overrides", "w_covisit"], [1, 2], "experiment.variants[2].overrides.w_covisit"),
    (["variants", 2, "overrides", "w_covisit"], float("inf"), "experiment.variants[2].overrides.w_covisit"),
    (["holdout"], -0.1, "experiment.holdout"),
    (["holdout"], "0.1", "experiment.holdout"),
    (["holdout"], 1.0, "experiment.holdout"),
    (["holdout"], 0.2, "experiment.variants[].share + experiment.holdout"),
    (["holdout"], ..., "experiment.variants[].share + experiment.holdout"),
    (["control"], "nope", "experiment.control"),
    (["control"], "holdout", "experiment.control"),
]


@pytest.mark.parametrize(("path", "value", "setting"), BAD, ids=[s for _, _, s in BAD])
def test_bad_settings_name_the_setting(path, value, setting):
    data = value if not path else settings_with(path, value)
    with pytest.raises(ExperimentError) as err:
        Experiment.from_mapping(data)
    assert err.value.setting == setting
    assert str(err.value).startswith(setting + ": ")


def test_overrides_checked_against_the_known_parameters():
    Experiment.from_mapping(GOOD, known_overrides={"w_popularity"})
    with pytest.raises(ExperimentError) as err:
        Experiment.from_mapping(GOOD, known_overrides={"w_covisit"})
    assert err.value.setting == "experiment.variants[2].overrides.w_popularity"


def test_bad_json_and_missing_file_name_the_experiment(tmp_path):
    for call in (lambda: Experiment.from_json("{"), lambda: Experiment.from_file(tmp_path / "none.json")):
        with pytest.raises(ExperimentError) as err:
            call()
        assert err.value.setting == "experiment"


def test_shares_need_only_add_up_to_one_within_floating_point_slack():
    third = {"name": "e", "salt": "s", "variants": [
        {"name": n, "share": 1 / 3, "strategy": "ranker"} for n in "abc"]}
    Experiment.from_mapping(third)
    Experiment.from_mapping({**third, "variants": [{**v, "share": 0.3333333333} for v in third["variants"]]})
    with pytest.raises(ExperimentError):
        Experiment.from_mapping({**third, "variants": [{**v, "share": 0.333} for v in third["variants"]]})


def test_assignment_is_pinned():
    # The hash must never change across versions: running experiments would reshuffle their customers.
    assert assignment_point("2024-05", "u1") == 0.27400738983694506
    exp = Experiment.from_mapping(GOOD)
    assert [exp.assign(f"u{i}") for i in range(8)] == PINNED


PINNED = ["ranker", "ranker", "ranker", "ranker-light", "holdout", "ranker", "ranker-light", "ranker-light"]


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(max_size=40))
def test_assignment_is_deterministic_and_in_the_arms(user_id):
    a, b = Experiment.from_mapping(GOOD), Experiment.from_json(json.dumps(GOOD))
    assert a.assign(user_id) == b.assign(user_id) == a.assign(user_id)
    assert a.assign(user_id) in a.arms
    assert 0.0 <= assignment_point(a.salt, user_id) < 1.0


def test_a_customer_keeps_its_arm_when_only_other_settings_change():
    exp = Experiment.from_mapping(GOOD)
    renamed = Experiment.from_mapping({**GOOD, "name": "other", "control": "ranker"})
    ids = [f"c{i}" for i in range(2000)]
    assert [exp.assign(u) for u in ids] == [renamed.assign(u) for u in ids]
    resalted = Experiment.from_mapping({**GOOD, "salt": "2024-06"})
    moved = sum(exp.assign(u) != resalted.assign(u) for u in ids) / len(ids)
    # a new salt reshuffles: two independent draws agree with probability sum(share^2) = 0.3
    assert 0.6 < moved < 0.8


def test_observed_shares_over_100k_ids_are_within_a_few_standard_errors():
    exp = Experiment.from_mapping(GOOD)
    n = 100_000
    seen = dict.fromkeys(exp.arms, 0)
    for i in range(n):
        seen[exp.assign(f"user-{i}")] += 1
    for arm, share in exp.shares.items():
        se = math.sqrt(share * (1 - share) / n)
        assert abs(seen[arm] / n - share) < 4 * se, (arm, seen[arm])
    assert srm_p_value([seen[a] for a in exp.shares], list(exp.shares.values())) > 1e-4


def test_the_last_arm_takes_whatever_rounding_leaves():
    exp = Experiment.from_mapping({"name": "e", "salt": "s", "variants": [
        {"name": n, "share": 0.1, "strategy": "ranker"} for n in "abcdefghij"]})
    assert exp._bounds[-1] == (1.0, "j")
