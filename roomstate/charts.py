"""Server-side SVG charts for the moderators' web view: a room's member count over time (a step
line) and its joins and leaves per hour or day (bars up and down from a zero line), and a table of
the same numbers for screen readers and plain-text readers.

Pure functions that return markup, standard library only. The page may be strict about what it
lets through (no scripts, no links, no ``url()``), so the charts use none of them: only SVG shapes
and text, class names for the page's CSS, and ``fill``/``stroke`` presentation attributes so that a
chart still reads when it is opened on its own (any CSS rule overrides them). Every string that
comes from outside (titles, labels, table cells) is escaped; numbers and times are formatted here,
in UTC, without the machine's locale, so that the same input gives the same bytes.

A 90-day chart of a busy room can have 100,000 points, far more than the chart has pixel columns:
the drawing keeps each column's lowest and highest value (a short spike stays visible) and the
exact first and last values, while the description's statistics are taken from every point.
"""

from __future__ import annotations

import html
import math
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from operator import itemgetter
from typing import TypeGuard

NO_DATA = "no data in this period"
NO_CHANGES = "no joins or leaves in this period"

_ID_PREFIX = re.compile(r"[a-z][a-z0-9-]*")
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")  # not allowed in XML 1.0
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_DAY = 86400

# Sizes, in SVG units (pixels at 1:1).
_FONT = 11  # tick labels, axis titles, legend
_TITLE_FONT = 13
_CHAR = 0.6  # a sans-serif character's width, as a share of the font size (a generous estimate)
_BOLD_CHAR = 0.7
_TOP = 40  # room for the title (and the bar chart's legend) above the plot
_BOTTOM = 40  # tick labels and the axis title below it
_RIGHT = 24  # half the widest time label, so the last one stays inside
_MIN_WIDTH, _MIN_HEIGHT = 240, 140

# Default colours: readable on white, and blue/orange can be told apart by colour-blind readers.
_INK = "#1f2937"
_MUTED = "#4b5563"
_GRID = "#e5e7eb"
_LINE = "#2563eb"
_JOINS = "#2563eb"
_LEAVES = "#ea580c"


# ---- formatting --------------------------------------------------------------------------------


def _text(value: str) -> str:
    """Someone else's text, safe as XML/HTML character data or an attribute value: characters XML
    does not allow are dropped, the rest escaped."""
    return html.escape(_NOT_XML.sub("", value), quote=True)


def _n(value: float) -> str:
    """A coordinate, to at most one decimal ("12", "12.5"), never "-0"."""
    text = f"{value:.1f}"
    if text.endswith(".0"):
        text = text[:-2]
    return "0" if text == "-0" else text


def _count(value: float) -> str:
    """A count as people read it: "12,345"; a fraction (an average, say) keeps one decimal."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}"


def _utc(unix_seconds: float) -> datetime:
    return datetime.fromtimestamp(unix_seconds, timezone.utc)


def _moment(unix_seconds: float) -> str:
    """A time for sentences: "2026-11-24" at midnight, else "2026-11-24 14:05 UTC"."""
    when = _utc(unix_seconds)
    if when.hour == when.minute == when.second == 0:
        return when.strftime("%Y-%m-%d")
    return when.strftime("%Y-%m-%d %H:%M UTC")


def _when(unix_seconds: float, span: float) -> str:
    """When something happened, as precisely as the period calls for: the day on long periods
    ("on 2026-11-24"), the minute on short ones ("at 2026-11-24 14:05 UTC")."""
    if span > 2 * _DAY:
        return "on " + _utc(unix_seconds).strftime("%Y-%m-%d")
    return "at " + _utc(unix_seconds).strftime("%Y-%m-%d %H:%M UTC")


def _per(bucket_seconds: int) -> str:
    """A bucket's length in words: "hour", "day", "15 minutes"."""
    for size, one, many in ((604800, "week", "weeks"), (_DAY, "day", "days"), (3600, "hour", "hours")):
        if bucket_seconds % size == 0:
            count = bucket_seconds // size
            return one if count == 1 else f"{count} {many}"
    if bucket_seconds % 60 == 0:
        return "minute" if bucket_seconds == 60 else f"{bucket_seconds // 60} minutes"
    return f"{bucket_seconds} seconds"


