"""``recostream replay``: prequential evaluation of the ranker on an event log.

Replays a CSV event log in time order through the product ranker (built with
``HybridRanker()`` defaults, exactly as the Faust workers build it) and the
streaming baselines, test-then-train, and reports HR@K / MRR@K / coverage,
and whether the ranker beats the baselines on this log: the quality rule of
docs/QUALITY.md against the best of them, and for each a paired difference
with its 95 % interval (:mod:`models.comparison`). Every model's numbers are
also split between returns (events of an item the customer had met before)
and discovery (the others): where re-views are allowed and every list hits
nearly all returns, a lead must come from discovery, and the report gives
the discovery the rule needs.

"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import click

from models.baselines import (
    CooccurrenceBaseline,
    PopularityBaseline,
    RepeatBaseline,
    RepeatCooccurrenceBaseline,
)
from models.comparison import compare
from models.evaluation import Evaluation, Event, Rankings, available_cpus, prequential, returning
from models.events import EVENT_WEIGHTS
from models.ranking import EXCLUDE_RULES, HybridRanker
from models.sharded import ShardedRecommender
from streams.contract import DEFAULT_LIMITS, ContractError, parse_timestamp
from streams.contract.fields import check_category
from streams.settings import Settings, ranker_overrides

__all__ = ["replay", "read_events", "build_models", "run_replay"]

REQUIRED_COLUMNS = ("timestamp", "user_id", "item_id", "event_type")
MODEL_NAME = "model"
#: The learner of decayed co-occurrence and of the repeat list it fills (:func:`build_models`).
DECAYED = "decayed_counts"
#: What each model of :func:`build_models` costs in a replay (learning and ranking, CPU µs per event of
#: a million generated events at ``--batch 1000``), so that ``--jobs`` balances its worker processes.
COSTS = {MODEL_NAME: 269.0, "popularity": 10.0, "cooccurrence": 73.0, DECAYED: 96.0, "repeat": 17.0}


def read_events(path: str, on_bad_row=None, with_price: bool = False, categories: dict | None = None):
    """Read and validate an event CSV.

    Returns ``(events, n_bad)`` with events ``(ts, user, item, event_type)``
    (``with_price``: ``(ts, user, item, event_type, price or None)``)
    stably sorted by timestamp. Timestamps are read by the contract's parser
    with its CSV option (:func:`streams.contract.parse_timestamp`): RFC 3339,
    without offset meaning UTC, or epoch milliseconds. Every rejected row is
    passed to ``on_bad_row(line_number, reason)``; none is dropped silently.
    With an optional ``category`` column and a ``categories`` dict, each item's
    category (the first a valid row gives it; an empty field gives none) is put
    in ``categories``; a category the event contract refuses makes its row bad.
    """
    events = []
    n_bad = 0

    def bad(line, reason):
        nonlocal n_bad
        n_bad += 1
        if on_bad_row is not None:
            on_bad_row(line, reason)

    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise click.UsageError(f"{path}: empty file (a header row is required)")
        header = [h.strip().lower() for h in header]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise click.UsageError(
                f"{path}: header must contain {','.join(REQUIRED_COLUMNS)}[,price][,category]; missing {','.join(missing)}"
            )
        i_ts, i_user, i_item, i_type = (header.index(c) for c in REQUIRED_COLUMNS)
        i_price = header.index("price") if "price" in header else None
        i_category = header.index("category") if "category" in header and categories is not None else None
        max_len = DEFAULT_LIMITS.max_string_length
        width = len(header)
        cache: dict[str, float] = {}
        for row in reader:
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if len(row) != width:
                bad(line, f"expected {width} fields, got {len(row)}")
                continue
            raw_ts = row[i_ts]
            ts = cache.get(raw_ts)
            if ts is None:
                try:
                    ts = parse_timestamp(raw_ts, csv=True)
                except (ValueError, OverflowError):
                    bad(line, f"bad timestamp {raw_ts!r}")
                    continue
                if len(cache) < 100_000:
                    cache[raw_ts] = ts
            user, item, event_type = row[i_user].strip(), row[i_item].strip(), row[i_type].strip().lower()
            if not user or not item:
                bad(line, "empty user_id or item_id")
                continue
            if event_type not in EVENT_WEIGHTS:
                bad(line, f"unknown event_type {row[i_type]!r} (expected {'|'.join(EVENT_WEIGHTS)})")
                continue
            price = None
            if i_price is not None and row[i_price].strip():
                try:
                    price = float(row[i_price])
                except ValueError:
                    price = math.nan
                if not math.isfinite(price) or price < 0:
                    bad(line, f"bad price {row[i_price]!r}")
                    continue
            category = row[i_category].strip() if i_category is not None else ""
            if category:
                try:
                    check_category(category, max_len)
                except ContractError as exc:
                    bad(line, f"bad category: {exc}")
                    continue
                categories.setdefault(item, category)
            events.append((ts, user, item, event_type, price) if with_price else (ts, user, item, event_type))
    events.sort(key=lambda e: e[0])  # stable: ties keep file order
    return events, n_bad


def build_models(seed: int | None = None, exclude: str = "purchased", workers: int = 1, sharing: bool = True,
                 overrides: Mapping[str, Any] | None = None) -> dict:
    """The product ranker, built exactly as the workers build it, and the baselines.

    The seed comes from the same settings (``RECOSTREAM_SEED``) the workers read,
    so a replay and a live worker fed the same events hold the same model; the
    ranker learns to rank under the exclusion rule it is evaluated with, as a
    worker learns under the rule it serves (``RECOSTREAM_EXCLUDE``). With
    ``workers`` above 1 the ranker is that many workers' rankers, each learning
    and serving the customers of its partitions (:class:`models.sharded.ShardedRecommender`),
    sharing their item-side learning unless ``sharing`` is false; the baselines stay whole. A
    worker's item side learns a micro-batch once it is over, from the update every worker applies
    (one worker: its own); unshared, it learns each event as it comes. ``overrides`` are
    :class:`HybridRanker` parameters other than the defaults (:func:`streams.settings.ranker_overrides`).
    """
    seed = Settings.from_env().seed if seed is None else seed
    params = {"seed": seed, **(overrides or {}), "exclude": exclude, "share_items": sharing}
    ranker = (HybridRanker(**params) if workers == 1 else
              ShardedRecommender(lambda: HybridRanker(**params), workers, sharing=sharing))
    # The two decayed baselines learn the same counts: one learner ranks both lists in one pass.
    decayed = RepeatCooccurrenceBaseline(window=20, decay=0.9)
    return {
        MODEL_NAME: ranker,
        "popularity": PopularityBaseline(),
        "cooccurrence": CooccurrenceBaseline(window=20),
        "repeat": RepeatBaseline(window=20),
        DECAYED: Rankings(decayed, ("repeat_cooccurrence", "cooccurrence_decayed"), decayed.recommend_with_decayed),
    }


def run_replay(events, k: int = 10, exclude: str = "interacted", progress=None, models=None,
               batch: int | None = None, jobs: int = 1, workers: int = 1, sharing: bool = True,
               overrides: Mapping[str, Any] | None = None, categories: Mapping[str, str] | None = None) -> Evaluation:
    """:func:`~models.evaluation.prequential` of ``models`` (default :func:`build_models` for ``workers``
    and ``overrides``), ``jobs`` processes at most (with more than 1, the models given are left
    untrained: the processes train copies); ``categories`` (item -> category) go with each event of
    the item, as a worker's events carry them."""
    if models is None:
        models = build_models(exclude=exclude, workers=workers, sharing=sharing, overrides=overrides)
    return prequential(events, models, k=k, exclude=exclude, progress=progress, batch=batch, jobs=jobs, costs=COSTS,
                       categories=categories)


