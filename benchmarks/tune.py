"""Choose the ranker's settings on the first half of every dev log, report the second halves.

For each log and each exclusion rule, one per-event prequential run
(:func:`models.evaluation.prequential`) holds the five baselines of
``recostream replay`` and one ranker per candidate setting, so every number
of a cell comes from the same run. A candidate is scored on the FIRST halves
only (events ``[0, n/2)``), by the quality rule of docs/QUALITY.md per cell:

* ``hr_ratio``: its HR@K over the best baseline's HR@K (the rule asks >= 1.05
  where that HR is at least 0.02, else >= 1);
* ``mrr_ratio``: its MRR@K over the best baseline's MRR@K (the rule asks >= 1).

The chosen candidate meets the rule in the most first-half cells, then has
the largest smallest margin over cells; the report gives every candidate's
SECOND halves beside the baselines', which the choice never saw.

    .venv/bin/python benchmarks/tune.py --datasets ../shared/datasets --json > tune.json
    .venv/bin/python benchmarks/tune.py --candidates '{"defaults": {}, "te16": {"train_every": 16}}'

Progress goes to stderr; ``--json`` prints one JSON object to stdout, else a
Markdown table per cell.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from models.comparison import best_baseline, margins
from models.evaluation import available_cpus, prequential
from models.ranking import HybridRanker
from streams.tools.replay import COSTS, MODEL_NAME, build_models, read_events

LOGS = ("ml-latest-small", "taobao-userbehavior-head", "yoochoose-clicks-100k")
RULES = ("interacted", "purchased")
CANDIDATES = {
    "defaults": {},
    "train_every=16": {"train_every": 16},
    "session_neighbours": {"session_neighbours": True},
    "session_neighbours, train_every=16": {"session_neighbours": True, "train_every": 16},
}
def run_cell(path: str, rule: str, candidates: dict, k: int, jobs: int) -> dict:
    events, bad = read_events(path)
    models = {name: m for name, m in build_models(exclude=rule).items() if name != MODEL_NAME}
    seed = build_models(exclude=rule)[MODEL_NAME].seed
    for name, overrides in candidates.items():
        models[f"ranker:{name}"] = HybridRanker(seed=seed, exclude=rule, share_items=True, **overrides)
    costs = dict(COSTS, **{f"ranker:{name}": COSTS[MODEL_NAME] for name in candidates})
    started = time.perf_counter()
    ev = prequential(events, models, k=k, exclude=rule, jobs=jobs, costs=costs)
    half = ev.events // 2
    blocks = {name: {"first_half": s.segment(0, half), "second_half": s.segment(half, ev.events),
                     "whole": s.summary()} for name, s in ev.models.items()}
    return {"events": ev.events, "bad_rows": bad, "seconds": round(time.perf_counter() - started, 1),
            "models": blocks}


def choose(cells: dict, candidates: dict) -> dict:
    """Per candidate: first-half cells met and smallest margin; the chosen one."""
    table = {}
    for name in candidates:
        met, worst = 0, float("inf")
        for cell in cells.values():
            baselines = {b: v for b, v in cell["models"].items() if not b.startswith("ranker:")}
            _, best = best_baseline(baselines, "first_half")
            hr_r, mrr_r, meets = margins(cell["models"][f"ranker:{name}"]["first_half"], best)
            met += meets
            worst = min(worst, hr_r, mrr_r)
        table[name] = {"first_half_cells_met": met, "smallest_ratio": worst}
    chosen = max(table, key=lambda n: (table[n]["first_half_cells_met"], table[n]["smallest_ratio"]))
    return {"candidates": table, "chosen": chosen}


def markdown(cells: dict, candidates: dict, k: int) -> str:
    lines = []
    for cell_name, cell in cells.items():
        lines.append(f"\n### {cell_name} ({cell['events']} events)\n")
        lines.append(f"| model | first half HR@{k} / MRR@{k} | second half HR@{k} / MRR@{k} |")
        lines.append("|---|---|---|")
        for name, block in cell["models"].items():
            f, s = block["first_half"], block["second_half"]
            lines.append(f"| {name} | {f['hr']:.4f} / {f['mrr']:.4f} | {s['hr']:.4f} / {s['mrr']:.4f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--datasets", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets"),
                   help="Folder of the dev logs (<name>.events.csv).")
    p.add_argument("--logs", default=",".join(LOGS), help="Comma-separated log names.")
    p.add_argument("--rules", default=",".join(RULES), help="Comma-separated exclusion rules.")
    p.add_argument("--candidates", default=None, help="JSON object: name -> HybridRanker overrides.")
    p.add_argument("--k", type=int, default=10, help="Length of the top-K list.")
    p.add_argument("--jobs", type=int, default=available_cpus(), help="Worker processes per run.")
    p.add_argument("--json", action="store_true", help="Print one JSON object to stdout.")
    args = p.parse_args(argv)
    candidates = json.loads(args.candidates) if args.candidates else CANDIDATES
    cells = {}
    for log in args.logs.split(","):
        for rule in args.rules.split(","):
            path = os.path.join(args.datasets, f"{log}.events.csv")
            print(f"{log} --exclude {rule}: {len(candidates)} candidates and the baselines ...", file=sys.stderr,
                  flush=True)
            cells[f"{log} --exclude {rule}"] = run_cell(path, rule, candidates, args.k, args.jobs)
            print(f"  done in {cells[f'{log} --exclude {rule}']['seconds']} s", file=sys.stderr, flush=True)
    out = {"k": args.k, "candidates": candidates, "choice": choose(cells, candidates), "cells": cells}
    if args.json:
        print(json.dumps(out))
    else:
        print(json.dumps(out["choice"], indent=1))
        print(markdown(cells, candidates, args.k))
    return 0


if __name__ == "__main__":
    sys.exit(main())
