"""The web view's charts: well-formed SVG that nothing passed in can take over, axes that read well
for each period, the step line and the bars where they belong, and a table of the same numbers.
Speed is measured by benchmarks/charts.py, not asserted here."""

from __future__ import annotations

import random
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import datetime, timezone
from itertools import pairwise

import pytest

from roomstate import charts

SVG = "{http://www.w3.org/2000/svg}"
HOUR, DAY = 3600, 86400
HOSTILE = ["<script>alert(1)</script>", '" onload="x', "' onmouseover='y", "a & b </svg><svg onload=z>"]


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


END = at("2026-12-01 00:00")


def parse(markup: str) -> ET.Element:
    return ET.fromstring(markup)


def path(root: ET.Element, cls: str) -> str | None:
    for element in root.iter(f"{SVG}path"):
        if element.get("class") == cls:
            return element.get("d")
    return None


def vertices(d: str) -> list[tuple[float, float]]:
    """The corners of a path made of M, H and V commands (absolute)."""
    points: list[tuple[float, float]] = []
    x = y = 0.0
    for command, numbers in re.findall(r"([MHV])([-0-9. ]+)", d):
        values = [float(n) for n in numbers.split()]
        if command == "M":
            x, y = values
        elif command == "H":
            x = values[0]
        else:
            y = values[0]
        points.append((x, y))
    return points


def x_labels(root: ET.Element) -> list[str]:
    groups = [g for g in root.iter(f"{SVG}g") if g.get("class") == "tick-labels" and g.get("text-anchor") == "middle"]
    return [text.text or "" for text in groups[0]]


def y_labels(root: ET.Element) -> list[str]:
    groups = [g for g in root.iter(f"{SVG}g") if g.get("class") == "tick-labels" and g.get("text-anchor") == "end"]
    return [text.text or "" for text in groups[0]] if groups else []


def desc(root: ET.Element) -> str:
    found = root.find(f"{SVG}desc")
    assert found is not None and found.text is not None
    return found.text


def line(points: Sequence[tuple[float, float]], start: float, end: float = END, **extra: object) -> str:
    options: dict[str, object] = {"title": "Members", "y_label": "members", "id_prefix": "members", **extra}
    return charts.line_chart(points, start=start, end=end, **options)  # type: ignore[arg-type]


def bars(
    buckets: list[tuple[float, int, int]], start: float, end: float = END, size: int = HOUR, **extra: object
) -> str:
    options: dict[str, object] = {"title": "Joins and leaves", "id_prefix": "changes", **extra}
    return charts.bar_chart(buckets, start=start, end=end, bucket_seconds=size, **options)  # type: ignore[arg-type]


def walk(start: float, end: float, count: int, seed: int = 1) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    times = sorted(start + rng.random() * (end - start) for _ in range(count))
    value, points = 500.0, []
    for moment in times:
        value += rng.choice((-1, 1))
        points.append((moment, value))
    return points


# ---- well-formed, accessible, safe -------------------------------------------------------------


def every_chart() -> list[str]:
    start = END - 30 * DAY
    return [
        line(walk(start, END, 300), start),
        line([], start),
        bars([(start + i * DAY, i % 4, i % 3) for i in range(30)], start, size=DAY),
        bars([], start),
        bars([(start, 0, 0)], start),
    ]


@pytest.mark.parametrize("markup", every_chart())
def test_every_chart_is_an_accessible_svg(markup: str) -> None:
    root = parse(markup)
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    labelled_by = (root.get("aria-labelledby") or "").split()
    ids = {element.get("id"): element.tag for element in root.iter() if element.get("id")}
    assert [ids[name] for name in labelled_by] == [f"{SVG}title", f"{SVG}desc"]
    assert desc(root)
    assert root.get("viewBox") == "0 0 720 260"


def test_coordinates_have_at_most_one_decimal() -> None:
    for markup in every_chart():
        for element in parse(markup).iter():
            for name in ("x", "y", "width", "height", "d"):
                value = element.get(name) or ""
                assert not re.search(r"\.\d\d", value), (name, value)