def result_json(ev: Evaluation, bad_rows: int, batch: int | None = None, workers: int = 1,
                sharing: bool = True, events: Sequence[Event] | None = None,
                overrides: Mapping[str, Any] | None = None, categories: int = 0) -> dict:
    """The replay's JSON report; with the replayed ``events``, also ``comparison``: the ranker
    against the baselines (the quality rule and paired intervals, :func:`models.comparison.compare`),
    and per model ``returns`` and ``discovery``: its numbers on the judged events of an item the
    customer had met before (:func:`models.evaluation.returning`), and on the others."""
    len_half = ev.events // 2
    returns = None
    if events is not None and ev.models:
        returns = returning(events, next(iter(ev.models.values())).positions)  # (every model judges the same events)

    def block(name):
        score = ev.models[name]
        out = score.summary()
        out["first_half"] = score.segment(0, len_half)
        out["second_half"] = score.segment(len_half, ev.events)
        if returns is not None:
            out["returns"], out["discovery"] = score.where(returns), score.where(~returns)
        return out

    model = block(MODEL_NAME)
    model["facts"] = ev.models[MODEL_NAME].facts  # (what the ranker came to: served half-life, learned weights)
    return {
        "model": model,
        "baselines": {name: block(name) for name in ev.models if name != MODEL_NAME},
        "comparison": compare(ev, MODEL_NAME, events, returns) if events is not None and len(ev.models) > 1 else None,
        "k": ev.k,
        "exclude": ev.exclude,
        "batch": batch,
        "workers": workers,
        "sharing": sharing,
        "overrides": dict(overrides or {}),
        "categories": categories,
        "events": ev.events,
        "bad_rows": bad_rows,
        "events_per_s": ev.events_per_s,
        "seconds": ev.seconds,
    }


