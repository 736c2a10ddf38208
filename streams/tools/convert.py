"""``recostream convert``: public interaction logs to the replay CSV (``timestamp,user_id,item_id,event_type``).

Formats (``--format``):

* ``movielens``: MovieLens ``ratings.csv`` (``userId,movieId,rating,timestamp``,
  epoch seconds): rating >= 4 is a purchase, 3 a click, below 3 a browse; ids
  prefixed ``u``/``i``; timestamps RFC 3339 UTC.
* ``movielens-dat``: the older MovieLens releases, mapped the same way: 100K
  ``u.data`` (tab-separated) and 1M / 10M ``ratings.dat`` (``::``-separated),
  ``user, item, rating, timestamp`` without a header.
* ``taobao``: Taobao UserBehavior (Alibaba Tianchi dataset 649; no header:
  ``user,item,category,behavior,timestamp`` in epoch seconds): ``pv`` browse,
  ``cart`` and ``fav`` click, ``buy`` purchase; timestamps epoch milliseconds.
* ``retailrocket``: RetailRocket ``events.csv``
  (``timestamp,visitorid,event,itemid,transactionid``, epoch ms): ``view``
  browse, ``addtocart`` click, ``transaction`` purchase.
* ``rees46``: REES46's multi-category store logs (``2019-Oct.csv`` and the
  other months: ``event_time,event_type,product_id,category_id,category_code,
  brand,price,user_id,user_session``, times ``2019-10-01 00:00:00 UTC``):
  ``view`` browse, ``cart`` click, ``purchase`` purchase; ``remove_from_cart``
  rows are skipped (not counted as unparsed).
* ``diginetica``: CIKM Cup 2016 (DIGINETICA) ``train-item-views.csv``
  (``sessionId;userId;itemId;timeframe;eventdate``, ``;``-separated): every
  view a browse, a session is a customer (most have no user id). The log
  gives a session's date and each view's offset in ms from the session's
  start, not a time of day: a view is at midnight UTC of its date plus its
  offset, so the sessions of a day interleave by offset.
* ``yoochoose``: RecSys Challenge 2015 ``yoochoose-clicks.dat``
  (``session,timestamp,item,category``, RFC 3339): every click a browse, a
  session is a customer.

Timestamps are read and written by the contract's one timestamp module
(:mod:`streams.contract.timestamps`; epoch counts with its CSV option), so a
converted log means what ``recostream replay`` and the workers read.

Rows are stable-sorted by time and customers with fewer than
``--min-events`` (2) events are dropped, as for the logs in the project's
dataset README. Rows that do not parse are counted and skipped. Everything
is held in memory (about 100 bytes a row): use ``--max-rows`` on the largest
logs (Taobao's full log is 100 million rows sorted by user, so its first rows
are the complete histories of its first customers).
"""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator, Optional

import click

from streams.contract import epoch_ms, format_rfc3339, parse_timestamp

Row = tuple[float, str, str, str, Optional[str]]  # (epoch seconds, user, item, event type, category)


def _movielens(fields: list[str]) -> Row | None:
    if fields[0] == "userId":
        return None
    rating = float(fields[2])
    etype = "purchase" if rating >= 4 else "click" if rating >= 3 else "browse"
    return parse_timestamp(fields[3], csv=True, epoch_unit="s"), "u" + fields[0], "i" + fields[1], etype, None


def _movielens_dat(fields: list[str]) -> Row | None:
    line = ",".join(fields)  # (the csv reader splits nothing here but a stray comma)
    user, item, rating, ts = (line.split("::") if "::" in line else line.split())[:4]
    return _movielens([user, item, rating, ts])


_TAOBAO = {"pv": "browse", "cart": "click", "fav": "click", "buy": "purchase"}


def _taobao(fields: list[str]) -> Row | None:
    return parse_timestamp(fields[4], csv=True, epoch_unit="s"), fields[0], fields[1], _TAOBAO[fields[3]], fields[2]


_RETAILROCKET = {"view": "browse", "addtocart": "click", "transaction": "purchase"}


def _retailrocket(fields: list[str]) -> Row | None:
    if fields[0] == "timestamp":
        return None
    return parse_timestamp(fields[0], csv=True), fields[1], fields[3], _RETAILROCKET[fields[2]], None


_REES46 = {"view": "browse", "cart": "click", "purchase": "purchase"}


def _rees46(fields: list[str]) -> Row | None:
    if fields[0] == "event_time" or fields[1] == "remove_from_cart":
        return None
    when = fields[0].removesuffix(" UTC").replace(" ", "T", 1)  # (UTC: no offset)
    return parse_timestamp(when, csv=True), fields[7], fields[2], _REES46[fields[1]], fields[3] or None


