"""How values travel between the service and PostgreSQL, on every connection the pools
make: JSON numbers come back as they were written, and times go out in UTC."""

from __future__ import annotations

import contextlib
import functools
import json
import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.abc import Buffer
from psycopg.types.datetime import DatetimeDumper
from psycopg.types.json import set_json_loads

from memory_service.validation import MAX_SAFE_INTEGER


def _json_integer(text: str) -> int | float:
    """An integer literal of stored JSON, as the number that was written.

    ``jsonb`` keeps numbers as ``numeric`` and prints them without an exponent, so a
    double such as ``1e20`` comes back as the literal ``100000000000000000000``. The
    service accepts no integer beyond ±2**53, so such a literal is a double when it is
    exactly that double's shortest form: read as the double again, it round-trips (and
    can be written back). Anything else (a row stored before that rule) stays an
    exact integer, or, past the digits Python converts, the nearest double."""
    if len(text) <= 15:  # below 10**15 < 2**53: nearly every integer
        return int(text)
    try:
        value = int(text)
    except ValueError:
        return float(text)
    if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return value
    double = float(text)
    if math.isfinite(double) and Decimal(repr(double)) == value:
        return double
    return value


load_json = functools.partial(json.loads, parse_int=_json_integer)


class UtcDatetimeDumper(DatetimeDumper):
    """A time with a zone goes to PostgreSQL as text in UTC: RFC 3339 allows offsets up
    to 23:59 and PostgreSQL's input only to 15:59, so a valid time such as
    ``...-21:58`` would otherwise be refused by the database."""

    def dump(self, obj: datetime) -> Buffer | None:
        with contextlib.suppress(OverflowError):  # the first or last day of year 1..9999
            obj = obj.astimezone(UTC)
        return super().dump(obj)


def configure_values(conn: psycopg.BaseConnection[Any]) -> None:
    conn.adapters.register_dumper(datetime, UtcDatetimeDumper)
    set_json_loads(load_json, conn)
