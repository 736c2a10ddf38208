"""Partition-owned state: the profiles of the customers of each input partition, and the
changelog protocol that makes it durable, restorable and safe against stale owners
(docs/RELIABILITY.md)."""
