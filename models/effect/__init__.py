"""Measured effect: experiments, attribution of clicks and purchases to impressions, counts, the report.

Pure code, like the rest of :mod:`models`: the streaming layer feeds it
events and stores what it returns. One concept per module:

* :mod:`~models.effect.experiment`: settings, validation, assignment of customers to arms;
* :mod:`~models.effect.state`: the per-customer state and its encoding;
* :mod:`~models.effect.attribution`: the rules that turn events into count deltas;
* :mod:`~models.effect.counts`: counters per (arm, day), deltas, merging;
* :mod:`~models.effect.statistics`: intervals and tests (standard library only);
* :mod:`~models.effect.report`: the report and its table.

See docs/EXPERIMENTS.md.

Examples
--------
>>> exp = Experiment.from_mapping({"name": "e1", "salt": "s",
...     "variants": [{"name": "ranker", "share": 1.0, "strategy": "ranker"}]})
>>> att, table = Attribution(exp), EffectCounts()
>>> st = att.new_state()
>>> att.recommended(st, "r1", "ranker", 0.0)
>>> table.apply(att.impression(st, Impression("ev1", "u1", "r1", ("i1", "i2"), 0.0)))
>>> table.apply(att.interaction(st, Interaction("ev2", "u1", "i1", "purchase", 60.0, price=5.0)))
>>> experiment_report(exp, table)["variants"]["ranker"]["conversion"]
1.0
"""

from models.effect.attribution import IMPRESSION, Attribution, Impression, Interaction, make_rec_id
from models.effect.counts import (
    COUNTERS,
    Counts,
    Delta,
    EffectCounts,
    Increment,
    day_of,
    decode_delta,
    encode_delta,
    merge_deltas,
)
from models.effect.experiment import HOLDOUT, UNKNOWN, Experiment, ExperimentError, Variant, default_experiment
from models.effect.report import experiment_report, render_report
from models.effect.state import EffectState, decode_state, encode_state

__all__ = [
    "IMPRESSION",
    "Attribution",
    "Impression",
    "Interaction",
    "make_rec_id",
    "COUNTERS",
    "Counts",
    "Delta",
    "EffectCounts",
    "Increment",
    "day_of",
    "merge_deltas",
    "encode_delta",
    "decode_delta",
    "HOLDOUT",
    "UNKNOWN",
    "Experiment",
    "ExperimentError",
    "Variant",
    "default_experiment",
    "experiment_report",
    "render_report",
    "EffectState",
    "decode_state",
    "encode_state",
]
