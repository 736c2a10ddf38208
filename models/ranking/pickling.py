"""Checkpoints of the recommenders: byte-stable pickles, and loading those of earlier layouts.

A checkpoint names every class (and the functions that rebuild numpy
values) by module path, and checkpoints stored in Redis outlive upgrades
that move code: :func:`load` finds what moved at its new place.
"""

from __future__ import annotations

import io
import pickle

import numpy as np

__all__ = ["dumps", "load"]


def _array(data: bytes, dtype: str, shape: tuple) -> np.ndarray:
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def _scalar(data: bytes, dtype: str):
    return np.frombuffer(data, dtype=dtype)[0]


class _CanonicalPickler(pickle.Pickler):
    """Pickles numpy values by dtype *name* rather than dtype object.

    Plain pickle memoises dtype objects by identity, and a restored model
    holds different dtype objects than the original, so equal models could
    serialise to different bytes. Checkpoint equality is part of the model
    contract (deterministic restarts, "predicting does not mutate" checks).
    """

    def reducer_override(self, obj):
        if type(obj) is np.ndarray and obj.dtype.kind in "biufc":
            return _array, (obj.tobytes(), obj.dtype.str, obj.shape)
        if isinstance(obj, np.generic) and obj.dtype.kind in "biufc":
            return _scalar, (obj.tobytes(), obj.dtype.str)
        return NotImplemented


def dumps(obj) -> bytes:
    """``obj`` pickled canonically: equal objects give equal bytes.

    >>> a = {"x": np.arange(3), "y": np.float64(0.5)}
    >>> dumps(a) == dumps(load(dumps(a)))
    True
    """
    buf = io.BytesIO()
    _CanonicalPickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buf.getvalue()


# Where the names that checkpoints of the single-module ranker (``models.ranker``)
# hold live now. Checkpoints store classes by module path and are kept across
# upgrades, so each name an old checkpoint can hold is listed here; new
# checkpoints are written with the new paths.
_MOVED = {
    ("models.ranker", "HybridRanker"): ("models.ranking.hybrid", "HybridRanker"),
    ("models.ranker", "ItemState"): ("models.ranking.item_state", "ItemState"),
    ("models.ranker", "_User"): ("models.ranking.users", "_User"),
    ("models.ranker", "_array"): ("models.ranking.pickling", "_array"),
    ("models.ranker", "_scalar"): ("models.ranking.pickling", "_scalar"),
}


class CheckpointUnpickler(pickle.Unpickler):
    """An unpickler that finds the classes and functions of older checkpoints where they are now.

    >>> old = b"cmodels.ranker\\nHybridRanker\\n."  # a pickled reference to the class, as older code wrote it
    >>> CheckpointUnpickler(io.BytesIO(old)).load()
    <class 'models.ranking.hybrid.HybridRanker'>
    """

    def find_class(self, module: str, name: str):
        module, name = _MOVED.get((module, name), (module, name))
        return super().find_class(module, name)


def load(data: bytes):
    """Unpickle a checkpoint (ours, from our own store), whatever layout of ``models`` wrote it."""
    return CheckpointUnpickler(io.BytesIO(data)).load()
