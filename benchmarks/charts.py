"""What drawing a chart costs on a busy room: the member-count line over 90 days with up to
100,000 points (target: well under 200 ms) and hourly joins and leaves over 90 days. Prints
numbers only; nothing here asserts a speed.

    python -m benchmarks.charts [--points N] [--reps N]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from collections.abc import Callable

from roomstate import charts

DAY = 86400
END = 1_796_083_200.0  # 2026-12-01 00:00 UTC
START = END - 90 * DAY


def member_counts(count: int, seed: int = 1) -> list[tuple[float, float]]:
    """A 100k-member room's count: a random walk with a join wave, at random times in order."""
    rng = random.Random(seed)
    times = sorted(START - DAY + rng.random() * (91 * DAY) for _ in range(count))
    value, points = 100_000.0, []
    for at in times:
        value += rng.choice((-1, 1, 1)) + (40 if abs(at - (END - 10 * DAY)) < 3600 else 0)
        points.append((at, value))
    return points


def hourly_buckets(seed: int = 2) -> list[tuple[float, int, int]]:
    rng = random.Random(seed)
    return [(START + h * 3600, rng.randint(0, 60), rng.randint(0, 40)) for h in range(90 * 24)]


def timed(reps: int, draw: Callable[[], str]) -> tuple[float, float, int]:
    """Median and worst milliseconds over ``reps`` runs, and the size of the markup."""
    seconds, size = [], 0
    for _ in range(reps):
        gc.collect()
        began = time.perf_counter()
        size = len(draw())
        seconds.append(time.perf_counter() - began)
    return statistics.median(seconds) * 1000, max(seconds) * 1000, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    points, buckets = member_counts(args.points), hourly_buckets()
    shuffled = points[:]
    random.Random(3).shuffle(shuffled)
    runs = {
        f"line_chart, 90 d, {len(points):,} points in order": lambda: charts.line_chart(
            points, title="Members", start=START, end=END, y_label="members", id_prefix="members"
        ),
        f"line_chart, 90 d, {len(points):,} points shuffled": lambda: charts.line_chart(
            shuffled, title="Members", start=START, end=END, y_label="members", id_prefix="members"
        ),
        f"bar_chart, 90 d, {len(buckets):,} hourly buckets": lambda: charts.bar_chart(
            buckets, title="Joins and leaves", start=START, end=END, bucket_seconds=3600, id_prefix="changes"
        ),
        f"line_rows + table, {len(points):,} points": lambda: charts.table(
            charts.line_rows(points, START, END), ["time", "members"], caption="Members"
        ),
    }
    print(f"{'what':<52} {'median':>10} {'worst':>10} {'markup':>12}   target")
    for name, draw in runs.items():
        median, worst, size = timed(args.reps, draw)
        target = "well under 200 ms" if name.startswith("line_chart") else "-"
        print(f"{name:<52} {median:>7.1f} ms {worst:>7.1f} ms {size:>8,} B   {target}", flush=True)


if __name__ == "__main__":
    main()
