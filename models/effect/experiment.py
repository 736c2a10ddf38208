"""Experiment settings and the assignment of customers to variants.

An experiment splits customers between variants (ranking strategies) and,
optionally, a holdout that gets no personalised list. The settings are
validated once, when loaded: a share that is not a number, shares that do not
add up to 1, an unknown strategy or a duplicate name raise
:class:`ExperimentError`, whose message starts with the path of the setting
at fault (``experiment.variants[1].share``).

Assignment is a pure function of ``(salt, user_id)``: no table of customers,
nothing to store or replicate, the same answer on every worker and after any
restart. See :meth:`Experiment.assign` for what keeps it stable.

Examples
--------
>>> exp = Experiment.from_json('''{
...   "name": "ranker-vs-popularity", "salt": "2024-05",
...   "variants": [{"name": "control", "share": 0.45, "strategy": "popularity"},
...                {"name": "ranker", "share": 0.45, "strategy": "ranker"}],
...   "holdout": 0.1}''')
>>> exp.arms
('control', 'ranker', 'holdout')
>>> exp.assign("u1") in exp.arms
True
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "HOLDOUT",
    "UNKNOWN",
    "STRATEGIES",
    "SHARE_TOLERANCE",
    "ExperimentError",
    "Variant",
    "Experiment",
    "assignment_point",
    "default_experiment",
]

#: The arm of customers who get no personalised list.
HOLDOUT = "holdout"
#: The arm of impressions whose ``rec_id`` names no recommendation known for the customer.
UNKNOWN = "unknown"
#: Ranking strategies a variant can use: the product's ranker (optionally with
#: parameter overrides) or trending popularity, the usual control.
STRATEGIES = ("ranker", "popularity")
#: How far the shares (holdout included) may sum away from 1 (floating-point slack only).
SHARE_TOLERANCE = 1e-9

_RESERVED = frozenset({HOLDOUT, UNKNOWN})
# Names end up in Redis keys, topic payloads and metric labels: keep them plain.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_MAX_SALT = 256
_TOP_KEYS = frozenset({"name", "salt", "variants", "holdout", "control"})
_VARIANT_KEYS = frozenset({"name", "share", "strategy", "overrides"})


class ExperimentError(ValueError):
    """Experiment settings that cannot be used; ``setting`` is the path of the culprit.

    Examples
    --------
    >>> err = ExperimentError("experiment.holdout", "must be at least 0, got -0.1")
    >>> err.setting, str(err)
    ('experiment.holdout', 'experiment.holdout: must be at least 0, got -0.1')
    """

    def __init__(self, setting: str, message: str):
        super().__init__(f"{setting}: {message}")
        self.setting = setting


@dataclass(frozen=True)
class Variant:
    """One arm of an experiment: a ranking strategy and its share of customers.

    Parameters
    ----------
    name
        Unique within the experiment; neither ``holdout`` nor ``unknown``.
    share
        Fraction of customers, in (0, 1].
    strategy
        One of :data:`STRATEGIES`.
    overrides
        Ranker parameter overrides as sorted ``(name, value)`` pairs (a tuple,
        so that the variant stays hashable); only with strategy ``ranker``.

    Examples
    --------
    >>> v = Variant("light-pop", 0.5, "ranker", (("w_popularity", 0.02),))
    >>> v.overrides_dict
    {'w_popularity': 0.02}
    """

    name: str
    share: float
    strategy: str
    overrides: tuple[tuple[str, Any], ...] = ()

    @property
    def overrides_dict(self) -> dict[str, Any]:
        """The overrides as a new dict.

        Examples
        --------
        >>> Variant("a", 1.0, "ranker").overrides_dict
        {}
        """
        return dict(self.overrides)


def assignment_point(salt: str, user_id: str) -> float:
    """Where a customer falls in [0, 1) for a salt: the first 53 bits of SHA-256, as a fraction.

    The salt is length-prefixed so that no (salt, user id) pair can collide
    with another by moving characters across the boundary; 53 bits because
    that is what a float holds exactly, so the point is never rounded up to 1.

    Examples
    --------
    >>> p = assignment_point("s1", "u1")
    >>> 0.0 <= p < 1.0, p == assignment_point("s1", "u1"), p == assignment_point("s2", "u1")
    (True, True, False)
    """
    digest = hashlib.sha256(f"{len(salt)}:{salt}{user_id}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53)


@dataclass(frozen=True)
class Experiment:
    """A validated experiment: variants with shares, a holdout share, a control.

    Build one with :meth:`from_mapping`, :meth:`from_json` or :meth:`from_file`,
    which check every setting; the constructor checks nothing.

    Parameters
    ----------
    name
        The experiment's name; its counts and per-customer state belong to it.
    salt
        Mixed into the assignment hash; a new salt reshuffles every customer.
    variants
        The arms that get a list, in order (the order fixes the assignment).
    holdout
        Share of customers who get no personalised list, in [0, 1).
    control
        Name of the variant treatments are compared with.

    Examples
    --------
    >>> exp = Experiment.from_mapping({"name": "e1", "salt": "s",
    ...     "variants": [{"name": "a", "share": 1.0, "strategy": "ranker"}]})
    >>> exp.control, exp.holdout, exp.shares
    ('a', 0.0, {'a': 1.0})
    """

    name: str
    salt: str
    variants: tuple[Variant, ...]
    holdout: float = 0.0
    control: str = ""
    _bounds: tuple[tuple[float, str], ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self):
        # Cumulative upper bounds, each an exact fsum of the shares before it; the last arm always
        # ends at 1.0 so that a sum of 0.9999999999 leaves no customer without an arm.
        arms = [(v.name, v.share) for v in self.variants]
        if self.holdout > 0:
            arms.append((HOLDOUT, self.holdout))
        bounds = [(math.fsum(s for _, s in arms[: i + 1]), name) for i, (name, _) in enumerate(arms)]
        if bounds:
            bounds[-1] = (1.0, bounds[-1][1])
        object.__setattr__(self, "_bounds", tuple(bounds))

    @property
    def arms(self) -> tuple[str, ...]:
        """Every arm a customer can be assigned to: the variants, then ``holdout`` if its share is positive.

        Examples
        --------
        >>> Experiment.from_mapping({"name": "e1", "salt": "s", "holdout": 0.2,
        ...     "variants": [{"name": "a", "share": 0.8, "strategy": "ranker"}]}).arms
        ('a', 'holdout')
        """
        return tuple(name for _, name in self._bounds)

    @property
    def shares(self) -> dict[str, float]:
        """Configured share of each arm (what the sample-ratio check compares with).

        Examples
        --------
        >>> Experiment.from_mapping({"name": "e1", "salt": "s", "holdout": 0.2,
        ...     "variants": [{"name": "a", "share": 0.8, "strategy": "ranker"}]}).shares
        {'a': 0.8, 'holdout': 0.2}
        """
        out = {v.name: v.share for v in self.variants}
        if self.holdout > 0:
            out[HOLDOUT] = self.holdout
        return out

    def variant(self, name: str) -> Variant:
        """The variant called ``name`` (``KeyError`` if there is none).

        Examples
        --------
        >>> Experiment.from_mapping({"name": "e1", "salt": "s",
        ...     "variants": [{"name": "a", "share": 1, "strategy": "popularity"}]}).variant("a").strategy
        'popularity'
        """
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    def assign(self, user_id: str) -> str:
        """The arm of a customer: a variant name or ``holdout``.

        Deterministic: the customer's point :func:`assignment_point` of
        ``(salt, user_id)`` falls in one interval of the cumulative shares
        (variants in their listed order, then the holdout). A customer keeps
        the same arm as long as the salt, the order of the variants and every
        share are unchanged; changing any of them moves some customers, so a
        running experiment's settings are left alone and a new experiment
        (new name, new salt) is started instead.

        Examples
        --------
        >>> exp = Experiment.from_mapping({"name": "e1", "salt": "s", "holdout": 0.5,
        ...     "variants": [{"name": "a", "share": 0.5, "strategy": "ranker"}]})
        >>> [exp.assign(u) for u in ("u1", "u2", "u3", "u4")] == [exp.assign(u) for u in ("u1", "u2", "u3", "u4")]
        True
        """
        bounds = self._bounds
        if len(bounds) == 1:  # one arm (the default experiment): every point falls in it, no hash needed
            return bounds[0][1]
        point = assignment_point(self.salt, user_id)
        for upper, name in bounds:
            if point < upper:
                return name
        return bounds[-1][1]  # unreachable: the last bound is 1.0 and the point is below 1

    def to_mapping(self) -> dict[str, Any]:
        """The settings as plain data, accepted back by :meth:`from_mapping`.

        Examples
        --------
        >>> m = {"name": "e1", "salt": "s", "holdout": 0.0, "control": "a",
        ...      "variants": [{"name": "a", "share": 1.0, "strategy": "ranker", "overrides": {}}]}
        >>> Experiment.from_mapping(m).to_mapping() == m
        True
        """
        return {
            "name": self.name,
            "salt": self.salt,
            "variants": [{"name": v.name, "share": v.share, "strategy": v.strategy, "overrides": v.overrides_dict}
                         for v in self.variants],
            "holdout": self.holdout,
            "control": self.control,
        }

    @classmethod
    def from_json(cls, text: str | bytes, known_overrides: Collection[str] | None = None) -> Experiment:
        """Parse and validate JSON settings (see :meth:`from_mapping`).

        Examples
        --------
        >>> try:
        ...     Experiment.from_json("[1, 2")
        ... except ExperimentError as err:
        ...     print(err)
        experiment: not valid JSON (Expecting ',' delimiter: line 1 column 6 (char 5))
        """
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ExperimentError("experiment", f"not valid JSON ({exc})") from None
        return cls.from_mapping(data, known_overrides)

    @classmethod
    def from_file(cls, path: str | Path, known_overrides: Collection[str] | None = None) -> Experiment:
        """Read, parse and validate a JSON settings file (see :meth:`from_mapping`).

        Examples
        --------
        >>> try:
        ...     Experiment.from_file("/nonexistent/experiment.json")
        ... except ExperimentError as err:
        ...     print(err)
        experiment: cannot read /nonexistent/experiment.json (No such file or directory)
        """
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ExperimentError("experiment", f"cannot read {path} ({exc.strerror})") from None
        return cls.from_json(text, known_overrides)

    @classmethod
    def from_mapping(cls, data: Any, known_overrides: Collection[str] | None = None) -> Experiment:
        """Validate plain settings into an :class:`Experiment`.

        Parameters
        ----------
        data
            ``{"name", "salt", "variants": [{"name", "share", "strategy",
            "overrides"?}, ...], "holdout"?, "control"?}``. ``holdout``
            defaults to 0, ``control`` to the first variant, ``overrides`` to
            none.
        known_overrides
            The ranker parameters a variant may override; ``None`` accepts any
            name (the caller that serves the variants knows which it can apply).

        Raises
        ------
        ExperimentError
            Naming the first setting at fault: an unknown key, a missing or
            mistyped value, a share outside its range, shares (holdout
            included) not summing to 1 within :data:`SHARE_TOLERANCE`, a
            duplicate or reserved name, an unknown strategy or override, a
            control that is not a variant.

        Examples
        --------
        >>> try:
        ...     Experiment.from_mapping({"name": "e1", "salt": "s", "variants": [
        ...         {"name": "a", "share": 0.5, "strategy": "ranker"},
        ...         {"name": "b", "share": 0.4, "strategy": "popularity"}]})
        ... except ExperimentError as err:
        ...     print(err)
        experiment.variants[].share + experiment.holdout: shares sum to 0.9, they must sum to 1
        """
        path = "experiment"
        top = _mapping(data, path, _TOP_KEYS)
        name = _name(top.get("name"), f"{path}.name")
        salt = top.get("salt")
        if not isinstance(salt, str) or not salt or len(salt) > _MAX_SALT:
            raise ExperimentError(f"{path}.salt", f"must be a non-empty string of at most {_MAX_SALT} characters")
        raw = top.get("variants")
        if not isinstance(raw, list) or not raw:
            raise ExperimentError(f"{path}.variants", "must be a non-empty list of variants")
        variants = tuple(_variant(v, f"{path}.variants[{i}]", known_overrides) for i, v in enumerate(raw))
        seen: set[str] = set()
        for i, v in enumerate(variants):
            if v.name in seen:
                raise ExperimentError(f"{path}.variants[{i}].name", f"duplicate variant name {v.name!r}")
            seen.add(v.name)
        holdout = _share(top.get("holdout", 0.0), f"{path}.holdout", allow_zero=True)
        if holdout >= 1.0:
            raise ExperimentError(f"{path}.holdout", f"must be below 1 (some customers need a list), got {holdout}")
        total = math.fsum([*(v.share for v in variants), holdout])
        if abs(total - 1.0) > SHARE_TOLERANCE:
            raise ExperimentError(f"{path}.variants[].share + {path}.holdout",
                                  f"shares sum to {total:.12g}, they must sum to 1")
        control = top.get("control", variants[0].name)
        if control not in seen:
            raise ExperimentError(f"{path}.control", f"must name a variant (one of {sorted(seen)}), got {control!r}")
        return cls(name, salt, variants, holdout, control)


def _mapping(data: Any, path: str, keys: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ExperimentError(path, f"must be an object, got {type(data).__name__}")
    for key in data:
        if key not in keys:
            raise ExperimentError(f"{path}.{key}", f"unknown setting (known: {', '.join(sorted(keys))})")
    return data


def _name(value: Any, path: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ExperimentError(path, f"must be 1 to 64 letters, digits, '_', '.' or '-' (not first), got {value!r}")
    return value


def _share(value: Any, path: str, allow_zero: bool) -> float:
    # bool is an int in Python and JSON true would otherwise read as a share of 1.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ExperimentError(path, f"must be a number, got {value!r}")
    low_ok = value >= 0 if allow_zero else value > 0
    if not low_ok or value > 1:
        raise ExperimentError(path, f"must be in {'[0' if allow_zero else '(0'}, 1], got {value!r}")
    return float(value)


def _variant(data: Any, path: str, known_overrides: Collection[str] | None) -> Variant:
    m = _mapping(data, path, _VARIANT_KEYS)
    name = _name(m.get("name"), f"{path}.name")
    if name in _RESERVED:
        raise ExperimentError(f"{path}.name", f"{name!r} is reserved (holdout and unknown are arms of their own)")
    share = _share(m.get("share"), f"{path}.share", allow_zero=False)
    strategy = m.get("strategy")
    if strategy not in STRATEGIES:
        raise ExperimentError(f"{path}.strategy", f"must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    raw = m.get("overrides", {})
    if not isinstance(raw, Mapping):
        raise ExperimentError(f"{path}.overrides", f"must be an object, got {type(raw).__name__}")
    if raw and strategy != "ranker":
        raise ExperimentError(f"{path}.overrides", f"only the ranker takes overrides, not {strategy!r}")
    for key, value in raw.items():
        if not isinstance(key, str):
            raise ExperimentError(f"{path}.overrides", f"parameter names must be strings, got {key!r}")
        if known_overrides is not None and key not in known_overrides:
            raise ExperimentError(f"{path}.overrides.{key}", "not a ranker parameter a variant can override")
        bad_float = isinstance(value, float) and not math.isfinite(value)
        if not isinstance(value, (bool, int, float, str)) or bad_float:
            raise ExperimentError(f"{path}.overrides.{key}", f"must be a number, a boolean or a string, got {value!r}")
    return Variant(name, share, strategy, tuple(sorted(raw.items())))


def default_experiment() -> Experiment:
    """The experiment of a worker with none configured: one variant, ``ranker``, with every customer.

    Every list then still carries a ``rec_id`` and a variant, and the counts
    measure the product as it runs (no comparison, no holdout).

    Examples
    --------
    >>> exp = default_experiment()
    >>> exp.name, exp.arms, exp.variant("ranker").strategy
    ('default', ('ranker',), 'ranker')
    """
    return Experiment.from_mapping({"name": "default", "salt": "default",
                                    "variants": [{"name": "ranker", "share": 1.0, "strategy": "ranker"}]})