@pytest.mark.parametrize("hostile", HOSTILE)
def test_text_passed_in_is_only_ever_text(hostile: str) -> None:
    start = END - DAY
    markups = [
        line([(start, 3)], start, title=hostile, y_label=hostile),
        line([], start, title=hostile, y_label=hostile),
        bars([(start, 2, 1)], start, title=hostile),
        charts.table([[hostile, 1]], [hostile, hostile], caption=hostile),
    ]
    for markup in markups:
        root = parse(markup)  # still well-formed
        lowered = markup.lower()
        assert "<script" not in lowered
        assert "href" not in lowered
        assert "url(" not in lowered
        assert '" on' not in markup and "' on" not in markup
        assert "</svg><svg" not in markup
        for element in root.iter():
            assert element.tag.rpartition("}")[2] not in {"script", "a", "foreignObject", "image", "use"}
            for name in element.attrib:
                assert not name.lower().startswith("on") and name != "style", name
        texts = [element.text for element in root.iter() if element.text]
        assert hostile in texts  # shown, as text


def test_title_is_escaped_in_the_markup() -> None:
    start = END - DAY
    markup = line([(start, 3)], start, title='<script>alert(1)</script>" onload="x')
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot; onload=&quot;x" in markup
    root = parse(markup)
    title = root.find(f"{SVG}title")
    assert title is not None and title.text == '<script>alert(1)</script>" onload="x'


def test_characters_xml_forbids_are_dropped() -> None:
    start = END - DAY
    root = parse(line([(start, 3)], start, title="bell\x07 and nul\x00 here"))
    title = root.find(f"{SVG}title")
    assert title is not None and title.text == "bell and nul here"


@pytest.mark.parametrize("bad", ["", "Members", "1chart", "a b", "a_b", 'a"b', "ü"])
def test_id_prefix_is_validated(bad: str) -> None:
    with pytest.raises(ValueError):
        line([], END - DAY, id_prefix=bad)
    with pytest.raises(ValueError):
        bars([], END - DAY, id_prefix=bad)


def test_ids_follow_the_prefix() -> None:
    start = END - DAY
    first, second = parse(line([], start, id_prefix="members-1")), parse(bars([], start, id_prefix="changes-1"))
    ids = [{element.get("id") for element in root.iter() if element.get("id")} for root in (first, second)]
    assert ids == [{"members-1-title", "members-1-desc"}, {"changes-1-title", "changes-1-desc"}]


def test_bad_periods_and_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        line([], END, END)
    with pytest.raises(ValueError):
        line([], END, END - DAY)
    with pytest.raises(ValueError):
        line([], END - DAY, width=100)
    with pytest.raises(ValueError):
        bars([], END - DAY, size=0)


# ---- the time axis -----------------------------------------------------------------------------


def test_24_hours_are_marked_every_3_hours() -> None:
    start = END - DAY
    labels = x_labels(parse(line([(start, 5)], start)))
    assert labels == ["00:00", "03:00", "06:00", "09:00", "12:00", "15:00", "18:00", "21:00", "00:00"]


def test_24_hours_on_a_narrow_chart_are_marked_every_6_hours() -> None:
    start = END - DAY
    labels = x_labels(parse(line([(start, 5)], start, width=360)))
    assert labels == ["00:00", "06:00", "12:00", "18:00", "00:00"]


def test_24_hours_from_any_minute_start_on_the_hour() -> None:
    start = at("2026-11-30 13:27")
    labels = x_labels(parse(line([(start, 5)], start, start + DAY)))
    assert labels == ["15:00", "18:00", "21:00", "Tue 01", "03:00", "06:00", "09:00", "12:00"]


def test_7_days_are_marked_each_day() -> None:
    start = END - 7 * DAY
    labels = x_labels(parse(line([(start, 5)], start)))
    assert labels == ["Tue 24", "Wed 25", "Thu 26", "Fri 27", "Sat 28", "Sun 29", "Mon 30", "Tue 01"]


def test_30_days_are_marked_every_5_days() -> None:
    start = END - 30 * DAY
    labels = x_labels(parse(bars([(start, 1, 1)], start, size=DAY)))
    assert labels == ["11-01", "11-06", "11-11", "11-16", "11-21", "11-26", "12-01"]


def test_90_days_are_marked_every_15_days() -> None:
    start = END - 90 * DAY
    labels = x_labels(parse(line([(start, 5)], start)))
    assert labels == ["09-16", "10-01", "10-16", "11-01", "11-16", "12-01"]


