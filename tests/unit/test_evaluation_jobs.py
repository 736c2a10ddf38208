"""``prequential(jobs=N)``: the models replayed in forked worker processes give the results of one process."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from models.baselines import DecayedCooccurrenceBaseline, PopularityBaseline, RepeatCooccurrenceBaseline
from models.evaluation import model_groups, prequential
from streams.tools.replay import COSTS, DECAYED, MODEL_NAME, build_models, replay
from tests.unit.test_replay import _stream


def assert_same(one, many):
    assert list(many.models) == list(one.models)
    assert (many.events, many.k, many.exclude) == (one.events, one.k, one.exclude)
    for name, score in one.models.items():
        other = many.models[name]
        assert np.array_equal(score.rr, other.rr), name
        assert np.array_equal(score.positions, other.positions), name
        assert score.coverage == other.coverage, name


@pytest.mark.parametrize("batch", [None, 100, [7, 300, 50]])
def test_workers_give_the_results_of_one_process(batch):
    stream = _stream()
    one = prequential(stream, build_models(seed=4), k=10, exclude="purchased", batch=batch)
    for jobs in (2, 3):
        many = prequential(stream, build_models(seed=4), k=10, exclude="purchased", batch=batch, jobs=jobs,
                           costs=COSTS)
        assert_same(one, many)
        assert all(score.learn_seconds > 0 for score in many.models.values())


@pytest.mark.parametrize("batch", [None, 60])
def test_one_learner_ranking_two_lists_scores_each_as_its_model_alone(batch):
    """The replay's decayed learner (:class:`Rankings`) scores each of its lists as that baseline alone does."""
    stream = _stream(1500)
    shared = {name: m for name, m in build_models(seed=4).items() if name == DECAYED}
    alone = {"repeat_cooccurrence": RepeatCooccurrenceBaseline(), "cooccurrence_decayed": DecayedCooccurrenceBaseline()}
    for jobs in (1, 2):
        ev = prequential(stream, shared, k=10, exclude="purchased", batch=batch, jobs=jobs)
        assert_same(prequential(stream, alone, k=10, exclude="purchased", batch=batch), ev)
        assert not np.array_equal(ev.models["repeat_cooccurrence"].rr, ev.models["cooccurrence_decayed"].rr)


def test_progress_reaches_every_event_once_and_an_iterator_is_read_once():
    stream = _stream(1234)
    for batch in (None, 100):
        steps = []
        ev = prequential(iter(stream), build_models(seed=1), k=5, batch=batch, jobs=2, progress=steps.append)
        assert ev.events == sum(steps) == 1234 and all(n > 0 for n in steps)


def test_the_models_given_are_left_untrained_with_workers():
    models = {"a": PopularityBaseline(), "b": PopularityBaseline()}
    ev = prequential(_stream(200), models, jobs=2)
    assert ev.models["a"].n > 0 and models["a"].model_version == models["b"].model_version == 0


class _Broken(PopularityBaseline):
    def recommend(self, user_ids, n=20, exclude="purchased"):
        raise ZeroDivisionError("broken on purpose")


def test_a_failing_worker_fails_the_replay_with_its_traceback():
    with pytest.raises(RuntimeError, match="(?s)broken.*ZeroDivisionError: broken on purpose"):
        prequential(_stream(300), {"fine": PopularityBaseline(), "broken": _Broken()}, jobs=2, batch=50)
    with pytest.raises(ValueError, match="jobs"):
        prequential(_stream(10), {"fine": PopularityBaseline()}, jobs=0)


def test_groups_are_greedy_by_cost_and_keep_the_models_order():
    names = list(COSTS)
    assert model_groups(names, 1, COSTS) == [names]
    two = model_groups(names, 2, COSTS)
    assert sorted(sum(two, [])) == sorted(names) and MODEL_NAME in two[0]  # the costliest goes first
    loads = [sum(COSTS[name] for name in group) for group in two]
    assert abs(loads[0] - loads[1]) < max(COSTS.values())
    assert model_groups(names, 99) == [[name] for name in names]
    assert model_groups(["x", "y", "z"], 2, {"x": 1.0, "y": 1.0, "z": 2.0}) == [["z"], ["x", "y"]]
    assert model_groups(["x", "y", "z"], 2, {"x": 1.0, "z": 4.0}) == [["z"], ["x", "y"]]  # y: the mean, 2.5
    assert model_groups(["x", "y", "z"], 2, {"x": 0.0, "y": 0.0, "z": 0.0}) == [["x", "z"], ["y"]]


def test_replay_command_with_jobs(tmp_path):
    log = tmp_path / "log.csv"
    lines = ["timestamp,user_id,item_id,event_type"]
    lines += [f"{1_700_000_000_000 + 1000 * int(ts)},{user},{item},{etype}" for ts, user, item, etype in _stream(900)]
    log.write_text("\n".join(lines) + "\n")
    outs = []
    for jobs in ("1", "2"):
        result = CliRunner().invoke(replay, ["--events", str(log), "--batch", "50", "--json", "--jobs", jobs])
        assert result.exit_code == 0, result.output
        out = json.loads(result.stdout)
        for key in ("seconds", "events_per_s"):
            out.pop(key)
        outs.append(out)
    assert outs[0] == outs[1]
    help_ = CliRunner().invoke(replay, ["--help"])
    assert "--jobs" in help_.output and "CPUs available" in help_.output
