"""Bar charts for the health page: the numbers a template draws, as an HTML table.

A chart is a list of groups (one per operation), each with one or more bars (one per
series, e.g. p50/p95/p99). Labels and values are HTML text, so they keep the page's
type size at any width (text inside a scaled SVG shrank to about 7 px on a laptop);
each bar is a small SVG whose length is its share of the largest value, and the axis
row under the bars says what that length means (0 to the largest value, in the
chart's unit).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Bar:
    series: str
    value: float
    text: str
    percent: float = 0.0  # of the axis: the largest value in the chart is 100


@dataclass(slots=True)
class Group:
    label: str
    bars: list[Bar]


@dataclass(slots=True)
class BarChart:
    title: str
    unit: str
    groups: list[Group] = field(default_factory=list)
    axis_max: str = "0"

    @property
    def empty(self) -> bool:
        return not self.groups

    @property
    def series(self) -> list[str]:
        """The series in the order of the first group: the legend."""
        return [bar.series for bar in self.groups[0].bars] if self.groups else []


def bar_chart(title: str, groups: list[Group], *, unit: str, digits: int = 1) -> BarChart:
    largest = max((b.value for g in groups for b in g.bars), default=0.0)
    for group in groups:
        for bar in group.bars:
            bar.percent = 0.0 if largest <= 0 else max(0.5, 100.0 * bar.value / largest)
    return BarChart(title, unit, groups, axis_max=f"{largest:.{digits}f}")
