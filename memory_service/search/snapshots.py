"""FAISS snapshots on disk: one directory per tenant, the newest named by ``CURRENT``.

A snapshot is the index plus the change-log position it includes, so a restart
loads it and replays only the log after that mark. Writes go to a fresh
directory and then swap the ``CURRENT`` pointer atomically, so a reader sees
the old snapshot or the new one, never half of one. A purge deletes a tenant's
snapshots outright (``erase``): one written before may hold the erased vectors.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from indexers.faiss_index import FaissIndex, FaissParams

log = logging.getLogger(__name__)


def write(root: Path, tenant_id: uuid.UUID, index: FaissIndex, mark: int, dimension: int) -> None:
    """Save ``index`` as of change ``mark``; ``CURRENT`` names the newest complete one."""
    base = root / str(tenant_id)
    name = f"snap-{mark:020d}-{uuid.uuid4().hex[:8]}"
    index.save(base / name)
    state = {"mark": mark, "tenant": str(tenant_id), "dim": dimension}
    (base / name / "state.json").write_text(json.dumps(state))
    pointer = base / f"CURRENT.{uuid.uuid4().hex[:8]}"
    pointer.write_text(name)
    os.replace(pointer, base / "CURRENT")  # atomic: a reader sees old or new, never half
    cutoff = time.time() - 60  # another process may still be writing a newer one
    for old in base.glob("snap-*"):
        if old.name != name and old.stat().st_mtime < cutoff:
            shutil.rmtree(old, ignore_errors=True)


def read(
    root: Path, tenant_id: uuid.UUID, dimension: int, params: FaissParams
) -> tuple[FaissIndex, int] | None:
    """The newest readable snapshot of the tenant and its change mark, or None."""
    base = root / str(tenant_id)
    try:
        name = (base / "CURRENT").read_text().strip()
    except FileNotFoundError:
        return None
    try:
        state = json.loads((base / name / "state.json").read_text())
        if state["tenant"] != str(tenant_id) or state["dim"] != dimension:
            raise ValueError("snapshot belongs to another tenant or dimension")
        index = FaissIndex.load(base / name, params)
        index.set_ef_search(params.ef_search)
        return index, int(state["mark"])
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        log.warning("ignoring unreadable FAISS snapshot %s: %s", base / name, exc)
        return None


def erase(root: Path, tenant_id: uuid.UUID) -> bool:
    """Delete every snapshot of the tenant (after a purge they may hold erased vectors);
    its next load builds from the database. True when there were any and they went; a
    failure is logged (and tried again by the next follower pass or start)."""
    base = root / str(tenant_id)
    if not base.exists():
        return False
    try:
        # a file another erase of the same tenant removed first is gone, as it should be
        shutil.rmtree(base, onerror=_unless_gone)
    except OSError as exc:
        log.error("could not delete the FAISS snapshots of tenant %s: %s", tenant_id, exc)
        return False
    log.info("deleted the FAISS snapshots of tenant %s after a purge", tenant_id)
    return True


def _unless_gone(func: Any, path: str, exc_info: Any) -> None:
    if not isinstance(exc_info[1], FileNotFoundError):
        raise exc_info[1]


def marks(root: Path) -> dict[uuid.UUID, int]:
    """Tenant -> change mark of its current snapshot, for every snapshot on disk
    (unreadable ones count as mark 0: nothing may rely on them)."""
    found: dict[uuid.UUID, int] = {}
    if not root.is_dir():
        return found
    for base in root.iterdir():
        try:
            tenant_id = uuid.UUID(base.name)
        except ValueError:
            continue
        try:
            name = (base / "CURRENT").read_text().strip()
            found[tenant_id] = int(json.loads((base / name / "state.json").read_text())["mark"])
        except (OSError, ValueError, KeyError):
            found[tenant_id] = 0
    return found