def _width(text: str, size: float = _FONT) -> float:
    return len(text) * size * _CHAR


def _shortened(text: str, room: float, size: float, char: float = _CHAR) -> str:
    """``text`` cut to fit ``room`` units (the full text stays in the chart's ``<title>``)."""
    fits = max(1, int(room / (size * char)))
    return text if len(text) <= fits else text[: fits - 1].rstrip() + "…"


# ---- geometry ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Frame:
    """The plot area inside the chart and the time and value ranges it shows."""

    left: float
    right: float
    top: float
    bottom: float
    start: float
    end: float
    low: float
    high: float

    def x(self, unix_seconds: float) -> float:
        return self.left + (unix_seconds - self.start) * (self.right - self.left) / (self.end - self.start)

    def y(self, value: float) -> float:
        return self.bottom - (value - self.low) * (self.bottom - self.top) / (self.high - self.low)


@dataclass(frozen=True)
class _TimeTicks:
    """One way to mark time on the x axis: every ``seconds`` (from midnight UTC), or on ``days``
    of every ``months``-th month; ``label`` names the form of the tick labels."""

    label: str  # "clock" 14:00, "weekday" Mon 01, "date" 12-01, "month" 2026-12, "year" 2026
    seconds: int = 0
    months: int = 0
    days: tuple[int, ...] = (1,)

    @property
    def nominal(self) -> float:
        """About how many seconds lie between two ticks."""
        if self.seconds:
            return self.seconds
        return self.months * 30 * _DAY / len(self.days)


# From fine to coarse; the first whose labels do not crowd each other is used. On a 720-wide chart
# that is every 3 hours over 24 h, every day over 7 d, every 5 days over 30 d, every 15 over 90 d.
_TIME_TICKS = (
    *(_TimeTicks("clock", seconds=minutes * 60) for minutes in (1, 2, 5, 10, 15, 30)),
    *(_TimeTicks("clock", seconds=hours * 3600) for hours in (1, 2, 3, 6, 12)),
    _TimeTicks("weekday", seconds=_DAY),
    _TimeTicks("date", seconds=2 * _DAY),
    _TimeTicks("date", months=1, days=(1, 6, 11, 16, 21, 26)),
    _TimeTicks("date", months=1, days=(1, 16)),
    _TimeTicks("month", months=1),
    _TimeTicks("month", months=3),
    _TimeTicks("month", months=6),
    _TimeTicks("year", months=12),
    _TimeTicks("year", months=60),
)
_SAMPLE = datetime(2026, 12, 30, 23, 59, tzinfo=timezone.utc)  # a wide label of each form


def _tick_label(when: datetime, form: str, dated: bool) -> str:
    if form == "clock":
        if dated and when.hour == when.minute == 0:  # a new day: say which
            return f"{_WEEKDAYS[when.weekday()]} {when.day:02}"
        return f"{when.hour:02}:{when.minute:02}"
    if form == "weekday":
        return f"{_WEEKDAYS[when.weekday()]} {when.day:02}"
    if form == "date":
        return f"{when.month:02}-{when.day:02}"
    if form == "month":
        return f"{when.year}-{when.month:02}"
    return f"{when.year}"


