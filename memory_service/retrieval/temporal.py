"""Time in the query: a temporal expression becomes a soft preference over memory times.

A small grammar, no model: ``yesterday``, ``today``, ``last``/``this`` ``week``,
``month`` or ``year``, ``N days|weeks|months|years ago``, a month with a preposition
or a year (``in May``, ``during May 2023``, ``May 2023``; "May" alone is a name), a
year after ``in``/``during``/``since`` or on its own (``in 2023``), and orderings:
``first``/``earliest`` prefer older memories, ``most recent``/``latest``/``last
time`` newer ones. Relative expressions count from now; a month without a year is
its latest occurrence.

A memory's time is its event time when its metadata has one (``event_time``,
``date``, ``timestamp`` or ``time``: an ISO 8601 string or a date such as
"1:56 pm on 8 May, 2023"), else ``created_at``. The preference is soft: the score
becomes ``(1 - w) * relevance + w * match``, where ``match`` is 1 inside the window
and 0 outside (for an ordering, the memory's place between the oldest and newest
candidate), so no memory is ever dropped; a query without an expression is ranked
as before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from memory_service.memories.models import Memory, SearchHit

TIME_KEYS = ("event_time", "date", "timestamp", "time")
MONTHS = {
    name: number
    for number, names in enumerate(
        (
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ),
        start=1,
    )
    for name in names
}
_MONTH = "|".join(sorted(MONTHS, key=len, reverse=True))
_UNITS = {"day": 1, "week": 7, "month": 30, "year": 365}
_NUMBERS = {"a": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "ten": 10}

_MONTH_YEAR = re.compile(
    rf"\b(?:(in|during|since|of)\s+)?({_MONTH})\.?,?\s+((?:19|20)\d\d)\b", re.I
)
_MONTH_ALONE = re.compile(rf"\b(in|during|since|last|this)\s+({_MONTH})\b", re.I)
_YEAR = re.compile(r"\b(?:(in|during|since|of)\s+)?((?:19|20)\d\d)\b", re.I)
_AGO = re.compile(
    r"\b(\d+|a|one|two|three|four|five|six|ten)\s+(day|week|month|year)s?\s+ago\b", re.I
)
_RELATIVE = re.compile(r"\b(yesterday|today|(last|this|past)\s+(week|month|year))\b", re.I)
_EARLIEST = re.compile(r"\b(first|earliest|oldest)\b", re.I)
_LATEST = re.compile(r"\b(most recent(?:ly)?|latest|newest|last time)\b", re.I)
_DATE_TEXT = re.compile(rf"\b(\d{{1,2}})\s+({_MONTH})\.?,?\s+((?:19|20)\d\d)\b", re.I)
_TEXT_DATE = re.compile(rf"\b({_MONTH})\.?\s+(\d{{1,2}}),?\s+((?:19|20)\d\d)\b", re.I)


@dataclass(frozen=True, slots=True)
class TimeIntent:
    phrase: str  # the words it came from
    start: datetime | None = None  # window [start, end)
    end: datetime | None = None
    order: str | None = None  # "earliest" or "latest"

    def describe(self) -> str:
        if self.order is not None:
            return f"{self.order}:{self.phrase}"
        assert self.start is not None and self.end is not None
        return f"{self.start.date().isoformat()}..{self.end.date().isoformat()}:{self.phrase}"


def _month_window(year: int, month: int) -> tuple[datetime, datetime]:
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def _day(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def parse_time_intent(query: str, now: datetime) -> TimeIntent | None:
    """The first temporal expression of ``query``, or None when it has none."""
    if m := _MONTH_YEAR.search(query):
        start, end = _month_window(int(m.group(3)), MONTHS[m.group(2).lower()])
        return TimeIntent(m.group(0), start, end)
    if m := _MONTH_ALONE.search(query):
        month = MONTHS[m.group(2).lower()]
        year = now.year if month <= now.month else now.year - 1
        if m.group(1).lower() == "last" and month == now.month:
            year -= 1
        start, end = _month_window(year, month)
        return TimeIntent(m.group(0), start, end)
    if m := _YEAR.search(query):
        year = int(m.group(2))
        start, end = datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
        return TimeIntent(m.group(0), start, end)
    if m := _AGO.search(query):
        count = _NUMBERS.get(m.group(1).lower()) or int(m.group(1))
        days = count * _UNITS[m.group(2).lower()]
        slack = max(1, days // 4)  # "three weeks ago" is about then, not that very day
        center = _day(now) - timedelta(days=days)
        return TimeIntent(
            m.group(0), center - timedelta(days=slack), center + timedelta(days=slack + 1)
        )
    if m := _RELATIVE.search(query):
        word = m.group(1).lower()
        today = _day(now)
        if word == "today":
            return TimeIntent(m.group(0), today, today + timedelta(days=1))
        if word == "yesterday":
            return TimeIntent(m.group(0), today - timedelta(days=1), today)
        span = timedelta(days=_UNITS[m.group(3).lower()])
        if m.group(2).lower() == "last":
            return TimeIntent(m.group(0), today - 2 * span, today - span + timedelta(days=1))
        return TimeIntent(m.group(0), today - span, now + timedelta(seconds=1))
    if m := _LATEST.search(query):
        return TimeIntent(m.group(0), order="latest")
    if m := _EARLIEST.search(query):
        return TimeIntent(m.group(0), order="earliest")
    return None


def parse_time(value: Any) -> datetime | None:
    """A metadata value as a moment: ISO 8601, or a written date ("8 May, 2023")."""
    if not isinstance(value, str) or not value or len(value) > 100:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    except ValueError:
        pass
    if m := _DATE_TEXT.search(value):
        day, month, year = int(m.group(1)), MONTHS[m.group(2).lower()], int(m.group(3))
    elif m := _TEXT_DATE.search(value):
        month, day, year = MONTHS[m.group(1).lower()], int(m.group(2)), int(m.group(3))
    else:
        return None
    try:
        return datetime(year, month, day, tzinfo=UTC)
    except ValueError:
        return None


def memory_time(memory: Memory) -> datetime:
    """The memory's event time from its metadata, else ``created_at``. Metadata that is
    not an object (a row written around the service holds any JSON) has no time."""
    metadata = memory.metadata
    if isinstance(metadata, dict):
        for key in TIME_KEYS:
            moment = parse_time(metadata.get(key))
            if moment is not None:
                return moment
    return memory.created_at


def prefer_time(
    hits: list[SearchHit], intent: TimeIntent, weight: float, *, as_one: bool = False
) -> list[SearchHit]:
    """Blend each hit's score with how well its time fits ``intent``; re-sorted. With
    ``as_one`` the score is one relevance (a model's probability), whatever its parts."""
    if not hits or weight <= 0.0:
        return hits
    times = [memory_time(h.memory).timestamp() for h in hits]
    if intent.order is not None:
        low, high = min(times), max(times)
        spread = (high - low) or 1.0
        fits = [(t - low) / spread for t in times]
        if intent.order == "earliest":
            fits = [1.0 - f for f in fits]
    else:
        assert intent.start is not None and intent.end is not None
        start, end = intent.start.timestamp(), intent.end.timestamp()
        fits = [1.0 if start <= t < end else 0.0 for t in times]
    for hit, fit in zip(hits, fits, strict=True):
        parts = {"relevance": hit.score} if as_one else hit.components or {"relevance": hit.score}
        combined = {name: (1.0 - weight) * value for name, value in parts.items()}
        combined["time"] = weight * fit
        hit.components = combined
        hit.score = sum(combined.values())
    return sorted(hits, key=lambda h: (-h.score, h.memory.seq))
