"""A canary verdict from two scrapes of aiond's metrics: the tasks that finished between them, their
error ratio and their 95th-percentile duration, against thresholds.

The numbers come from the ``aion_task_duration_seconds`` histogram (labels ``route`` and ``status``):
the difference of its counts and buckets between the scrapes is exactly the tasks that finished in
the window, whatever ran before. Errors are the ERROR and TIMEOUT statuses (a canceled task is the
caller's choice). The quantile is interpolated within a bucket as Prometheus's
``histogram_quantile`` does. Pure: the scraping is the caller's.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping

FAMILY = "aion_task_duration_seconds"
ERROR_STATUSES = frozenset({"ERROR", "TIMEOUT"})
MAX_EXPOSITION = 32 << 20
"""Largest /metrics answer read."""

Labels = tuple[tuple[str, str], ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Scrape:
    """The task histogram of one scrape: counts by (route, status), buckets by (route, status, le)."""

    counts: Mapping[tuple[str, str], float]
    buckets: Mapping[tuple[str, str, float], float]


def parse(exposition: str, *, route: str | None = None) -> Scrape:
    """The task histogram in a Prometheus text exposition (only ``route`` when given)."""
    from prometheus_client.parser import text_string_to_metric_families

    counts: dict[tuple[str, str], float] = {}
    buckets: dict[tuple[str, str, float], float] = {}
    for family in text_string_to_metric_families(exposition):
        if family.name != FAMILY:
            continue
        for sample in family.samples:
            labels = sample.labels
            key = (labels.get("route", ""), labels.get("status", ""))
            if route is not None and key[0] != route:
                continue
            if sample.name == FAMILY + "_count":
                counts[key] = counts.get(key, 0.0) + sample.value
            elif sample.name == FAMILY + "_bucket":
                le = float(labels["le"])
                buckets[(*key, le)] = buckets.get((*key, le), 0.0) + sample.value
    return Scrape(counts, buckets)


@dataclasses.dataclass(frozen=True, slots=True)
class Window:
    tasks: int
    errors: int
    by_status: Mapping[str, int]
    by_route: Mapping[str, int]
    p50: float | None
    p95: float | None
    p99: float | None

    @property
    def error_ratio(self) -> float | None:
        return self.errors / self.tasks if self.tasks else None


def window(before: Scrape, after: Scrape) -> Window:
    """What finished between ``before`` and ``after``. A counter that went down (the daemon
    restarted between the scrapes) counts from zero, as Prometheus's ``increase`` does."""

    def delta(now: float, then: float) -> float:
        return now - then if now >= then else now

    by_status: dict[str, int] = {}
    by_route: dict[str, int] = {}
    for key, value in after.counts.items():
        n = round(delta(value, before.counts.get(key, 0.0)))
        if n:
            by_status[key[1]] = by_status.get(key[1], 0) + n
            by_route[key[0]] = by_route.get(key[0], 0) + n
    cumulative: dict[float, float] = {}
    for bucket, value in after.buckets.items():
        cumulative[bucket[2]] = cumulative.get(bucket[2], 0.0) + delta(value, before.buckets.get(bucket, 0.0))
    bounds = sorted(cumulative.items())
    tasks = sum(by_status.values())
    errors = sum(n for status, n in by_status.items() if status in ERROR_STATUSES)
    return Window(
        tasks,
        errors,
        by_status,
        by_route,
        quantile(0.5, bounds),
        quantile(0.95, bounds),
        quantile(0.99, bounds),
    )


def quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of cumulative ``(upper bound, count)`` buckets, sorted by bound, linearly
    interpolated inside the bucket it falls in; the last finite bound when it falls in +Inf; None
    when there are no observations."""
    rows = list(buckets)
    if not rows or rows[-1][1] <= 0:
        return None
    rank = q * rows[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in rows:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return rows[-1][0]


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    passed: bool
    reasons: tuple[str, ...]


def judge(result: Window, *, max_error_ratio: float, max_p95: float, min_tasks: int) -> Verdict:
    """Whether the window passes: enough tasks to say anything, errors and p95 within the limits."""
    reasons: list[str] = []
    if result.tasks < min_tasks:
        reasons.append(
            f"{result.tasks} task(s) finished in the window; at least {min_tasks} are needed to judge"
        )
    ratio = result.error_ratio
    if ratio is not None and ratio > max_error_ratio:
        reasons.append(
            f"error ratio {ratio:.3f} ({result.errors}/{result.tasks}) is over {max_error_ratio:g}"
        )
    if result.p95 is not None and result.p95 > max_p95:
        reasons.append(f"p95 {result.p95:.3f}s is over {max_p95:g}s")
    return Verdict(not reasons, tuple(reasons))


__all__ = [
    "ERROR_STATUSES",
    "MAX_EXPOSITION",
    "Scrape",
    "Verdict",
    "Window",
    "judge",
    "parse",
    "quantile",
    "window",
]