def _tick_times(ticks: _TimeTicks, start: float, end: float) -> Iterator[float]:
    if ticks.seconds:
        at = math.ceil(start / ticks.seconds) * ticks.seconds
        while at <= end:
            yield at
            at += ticks.seconds
        return
    first = _utc(start)
    month = first.year * 12 + first.month - 1  # months since the year 0, so steps align to years
    while True:
        if month % ticks.months == 0:
            for day in ticks.days:
                moment = datetime(month // 12, month % 12 + 1, day, tzinfo=timezone.utc).timestamp()
                if moment > end:
                    return
                if moment >= start:
                    yield moment
        month += 1


def _time_axis(start: float, end: float, plot_width: float) -> list[tuple[float, str]]:
    """Ticks and labels for the x axis: the finest step whose labels have room to breathe."""
    span = end - start
    dated = (start // _DAY + 1) * _DAY < end  # a day begins inside the period: its midnight names it
    for ticks in _TIME_TICKS:
        label = _tick_label(_SAMPLE, ticks.label, False)
        if ticks.nominal * plot_width / span >= _width(label) + 24 or ticks is _TIME_TICKS[-1]:
            return [(at, _tick_label(_utc(at), ticks.label, dated)) for at in _tick_times(ticks, start, end)]
    raise AssertionError("unreachable")  # the last entry is always taken


def _nice_steps() -> Iterator[int]:
    """1, 2, 5, 10, 20, 50, … (counts are whole numbers: no step is smaller than 1)."""
    scale = 1
    while True:
        for factor in (1, 2, 5):
            yield factor * scale
        scale *= 10


def _value_axis(low: float, high: float) -> tuple[float, float, int]:
    """(bottom, top, step) of a count axis with 4–6 ticks at a nice step. The axis starts at 0,
    so that heights compare honestly, unless the values vary and stay far from 0 (the variation
    would fill less than a third of the height): then it starts at a tick just below them."""
    if not (high > low and low > 0 and low > 2 * (high - low)):
        low = min(low, 0.0)
    high = max(high, low + 1)
    for step in _nice_steps():
        bottom, top = math.floor(low / step) * step, math.ceil(high / step) * step
        if (top - bottom) / step <= 5:
            return bottom, max(top, bottom + 3 * step), step
    raise AssertionError("unreachable")


def _both_ways_axis(up: float, down: float) -> tuple[int, int, int]:
    """(steps below zero, steps above, step) for bars up to ``up`` and down to ``down``: at most
    six ticks, and at least one step each way so that both sides read as such."""
    for step in _nice_steps():
        above, below = max(1, math.ceil(up / step)), max(1, math.ceil(down / step))
        if above + below <= 5:
            return below, above, step
    raise AssertionError("unreachable")


def _check(id_prefix: str, start: float, end: float, width: int, height: int) -> None:
    if not _ID_PREFIX.fullmatch(id_prefix):
        raise ValueError(f"id_prefix must match [a-z][a-z0-9-]*, not {id_prefix!r}")
    if not (math.isfinite(start) and math.isfinite(end)) or end <= start:
        raise ValueError("the period must end after it starts")
    if width < _MIN_WIDTH or height < _MIN_HEIGHT:
        raise ValueError(f"a chart needs at least {_MIN_WIDTH}×{_MIN_HEIGHT}")


# ---- shared parts ------------------------------------------------------------------------------


def _open(kind: str, id_prefix: str, title: str, desc: str, width: int, height: int) -> list[str]:
    """The root element, its accessible name and description, and the visible title."""
    room = width - 12 - (_LEGEND_WIDTH + 24 if kind == "bar" else _RIGHT)  # the bar chart's legend is on the right
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart chart-{kind}" role="img"'
        f' aria-labelledby="{id_prefix}-title {id_prefix}-desc" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="{_FONT}">',
        f'<title id="{id_prefix}-title">{_text(title)}</title>',
        f'<desc id="{id_prefix}-desc">{_text(desc)}</desc>',
        f'<text class="chart-title" x="12" y="20" font-size="{_TITLE_FONT}" font-weight="bold"'
        f' fill="{_INK}">{_text(_shortened(title, room, _TITLE_FONT, _BOLD_CHAR))}</text>',
    ]


def _x_axis(frame: _Frame, heading: str) -> list[str]:
    """Vertical grid lines, tick marks and labels at the chosen times, and the axis title."""
    ticks = _time_axis(frame.start, frame.end, frame.right - frame.left)
    grid = "".join(f"M{_n(frame.x(at))} {_n(frame.top)}V{_n(frame.bottom)}" for at, _ in ticks)
    marks = "".join(f"M{_n(frame.x(at))} {_n(frame.bottom)}v4" for at, _ in ticks)
    labels = "".join(f'<text x="{_n(frame.x(at))}" y="{_n(frame.bottom + 16)}">{label}</text>' for at, label in ticks)
    middle = (frame.left + frame.right) / 2
    parts = [f'<path class="grid" d="{grid}" stroke="{_GRID}" fill="none"/>'] if grid else []
    parts += [
        f'<path class="axis" d="M{_n(frame.left)} {_n(frame.bottom)}H{_n(frame.right)}{marks}"'
        f' stroke="{_MUTED}" fill="none"/>',
        f'<g class="tick-labels" text-anchor="middle" fill="{_MUTED}">{labels}</g>',
        f'<text class="axis-title" x="{_n(middle)}" y="{_n(frame.bottom + 33)}" text-anchor="middle"'
        f' fill="{_MUTED}">{_text(heading)}</text>',
    ]
    return parts


def _y_axis(frame: _Frame, ticks: Sequence[tuple[float, str]], heading: str) -> list[str]:
    """Horizontal grid lines and labels at the given values, and the axis title, turned upright."""
    grid = "".join(f"M{_n(frame.left)} {_n(frame.y(value))}H{_n(frame.right)}" for value, _ in ticks)
    labels = "".join(
        f'<text x="{_n(frame.left - 6)}" y="{_n(frame.y(value) + 4)}">{label}</text>' for value, label in ticks
    )
    middle = (frame.top + frame.bottom) / 2
    return [
        f'<path class="grid" d="{grid}" stroke="{_GRID}" fill="none"/>',
        f'<g class="tick-labels" text-anchor="end" fill="{_MUTED}">{labels}</g>',
        f'<text class="axis-title" transform="rotate(-90)" x="{_n(-middle)}" y="14" text-anchor="middle"'
        f' fill="{_MUTED}">{_text(_shortened(heading, frame.bottom - frame.top, _FONT))}</text>',
    ]


def _frame(width: int, height: int, start: float, end: float, low: float, high: float, labels: Sequence[str]) -> _Frame:
    """The plot area: the left margin fits the widest value label and the upright axis title."""
    left = 22 + max((_width(label) for label in labels), default=0) + 8
    return _Frame(left, width - _RIGHT, _TOP, height - _BOTTOM, start, end, low, high)


def _empty(frame: _Frame, message: str) -> str:
    middle_x, middle_y = (frame.left + frame.right) / 2, (frame.top + frame.bottom) / 2
    return (
        f'<text class="empty" x="{_n(middle_x)}" y="{_n(middle_y)}" text-anchor="middle"'
        f' fill="{_MUTED}">{message}</text>'
    )


# ---- the member count: a step line -------------------------------------------------------------


@dataclass(frozen=True)
class _Series:
    """A count's steps in a period, in time order: ``values[i]`` holds from ``times[i]`` on."""

    times: list[float]
    values: list[float]


def _in_period(points: Sequence[tuple[float, float]], start: float, end: float) -> _Series:
    """The steps that show in [start, end]: the value at ``start`` (the last point at or before
    it, moved to ``start``) and each point after it up to ``end``. Points with the same time keep
    their order, so the last of them is the value from then on."""
    ordered = sorted(points, key=itemgetter(0))  # near-linear on points already in order
    times = list(map(itemgetter(0), ordered))
    first, last = bisect_right(times, start), bisect_right(times, end)
    values = list(map(itemgetter(1), ordered[first:last]))
    times = times[first:last]
    if first > 0:
        times.insert(0, start)
        values.insert(0, ordered[first - 1][1])
    return _Series(times, values)


def _step_path(series: _Series, frame: _Frame) -> tuple[str, str]:
    """The step line's path (horizontal, then vertical to each new value, on to ``end``) and the
    area under it. Points are gathered by column, a tenth of a unit wide, or a whole unit when
    there are more points than units: a column draws one vertical stroke through its lowest,
    highest and last value, so nothing the eye could see is lost. The work goes by column, not
    by point: 100,000 points cost little more than the chart's width."""
    times, values = series.times, series.values
    plot_width = frame.right - frame.left
    per_unit = 1 if len(times) > 2 * plot_width else 10
    scale = plot_width * per_unit / (frame.end - frame.start)
    start = frame.start

    def y(value: float) -> str:
        return _n(frame.y(value))

    x_left = _n(frame.x(times[0]))
    across, current = x_left, y(values[0])
    parts = [f"M{x_left} {current}"]
    index = 1
    while index < len(times):
        column = round((times[index] - start) * scale)
        # the first point of the next column (at least one further, whatever rounding says)
        after = max(index + 1, bisect_left(times, start + (column + 0.5) / scale, index))
        mark = _n(min(frame.left + column / per_unit, frame.right))
        if mark != across:
            parts.append(f"H{mark}")
            across = mark
        group = values[index:after]
        for value in (min(group), max(group), group[-1]):
            level = y(value)
            if level != current:
                parts.append(f"V{level}")
                current = level
        index = after
    if across != _n(frame.right):
        parts.append(f"H{_n(frame.right)}")
    line = "".join(parts)
    area = f"{line}V{_n(frame.bottom)}H{x_left}Z"
    return line, area


def _line_desc(series: _Series, y_label: str, start: float, end: float) -> str:
    period = f"{y_label[:1].upper()}{y_label[1:]} from {_moment(start)} to {_moment(end)}"
    times, values = series.times, series.values
    if not times:
        return f"{period}: {NO_DATA}."
    high, low = max(values), min(values)
    at_high, at_low = times[values.index(high)], times[values.index(low)]
    span = end - start
    summary = (
        f"{period}: from {_count(values[0])} to {_count(values[-1])},"
        f" highest {_count(high)} {_when(at_high, span)}, lowest {_count(low)} {_when(at_low, span)}"
    )
    if times[0] > start:
        summary += f" (no data before {_moment(times[0])})"
    return summary + "."


def line_chart(
    points: Sequence[tuple[float, float]],
    *,
    title: str,
    start: float,
    end: float,
    y_label: str,
    id_prefix: str,
    width: int = 720,
    height: int = 260,
) -> str:
    """An SVG step line of a count over [start, end] (Unix seconds, UTC), the area under it lightly
    filled. ``points`` are (time, count) in any order; a point before ``start`` gives the count at
    ``start``, the last one holds until ``end``. ``id_prefix`` (``[a-z][a-z0-9-]*``) makes the
    element IDs unique on the page: give each chart its own."""
    _check(id_prefix, start, end, width, height)
    series = _in_period(points, start, end)
    if not series.times:
        frame = _frame(width, height, start, end, 0, 1, [])
        parts = _open("line", id_prefix, title, _line_desc(series, y_label, start, end), width, height)
        parts += [*_x_axis(frame, "time (UTC)"), _empty(frame, NO_DATA), "</svg>"]
        return "\n".join(parts)
    bottom, top, step = _value_axis(min(series.values), max(series.values))
    ticks = [(bottom + i * step, _count(bottom + i * step)) for i in range(round((top - bottom) / step) + 1)]
    frame = _frame(width, height, start, end, bottom, top, [label for _, label in ticks])
    line, area = _step_path(series, frame)
    parts = _open("line", id_prefix, title, _line_desc(series, y_label, start, end), width, height)
    parts += [
        *_y_axis(frame, ticks, y_label),
        *_x_axis(frame, "time (UTC)"),
        f'<path class="area" d="{area}" fill="{_LINE}" fill-opacity="0.12" stroke="none"/>',
        f'<path class="line" d="{line}" fill="none" stroke="{_LINE}" stroke-width="1.5" stroke-linejoin="round"/>',
        "</svg>",
    ]
    return "\n".join(parts)


# ---- joins and leaves: bars up and down --------------------------------------------------------


def _bars_in_period(
    buckets: Sequence[tuple[float, int, int]], start: float, end: float, bucket_seconds: int
) -> list[tuple[float, int, int]]:
    """The buckets that overlap [start, end], in time order."""
    return sorted(
        (bucket for bucket in buckets if bucket[0] < end and bucket[0] + bucket_seconds > start), key=itemgetter(0)
    )


def _bar_columns(
    buckets: Sequence[tuple[float, int, int]], frame: _Frame, bucket_seconds: int
) -> list[tuple[float, float, int, int]]:
    """(left, right, joins, leaves) of each bar. Where a bucket would be narrower than 1.5 units,
    neighbouring buckets share a bar that shows the most joins and the most leaves of any of them:
    the axis still reads "per hour", and a wave still stands out."""
    bucket_width = bucket_seconds * (frame.right - frame.left) / (frame.end - frame.start)
    group = max(1, math.ceil(1.5 / bucket_width))
    span = group * bucket_seconds
    columns: dict[float, tuple[int, int]] = {}
    for at, joins, leaves in buckets:
        begins = at if group == 1 else math.floor(at / span) * span
        most_joins, most_leaves = columns.get(begins, (0, 0))
        columns[begins] = (max(most_joins, joins), max(most_leaves, leaves))
    bars = []
    for begins, (joins, leaves) in sorted(columns.items()):
        left, right = frame.x(max(begins, frame.start)), frame.x(min(begins + span, frame.end))
        if right - left > 4:  # room for a gap between bars
            gap = min(2.0, (right - left) * 0.15)
            left, right = left + gap / 2, right - gap / 2
        bars.append((left, right, joins, leaves))
    return bars


def _bar_desc(buckets: Sequence[tuple[float, int, int]], per: str, start: float, end: float) -> str:
    period = f"Joins and leaves per {per} from {_moment(start)} to {_moment(end)}"
    if not buckets:
        return f"{period}: {NO_DATA}."
    joins, leaves = sum(b[1] for b in buckets), sum(b[2] for b in buckets)
    if joins == leaves == 0:
        return f"{period}: {NO_CHANGES}."
    summary = f"{period}: {_count(joins)} joins and {_count(leaves)} leaves in all"
    for index, word in ((1, "joins"), (2, "leaves")):
        most = max(buckets, key=itemgetter(index))  # the first of equals
        if most[index]:
            summary += f"; most {word} in one {per}: {_count(most[index])}, in the {per} from {_moment(most[0])}"
    return summary + "."


_JOINS_WORDS, _LEAVES_WORDS = "joins (up)", "leaves (down)"
_LEGEND_WIDTH = 14 + _width(_JOINS_WORDS) + 16 + 14 + _width(_LEAVES_WORDS)  # swatch, words, gap, swatch, words


def _legend(width: int) -> str:
    """Two swatches and their words, at the top right."""
    joins_x = width - _RIGHT - _LEGEND_WIDTH
    leaves_x = joins_x + 14 + _width(_JOINS_WORDS) + 16
    return (
        f'<g class="legend" fill="{_MUTED}">'
        f'<rect class="joins" x="{_n(joins_x)}" y="11" width="10" height="10" fill="{_JOINS}"/>'
        f'<text x="{_n(joins_x + 14)}" y="20">{_JOINS_WORDS}</text>'
        f'<rect class="leaves" x="{_n(leaves_x)}" y="11" width="10" height="10" fill="{_LEAVES}"/>'
        f'<text x="{_n(leaves_x + 14)}" y="20">{_LEAVES_WORDS}</text></g>'
    )


def bar_chart(
    buckets: Sequence[tuple[float, int, int]],
    *,
    title: str,
    start: float,
    end: float,
    bucket_seconds: int,
    id_prefix: str,
    width: int = 720,
    height: int = 260,
) -> str:
    """An SVG bar chart of joins (up) and leaves (down) per bucket over [start, end]: ``buckets``
    are (bucket start in Unix seconds, joins, leaves), one each; buckets with neither draw
    nothing. ``id_prefix`` as for ``line_chart``."""
    _check(id_prefix, start, end, width, height)
    if bucket_seconds <= 0:
        raise ValueError("bucket_seconds must be positive")
    shown = _bars_in_period(buckets, start, end, bucket_seconds)
    per = _per(bucket_seconds)
    desc = _bar_desc(shown, per, start, end)
    parts = _open("bar", id_prefix, title, desc, width, height)
    most_joins = max((b[1] for b in shown), default=0)
    most_leaves = max((b[2] for b in shown), default=0)
    if most_joins == most_leaves == 0:
        frame = _frame(width, height, start, end, -1, 1, [])
        parts += [*_x_axis(frame, "time (UTC)"), _empty(frame, NO_CHANGES if shown else NO_DATA), "</svg>"]
        return "\n".join(parts)
    below, above, step = _both_ways_axis(most_joins, most_leaves)
    ticks = [(i * step, _count(abs(i * step))) for i in range(-below, above + 1)]
    frame = _frame(width, height, start, end, -below * step, above * step, [label for _, label in ticks])
    zero = frame.y(0)
    ups, downs = [], []
    for left, right, joins, leaves in _bar_columns(shown, frame, bucket_seconds):
        across = f"h{_n(right - left)}"
        if joins:
            ups.append(f"M{_n(left)} {_n(zero)}V{_n(frame.y(joins))}{across}V{_n(zero)}Z")
        if leaves:
            downs.append(f"M{_n(left)} {_n(zero)}V{_n(frame.y(-leaves))}{across}V{_n(zero)}Z")
    parts += [
        _legend(width),
        *_y_axis(frame, ticks, f"joins / leaves per {per}"),
        *_x_axis(frame, "time (UTC)"),
    ]
    if ups:
        parts.append(f'<path class="joins" d="{"".join(ups)}" fill="{_JOINS}"/>')
    if downs:
        parts.append(f'<path class="leaves" d="{"".join(downs)}" fill="{_LEAVES}"/>')
    parts += [
        f'<path class="zero" d="M{_n(frame.left)} {_n(zero)}H{_n(frame.right)}" stroke="{_INK}" fill="none"/>',
        "</svg>",
    ]
    return "\n".join(parts)


# ---- the same numbers as a table ---------------------------------------------------------------


_NUM = ' class="num"'


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def table(rows: Sequence[Sequence[str | int | float]], headers: Sequence[str], *, caption: str) -> str:
    """An HTML table of the numbers a chart shows, for screen readers and plain-text readers.
    Numbers are formatted here and right-aligned by the class "num" (a column of numbers gets it
    on its header too); everything else is escaped."""
    numeric = [bool(rows) and all(_is_number(row[i]) for row in rows if i < len(row)) for i in range(len(headers))]
    head = "".join(
        f'<th scope="col"{_NUM if numeric[i] else ""}>{_text(header)}</th>' for i, header in enumerate(headers)
    )
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{_count(cell)}</td>' if _is_number(cell) else f"<td>{_text(str(cell))}</td>"
            for cell in row
        )
        body.append(f"<tr>{cells}</tr>")
    return (
        f'<table class="chart-table">\n<caption>{_text(caption)}</caption>\n'
        f"<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + ("\n" if body else "") + "</tbody>\n</table>"
    )