def test_90_days_on_a_narrow_chart_are_marked_monthly() -> None:
    start = END - 90 * DAY
    labels = x_labels(parse(line([(start, 5)], start, width=360)))
    assert labels == ["2026-10", "2026-11", "2026-12"]


def test_a_year_is_marked_by_quarters_at_most() -> None:
    start = at("2026-01-01")
    labels = x_labels(parse(line([(start, 5)], start, at("2027-01-01"))))
    assert labels[0] == "2026-01" and labels[-1] == "2027-01" and 5 <= len(labels) <= 13


def test_tick_labels_do_not_crowd() -> None:
    for days in (1, 2, 7, 14, 30, 60, 90, 365):
        for width in (360, 720, 1200):
            start = END - days * DAY
            root = parse(line([(start, 5)], start, width=width))
            group = next(g for g in root.iter(f"{SVG}g") if g.get("text-anchor") == "middle")
            xs = [float(text.get("x") or 0) for text in group]
            assert len(xs) >= 2, (days, width)
            widest = max(len(text.text or "") for text in group) * 11 * 0.6
            assert min(b - a for a, b in pairwise(xs)) >= widest + 8, (days, width)


# ---- the value axis ----------------------------------------------------------------------------


def test_the_value_axis_starts_at_zero_for_ordinary_counts() -> None:
    start = END - 30 * DAY
    labels = y_labels(parse(line([(start, 120), (start + DAY, 340)], start)))
    assert labels == ["0", "100", "200", "300", "400"]


def test_the_value_axis_starts_near_values_far_from_zero() -> None:
    start = END - 30 * DAY
    labels = y_labels(parse(line([(start, 99_800), (start + DAY, 100_230)], start)))
    assert labels == ["99,800", "99,900", "100,000", "100,100", "100,200", "100,300"]


def test_a_flat_count_is_shown_against_zero() -> None:
    start = END - DAY
    assert y_labels(parse(line([(start, 340)], start)))[0] == "0"


@pytest.mark.parametrize(
    ("low", "high"),
    [(0, 0), (0, 1), (0, 2), (3, 3), (0, 7), (12, 13), (0, 99), (50, 51), (120, 355), (0, 12_345), (1e6, 1.2e6)],
)
def test_the_value_axis_has_4_to_6_nice_ticks(low: float, high: float) -> None:
    start = END - DAY
    labels = y_labels(parse(line([(start, low), (start + HOUR, high)], start)))
    values = [int(label.replace(",", "")) for label in labels]
    assert 4 <= len(values) <= 6
    steps = {b - a for a, b in pairwise(values)}
    assert len(steps) == 1
    step = steps.pop()
    assert step / 10 ** (len(str(step)) - 1) in (1, 2, 5)
    assert values[0] <= low and values[-1] >= high


# ---- the step line -----------------------------------------------------------------------------


def test_the_step_line_goes_across_then_up_or_down() -> None:
    start = END - DAY
    root = parse(line([(start, 10), (start + 6 * HOUR, 20), (start + 12 * HOUR, 15)], start))
    assert y_labels(root) == ["0", "5", "10", "15", "20"]
    d = path(root, "line")
    assert d == "M43.2 130H206.4V40H369.6V85H696"  # plot 43.2..696 wide, 40..220 high: 20 at the top
    assert vertices(d) == [(43.2, 130), (206.4, 130), (206.4, 40), (369.6, 40), (369.6, 85), (696, 85)]
    assert path(root, "area") == d + "V220H43.2Z"


def test_points_in_any_order_draw_the_same_line() -> None:
    start = END - 7 * DAY
    points = [(start + i * 3000.0, float(i % 17)) for i in range(150)]
    shuffled = points[:]
    random.Random(5).shuffle(shuffled)
    assert line(shuffled, start) == line(points, start)


def test_points_before_start_are_clipped_to_start() -> None:
    start = END - DAY
    root = parse(line([(start - 500, 7), (start - 100, 9), (start + 12 * HOUR, 11), (END + 100, 50)], start))
    points = vertices(path(root, "line") or "")
    left, right = points[0][0], points[-1][0]
    assert all(left <= x <= right for x, _ in points)
    assert points[0][0] == 43.2 and len(points) == 4  # from start at 9, across, up to 11, on to the end
    assert "from 9 to 11" in desc(root)
    assert "50" not in y_labels(root)  # the point after the end plays no part