def facts_line(facts: dict) -> str:
    """The ranker's facts at the end of a replay in one line (a sharded ranker's, worker by worker).

    >>> facts_line({"decay_clock": "events", "popularity_half_life": 8000.0, "second_stage_steps": 3,
    ...             "second_stage_weights": {"covisit": 1.2, "popularity": -0.05}})
    'the ranker at the end: popularity half-life 8,000 events; 3 learning steps, weights: covisit 1.20, popularity -0.05'
    """
    if "workers" in facts:
        return "\n".join(f"worker {i}: " + facts_line(f) for i, f in enumerate(facts["workers"]))
    half_life = facts.get("popularity_half_life")
    unit = "events" if facts.get("decay_clock") == "events" else "s"
    weights = ", ".join(f"{name} {w:.2f}" for name, w in facts.get("second_stage_weights", {}).items())
    return (f"the ranker at the end: popularity half-life "
            f"{'none (never forgotten)' if half_life is None else f'{half_life:,.0f} {unit}'}; "
            f"{facts.get('second_stage_steps', 0)} learning steps, weights: {weights}")


def _verdict(interval: list) -> str:
    lo, hi = interval
    if lo is None or hi is None:
        return "-"
    return "better" if lo > 0 else "worse" if hi < 0 else "cannot tell"


def comparison_table(comparison: dict, k: int, exclude: str):
    """The ranker against each baseline (:func:`models.comparison.compare`), as a table."""
    from rich.table import Table

    best = comparison["best_baseline"]
    ratio = " ".join(f"{name} x{comparison[key]:.3f}" if comparison[key] is not None else f"{name} -"
                     for name, key in ((f"HR@{k}", "hr_ratio"), (f"MRR@{k}", "mrr_ratio")))
    rule = "met" if comparison["rule_met"] else "NOT met"
    needed = comparison["discovery_hr_needed"]
    floor = (("" if exclude == "interacted" else "with every return hit, ")
             + f"the rule needs a discovery HR@{k} of at least "
             + (f"{needed:.4f}" if needed is not None else "- (no list can meet it)")
             + f" (best list of this run: {comparison['discovery_hr_best']:.4f})")
    table = Table(title=f"{MODEL_NAME} minus each baseline, same events (95 % intervals, clustered by customer)",
                  caption=f"best baseline {best}: {ratio}; quality rule (docs/QUALITY.md) {rule}; {floor}")
    for col in ("baseline", f"HR@{k} diff.", "95 % interval", f"MRR@{k} diff.", "95 % interval", "HR / MRR"):
        table.add_column(col, justify="left" if col == "baseline" else "right", no_wrap=True)

    def interval(ci: list) -> str:
        return "-" if None in ci else f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"

    for name, d in comparison["vs"].items():
        table.add_row(name, f"{d['hr_diff']:+.4f}", interval(d["hr_diff_ci95"]), f"{d['mrr_diff']:+.4f}",
                      interval(d["mrr_diff_ci95"]), f"{_verdict(d['hr_diff_ci95'])} / {_verdict(d['mrr_diff_ci95'])}")
    return table


