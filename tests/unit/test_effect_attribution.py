"""Attribution of clicks and purchases to impressions: a scripted sequence with exact counts,
out-of-order rules, bounds, encoding and determinism (models/effect/attribution.py)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.effect.attribution import Attribution, Impression, Interaction, make_rec_id
from models.effect.counts import COUNTERS, EffectCounts, day_of, merge_deltas
from models.effect.experiment import Experiment
from models.effect.state import EffectState, decode_state, encode_state

T0 = 1714521600.0  # 2024-05-01 00:00 UTC
D = day_of(T0)
DAY = 86400.0

EXP = Experiment.from_mapping({
    "name": "e1", "salt": "salt-1", "control": "pop",
    "variants": [{"name": "pop", "share": 0.5, "strategy": "popularity"},
                 {"name": "rank", "share": 0.5, "strategy": "ranker"}],
})


def user_in(exp: Experiment, arm: str) -> str:
    return next(u for u in (f"u{i}" for i in range(10_000)) if exp.assign(u) == arm)


U = user_in(EXP, "rank")


def imp(eid: str, rec: str | None, items: tuple[str, ...], ts: float, user: str = U) -> Impression:
    return Impression(eid, user, rec, items, ts)


def act(eid: str, item: str, kind: str, ts: float, rec: str | None = None, price: float | None = None,
        qty: int = 1, user: str = U) -> Interaction:
    return Interaction(eid, user, item, kind, ts, rec_id=rec, price=price, quantity=qty)


def feed(att: Attribution, state: EffectState, record) -> tuple:
    return att.impression(state, record) if isinstance(record, Impression) else att.interaction(state, record)


def cell(table: EffectCounts, arm: str, day: int, **expected: int) -> None:
    got = table.cell(arm, day).as_dict()
    assert got == {c: expected.get(c, 0) for c in COUNTERS}, (arm, day)


# The script: each step, and the increments it must produce (counter: amount, arm "rank" unless given).
SCRIPT = [
    # an impression of a known recommendation: counted under its variant; the customer is new and assigned
    (imp("e1", "r1", ("a", "b", "c"), T0), {("rank", D): dict(impressions=1, items_shown=3, customers=1,
                                                            daily_customers=1, assigned_customers=1)}),
    # a click without rec_id on an item it showed, within 30 min: last touch
    (act("e2", "b", "click", T0 + 60), {("rank", D): dict(clicks=1, clicked_impressions=1)}),
    # the same click redelivered, then another click of the same item: (impression, item, kind) counts once
    (act("e2", "b", "click", T0 + 60), {}),
    (act("e3", "b", "click", T0 + 120), {}),
    # a click of an item shown, but 1 h later: outside the click window, nothing (it waits, nobody claims it)
    (act("e4", "c", "click", T0 + 3600), {}),
    # an impression whose rec_id nobody issued: counted under "unknown", not dropped
    (imp("e5", "zzz", ("c", "d"), T0 + 4000), {("unknown", D): dict(impressions=1, items_shown=2, customers=1,
                                                                    daily_customers=1)}),
    # another impression of the ranker's: no new customer, no new customer-day
    (imp("e6", "r2", ("a", "d"), T0 + 5000), {("rank", D): dict(impressions=1, items_shown=2)}),
    # explicit rec_id takes precedence over last touch (e6 also showed "a", later)
    (act("e7", "a", "click", T0 + 5100, rec="r1"), {("rank", D): dict(clicks=1)}),
    # without rec_id the same item now goes to the latest impression, e6, whose first click it is
    (act("e8", "a", "click", T0 + 5200), {("rank", D): dict(clicks=1, clicked_impressions=1)}),
    # a purchase of "d", shown by e5 (unknown) and e6 (rank): last touch wins, with revenue; a converter and a buyer
    (act("e9", "d", "purchase", T0 + 6000, price=10.0, qty=2),
     {("rank", D): dict(purchases=1, revenue_cents=2000, converters=1, all_purchases=1, all_revenue_cents=2000,
                        buyers=1)}),
    # "d" bought again: e6 was credited already, so only the assigned arm's totals move
    (act("e10", "d", "purchase", T0 + 6500, price=10.0), {("rank", D): dict(all_purchases=1, all_revenue_cents=1000)}),
    # a click of "d" (not a purchase: kinds are credited separately), 1600 s after e6
    (act("e11", "d", "click", T0 + 6600), {("rank", D): dict(clicks=1)}),
    # next day: a new customer-day, not a new customer
    (imp("e12", "r3", ("x", "y"), T0 + DAY + 100), {("rank", D + 1): dict(impressions=1, items_shown=2,
                                                                         daily_customers=1)}),
    # a purchase of "c" 22.9 h after e5 showed it (within 24 h; e1 also showed it but is older): unknown converts
    (act("e13", "c", "purchase", T0 + DAY + 200, price=5.0),
     {("unknown", D + 1): dict(purchases=1, revenue_cents=500, converters=1),
      ("rank", D + 1): dict(all_purchases=1, all_revenue_cents=500)}),
    # a browse only marks activity (already counted)
    (act("e14", "y", "browse", T0 + DAY + 300), {}),
]
RECS = [("r1", "rank", T0 - 10), ("r2", "rank", T0 + 4900), ("r3", "rank", T0 + DAY)]


def run_script(roundtrip_at: int | None = None, every_step: bool = False):
    att = Attribution(EXP)
    state = att.new_state()
    for rec_id, variant, ts in RECS:
        att.recommended(state, rec_id, variant, ts)
    table, deltas = EffectCounts(), []
    for i, (record, _) in enumerate(SCRIPT):
        if every_step or i == roundtrip_at:
            state = decode_state(encode_state(state))
        delta = feed(att, state, record)
        deltas.append(delta)
        table.apply(delta)
    return table, deltas, state


def test_each_step_of_the_script_counts_exactly_what_it_should():
    _, deltas, _ = run_script()
    for (record, expected), delta in zip(SCRIPT, deltas):
        got = {(i.arm, i.day, i.counter): i.amount for i in merge_deltas(delta)}
        want = {(arm, day, c): n for (arm, day), counters in expected.items() for c, n in counters.items()}
        assert got == want, record.event_id


def test_the_script_totals():
    table, _, _ = run_script()
    cell(table, "rank", D, impressions=2, items_shown=5, customers=1, daily_customers=1, clicks=4,
         clicked_impressions=2, purchases=1, revenue_cents=2000, converters=1, assigned_customers=1,
         buyers=1, all_purchases=2, all_revenue_cents=3000)
    cell(table, "rank", D + 1, impressions=1, items_shown=2, daily_customers=1, all_purchases=1,
         all_revenue_cents=500)
    cell(table, "unknown", D, impressions=1, items_shown=2, customers=1, daily_customers=1)
    cell(table, "unknown", D + 1, purchases=1, revenue_cents=500, converters=1)
    assert table.arms() == ["rank", "unknown"]  # "pop" never saw this customer


@pytest.mark.parametrize("at", range(len(SCRIPT)))
def test_encoding_the_state_mid_sequence_changes_nothing(at):
    reference, ref_deltas, ref_state = run_script()
    table, deltas, state = run_script(roundtrip_at=at)
    assert table == reference and deltas == ref_deltas
    assert encode_state(state) == encode_state(ref_state)


def test_the_same_events_give_the_same_deltas_and_the_same_bytes():
    a, b = run_script(), run_script(every_step=True)
    assert a[1] == b[1] and encode_state(a[2]) == encode_state(b[2])


def test_state_is_bounded_and_small_after_the_script():
    _, _, state = run_script()
    # horizon = newest (T0 + DAY + 300) - 24 h: e1 (T0) is gone; e5, e6, e12 are held
    assert [s.event_id for s in state.shown] == ["e5", "e6", "e12"]
    assert len(encode_state(state)) < 400


def fresh(**kw) -> tuple[Attribution, EffectState]:
    att = Attribution(EXP, **kw)
    state = att.new_state()
    for i in range(5):
        att.recommended(state, f"r{i}", "rank", T0)
    return att, state


def counters(delta, arm="rank") -> dict[str, int]:
    return {i.counter: i.amount for i in merge_deltas(delta) if i.arm == arm}


def test_a_click_that_overtakes_its_impression_is_claimed_when_the_impression_arrives():
    att, state = fresh()
    assert counters(att.interaction(state, act("c1", "x", "click", T0 + 10))) == {"assigned_customers": 1}
    delta = att.impression(state, imp("i1", "r1", ("x", "y"), T0 + 8))
    assert counters(delta) == {"impressions": 1, "items_shown": 2, "customers": 1, "daily_customers": 1,
                               "clicks": 1, "clicked_impressions": 1}
    assert state.pending == []


def test_a_waiting_event_with_a_rec_id_is_claimed_only_by_that_recommendation():
    att, state = fresh()
    att.interaction(state, act("p1", "x", "purchase", T0 + 10, rec="r2", price=1.0))
    assert "purchases" not in counters(att.impression(state, imp("i1", "r1", ("x",), T0 + 5)))
    assert counters(att.impression(state, imp("i2", "r2", ("x",), T0 + 6)))["purchases"] == 1


def test_a_waiting_event_expires_after_late_s_of_event_time():
    att, state = fresh(late_s=300)
    att.interaction(state, act("c1", "x", "click", T0 + 10))
    att.interaction(state, act("b1", "z", "browse", T0 + 400))
    assert state.pending == []
    assert "clicks" not in counters(att.impression(state, imp("i1", "r1", ("x",), T0 + 9)))


def test_an_impression_processed_late_is_held_in_time_order():
    att, state = fresh()
    att.impression(state, imp("i2", "r2", ("x",), T0 + 100))
    att.impression(state, imp("i1", "r1", ("x",), T0 + 50))  # earlier in time, processed later
    assert [s.event_id for s in state.shown] == ["i1", "i2"]
    att.interaction(state, act("c1", "x", "click", T0 + 120))
    assert [s.clicked for s in state.shown] == [(), ("x",)]
    # a click between the two in time goes to the earlier one: no list shown after the click can have caused it
    att.interaction(state, act("c2", "x", "click", T0 + 70))
    assert [s.clicked for s in state.shown] == [("x",), ("x",)]


def test_an_impression_beyond_the_longest_window_is_counted_but_not_held():
    att, state = fresh()
    att.interaction(state, act("b1", "z", "browse", T0 + 3 * DAY))
    delta = att.impression(state, imp("i1", "r1", ("x",), T0))
    # counted as an impression and a customer, but day D is before the horizon's day: no customer-day
    assert counters(delta) == {"impressions": 1, "items_shown": 1, "customers": 1}
    assert state.shown == []


def test_a_customer_day_is_counted_once_whatever_the_order_of_days():
    att, state = fresh()
    days = [D + 1, D, D + 1, D]
    got = [counters(att.impression(state, imp(f"i{k}", "r1", ("x",), d * DAY + 10))).get("daily_customers", 0)
           for k, d in enumerate(days)]
    assert got == [1, 1, 0, 0]


def test_bounds_of_the_state():
    att, state = fresh(max_impressions=2, max_items=3, max_pending=2, max_issued=3)
    assert [r.rec_id for r in state.issued] == ["r2", "r3", "r4"]
    delta = att.impression(state, imp("i1", "r4", tuple("abcdef"), T0))
    assert counters(delta)["items_shown"] == 6 and state.shown[0].items == ("a", "b", "c")
    for k in range(3):
        att.impression(state, imp(f"j{k}", "r4", ("x",), T0 + k))
    assert [s.event_id for s in state.shown] == ["j1", "j2"]
    for k in range(4):
        att.interaction(state, act(f"c{k}", f"nope{k}", "click", T0 + 10 + k))
    assert [p.event_id for p in state.pending] == ["c2", "c3"]


def test_an_impression_dropped_at_once_as_the_oldest_claims_nothing():
    att, state = fresh(max_impressions=1)
    att.impression(state, imp("i2", "r2", ("y",), T0 + 100))
    att.interaction(state, act("c1", "x", "click", T0 + 60))
    delta = att.impression(state, imp("i1", "r1", ("x",), T0 + 50))  # older than the one held: not kept
    assert "clicks" not in counters(delta) and [p.event_id for p in state.pending] == ["c1"]


def test_explicit_rec_id_of_an_impression_that_did_not_show_the_item_falls_back_to_last_touch():
    att, state = fresh()
    att.impression(state, imp("i1", "r1", ("x",), T0))
    att.impression(state, imp("i2", "r2", ("y",), T0 + 1))
    att.interaction(state, act("c1", "x", "click", T0 + 5, rec="r2"))
    assert [s.clicked for s in state.shown] == [("x",), ()]


def test_a_variant_removed_from_the_settings_counts_as_unknown():
    att, state = fresh()
    state.issued[0].variant = "retired"
    assert counters(att.impression(state, imp("i1", "r0", ("x",), T0)), "unknown")["impressions"] == 1


def test_state_of_another_experiment_starts_afresh():
    att, state = fresh()
    att.impression(state, imp("i1", "r1", ("x",), T0))
    other = Attribution(Experiment.from_mapping({**EXP.to_mapping(), "name": "e2"}))
    delta = other.impression(state, imp("i1", "r1", ("x",), T0))
    assert state.experiment == "e2" and counters(delta, "unknown")["customers"] == 1


def test_recommendations_name_a_variant_of_the_experiment():
    att, state = fresh()
    for bad in ("holdout", "unknown", "nope"):
        with pytest.raises(ValueError, match="not a variant"):
            att.recommended(state, "r9", bad, T0)
    with pytest.raises(ValueError, match="kind"):
        att.interaction(state, act("x", "i", "refund", T0))


@pytest.mark.parametrize("kw", [dict(click_window_s=-1), dict(purchase_window_s=float("inf")), dict(late_s=-1),
                                dict(clock_skew_s=float("nan")), dict(max_impressions=0), dict(max_items=1.5)])
def test_bad_parameters_name_themselves(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        Attribution(EXP, **kw)


def test_holdout_customers_are_measured_by_assignment():
    exp = Experiment.from_mapping({"name": "h", "salt": "s", "holdout": 0.5,
                                   "variants": [{"name": "rank", "share": 0.5, "strategy": "ranker"}]})
    user = user_in(exp, "holdout")
    att = Attribution(exp)
    state = att.new_state()
    table = EffectCounts()
    table.apply(att.interaction(state, act("b1", "x", "browse", T0, user=user)))
    table.apply(att.interaction(state, act("p1", "x", "purchase", T0 + 5, price=3.0, user=user)))
    table.apply(att.interaction(state, act("p2", "y", "purchase", T0 + 6, price=1.0, user=user)))
    cell(table, "holdout", D, assigned_customers=1, buyers=1, all_purchases=2, all_revenue_cents=400)


def test_rec_ids_are_reproducible_and_distinct():
    ids = {make_rec_id("e1", u, p) for u in ("u1", "u2") for p in range(100)}
    assert len(ids) == 200 and make_rec_id("e1", "u1", 7) == make_rec_id("e1", "u1", 7)


EVENTS = st.lists(
    st.tuples(st.sampled_from(["imp", "browse", "click", "purchase", "rec"]),
              st.sampled_from(["a", "b", "c", "d"]),
              st.integers(0, 3 * 86400),
              st.sampled_from([None, "r0", "r1", "r2", "zz"]),
              st.sampled_from(["u1", "u2"])),
    max_size=60,
)


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(EVENTS)
def test_invariants_on_any_sequence(events):
    att = Attribution(EXP, max_impressions=4, max_pending=3)
    states = {"u1": att.new_state(), "u2": att.new_state()}
    table, replay = EffectCounts(), EffectCounts()
    copies = {u: decode_state(encode_state(s)) for u, s in states.items()}
    for n, (kind, item, dt, rec, user) in enumerate(events):
        ts = T0 + dt
        if kind == "rec":
            for s in (states[user], copies[user]):
                att.recommended(s, rec or "r0", "pop" if item in "ab" else "rank", ts)
            continue
        record = (imp(f"e{n}", rec, (item, chr(ord(item) + 1)), ts, user=user) if kind == "imp"
                  else act(f"e{n}", item, kind, ts, rec=rec, price=2.0, user=user))
        table.apply(feed(att, states[user], record))
        # the same events through a state encoded and decoded at every step
        copies[user] = decode_state(encode_state(copies[user]))
        replay.apply(feed(att, copies[user], record))
    assert replay == table
    for arm in table.arms():
        t = table.total(arm)
        assert t.clicked_impressions <= t.impressions and t.clicks <= t.items_shown
        assert t.converters <= t.customers <= 2 and t.buyers <= t.assigned_customers <= 2
        assert t.daily_customers <= 2 * 4  # two customers, at most four days
        assert min(t.as_dict().values()) >= 0
    assert sum(table.total(a).purchases for a in table.arms()) <= sum(table.total(a).all_purchases
                                                                     for a in table.arms())
    for s in states.values():
        assert len(s.shown) <= 4 and len(s.pending) <= 3
