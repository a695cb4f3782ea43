"""Rows of the workflow tables turned into the typed values of ``models.py``.

One function per table: definitions, runs, steps and attempts. Ids come back
from psycopg as ``uuid.UUID`` and leave here as ``str``, except tenant ids,
which stay UUIDs; the repository is the only caller.
"""

from __future__ import annotations

import uuid
from typing import Any

from memory_service.workflows.models import Attempt, Definition, Run, Step


def _id(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


def definition_of(r: dict[str, Any]) -> Definition:
    return Definition(
        str(r["id"]), r["name"], r["version"], r["definition"], r["created_at"], r["digest"]
    )


def run_of(r: dict[str, Any]) -> Run:
    # field by field, so that mypy checks each value against its declared type (a str
    # tenant id built here once reached the event writer and stopped it)
    return Run(
        id=str(r["id"]), tenant_id=r["tenant_id"], definition_id=str(r["definition_id"]),
        workflow=r["workflow"], version=r["version"], status=r["status"], input=r["input"],
        output=r["output"], error=r["error"], idempotency_key=r["idempotency_key"],
        forked_from=_id(r["forked_from"]), fork_step=r["fork_step"],
        execution_id=_id(r["execution_id"]), timeline_closed=r["timeline_closed"],
        steps_total=r["steps_total"], steps_completed=r["steps_completed"],
        created_at=r["created_at"], updated_at=r["updated_at"], finished_at=r["finished_at"],
        seq=r["seq"],
    )  # fmt: skip


def step_of(r: dict[str, Any]) -> Step:
    values = dict(r)
    values["row"] = str(values.pop("id"))
    values["run_id"], values["tenant_id"] = str(r["run_id"]), r["tenant_id"]
    values["current_attempt"] = _id(r["current_attempt"])
    values["depends_on"] = list(r["depends_on"])
    return Step(**values)


def attempt_of(r: dict[str, Any]) -> Attempt:
    return Attempt(
        id=str(r["id"]), tenant_id=r["tenant_id"], run_id=str(r["run_id"]),
        step_row=str(r["step_row"]), step_id=r["step_id"], workflow=r["workflow"],
        kind=r["kind"], queue=r["queue"], number=r["number"], worker_id=r["worker_id"],
        lease_token=str(r["lease_token"]), input=r["input"], available_at=r["available_at"],
        claimed_at=r["claimed_at"], lease_expires_at=r["lease_expires_at"],
        deadline_at=r["deadline_at"], execution_id=_id(r["execution_id"]),
    )  # fmt: skip
