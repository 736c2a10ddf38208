"""The event vocabulary, defined once: what a shopper can do and how much each says about taste.

Everything else (the wire contract, profiles, the ranker, metrics labels,
settings, tools) imports these names; nothing spells the types out again.

>>> EVENT_TYPES
('browse', 'click', 'purchase')
>>> EVENT_WEIGHTS["purchase"] > EVENT_WEIGHTS["click"] >= EVENT_WEIGHTS["browse"]
True
"""

from __future__ import annotations

BROWSE, CLICK, PURCHASE = "browse", "click", "purchase"

#: Event types; each one is also the default name of the topic that carries it.
EVENT_TYPES: tuple[str, ...] = (BROWSE, CLICK, PURCHASE)

#: Default strength of each event type in the models. A purchase says more
#: about taste than a click, a click more than a page view; the ratios (not
#: the scale) matter.
EVENT_WEIGHTS: dict[str, float] = {BROWSE: 1.0, CLICK: 1.0, PURCHASE: 1.5}

#: How far a shopper engaged with an item, whatever the weights: a click (a cart, a favourite)
#: goes further than a page view, a purchase further still. Shoppers return to items they
#: engaged with more often than to items they only viewed, at the same recency and count.
ENGAGEMENT: dict[str, int] = {BROWSE: 0, CLICK: 1, PURCHASE: 2}
