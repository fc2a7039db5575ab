"""Metrics in the Prometheus text format (``/metrics`` of the web view).

The format is written here rather than with prometheus_client: maubot does not ship it, and its
default registry is one per process, where several instances of this plugin (and other plugins)
would collide. Names and units follow Prometheus's conventions (``roomstate_…_total`` counters,
seconds). Counters only ever grow while the instance runs; gauges are read when scraped.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

Labels = tuple[tuple[str, str], ...]


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    escaped = (
        f'{name}="{value.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34)).replace(chr(10), "")}"'
        for name, value in labels
    )
    return "{" + ",".join(escaped) + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Histogram:
    def __init__(self, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(sorted(buckets))
        self._in_bucket = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one value (on the writer thread after every commit: kept to one lookup)."""
        self.total += 1
        self.sum += value
        self._in_bucket[bisect.bisect_left(self.bounds, value)] += 1

    @property
    def counts(self) -> list[int]:
        """Values at or below each bound (Prometheus's cumulative buckets)."""
        return list(itertools.accumulate(self._in_bucket[:-1]))


DESCRIBED: dict[str, tuple[str, str]] = {
    "roomstate_events_total": ("counter", "Room events handled, by handler and outcome (skipped duplicates too)."),
    "roomstate_state_changes_total": ("counter", "State changes applied to the stored rooms and members."),
    "roomstate_resyncs_total": ("counter", "Full syncs of a room, by outcome (ok, failed, forgotten)."),
    "roomstate_homeserver_requests_total": ("counter", "Requests to the homeserver, by outcome (ok, failed)."),
    "roomstate_homeserver_request_seconds": ("histogram", "How long requests to the homeserver took."),
    "roomstate_database_commit_seconds": ("histogram", "How long the writer's group commits took."),
    "roomstate_commands_total": ("counter", "Chat commands answered, by command."),
    "roomstate_alerts_total": ("counter", "Alert notices sent, by kind."),
}


class Metrics:
    """The instance's counters and histograms; ``render`` adds the gauges it is given."""

    def __init__(self) -> None:
        self.counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self.histograms: dict[str, Histogram] = {
            "roomstate_homeserver_request_seconds": Histogram(),
            "roomstate_database_commit_seconds": Histogram(),
        }

    def count(self, name: str, amount: float = 1, **labels: str) -> None:
        self.counters[name][tuple(sorted(labels.items())) if labels else ()] += amount

    def observe(self, name: str, seconds: float) -> None:
        self.histograms[name].observe(seconds)

    def render(self, gauges: Iterable[tuple[str, str, float, Labels]] = ()) -> str:
        """The text format: every known metric (zero when nothing happened yet) and ``gauges``
        (name, help, value, labels)."""
        lines: list[str] = []
        for name, (kind, text) in DESCRIBED.items():
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            if kind == "histogram":
                histogram = self.histograms[name]
                for bound, count in zip(histogram.bounds, histogram.counts, strict=True):
                    lines.append(f'{name}_bucket{{le="{_number(bound)}"}} {count}')
                lines += [
                    f'{name}_bucket{{le="+Inf"}} {histogram.total}',
                    f"{name}_sum {_number(round(histogram.sum, 6))}",
                    f"{name}_count {histogram.total}",
                ]
                continue
            values = self.counters.get(name) or {(): 0.0}
            lines += [f"{name}{_labels(labels)} {_number(value)}" for labels, value in sorted(values.items())]
        seen: set[str] = set()
        for name, text, value, labels in gauges:
            if name not in seen:
                lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge"]
                seen.add(name)
            lines.append(f"{name}{_labels(labels)} {_number(value)}")
        return "\n".join(lines) + "\n"
