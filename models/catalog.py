"""Item catalogue: maps string item ids to dense integer rows.

Every item-side structure in :mod:`models` (popularity counts, co-visitation
rows, MF item factors) is indexed by the dense row the catalogue hands out, so
that scoring "all items" is one numpy expression instead of a Python loop.

"""

from __future__ import annotations

from array import array

import numpy as np

__all__ = ["Catalog"]

#: Category code of items whose category is not known (yet).
UNKNOWN_CATEGORY = -1


class Catalog:
    """Growing item index with per-item category codes and availability.

    Rows are handed out in first-seen order and never reused, so arrays owned
    by other components can be grown lazily to ``len(catalog)``.

    Parameters
    ----------
    capacity
        Initial capacity of the numpy arrays; they double when full.

    Examples
    --------
    >>> cat = Catalog()
    >>> cat.upsert("sku-1", category="shoes")
    0
    >>> cat.upsert("sku-2")
    1
    >>> cat.upsert("sku-1", available=False)
    0
    >>> len(cat), cat.row("sku-2"), cat.row("nope")
    (2, 1, None)
    >>> cat.available.tolist()
    [False, True]
    >>> cat.category.tolist()
    [0, -1]
    >>> cat.item_id(1)
    'sku-2'

    """

    def __init__(self, capacity: int = 1024):
        self._rows: dict[str, int] = {}
        self._ids: list[str] = []
        self._categories: dict[str, int] = {}
        capacity = max(int(capacity), 1)
        self._category = np.full(capacity, UNKNOWN_CATEGORY, dtype=np.int32)
        self._available = np.zeros(capacity, dtype=bool)
        #: Bumped whenever a known row changes category or availability (new rows
        #: do not bump it): lets readers keep derived structures incrementally.
        self.version = 0
        #: Rows that got their first category from :meth:`fill_category`, in order (each bumped
        #: :attr:`version` too): readers that can take these in keep their structures through them.
        self.fills = array("q")

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._rows

    @property
    def category(self) -> np.ndarray:
        """Category code per row (view; ``-1`` when unknown)."""
        return self._category[: len(self._ids)]

    @property
    def available(self) -> np.ndarray:
        """Availability mask per row (view)."""
        return self._available[: len(self._ids)]

    @property
    def ids(self) -> list[str]:
        """Item ids in row order (do not mutate)."""
        return self._ids

    def row(self, item_id: str) -> int | None:
        """Row of ``item_id`` or ``None`` when the item is unknown (never inserts)."""
        return self._rows.get(item_id)

    def item_id(self, row: int) -> str:
        return self._ids[row]

    def category_of(self, item_id: str) -> str | None:
        """The category name of ``item_id``, or ``None`` when the item or its category is unknown.

        >>> cat = Catalog(); _ = cat.upsert("sku-1", category="shoes"); _ = cat.upsert("sku-2")
        >>> cat.category_of("sku-1"), cat.category_of("sku-2"), cat.category_of("nope")
        ('shoes', None, None)
        """
        row = self._rows.get(item_id)
        if row is None:
            return None
        code = int(self._category[row])
        if code < 0:
            return None
        names = self.__dict__.get("_names")
        if names is None or len(names) != len(self._categories):
            names = self.__dict__["_names"] = sorted(self._categories, key=self._categories.__getitem__)
        return names[code]

    def category_code(self, category: str) -> int:
        code = self._categories.get(category)
        if code is None:
            code = self._categories[category] = len(self._categories)
        return code

    def upsert(self, item_id: str, category: str | None = None, available: bool | None = None) -> int:
        """Insert or update an item and return its row.

        New items are available unless told otherwise; ``None`` arguments leave
        the stored value of a known item untouched (events carry no catalogue
        data, so seeing an item in an event must not reset its availability).

        """
        row = self._rows.get(item_id)
        if row is None:
            row = len(self._ids)
            if row == len(self._available):
                self._grow()
            self._rows[item_id] = row
            self._ids.append(item_id)
            self._available[row] = True if available is None else bool(available)
            if category is not None:
                self._category[row] = self.category_code(category)
            return row
        if available is not None and self._available[row] != bool(available):
            self._available[row] = bool(available)
            self.version += 1
        if category is not None:
            code = self.category_code(category)
            if self._category[row] != code:
                self._category[row] = code
                self.version += 1
        return row

    @property
    def version_without_fills(self) -> int:
        """:attr:`version` less the :attr:`fills`: it moves only when a known row's availability
        changes or a category it had is replaced."""
        return self.version - len(self.fills)

    @property
    def n_categories(self) -> int:
        """Number of category codes handed out (codes are ``0 .. n_categories - 1``)."""
        return len(self._categories)

    def has_category(self, row: int) -> bool:
        """Whether row ``row`` has a category."""
        return bool(self._category[row] >= 0)

    def fill_category(self, row: int, category: str) -> None:
        """Give row ``row`` ``category`` if it has none (a category it has, the catalogue's, stays).

        >>> cat = Catalog(); _ = cat.upsert("sku-1", category="shoes"); _ = cat.upsert("sku-2")
        >>> cat.fill_category(0, "hats"); cat.fill_category(1, "hats")
        >>> cat.category_of("sku-1"), cat.category_of("sku-2")
        ('shoes', 'hats')
        """
        if self._category[row] < 0:
            self._category[row] = self.category_code(category)
            self.version += 1  # (a known row changed: readers' derived structures are stale)
            self.fills.append(row)

    def _grow(self) -> None:
        # Doubling keeps appends amortised O(1).
        size = 2 * len(self._available)
        category = np.full(size, UNKNOWN_CATEGORY, dtype=np.int32)
        category[: len(self._category)] = self._category
        available = np.zeros(size, dtype=bool)
        available[: len(self._available)] = self._available
        self._category, self._available = category, available

    def __getstate__(self):
        # Serialise only the used prefix so that two catalogues with the same
        # content and changes pickle to the same bytes whatever their capacity history.
        # The change counters go with it: readers restored beside it (a ranker's candidate
        # pools) compare them with the ones they saw.
        n = len(self._ids)
        return {
            "ids": list(self._ids),
            "categories": dict(self._categories),
            "category": self._category[:n].copy(),
            "available": self._available[:n].copy(),
            "version": self.version,
            "fills": np.frombuffer(self.fills, dtype=np.int64).copy(),
        }

    def __setstate__(self, state):
        self._ids = list(state["ids"])
        self._rows = {item_id: row for row, item_id in enumerate(self._ids)}
        self._categories = dict(state["categories"])
        n = len(self._ids)
        capacity = max(1024, 1 << max(n - 1, 0).bit_length())
        self._category = np.full(capacity, UNKNOWN_CATEGORY, dtype=np.int32)
        self._category[:n] = state["category"]
        self._available = np.zeros(capacity, dtype=bool)
        self._available[:n] = state["available"]
        # (Catalogues from before the counters were kept start them at 0.)
        self.version = int(state.get("version", 0))
        self.fills = array("q", np.asarray(state.get("fills", ()), dtype=np.int64).tolist())


def grow_to(array: np.ndarray, n: int, fill=0) -> np.ndarray:
    """Return ``array`` or a copy with at least ``n`` rows (capacity doubles).

    Components that keep one value per catalogue row call this lazily, which
    is what lets the catalogue grow without telling everybody.

    >>> a = grow_to(np.zeros(2), 3, fill=7.0)
    >>> len(a) >= 3, a[2]
    (True, np.float64(7.0))

    """
    if len(array) >= n:
        return array
    size = max(n, 2 * len(array), 16)
    grown = np.full((size,) + array.shape[1:], fill, dtype=array.dtype)
    grown[: len(array)] = array
    return grown
