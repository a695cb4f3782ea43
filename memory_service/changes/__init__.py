"""The change feed: every change to a tenant's entities, in commit order, once.

``store`` owns the SQL of the ``changes`` log and of snapshots; ``feed`` is the
service the HTTP layer calls (pages, live streams, snapshots, retention).
"""

from memory_service.changes.feed import ChangeFeed, ChangePage, SnapshotStart, parse_types
from memory_service.changes.store import Change, Entity

__all__ = ["Change", "ChangeFeed", "ChangePage", "Entity", "SnapshotStart", "parse_types"]
