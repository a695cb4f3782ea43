"""Inline SVG bar charts for the health page: geometry only, drawn by a template.

A chart is a list of groups (one per operation), each with one or more bars
(one per series, e.g. p50/p95/p99). Bars scale to the largest value in the
chart; the template lays them out in a fixed ``viewBox`` so the SVG scales to
any width, and every bar carries its value as text for screen readers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

WIDTH = 600.0
LABEL_HEIGHT = 16.0
BAR_HEIGHT = 14.0
GAP = 10.0
BAR_AREA = 470.0  # the rest of the width holds the value text


@dataclass(slots=True)
class Bar:
    series: str
    value: float
    text: str
    y: float = 0.0
    width: float = 0.0


@dataclass(slots=True)
class Group:
    label: str
    bars: list[Bar]
    y: float = 0.0


@dataclass(slots=True)
class BarChart:
    title: str
    groups: list[Group] = field(default_factory=list)
    height: float = 0.0
    width: float = WIDTH
    value_x: float = BAR_AREA + 8.0

    @property
    def empty(self) -> bool:
        return not self.groups


def bar_chart(title: str, groups: list[Group]) -> BarChart:
    largest = max((b.value for g in groups for b in g.bars), default=0.0)
    y = 0.0
    for group in groups:
        group.y = y + LABEL_HEIGHT - 4.0
        y += LABEL_HEIGHT
        for bar in group.bars:
            bar.y = y
            bar.width = 0.0 if largest <= 0 else max(1.0, BAR_AREA * bar.value / largest)
            y += BAR_HEIGHT + 2.0
        y += GAP
    return BarChart(title, groups, height=max(y, 1.0))