def test_a_line_that_starts_after_start_says_so() -> None:
    start = END - 30 * DAY
    root = parse(line([(start + 10 * DAY, 12), (start + 20 * DAY, 15)], start))
    points = vertices(path(root, "line") or "")
    assert points[0][0] == pytest.approx(43.2 + (696 - 43.2) / 3, abs=0.1)
    assert "(no data before 2026-11-11)" in desc(root)


def test_the_last_value_holds_until_the_end() -> None:
    start = END - DAY
    points = vertices(path(parse(line([(start, 4), (start + HOUR, 6)], start)), "line") or "")
    assert points[-1][0] == 696 and points[-1][1] == points[-2][1]


@pytest.mark.parametrize("points", [[], [(END + 10, 5)]])
def test_no_points_in_the_period_make_an_empty_chart(points: list[tuple[float, float]]) -> None:
    start = END - 7 * DAY
    root = parse(line(points, start))
    assert path(root, "line") is None and path(root, "area") is None
    messages = [text.text for text in root.iter(f"{SVG}text") if text.get("class") == "empty"]
    assert messages == ["no data in this period"]
    assert desc(root) == "Members from 2026-11-24 to 2026-12-01: no data in this period."
    assert len(x_labels(root)) == 8  # the period is still marked


def test_the_description_summarizes_every_point() -> None:
    start = at("2026-11-01")
    points = [(start - DAY, 120), (at("2026-11-24 09:30"), 355), (at("2026-11-24 10:00"), 200), (at("2026-11-30"), 340)]
    root = parse(line(points, start, y_label="member count"))
    assert desc(root) == (
        "Member count from 2026-11-01 to 2026-12-01: from 120 to 340,"
        " highest 355 on 2026-11-24, lowest 120 on 2026-11-01."
    )


def test_a_short_period_describes_times_to_the_minute() -> None:
    start = END - DAY
    root = parse(line([(start, 10), (at("2026-11-30 14:05"), 12)], start))
    assert desc(root) == (
        "Members from 2026-11-30 to 2026-12-01: from 10 to 12,"
        " highest 12 at 2026-11-30 14:05 UTC, lowest 10 at 2026-11-30 00:00 UTC."
    )


def test_many_points_are_drawn_per_column_keeping_spikes_and_ends() -> None:
    start = END - 90 * DAY
    points = [(start + i * 77.0, 1000.0 + (i % 2)) for i in range(100_000)]
    spike_at = start + 45 * DAY + 13
    points += [(spike_at, 5000.0), (spike_at + 1, 1000.0)]  # one second long
    points.append((END - 5, 1234.0))
    root = parse(line(points, start))
    d = path(root, "line") or ""
    corners = vertices(d)
    xs = [x for x, _ in corners]
    assert xs == sorted(xs)
    assert max(xs.count(x) for x in set(xs)) <= 4  # a column: across, then through its lowest, highest, last
    assert len(corners) < 4 * 720
    top = min(y for _, y in corners)
    assert top == 40  # the spike reaches the top of the axis (5,000 at the last tick)
    assert y_labels(root)[-1] == "5,000"
    first, last = corners[0], corners[-1]
    assert first[1] == corners[1][1]  # starts flat at 1,000
    assert last[0] == 696
    assert "from 1,000 to 1,234, highest 5,000 on 2026-10-17" in desc(root)


def test_every_point_is_drawn_in_its_column() -> None:
    start = END - 30 * DAY
    points = walk(start, END, 20_000, seed=4)
    root = parse(line(points, start))
    left, right = (float(n) for n in re.findall(r"M([-0-9.]+) [-0-9.]+H([-0-9.]+)", path(root, "axis") or "")[0])
    labels = [t for g in root.iter(f"{SVG}g") if g.get("text-anchor") == "end" for t in g]
    (low, low_y), (high, high_y) = (
        (float(t.text or "0"), float(t.get("y") or "0") - 4) for t in (labels[0], labels[-1])
    )
    drawn: dict[float, list[float]] = {}
    for x, y in vertices(path(root, "line") or ""):
        drawn.setdefault(round(x), []).append(y)
    for moment, value in points:
        column = round(left + (moment - start) * (right - left) / (END - start))
        y = low_y + (value - low) * (high_y - low_y) / (high - low)
        near = [ys for c in (column - 1, column, column + 1) for ys in drawn.get(c, [])]
        assert min(near) - 0.15 <= y <= max(near) + 0.15, (moment, value)


