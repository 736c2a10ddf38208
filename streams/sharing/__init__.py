"""Shared item-side learning: the ``item-updates`` topic every worker publishes to and applies."""

from streams.sharing.item_log import ItemLog

__all__ = ["ItemLog"]