def _diginetica(fields: list[str]) -> Row | None:
    session, _user, item, offset_ms, day = ",".join(fields).split(";")[:5]
    if session in ("sessionId", "session_id"):
        return None
    when = parse_timestamp(day + "T00:00:00", csv=True) + int(offset_ms) / 1000.0
    return when, session, item, "browse", None


def _yoochoose(fields: list[str]) -> Row | None:
    # Its category field is 0 (none), S (a special offer), 1-12 (a category) or a brand's id.
    category = fields[3] if len(fields) > 3 and fields[3] not in ("", "0", "S") else None
    return parse_timestamp(fields[1]), fields[0], fields[2], "browse", category


FORMATS: dict[str, tuple[Callable[[list[str]], Row | None], str]] = {
    # parser, timestamp style of the output
    "movielens": (_movielens, "iso"),
    "movielens-dat": (_movielens_dat, "iso"),
    "taobao": (_taobao, "ms"),
    "rees46": (_rees46, "ms"),
    "retailrocket": (_retailrocket, "ms"),
    "yoochoose": (_yoochoose, "ms"),
    "diginetica": (_diginetica, "ms"),
}


def read_rows(path: Path, fmt: str, max_rows: int | None = None) -> tuple[list[Row], int]:
    """The rows of ``path`` in ``fmt`` (file order) and the number of rows that did not parse."""
    parse = FORMATS[fmt][0]
    rows: list[Row] = []
    bad = 0
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        for n, fields in enumerate(csv.reader(f)):
            if max_rows is not None and n >= max_rows:
                break
            try:
                row = parse(fields)
            except (ValueError, IndexError, KeyError):
                bad += 1
                continue
            if row is not None:
                rows.append(row)
    return rows, bad


def convert(rows: list[Row], min_events: int = 2) -> list[Row]:
    """Stable-sorted by time, customers with fewer than ``min_events`` events dropped.

    >>> convert([(3.0, "a", "i1", "click", None), (1.0, "a", "i2", "browse", None), (2.0, "b", "i1", "browse", None)])
    [(1.0, 'a', 'i2', 'browse', None), (3.0, 'a', 'i1', 'click', None)]
    """
    per_user = Counter(row[1] for row in rows)
    kept = [row for row in rows if per_user[row[1]] >= min_events]
    kept.sort(key=lambda row: row[0])
    return kept


def format_ts(ts: float, style: str) -> str:
    """``ts`` (epoch seconds) as RFC 3339 UTC (``iso``) or epoch milliseconds (``ms``).

    >>> format_ts(827865415.0, "iso"), format_ts(1511544070.0, "ms")
    ('1996-03-26T18:36:55Z', '1511544070000')
    """
    return format_rfc3339(ts) if style == "iso" else str(epoch_ms(ts))


def write_rows(rows: list[Row], out, style: str, categories: bool = False) -> Iterator[int]:
    """Write ``rows`` as the replay CSV, with a ``category`` column (empty where unknown) if ``categories``."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["timestamp", "user_id", "item_id", "event_type"] + (["category"] if categories else []))
    for n, (ts, user, item, etype, category) in enumerate(rows, 1):
        writer.writerow([format_ts(ts, style), user, item, etype] + ([category or ""] if categories else []))
        if n % 100_000 == 0:
            yield n


@click.command()
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("target", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(sorted(FORMATS)), required=True, help="The source log's format.")
@click.option("--min-events", default=2, show_default=True, help="Drop customers with fewer events.")
@click.option("--max-rows", type=int, default=None, help="Read only the first N rows of the source.")
@click.option("--categories", is_flag=True,
              help="Write a category column: the item's category where the format has one (taobao, rees46: "
                   "category_id, yoochoose: its category field unless 0 or S), empty elsewhere.")
def convert_command(source: Path, target: Path, fmt: str, min_events: int, max_rows: int | None,
                    categories: bool) -> None:
    """Convert a public interaction log (MovieLens, Taobao, REES46, RetailRocket, YooChoose, DIGINETICA) to the replay CSV.

    The result feeds `recostream replay --events TARGET` and `recostream
    produce --csv TARGET`. Prints one JSON summary on stdout.
    """
    click.echo(f"reading {source} ({fmt})", err=True)
    rows, bad = read_rows(source, fmt, max_rows)
    kept = convert(rows, min_events)
    with open(target, "w", newline="", encoding="utf-8") as out:
        for n in write_rows(kept, out, FORMATS[fmt][1], categories):
            click.echo(f"  {n:,} rows written", err=True)
    summary = {"source": str(source), "target": str(target), "format": fmt, "rows_read": len(rows) + bad,
               "rows_unparsed": bad, "events": len(kept), "customers": len({r[1] for r in kept}),
               "items": len({r[2] for r in kept}),
               "items_with_category": len({r[2] for r in kept if r[4] is not None}) if categories else 0,
               "customers_dropped": len({r[1] for r in rows}) - len({r[1] for r in kept})}
    click.echo(json.dumps(summary))
    if not kept:
        sys.exit(1)