# ---- bars up and down --------------------------------------------------------------------------


def bar_boxes(d: str | None) -> list[tuple[float, float, float, float]]:
    """(left, right, zero, tip) of each bar in a path of "M x zero V tip h w V zero Z" pieces."""
    boxes = []
    for piece in re.findall(r"M([-0-9.]+) ([-0-9.]+)V([-0-9.]+)h([-0-9.]+)V[-0-9.]+Z", d or ""):
        left, zero, tip, across = (float(n) for n in piece)
        boxes.append((left, left + across, zero, tip))
    return boxes


def zero_line(root: ET.Element) -> tuple[float, float, float]:
    """(left, right, y) of the zero line: it spans the plot."""
    left, y, right = re.findall(r"[-0-9.]+", path(root, "zero") or "")
    return float(left), float(right), float(y)


def test_joins_go_up_and_leaves_go_down() -> None:
    start = END - DAY
    root = parse(
        bars([(start, 30, 0), (start + HOUR, 0, 10), (start + 2 * HOUR, 5, 5), (start + 3 * HOUR, 0, 0)], start)
    )
    _, _, zero = zero_line(root)
    ups, downs = bar_boxes(path(root, "joins")), bar_boxes(path(root, "leaves"))
    assert len(ups) == 2 and len(downs) == 2  # the 0/0 hour draws nothing
    assert all(z == zero and tip < zero for _, _, z, tip in ups)
    assert all(z == zero and tip > zero for _, _, z, tip in downs)
    highest = min(tip for *_, tip in ups)
    assert zero - highest > 2 * (downs[0][3] - zero)  # 30 joins stand out against 10 leaves
    assert y_labels(root) == ["10", "0", "10", "20", "30"]  # leaves counted down, without minus signs


def test_bars_are_drawn_where_their_bucket_is() -> None:
    start = END - DAY
    root = parse(bars([(start + 12 * HOUR, 3, 0)], start))
    ((left, right, _, _),) = bar_boxes(path(root, "joins"))
    plot_left, plot_right, _ = zero_line(root)
    hour = (plot_right - plot_left) / 24
    assert left == pytest.approx(plot_left + 12 * hour, abs=2) and right == pytest.approx(plot_left + 13 * hour, abs=2)
    assert 0 < right - left < hour


def test_a_bucket_begun_before_start_is_clipped() -> None:
    start = at("2026-11-30 00:30")
    root = parse(bars([(at("2026-11-30 00:00"), 4, 0), (END + HOUR, 9, 9)], start, start + DAY))
    ((left, _, _, _),) = bar_boxes(path(root, "joins"))
    assert left == pytest.approx(zero_line(root)[0], abs=1)  # at start (less half the gap between bars)
    assert "4 joins and 0 leaves in all" in desc(root)


def test_hourly_buckets_over_90_days_share_bars_and_keep_the_wave() -> None:
    start = END - 90 * DAY
    buckets = [(start + h * HOUR, 1, 1) for h in range(90 * 24)]
    buckets[1000] = (buckets[1000][0], 400, 1)
    root = parse(bars(buckets, start))
    ups = bar_boxes(path(root, "joins"))
    assert len(ups) < 720
    assert all(right - left >= 1 for left, right, *_ in ups)
    assert min(tip for *_, tip in ups) == 40  # the wave reaches the top of the axis
    assert "most joins in one hour: 400, in the hour from 2026-10-13 16:00 UTC" in desc(root)


def test_the_bar_description() -> None:
    start = END - 7 * DAY
    buckets = [(start, 3, 1), (at("2026-11-26"), 120, 4), (at("2026-11-28"), 6, 9)]
    assert desc(parse(bars(buckets, start, size=DAY))) == (
        "Joins and leaves per day from 2026-11-24 to 2026-12-01: 129 joins and 14 leaves in all;"
        " most joins in one day: 120, in the day from 2026-11-26;"
        " most leaves in one day: 9, in the day from 2026-11-28."
    )


