"""The ``replay`` command: CSV parsing, bad rows, JSON/table output, plot."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from streams.contract import parse_timestamp
from streams.tools.replay import read_events, replay


def write_log(path, n_events=1500, seed=0, bad=True, epoch_ms=False):
    rng = np.random.default_rng(seed)
    types = ["browse", "click", "purchase"]
    lines = ["timestamp,user_id,item_id,event_type,price"]
    for t in range(n_events):
        u = int(rng.integers(40))
        item = (u % 5) * 20 + int(rng.integers(20))  # five taste groups
        ts = str(1_700_000_000_000 + 1000 * t) if epoch_ms else f"2024-01-01T00:{t // 60 % 60:02d}:{t % 60:02d}Z"
        lines.append(f"{ts},u{u},i{item},{types[int(rng.integers(3))]},{rng.random() * 50:.2f}")
    if bad:
        lines.insert(3, "not-a-date,u1,i1,click,1.0")       # line 4
        lines.insert(6, "2024-01-01T00:00:00Z,u1,i1,wishlist,1.0")  # line 7
        lines.insert(9, "2024-01-01T00:00:00Z,u1,i1")        # line 10
        lines.insert(12, "2024-01-01T00:00:00Z,u1,i1,click,-3")  # line 13
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_timestamps_are_read_by_the_contract_parser_with_its_csv_option():
    def csv(value: str) -> float:
        return parse_timestamp(value, csv=True)

    assert csv("2024-01-01T00:00:00Z") == csv("2024-01-01T00:00:00") == csv(" 2024-01-01 00:00:00 ") == 1704067200.0
    assert csv("2024-01-01T01:00:00+01:00") == csv("1704067200000") == 1704067200.0
    # What the CSV option adds to the wire's rule, and nothing else.
    assert parse_timestamp("2024-01-01T01:00:00+01:00") == 1704067200.0
    for lenient in ("2024-01-01T00:00:00", "1704067200000", " 2024-01-01T00:00:00Z"):
        with pytest.raises(ValueError):
            parse_timestamp(lenient)
    for refused in ("2024-01-01", "2024-01-01T00:00Z", "", "1.5e12", "not-a-date"):
        with pytest.raises(ValueError):
            csv(refused)


def test_read_events_reports_every_bad_row_with_line_numbers(tmp_path):
    reported = []
    events, n_bad = read_events(str(write_log(tmp_path / "log.csv")), lambda line, why: reported.append((line, why)))
    assert n_bad == 4 and [line for line, _ in reported] == [4, 7, 10, 13]
    assert "timestamp" in reported[0][1] and "wishlist" in reported[1][1] and "price" in reported[3][1]
    assert len(events) == 1500
    assert [e[0] for e in events] == sorted(e[0] for e in events)


def test_replay_json(tmp_path):
    log = write_log(tmp_path / "log.csv")
    result = CliRunner().invoke(replay, ["--events", str(log), "--k", "5", "--exclude", "interacted", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)  # stdout holds exactly one JSON object
    assert set(out) >= {"model", "baselines", "k", "exclude", "events", "bad_rows", "events_per_s"}
    assert set(out["baselines"]) == {"popularity", "cooccurrence", "cooccurrence_decayed", "repeat",
                                     "repeat_cooccurrence"}
    assert (out["k"], out["exclude"], out["events"], out["bad_rows"]) == (5, "interacted", 1500, 4)
    for block in [out["model"], *out["baselines"].values()]:
        assert set(block) >= {"hr", "mrr", "n", "coverage"}
        assert 0 <= block["mrr"] <= block["hr"] <= 1 and 0 <= block["coverage"] <= 1
        assert block["n"] == out["model"]["n"] > 1400
    # Re-showing a customer's own items is all `repeat` does; discovery leaves it nothing.
    assert out["baselines"]["repeat"]["hr"] == 0 and out["model"]["coverage"] > 0
    # Returns and discovery split the judged events; excluded, the returns are never hit.
    for block in [out["model"], *out["baselines"].values()]:
        returns, discovery = block["returns"], block["discovery"]
        assert returns["n"] + discovery["n"] == block["n"] and returns["n"] > 100 and returns["hr"] == 0
        assert discovery["hr"] * discovery["n"] == pytest.approx(block["hr"] * block["n"])
    # the data has strong taste groups: the ranker must beat popularity
    assert out["model"]["hr"] > out["baselines"]["popularity"]["hr"]
    assert "line 4" in result.stderr and "4 bad row(s) skipped" in result.stderr
    # The comparison with the baselines: the best one (by HR, then MRR) and the rule against it, and
    # per baseline the paired differences, which are the differences of the blocks above.
    cmp = out["comparison"]
    best = max(out["baselines"], key=lambda b: (out["baselines"][b]["hr"], out["baselines"][b]["mrr"]))
    assert cmp["best_baseline"] == best
    assert cmp["hr_ratio"] == pytest.approx(out["model"]["hr"] / out["baselines"][best]["hr"])
    assert cmp["rule_met"] == (cmp["hr_ratio"] >= (1.05 if out["baselines"][best]["hr"] >= 0.02 else 1.0)
                               and cmp["mrr_ratio"] >= 1.0)
    for name, d in cmp["vs"].items():
        assert d["hr_diff"] == pytest.approx(out["model"]["hr"] - out["baselines"][name]["hr"])
        assert d["hr_diff_ci95"][0] <= d["hr_diff"] <= d["hr_diff_ci95"][1]
        assert d["mrr_diff_ci95"][0] <= d["mrr_diff"] <= d["mrr_diff_ci95"][1]
    assert cmp["vs"]["popularity"]["hr_diff_ci95"][0] > 0  # measurably better than popularity
    # With the customer's own items excluded, all the hits the rule asks must come from discovery.
    best = out["baselines"][best]
    assert cmp["discovery_hr_needed"] * out["model"]["discovery"]["n"] == pytest.approx(
        (1.05 if best["hr"] >= 0.02 else 1.0) * best["hr"] * best["n"])


def test_replay_splits_returns_from_discovery_where_re_views_are_allowed(tmp_path):
    log = write_log(tmp_path / "log.csv", bad=False)
    result = CliRunner().invoke(replay, ["--events", str(log), "--exclude", "purchased", "--json", "--jobs", "1"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    # `repeat` lists only the customer's own items: every hit of it is a return.
    repeat = out["baselines"]["repeat"]
    assert repeat["discovery"]["hr"] == 0 and repeat["returns"]["hr"] > 0.1
    assert repeat["returns"]["n"] == out["model"]["returns"]["n"] > 100
    # The floor on discovery: every return hit plus that discovery HR gives the hits the rule asks.
    cmp, model = out["comparison"], out["model"]
    best = out["baselines"][cmp["best_baseline"]]
    lift = 1.05 if best["hr"] >= 0.02 else 1.0
    returns, discovery = model["returns"]["n"], model["discovery"]["n"]
    assert returns + cmp["discovery_hr_needed"] * discovery == pytest.approx(max(lift * best["hr"] * best["n"], returns))
    assert cmp["discovery_hr_best"] == max(b["discovery"]["hr"] for b in [model, *out["baselines"].values()])


def test_replay_table_and_plot(tmp_path):
    log = write_log(tmp_path / "log.csv", n_events=800, bad=False, epoch_ms=True)
    png = tmp_path / "rolling.png"
    result = CliRunner().invoke(replay, ["--events", str(log), "--plot", str(png)])
    assert result.exit_code == 0, result.output
    for name in ("HybridRanker", "popularity", "cooccurrence", "HR@10", "MRR@10", "events/s", "HR@10 returns",
                 "discovery", "minus each baseline", "95 % interval", "quality rule"):
        assert name in result.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_replay_rejects_missing_columns_and_shows_help(tmp_path):
    log = tmp_path / "bad.csv"
    log.write_text("ts,user,item\n1,a,b\n")
    result = CliRunner().invoke(replay, ["--events", str(log)])
    assert result.exit_code != 0 and "timestamp" in result.output
    help_ = CliRunner().invoke(replay, ["--help"])
    assert help_.exit_code == 0 and "--exclude" in help_.output and "--plot" in help_.output


def _stream(n_events=1200, n_users=30, seed=3):
    rng = np.random.default_rng(seed)
    types = ["browse", "click", "purchase"]
    out = []
    for t in range(n_events):
        u = int(rng.integers(n_users))
        out.append((float(t), f"u{u}", f"i{(u % 4) * 15 + int(rng.integers(15))}", types[int(rng.integers(3))]))
    return out


def test_batched_replay_of_one_customer_is_the_per_event_replay():
    # With one customer, the list served after their previous event is the list
    # a per-event replay asks for before the next one: both protocols agree.
    from models.evaluation import prequential
    from streams.tools.replay import build_models

    stream = [(ts, "u0", item, etype) for ts, _, item, etype in _stream(300)]
    per_event = prequential(stream, build_models(seed=1), k=10, exclude="none")
    batched = prequential(stream, build_models(seed=1), k=10, exclude="none", batch=1)
    for name, score in per_event.models.items():
        assert np.array_equal(score.rr, batched.models[name].rr), name
        assert np.array_equal(score.positions, batched.models[name].positions)


def test_batched_replay_scores_each_event_against_the_list_last_served():
    from models.evaluation import prequential, served_lists
    from models.ranking import valid_part
    from streams.tools.replay import MODEL_NAME, build_models

    stream = _stream()
    # The lists a worker serving micro-batches of 100 would have written, by hand.
    last, expected = {}, []
    for _, chunk, users, ids, scores in served_lists(stream, build_models(seed=2)[MODEL_NAME], 100, k=10,
                                                          exclude="purchased"):
        for _, user, item, _ in chunk:
            if user in last:
                expected.append(1.0 / (last[user].index(item) + 1) if item in last[user] else 0.0)
        for r, user in enumerate(users):
            last[user] = valid_part(ids, scores, r)[0].tolist()
    ev = prequential(stream, build_models(seed=2), k=10, exclude="purchased", batch=100)
    assert ev.models[MODEL_NAME].rr.tolist() == expected
    assert 0 < len(expected) < len(stream)
    # One batch holding the whole stream serves nobody before their events.
    assert prequential(stream, build_models(seed=2), batch=len(stream)).models[MODEL_NAME].n == 0


def test_replay_batch_option_reports_the_protocol(tmp_path):
    log = write_log(tmp_path / "log.csv", bad=False)
    result = CliRunner().invoke(replay, ["--events", str(log), "--batch", "200", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["batch"] == 200 and report["events"] == 1500 and 0 < report["model"]["n"] < 1500
    bad = CliRunner().invoke(replay, ["--events", str(log), "--batch", "0"])
    assert bad.exit_code == 2 and "--batch" in bad.output


def test_replay_workers_share_their_item_side_unless_told_not_to(tmp_path):
    log = write_log(tmp_path / "log.csv", bad=False)
    reports = {}
    for flags in ([], ["--no-sharing"]):
        result = CliRunner().invoke(replay, ["--events", str(log), "--batch", "200", "--workers", "3", "--json",
                                             "--jobs", "1", *flags], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        reports[bool(flags)] = json.loads(result.stdout.strip().splitlines()[-1])
    shared, alone = reports[False], reports[True]
    assert shared["workers"] == alone["workers"] == 3
    assert shared["sharing"] is True and alone["sharing"] is False
    assert shared["model"]["n"] == alone["model"]["n"] and shared["baselines"] == alone["baselines"]
    assert shared["model"] != alone["model"]  # the item side each worker ranks with differs


def test_replay_overrides_change_the_ranker_and_are_checked(tmp_path):
    log = write_log(tmp_path / "log.csv", n_events=600, bad=False)
    runs = {}
    for overrides in ("", '{"popularity_half_life": null, "w_popularity": 0.3}'):
        result = CliRunner().invoke(replay, ["--events", str(log), "--json", "--jobs", "1", "--overrides", overrides])
        assert result.exit_code == 0, result.output
        runs[overrides] = json.loads(result.stdout)
    plain, changed = runs.values()
    assert plain["overrides"] == {} and changed["overrides"] == {"popularity_half_life": None, "w_popularity": 0.3}
    assert plain["baselines"] == changed["baselines"] and plain["model"] != changed["model"]
    for bad, says in (('{"exclude": "none"}', "settings of their own"), ('{"w_mf": -1', "not JSON"), ("[1]", "JSON object"),
                      ('{"decay_clock": "weeks"}', "refuses"), ('{"no_such": 1}', "no_such")):
        result = CliRunner().invoke(replay, ["--events", str(log), "--overrides", bad])
        assert result.exit_code == 2 and says in result.output, (bad, result.output)


def test_replay_reports_what_the_ranker_came_to(tmp_path):
    from models.ranking import HybridRanker
    from models.ranking.features import FEATURES

    log = write_log(tmp_path / "log.csv", bad=False)
    facts = {}
    for args in (["--jobs", "1"], ["--jobs", "2"], ["--jobs", "1", "--overrides", '{"popularity_half_life": null}'],
                 ["--jobs", "1", "--batch", "200", "--workers", "3"],
                 ["--jobs", "1", "--batch", "200", "--workers", "3", "--no-sharing"]):
        result = CliRunner().invoke(replay, ["--events", str(log), "--json", *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        facts[" ".join(args)] = json.loads(result.stdout)["model"]["facts"]
    one = facts["--jobs 1"]
    assert facts["--jobs 2"] == one  # the forked job sends them back as they were
    assert one["decay_clock"] == "events" and one["popularity_half_life"] in HybridRanker().popularity_half_life
    assert list(one["second_stage_weights"]) == list(FEATURES) and one["second_stage_steps"] > 10
    assert facts["--jobs 1 --overrides {\"popularity_half_life\": null}"]["popularity_half_life"] is None
    # Workers sharing their item side have learned the same second stage: one set of facts.
    assert set(facts["--jobs 1 --batch 200 --workers 3"]) == set(one)
    alone = facts["--jobs 1 --batch 200 --workers 3 --no-sharing"]["workers"]  # each learned its own
    assert len(alone) == 3 and all(set(f) == set(one) for f in alone) and alone[0] != alone[1]
    table = CliRunner().invoke(replay, ["--events", str(log), "--jobs", "1"], catch_exceptions=False)
    assert f"popularity half-life {one['popularity_half_life']:,.0f} events" in table.stdout


def test_a_category_column_names_the_items_categories_as_a_workers_events_do(tmp_path):
    from models.evaluation import prequential
    from streams.tools.replay import MODEL_NAME, build_models

    plain = write_log(tmp_path / "log.csv", bad=False)
    lines = plain.read_text().splitlines()
    # The log's taste groups are the items' categories; one row's category is refused by the contract.
    with_cats = [lines[0] + ",category"] + [f"{line},g{int(line.split(',')[2][1:]) // 20}" for line in lines[1:]]
    with_cats[7] = with_cats[7].rsplit(",", 1)[0] + ",bad\x01category"
    log = tmp_path / "cats.csv"
    log.write_text("\n".join(with_cats) + "\n")

    categories: dict[str, str] = {}
    events, bad = read_events(str(log), categories=categories)
    assert bad == 1 and len(categories) == 100 and categories["i42"] == "g2"
    runs = {}
    for given in (None, categories):
        models = build_models(seed=0, exclude="interacted")
        runs[given is None] = prequential(events, models, k=10, exclude="interacted", categories=given)
        if given:  # every item is in the ranker's catalogue with its category
            assert all(models[MODEL_NAME].item_category(item) == cat for item, cat in categories.items())
    without, with_ = runs[True], runs[False]
    for name in without.models:  # the baselines count, they have no use for categories
        same = np.array_equal(without.models[name].rr, with_.models[name].rr)
        assert same == (name != MODEL_NAME), name
    # The command: the column is read (the row refused shown as bad), --jobs does not change it,
    # and --no-categories replays as the log without the column.
    reports = {}
    for args in (["--jobs", "1"], ["--jobs", "2"], ["--jobs", "1", "--no-categories"]):
        result = CliRunner().invoke(replay, ["--events", str(log), "--json", "--exclude", "interacted", *args],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        reports[args[-1]] = json.loads(result.stdout)
    assert reports["1"]["categories"] == 100 and reports["1"]["bad_rows"] == 1
    assert "bad category" in CliRunner().invoke(replay, ["--events", str(log)]).stderr
    assert reports["2"]["model"] == reports["1"]["model"]
    assert reports["--no-categories"]["categories"] == 0 and reports["--no-categories"]["model"] != reports["1"]["model"]


def test_the_second_stage_never_learns_from_an_item_its_list_could_not_have_held():
    # Every event is of an item nobody met before, so no list served before it could hold it. Its
    # category comes once the event is learned: announced before, the item would be among its
    # category's newest candidates when the second stage learns from the choice of it.
    from models.evaluation import prequential
    from streams.tools.replay import MODEL_NAME, build_models

    rng = np.random.default_rng(3)
    events = [(float(t), f"u{int(rng.integers(30))}", f"i{t}", "browse") for t in range(3000)]
    categories = {f"i{t}": f"c{t % 4}" for t in range(3000)}
    for batch in (None, 100):
        models = build_models(seed=0, exclude="interacted")
        ev = prequential(events, {MODEL_NAME: models[MODEL_NAME]}, k=10, exclude="interacted", batch=batch,
                         categories=categories)
        ranker = models[MODEL_NAME]
        assert ev.models[MODEL_NAME].hr == 0 and ranker.item_category("i2999") == "c3"
        assert ranker.choice.n_updates == 0, batch  # no step had the chosen item among the candidates