def _to_the_second(times: Sequence[float]) -> bool:
    """Whether minutes would hide a difference between these times."""
    return any(int(at) % 60 for at in times)


def line_rows(points: Sequence[tuple[float, float]], start: float, end: float) -> list[tuple[str, float]]:
    """(time, count) rows for ``table``: the count at ``start`` and every change until ``end``, as
    the line chart draws them (a point that repeats the count before it is left out)."""
    rows: list[tuple[float, float]] = []
    series = _in_period(points, start, end)
    for at, value in zip(series.times, series.values, strict=True):
        if rows and rows[-1][1] == value:
            continue
        rows.append((at, value))
    seconds = _to_the_second([at for at, _ in rows])
    return [(_moment_in_row(at, seconds), value) for at, value in rows]


def bar_rows(
    buckets: Sequence[tuple[float, int, int]], bucket_seconds: int, *, skip_empty: bool = True
) -> list[tuple[str, int, int]]:
    """(bucket start, joins, leaves) rows for ``table``, in time order; buckets with neither are
    left out unless ``skip_empty`` is false (a quiet month is 700 rows of zeros)."""
    ordered = sorted(buckets, key=itemgetter(0))
    kept = [bucket for bucket in ordered if not skip_empty or bucket[1] or bucket[2]]
    days = bucket_seconds % _DAY == 0 and all(int(at) % _DAY == 0 for at, _, _ in kept)
    seconds = _to_the_second([at for at, _, _ in kept])
    return [
        (_utc(at).strftime("%Y-%m-%d") if days else _moment_in_row(at, seconds), joins, leaves)
        for at, joins, leaves in kept
    ]


def _moment_in_row(unix_seconds: float, seconds: bool) -> str:
    """A time in a table column: always the same form, "2026-11-24 14:05 UTC" (with seconds when
    any time in the column needs them)."""
    return _utc(unix_seconds).strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


__all__ = ["NO_CHANGES", "NO_DATA", "bar_chart", "bar_rows", "line_chart", "line_rows", "table"]