def test_bars_without_joins_or_leaves_make_an_empty_chart() -> None:
    start = END - DAY
    quiet, nothing = parse(bars([(start, 0, 0)], start)), parse(bars([], start))
    for root, message in ((quiet, "no joins or leaves in this period"), (nothing, "no data in this period")):
        assert path(root, "joins") is None and path(root, "leaves") is None
        assert [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "empty"] == [message]
        assert desc(root).endswith(f": {message}.")


def test_the_bar_chart_has_a_legend() -> None:
    root = parse(bars([(END - DAY, 1, 1)], END - DAY))
    legend = next(g for g in root.iter(f"{SVG}g") if g.get("class") == "legend")
    assert [r.get("class") for r in legend.iter(f"{SVG}rect")] == ["joins", "leaves"]
    assert [t.text for t in legend.iter(f"{SVG}text")] == ["joins (up)", "leaves (down)"]


# ---- the table ---------------------------------------------------------------------------------


def test_the_table_is_structured_and_escaped() -> None:
    markup = charts.table(
        [["2026-11-24 14:00 UTC", 1234, 5], ["<b>bold</b>", 0, 2.5]],
        ["time", "joins", "<i>leaves</i>"],
        caption="A & B",
    )
    root = parse(markup)
    assert root.tag == "table"
    assert [child.tag for child in root] == ["caption", "thead", "tbody"]
    assert root.findtext("caption") == "A & B"
    headers = root.findall("thead/tr/th")
    assert [(th.get("scope"), th.get("class"), th.text) for th in headers] == [
        ("col", None, "time"),
        ("col", "num", "joins"),
        ("col", "num", "<i>leaves</i>"),
    ]
    rows = [[(td.get("class"), td.text) for td in tr] for tr in root.findall("tbody/tr")]
    assert rows == [
        [(None, "2026-11-24 14:00 UTC"), ("num", "1,234"), ("num", "5")],
        [(None, "<b>bold</b>"), ("num", "0"), ("num", "2.5")],
    ]
    assert "<b>" not in markup and "&lt;b&gt;bold&lt;/b&gt;" in markup


def test_an_empty_table_is_still_a_table() -> None:
    root = parse(charts.table([], ["time", "members"], caption="Members"))
    assert root.findall("tbody/tr") == [] and len(root.findall("thead/tr/th")) == 2


def test_line_rows_give_the_count_at_start_and_each_change() -> None:
    start = at("2026-11-30")
    points = [(start - 50, 7), (start + 3600, 8), (start + 7200, 8), (start + 9000, 6), (END + 1, 99)]
    assert charts.line_rows(points, start, END) == [
        ("2026-11-30 00:00 UTC", 7),
        ("2026-11-30 01:00 UTC", 8),
        ("2026-11-30 02:30 UTC", 6),
    ]


def test_line_rows_show_seconds_when_minutes_would_hide_them() -> None:
    start = at("2026-11-30")
    rows = charts.line_rows([(start + 5, 1), (start + 65, 2)], start, END)
    assert [time for time, _ in rows] == ["2026-11-30 00:00:05 UTC", "2026-11-30 00:01:05 UTC"]


def test_bar_rows() -> None:
    start = at("2026-11-30")
    buckets = [(start + HOUR, 2, 0), (start, 1, 1), (start + 2 * HOUR, 0, 0)]
    assert charts.bar_rows(buckets, HOUR) == [("2026-11-30 00:00 UTC", 1, 1), ("2026-11-30 01:00 UTC", 2, 0)]
    assert len(charts.bar_rows(buckets, HOUR, skip_empty=False)) == 3
    assert charts.bar_rows([(start, 3, 4)], DAY) == [("2026-11-30", 3, 4)]


# ---- determinism -------------------------------------------------------------------------------


def test_the_same_input_gives_the_same_bytes() -> None:
    start = END - 30 * DAY
    points = walk(start, END, 5000, seed=9)
    buckets = [(start + h * HOUR, h % 7, h % 5) for h in range(30 * 24)]
    assert line(points, start) == line(list(points), start)
    assert bars(buckets, start) == bars(list(buckets), start)
    rows = charts.line_rows(points, start, END)
    assert charts.table(rows, ["time", "members"], caption="c") == charts.table(rows, ["time", "members"], caption="c")
