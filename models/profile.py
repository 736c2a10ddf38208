"""Per-customer profile maths.

Pure functions over a :class:`Profile` struct: no Kafka, Faust or Redis here,
so the worker, the back-fill tooling and the tests all share one
implementation.  Every collection in a profile is bounded, because a profile
lives in a changelog-backed table and a bot must not be able to grow one
without limit.

Examples
--------
>>> p = new_profile("u1")
>>> apply_event(p, event_id="e1", item_id="i1", event_type="browse",
...             ts=1_700_000_000.0, category="shoes")
True
>>> apply_event(p, event_id="e2", item_id="i1", event_type="purchase",
...             ts=1_700_000_600.0, category="shoes", price=50.0, quantity=2)
True
>>> apply_event(p, event_id="e2", item_id="i1", event_type="purchase",
...             ts=1_700_000_600.0, price=50.0, quantity=2)  # redelivery
False
>>> p.counts, p.monetary, p.orders
({'browse': 1, 'click': 0, 'purchase': 1}, 100.0, 1)
>>> rfm(p, now=1_700_000_600.0 + 2 * 86400)
(2.0, 1, 100.0)
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Sequence

import msgspec
import numpy as np

from models.effect.state import EffectState
from models.events import BROWSE, CLICK, EVENT_TYPES, PURCHASE

__all__ = [
    "EVENT_TYPES",
    "MAX_RECENT_ITEMS",
    "MAX_CATEGORIES",
    "DEDUPE_WINDOW",
    "MAX_RECENT_ORDERS",
    "FEATURE_KEYS",
    "Profile",
    "new_profile",
    "apply_event",
    "mark_seen",
    "seen_offset",
    "applied_offset",
    "mark_applied",
    "rfm",
    "top_categories",
    "features",
    "feature_matrix",
    "encode_profile",
    "decode_profile",
    "profile_summary",
]

_EVENT_TYPE_SET = frozenset(EVENT_TYPES)

MAX_RECENT_ITEMS = 20
MAX_CATEGORIES = 32
DEDUPE_WINDOW = 512
MAX_RECENT_ORDERS = 64

_DAY = 86400.0

FEATURE_KEYS: tuple[str, ...] = (
    "log_browse",
    "log_click",
    "log_purchase",
    "log_recency_days",
    "log_inactive_days",
    "log_tenure_days",
    "log_orders",
    "log_monetary",
    "log_avg_order_value",
    "category_entropy",
    "purchase_browse_ratio",
    "click_browse_ratio",
)
"""Keys of :func:`features`, always all present, in this order."""


def _zero_counts() -> dict[str, int]:
    return {t: 0 for t in EVENT_TYPES}


class Profile(msgspec.Struct, array_like=True, gc=False):
    """What we know about one customer.

    Attributes
    ----------
    user_id
        Customer id (the Kafka key).
    counts
        Events seen per type (``browse``, ``click``, ``purchase``).
    first_seen, last_seen
        Earliest / latest event time, epoch seconds; ``None`` until the first event.
    last_purchase
        Latest purchase time, epoch seconds (the R of RFM).
    monetary
        Sum of ``price * quantity`` over purchases that carried a price.
    orders
        Number of distinct purchase orders (``order_id``, or ``event_id`` when
        a purchase has no order id).
    recent_items
        Most recently touched items, most recent last, no duplicates, bounded
        (a tuple, like ``recent_order_ids``: profiles then hold no container
        the garbage collector has to track).
    category_counts
        Events per category for the heaviest :data:`MAX_CATEGORIES` categories
        (Space-Saving counts: an entry may be over-estimated by at most the
        count it evicted).
    seen_window
        FIFO window of recent event ids used to drop redeliveries, as one
        string: each id preceded and followed by a newline (ids holding a
        newline or carriage return are escaped), so that a membership test is
        one substring search and a profile decodes into a handful of objects
        whatever the window size. Read it through :attr:`seen_event_ids`.
    seen_window_offsets
        Source position of each id of the window, 8 bytes each (signed,
        little-endian; -1 when unknown; the engine encodes topic-partition
        and offset in it): tells a redelivery of the same message (after a
        crash) from a producer's duplicate. Read it through :attr:`seen_offsets`.
    recent_order_ids
        FIFO window of recent order keys so multi-line orders count once.
    applied
        The source position of the last event applied from each
        topic-partition (same encoding as ``seen_window_offsets``): a
        customer's events of one partition arrive in offset order, so a
        message at or below it was applied already, whatever the size of the
        dedupe window. Read it through :func:`applied_offset`.
    segment
        Latest customer segment assigned by the clustering model.
    effect
        The customer's attribution state for the running experiment
        (:class:`models.effect.EffectState`): recent recommendations and
        impressions, events waiting for their impression, what has been
        counted once. Kept here so that the changelog record that carries
        the customer's counts also carries it, and a restore brings both back
        together; ``None`` (omitted from the payload) until the first list,
        impression or event the attribution sees.
    model, model_version
        The ranker's own state of this customer in portable form (history,
        excluded items, latent factors: :class:`models.ranking.users.UserRecord`
        bytes) and its version (events it holds), written with every batch
        that changed it. Kept here so that the customer's model state moves
        with their partition: a worker serving them for the first time (or
        holding an older version) takes it from the restored profile.

    The encoding (:func:`encode_profile`) is MessagePack with the struct as an
    array, no field names on the wire: a new field goes at the end, with a
    default, so that older payloads still decode. :func:`decode_profile` also
    reads the map and JSON payloads of earlier versions (with the dedupe
    window as ``seen_event_ids`` and ``seen_offsets`` lists).
    """

    user_id: str
    counts: dict[str, int] = msgspec.field(default_factory=_zero_counts)
    first_seen: float | None = None
    last_seen: float | None = None
    last_purchase: float | None = None
    monetary: float = 0.0
    orders: int = 0
    recent_items: tuple[str, ...] = ()
    category_counts: dict[str, int] = msgspec.field(default_factory=dict)
    seen_window: str = ""
    seen_window_offsets: bytes = b""
    recent_order_ids: tuple[str, ...] = ()
    applied: tuple[int, ...] = ()
    segment: int | None = None
    effect: EffectState | None = None
    model: bytes | None = None
    model_version: int = 0

    @property
    def seen_event_ids(self) -> list[str]:
        """The event ids of the dedupe window, oldest first (a copy)."""
        w = self.seen_window
        return [_unescape(i) for i in w[1:-1].split(_SEP)] if w else []

    @property
    def seen_offsets(self) -> list[int]:
        """The source position of each id of :attr:`seen_event_ids` (a copy)."""
        b = self.seen_window_offsets
        return list(_OFFSETS.unpack(b)) if len(b) == _OFFSETS.size else np.frombuffer(b, "<i8").tolist()


_SEP = "\n"  # ends every id of the window (contract-valid ids hold no control characters)
_ESC = "\r"
_ESCAPED = re.compile("\r(.)", re.DOTALL)
_OFFSETS = struct.Struct("<q")


def _window_key(event_id: str) -> str:
    """How ``event_id`` appears in :attr:`Profile.seen_window` (with its separators)."""
    if _SEP in event_id or _ESC in event_id:
        event_id = event_id.replace(_ESC, _ESC + _ESC).replace(_SEP, _ESC + "n")
    return _SEP + event_id + _SEP


def _unescape(text: str) -> str:
    return _ESCAPED.sub(lambda m: _ESC if m.group(1) == _ESC else _SEP, text) if _ESC in text else text


def _set_window(profile: Profile, ids: list[str], offsets: list[int]) -> None:
    if len(offsets) != len(ids):  # payloads written before offsets were kept
        offsets = [-1] * len(ids)
    profile.seen_window = "".join(_window_key(i)[:-1] for i in ids) + _SEP if ids else ""
    profile.seen_window_offsets = np.asarray(offsets, dtype="<i8").tobytes()


def new_profile(user_id: str) -> Profile:
    """An empty profile.

    Examples
    --------
    >>> new_profile("u7")
    Profile(user_id='u7', counts={'browse': 0, 'click': 0, 'purchase': 0}, first_seen=None, last_seen=None, last_purchase=None, monetary=0.0, orders=0, recent_items=(), category_counts={}, seen_window='', seen_window_offsets=b'', recent_order_ids=(), applied=(), segment=None, effect=None, model=None, model_version=0)
    """
    return Profile(user_id=user_id)


def apply_event(
    profile: Profile,
    *,
    event_id: str,
    item_id: str,
    event_type: str,
    ts: float,
    category: str | None = None,
    price: float | None = None,
    quantity: int = 1,
    order_id: str | None = None,
    max_recent_items: int = MAX_RECENT_ITEMS,
    max_categories: int = MAX_CATEGORIES,
    window: int = DEDUPE_WINDOW,
    offset: int = -1,
) -> bool:
    """Fold one event into ``profile`` in place.

    Parameters
    ----------
    profile
        Mutated in place.
    event_id, item_id, event_type, ts, category, price, quantity, order_id
        The event (already validated by the wire contract).
    max_recent_items, max_categories
        Bounds of ``recent_items`` and ``category_counts``.
    window
        Size of the ``seen_event_ids`` dedupe window.

    Returns
    -------
    bool
        ``False`` -- and the profile is left untouched -- if ``event_id`` is in
        the dedupe window (Kafka redelivers after a rebalance).

    Raises
    ------
    ValueError
        If ``event_type`` is not one of :data:`EVENT_TYPES` (checked before any
        mutation).

    Examples
    --------
    >>> p = new_profile("u1")
    >>> for i, item in enumerate(["a", "b", "a"]):
    ...     _ = apply_event(p, event_id=f"e{i}", item_id=item, event_type="click",
    ...                     ts=1_700_000_000.0 - i)
    >>> p.recent_items, p.first_seen, p.last_seen
    (('b', 'a'), 1699999998.0, 1700000000.0)
    """
    if event_type not in _EVENT_TYPE_SET:
        raise ValueError(f"event_type must be one of {EVENT_TYPES}, got {event_type!r}")
    if not mark_seen(profile, event_id, window, offset):
        return False

    counts = profile.counts
    counts[event_type] = counts.get(event_type, 0) + 1
    # Partitions are ordered, but producers are not: keep the envelope.
    if profile.first_seen is None or ts < profile.first_seen:
        profile.first_seen = ts
    if profile.last_seen is None or ts > profile.last_seen:
        profile.last_seen = ts

    recent = profile.recent_items
    if item_id in recent:
        i = recent.index(item_id)
        recent = recent[:i] + recent[i + 1:]
    recent += (item_id,)
    if len(recent) > max_recent_items:
        recent = recent[len(recent) - max_recent_items:]
    profile.recent_items = recent

    if category is not None:
        _count_category(profile.category_counts, category, max_categories)

    if event_type == PURCHASE:
        if profile.last_purchase is None or ts > profile.last_purchase:
            profile.last_purchase = ts
        if price is not None:
            profile.monetary += price * quantity
        order_key = order_id if order_id is not None else event_id
        recent_orders = profile.recent_order_ids
        if order_key not in recent_orders:
            profile.orders += 1
            recent_orders += (order_key,)
            if len(recent_orders) > MAX_RECENT_ORDERS:
                recent_orders = recent_orders[len(recent_orders) - MAX_RECENT_ORDERS:]
            profile.recent_order_ids = recent_orders
    return True


def mark_seen(profile: Profile, event_id: str, window: int = DEDUPE_WINDOW, offset: int = -1) -> bool:
    """Add ``event_id`` (at source position ``offset``) to the dedupe window; ``False`` if it is there already.

    :func:`apply_event` does this first; a record that changes no count (an
    impression) is deduplicated by this alone, with the same window and positions.

    Examples
    --------
    >>> p = new_profile("u1")
    >>> mark_seen(p, "imp-1", offset=7), mark_seen(p, "imp-1", offset=7), seen_offset(p, "imp-1")
    (True, False, 7)
    >>> p.counts["browse"]
    0
    """
    key = _window_key(event_id)
    seen = profile.seen_window
    if key in seen:
        return False
    offsets = profile.seen_window_offsets + _OFFSETS.pack(offset)
    seen = seen + key[1:] if seen else key
    drop = len(offsets) // 8 - window
    if drop > 0:
        if drop * 8 >= len(offsets):
            seen, offsets = "", b""
        else:
            pos = 0
            for _ in range(drop):
                pos = seen.index(_SEP, pos + 1)
            seen, offsets = seen[pos:], offsets[8 * drop:]
    profile.seen_window = seen
    profile.seen_window_offsets = offsets
    return True


_PART_MASK = ~((1 << 40) - 1)


def applied_offset(profile: Profile, position: int) -> int | None:
    """The offset of the last event applied from ``position``'s topic-partition, or ``None``.

    ``position`` is ``partition hash << 40 | offset`` (``models.engine.source_position``).

    >>> p = new_profile("u1")
    >>> mark_applied(p, (7 << 40) | 41); mark_applied(p, (9 << 40) | 3); mark_applied(p, (7 << 40) | 42)
    >>> applied_offset(p, 7 << 40), applied_offset(p, 9 << 40), applied_offset(p, 8 << 40)
    (42, 3, None)
    """
    part = position & _PART_MASK
    for entry in profile.applied:
        if entry & _PART_MASK == part:
            return entry & ~_PART_MASK
    return None


def mark_applied(profile: Profile, position: int) -> None:
    """Record ``position`` as the last event applied from its topic-partition."""
    part = position & _PART_MASK
    profile.applied = tuple(e for e in profile.applied if e & _PART_MASK != part) + (position,)


def seen_offset(profile: Profile, event_id: str) -> int | None:
    """Source offset recorded for ``event_id`` if it is in the dedupe window, else ``None``.

    Examples
    --------
    >>> p = new_profile("u1")
    >>> _ = apply_event(p, event_id="e1", item_id="i1", event_type="click", ts=1.7e9, offset=41)
    >>> seen_offset(p, "e1"), seen_offset(p, "e2")
    (41, None)
    """
    window = profile.seen_window
    pos = window.find(_window_key(event_id))
    if pos < 0:
        return None
    i = window.count(_SEP, 0, pos)
    offsets = profile.seen_window_offsets
    return _OFFSETS.unpack_from(offsets, 8 * i)[0] if 8 * i + 8 <= len(offsets) else -1


def _count_category(table: dict[str, int], category: str, capacity: int) -> None:
    # Space-Saving (Metwally et al. 2005): a newcomer replaces the minimum and
    # inherits its count, so any category with a real share > 1/capacity of the
    # events is guaranteed to stay -- dropping newcomers instead would freeze
    # the table once it fills up.
    if category in table:
        table[category] += 1
        return
    if len(table) < capacity:
        table[category] = 1
        return
    victim = min(table, key=table.__getitem__)
    floor = table.pop(victim)
    table[category] = floor + 1


def rfm(profile: Profile, now: float) -> tuple[float, int, float]:
    """Recency (days), frequency (distinct orders), monetary (total spend).

    Recency is measured from the last purchase.  A customer who never bought
    gets the days since we first saw them (they have not bought in all that
    time), and an empty profile gets ``0.0``.  Recency is clamped at 0 for
    events stamped after ``now``.

    Examples
    --------
    >>> p = new_profile("u1")
    >>> rfm(p, now=1_700_000_000.0)
    (0.0, 0, 0.0)
    >>> _ = apply_event(p, event_id="e1", item_id="i", event_type="browse", ts=1_700_000_000.0)
    >>> rfm(p, now=1_700_000_000.0 + 3 * 86400)
    (3.0, 0, 0.0)
    """
    ref = profile.last_purchase if profile.last_purchase is not None else profile.first_seen
    recency = 0.0 if ref is None else max(0.0, (now - ref) / _DAY)
    return recency, profile.orders, profile.monetary


def top_categories(profile: Profile, n: int = 5) -> list[tuple[str, float]]:
    """The ``n`` heaviest categories, heaviest first (ties: alphabetical).

    Examples
    --------
    >>> p = new_profile("u1")
    >>> for i, c in enumerate(["a", "b", "b", "c", "c"]):
    ...     _ = apply_event(p, event_id=str(i), item_id="x", event_type="browse",
    ...                     ts=1_700_000_000.0, category=c)
    >>> top_categories(p, 2)
    [('b', 2.0), ('c', 2.0)]
    """
    ranked = sorted(profile.category_counts.items(), key=lambda kv: (-kv[1], kv[0]))[: max(n, 0)]
    return [(category, float(count)) for category, count in ranked]


def features(profile: Profile, now: float) -> dict[str, float]:
    """Fixed-key, log-scaled numeric view of a profile for clustering.

    Counts and money are heavy-tailed, so everything is ``log1p``-compressed
    before the online scaler sees it; ratios are smoothed with +1 so new
    customers do not produce extreme values.  Keys are exactly
    :data:`FEATURE_KEYS` and all values are finite.

    Examples
    --------
    >>> p = new_profile("u1")
    >>> f = features(p, now=1_700_000_000.0)
    >>> tuple(f) == FEATURE_KEYS, set(f.values())
    (True, {0.0})
    """
    counts = profile.counts
    browse = counts.get("browse", 0)
    click = counts.get("click", 0)
    purchase = counts.get(PURCHASE, 0)
    recency, orders, monetary = rfm(profile, now)
    monetary = max(monetary, 0.0)
    inactive = 0.0 if profile.last_seen is None else max(0.0, (now - profile.last_seen) / _DAY)
    tenure = (
        0.0
        if profile.first_seen is None or profile.last_seen is None
        else (profile.last_seen - profile.first_seen) / _DAY
    )
    return {
        "log_browse": math.log1p(browse),
        "log_click": math.log1p(click),
        "log_purchase": math.log1p(purchase),
        "log_recency_days": math.log1p(recency),
        "log_inactive_days": math.log1p(inactive),
        "log_tenure_days": math.log1p(tenure),
        "log_orders": math.log1p(orders),
        "log_monetary": math.log1p(monetary),
        "log_avg_order_value": math.log1p(monetary / orders) if orders else 0.0,
        "category_entropy": _entropy(profile.category_counts),
        "purchase_browse_ratio": math.log1p(purchase / (browse + 1.0)),
        "click_browse_ratio": math.log1p(click / (browse + 1.0)),
    }


def feature_matrix(profiles: Sequence[Profile], now) -> np.ndarray:
    """:func:`features` of many profiles at once: one row per profile, columns in :data:`FEATURE_KEYS` order.

    ``now`` is one time for all, or one per profile. The values equal
    :func:`features`' up to rounding (numpy's ``log1p`` instead of ``math``'s).

    Examples
    --------
    >>> p = new_profile("u1")
    >>> _ = apply_event(p, event_id="e1", item_id="i1", event_type="purchase", ts=1_700_000_000.0,
    ...                 category="toys", price=5.0)
    >>> X = feature_matrix([p, new_profile("u2")], now=1_700_000_000.0 + 86400)
    >>> X.shape, np.allclose(X[0], list(features(p, 1_700_000_000.0 + 86400).values()))
    ((2, 12), True)
    >>> X[1].tolist() == [0.0] * 12
    True
    """
    nan = math.nan
    rows = []
    for p in profiles:
        c = p.counts
        rows.append((c.get(BROWSE, 0), c.get(CLICK, 0), c.get(PURCHASE, 0),
                     nan if p.first_seen is None else p.first_seen,
                     nan if p.last_seen is None else p.last_seen,
                     nan if p.last_purchase is None else p.last_purchase,
                     p.orders, p.monetary, _entropy(p.category_counts)))
    if not rows:
        return np.zeros((0, len(FEATURE_KEYS)))
    browse, click, purchase, first, last, last_purchase, orders, monetary, entropy = np.array(rows, dtype=np.float64).T
    now = np.asarray(now, dtype=np.float64)
    ref = np.where(np.isnan(last_purchase), first, last_purchase)
    with np.errstate(invalid="ignore"):
        recency = np.where(np.isnan(ref), 0.0, np.maximum(0.0, (now - ref) / _DAY))
        inactive = np.where(np.isnan(last), 0.0, np.maximum(0.0, (now - last) / _DAY))
        tenure = np.where(np.isnan(first) | np.isnan(last), 0.0, (last - first) / _DAY)
    monetary = np.maximum(monetary, 0.0)
    has_orders = orders > 0
    aov = np.zeros_like(monetary)
    aov[has_orders] = np.log1p(monetary[has_orders] / orders[has_orders])
    return np.stack([
        np.log1p(browse), np.log1p(click), np.log1p(purchase), np.log1p(recency), np.log1p(inactive),
        np.log1p(tenure), np.log1p(orders), np.log1p(monetary), aov, entropy,
        np.log1p(purchase / (browse + 1.0)), np.log1p(click / (browse + 1.0)),
    ], axis=1)


def _entropy(weights: dict[str, float]) -> float:
    """Shannon entropy (nats) of the category mix: 0 for a single-category
    shopper, ln(k) for an even spread over k categories."""
    total = sum(weights.values())
    if total <= 0.0:
        return 0.0
    h = 0.0
    for w in weights.values():
        if w > 0.0:
            q = w / total
            h -= q * math.log(q)
    return max(h, 0.0)  # rounding can give -0.0 for one category


def _map_form() -> type:
    """:class:`Profile` as payloads of earlier versions carry it: a map of field names (MessagePack or
    JSON), the category counts as floats, the dedupe window as two lists."""
    fields = [
        (f.encode_name, dict[str, float] if f.name == "category_counts" else f.type,
         msgspec.field(default=f.default, default_factory=f.default_factory))
        for f in msgspec.structs.fields(Profile)
    ]
    fields += [("seen_event_ids", list[str] | None, None), ("seen_offsets", list[int] | None, None)]
    return msgspec.defstruct("ProfileMap", fields, gc=False)


_PROFILE_ENCODER = msgspec.msgpack.Encoder()
_PROFILE_DECODER = msgspec.msgpack.Decoder(Profile)
_PROFILE_MAP = _map_form()
_MAP_MSGPACK_DECODER = msgspec.msgpack.Decoder(_PROFILE_MAP)
_MAP_JSON_DECODER = msgspec.json.Decoder(_PROFILE_MAP)


def encode_profile(p: Profile) -> bytes:
    """Serialise a profile (msgspec MessagePack, the struct as an array).

    Examples
    --------
    >>> p = new_profile("u1")
    >>> decode_profile(encode_profile(p)) == p
    True
    """
    return _PROFILE_ENCODER.encode(p)


def decode_profile(b: bytes) -> Profile:
    """Inverse of :func:`encode_profile`, which also reads the map (MessagePack) and JSON payloads of
    earlier versions: fields missing from older payloads take their defaults, unknown fields are
    ignored, and a dedupe window in the older list form is converted.

    Examples
    --------
    >>> decode_profile(b'{"user_id": "u1", "orders": 2}').orders
    2
    >>> old = decode_profile(b'{"user_id": "u1", "seen_event_ids": ["e1", "e2"], "seen_offsets": [7, 9]}')
    >>> old.seen_event_ids, old.seen_offsets
    (['e1', 'e2'], [7, 9])
    """
    first = b[0] if len(b) else 0
    # A MessagePack array starts with 0x90-0x9f, 0xdc or 0xdd; a map with 0x80-0x8f, 0xde or 0xdf;
    # JSON text with neither.
    if 0x90 <= first <= 0x9F or first in (0xDC, 0xDD):
        return _PROFILE_DECODER.decode(b)
    old = (_MAP_MSGPACK_DECODER if 0x80 <= first <= 0x8F or first in (0xDE, 0xDF) else _MAP_JSON_DECODER).decode(b)
    p = Profile(**{name: getattr(old, name) for name in Profile.__struct_fields__})
    p.category_counts = {category: round(count) for category, count in old.category_counts.items()}
    if old.seen_event_ids is not None or old.seen_offsets is not None:
        _set_window(p, old.seen_event_ids or [], old.seen_offsets or [])
    return p


def profile_summary(p: Profile, now: float, n_categories: int = 5) -> dict:
    """JSON-friendly view for the Redis mirror and dashboards.

    Examples
    --------
    >>> p = new_profile("u1")
    >>> _ = apply_event(p, event_id="e1", item_id="i1", event_type="purchase",
    ...                 ts=1_700_000_000.0, category="toys", price=5.0)
    >>> s = profile_summary(p, now=1_700_000_000.0)
    >>> s["rfm"], s["top_categories"]
    ({'recency_days': 0.0, 'frequency': 1, 'monetary': 5.0}, [{'category': 'toys', 'weight': 1.0}])
    """
    recency, frequency, monetary = rfm(p, now)
    return {
        "user_id": p.user_id,
        "counts": dict(p.counts),
        "first_seen": p.first_seen,
        "last_seen": p.last_seen,
        "last_purchase": p.last_purchase,
        "orders": p.orders,
        "monetary": p.monetary,
        "rfm": {"recency_days": recency, "frequency": frequency, "monetary": monetary},
        "top_categories": [
            {"category": c, "weight": w} for c, w in top_categories(p, n_categories)
        ],
        "recent_items": list(p.recent_items),
        "segment": p.segment,
    }
