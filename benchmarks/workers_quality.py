"""The ranker served by 1, 2 and 4 workers, and by 4 that do not share their item side, on every dev log.

For each log and exclusion rule, one ``--batch`` prequential run
(:func:`models.evaluation.prequential`) holds the four rankers
(:func:`streams.tools.replay.build_models`, so each is what ``recostream
replay --workers N [--no-sharing]`` gives), so all of them are scored on the
same events. Each is compared with the one-worker ranker by
:func:`models.comparison.paired_difference` (the HR difference and its 95 %
interval, clustered by customer): the table of docs/SCALING.md, "Quality
against workers".

    .venv/bin/python benchmarks/workers_quality.py --datasets ../shared/datasets --json > workers.json

Progress goes to stderr; ``--json`` prints one JSON object to stdout, else a
Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys

from models.comparison import customer_clusters, finite_or_none, paired_difference
from models.evaluation import available_cpus, prequential
from streams.tools.replay import MODEL_NAME, build_models, read_events

LOGS = ("ml-latest-small", "taobao-userbehavior-head", "yoochoose-clicks-100k")
RULES = ("interacted", "purchased")
RANKERS = {"1 worker": (1, True), "2 workers": (2, True), "4 workers": (4, True), "4 workers, not sharing": (4, False)}


def cell(path: str, rule: str, batch: int, jobs: int) -> dict:
    """Every ranker of :data:`RANKERS` on one log and rule: HR, MRR, n and the HR difference from
    one worker as ``[difference, low, high]``."""
    events, _ = read_events(path)
    models = {name: build_models(exclude=rule, workers=w, sharing=share)[MODEL_NAME]
              for name, (w, share) in RANKERS.items()}
    ev = prequential(events, models, k=10, exclude=rule, batch=batch, jobs=jobs)
    one = ev.models["1 worker"]
    clusters = customer_clusters(events, one.positions)
    out = {}
    for name, score in ev.models.items():
        diff = paired_difference(score.rr > 0, one.rr > 0, clusters)
        out[name] = {"hr": score.hr, "mrr": score.mrr, "n": score.n, "hr_vs_one": [finite_or_none(x) for x in diff]}
    return out


def markdown(results: dict) -> str:
    def rel(r, base):
        d, lo, hi = (float("nan") if x is None else 100 * x / base["hr"] for x in r["hr_vs_one"])
        return f"{d:+.1f} % [{lo:+.1f}, {hi:+.1f}]"

    lines = ["| log | rule | " + " | ".join(RANKERS) + " | HR, 4 against 1 [95 %] | HR, 4 not sharing against 1 [95 %] |",
             "|---" * (len(RANKERS) + 4) + "|"]
    for key, r in results.items():
        log, rule = key.split("/")
        base = r["1 worker"]
        cols = [f'{r[n]["hr"]:.4f} / {r[n]["mrr"]:.4f}' for n in RANKERS]
        lines.append(f"| {log} | {rule} | " + " | ".join(cols)
                     + f' | {rel(r["4 workers"], base)} | {rel(r["4 workers, not sharing"], base)} |')
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", required=True, help="directory holding <log>.events.csv")
    p.add_argument("--logs", default=",".join(LOGS), help="comma-separated log names (default: the dev logs)")
    p.add_argument("--batch", type=int, default=1000, help="micro-batch size (default 1000)")
    p.add_argument("--jobs", type=int, default=available_cpus(), help="processes per run (default: the CPUs)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = p.parse_args(argv)
    results = {}
    for log in args.logs.split(","):
        for rule in RULES:
            print(f"{log} {rule} ...", file=sys.stderr, flush=True)
            results[f"{log}/{rule}"] = cell(f"{args.datasets}/{log}.events.csv", rule, args.batch, args.jobs)
    print(json.dumps(results, indent=1) if args.json else markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