def plot_rolling(ev: Evaluation, path: str, window: int | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max((s.n for s in ev.models.values()), default=0)
    window = window or max(100, min(5000, n // 20 or 1))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for name, score in ev.models.items():
        x, y = score.rolling_hr(window)
        ax.plot(x, y, label=f"{name} (HR@{ev.k}={score.hr:.3f})", linewidth=1.6 if name == MODEL_NAME else 1.0)
    ax.set_xlabel("event index in stream")
    ax.set_ylabel(f"rolling HR@{ev.k} (last {window} evaluated events)")
    ax.set_title(f"Prequential HR@{ev.k}, exclude={ev.exclude}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@click.command("replay")
@click.option("--events", "events_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="CSV with header timestamp,user_id,item_id,event_type[,price]; timestamp RFC 3339 "
                   "(without offset: UTC) or epoch ms.")
@click.option("--k", default=10, show_default=True, type=click.IntRange(min=1), help="Length of the top-K list.")
@click.option("--exclude", default="purchased", show_default=True, type=click.Choice(EXCLUDE_RULES),
              help="Items never recommended back to the user.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object to stdout instead of a table.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Write a PNG of rolling HR@K over the stream.")
@click.option("--max-bad-rows-shown", default=20, show_default=True, type=int,
              help="Bad rows listed individually on stderr (all are counted).")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Serve as a worker does: rank each micro-batch's customers in one call before "
                   "learning the batch of this many events (default: per event, the strict reference).")
@click.option("--jobs", type=click.IntRange(min=1), default=available_cpus,
              show_default="the CPUs available to this process",
              help="Worker processes: the models are split into at most this many groups of similar cost, "
                   "each replayed over the whole log in its own process; the results are those of --jobs 1.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Rank as this many workers do: customers split over them by key hash, each worker's "
                   "ranker learning and serving its own customers.")
@click.option("--sharing/--no-sharing", default=True, show_default=True,
              help="The workers share their item-side learning, as the runtime's do (every worker applies every "
                   "worker's update after each micro-batch), or each learns it from its own customers only, "
                   "event by event.")
@click.option("--overrides", "overrides_text", default="", metavar="JSON",
              help="HybridRanker parameters other than its defaults, as a JSON object, e.g. "
                   "'{\"popularity_half_life\": 20000}' (the half-lives count events: scale them with the "
                   "log's traffic). RECOSTREAM_RANKER runs the same ranker in a worker.")
@click.option("--no-categories", is_flag=True,
              help="Ignore the log's category column (replay a shop whose events and catalogue name no categories).")
def replay(events_path, k, exclude, as_json, plot_path, max_bad_rows_shown, batch, jobs, workers, sharing,
           overrides_text, no_categories):
    """Replay an event log test-then-train through the ranker and the baselines.

    For each event of an already-seen user, every model recommends K items
    (with the --exclude rule) before learning the event (with --batch N:
    before learning the micro-batch of N events it belongs to); HR@K, MRR@K and
    catalogue coverage are reported for the product ranker (HybridRanker
    defaults, as run by the workers, or with --overrides) and the popularity /
    co-occurrence baselines computed in the same run, over all judged events
    and split between returns (an item the customer had met before) and
    discovery. A `category` column names each item's category with its events,
    as a worker's events do: the ranker takes it, once the event is learned,
    for items its catalogue has none for; --no-categories ignores it.
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.table import Table

    try:
        overrides = ranker_overrides(overrides_text) if overrides_text else {}
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--overrides") from None
    err = Console(stderr=True)
    shown = 0

    def on_bad_row(line, reason):
        nonlocal shown
        if shown < max_bad_rows_shown:
            err.print(f"[yellow]bad row[/] line {line}: {reason}", highlight=False)
        shown += 1

    categories: dict[str, str] = {}
    events, n_bad = read_events(events_path, on_bad_row, categories=None if no_categories else categories)
    if n_bad:
        more = f" ({n_bad - max_bad_rows_shown} not listed)" if n_bad > max_bad_rows_shown else ""
        err.print(f"[yellow]{n_bad} bad row(s) skipped{more}[/]", highlight=False)
    if not events:
        raise click.ClickException("no valid events to replay")

    with Progress(
        TextColumn("replay"), BarColumn(), TextColumn("{task.completed}/{task.total} events"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=True, disable=not err.is_terminal,
        auto_refresh=False,  # (no refresh thread: the process forks its workers)
    ) as bar:
        task = bar.add_task("replay", total=len(events))
        def advance(n):
            bar.advance(task, n)
            bar.refresh()

        ev = run_replay(events, k=k, exclude=exclude, progress=advance, batch=batch, jobs=jobs, workers=workers,
                        sharing=sharing, overrides=overrides, categories=categories)

    if plot_path:
        plot_rolling(ev, plot_path)
        click.echo(f"wrote the rolling hit rate of every model to {plot_path}", err=True)
    result = result_json(ev, n_bad, batch, workers, sharing, events, overrides, len(categories))
    if as_json:
        click.echo(json.dumps(result))
        return
    out = Console(width=max(120, Console().width))
    served = ((f"micro-batches of {batch}" if batch else "per event") + (f", {workers} workers" if workers > 1 else "")
              + ("" if sharing else ", item side not shared")
              + (f", categories of {len(categories):,} items" if categories else "")
              + "".join(f", {name}={value!r}" for name, value in overrides.items()))
    table = Table(title=f"Prequential replay: {ev.events} events, K={k}, exclude={exclude}, {served}")
    returns = result["model"]["returns"]["n"]
    table.caption = (f"returns: {returns} of the {result['model']['n']} judged events are of an item the customer "
                     f"had met before; discovery: the other {result['model']['discovery']['n']}")
    for col in ("model", f"HR@{k}", f"MRR@{k}", "coverage", "n", f"HR@{k} 1st half", f"HR@{k} 2nd half",
                f"HR@{k} returns", f"HR@{k} discovery"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, block in [(f"{MODEL_NAME} (HybridRanker)", result["model"])] + list(result["baselines"].items()):
        table.add_row(name, f"{block['hr']:.4f}", f"{block['mrr']:.4f}", f"{block['coverage']:.3f}", str(block["n"]),
                      f"{block['first_half']['hr']:.4f}", f"{block['second_half']['hr']:.4f}",
                      f"{block['returns']['hr']:.4f}", f"{block['discovery']['hr']:.4f}")
    out.print(table)
    facts = result["model"]["facts"]
    if facts:
        out.print(facts_line(facts), highlight=False)
    if result["comparison"] is not None:
        out.print(comparison_table(result["comparison"], k, exclude))
    processes = min(jobs, len(ev.models))
    out.print(f"{ev.events} events in {ev.seconds:.1f} s = {ev.events_per_s:,.0f} events/s "
              f"(all {len(ev.models)} models, test-then-train, {processes} process{'es' if processes > 1 else ''}); "
              f"bad rows: {n_bad}")


if __name__ == "__main__":  # pragma: no cover
    replay()
