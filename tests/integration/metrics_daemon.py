"""A real aiond that has served a known set of tasks, for the metric tests: its labelled series exist
(routes, statuses, retries, costs), and the test knows how many of each it should count.

The tasks run against the stand-in provider: successes on the local and the API routes, one that is
rate limited once and retried, and one whose local models all fail (an ERROR). They run once, or twice
with something in between (see :func:`served_daemon`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from aion.api.v1 import common_pb2, tasks_pb2
from tests.e2e.test_tasks import submit, write_config
from tests.rig import providers as behave
from tests.rig.daemon import Aiond
from tests.rig.providers import StandIn


@dataclass(frozen=True)
class Served:
    """The daemon, and what it was asked to do."""

    daemon: Aiond
    stand_in: StandIn
    tasks: int
    by_route: dict[str, int]
    by_status: dict[str, int]


@contextlib.contextmanager
def served_daemon(root: Path, between: Callable[[Aiond], None] | None = None) -> Iterator[Served]:
    """A daemon on the example config (providers on a stand-in) that has served the tasks above; with
    ``between``, it serves them twice and calls ``between(daemon)`` in the middle (so a Prometheus that
    starts scraping there sees every labelled series before it grows)."""
    with StandIn() as stand_in:
        daemon = Aiond(root, config_dir=write_config(root, stand_in)).start()
        try:
            served = _run_tasks(daemon, stand_in)
            if between is not None:
                between(daemon)
                again = _run_tasks(daemon, stand_in)
                served = Served(
                    daemon, stand_in, served.tasks + again.tasks,
                    _add(served.by_route, again.by_route), _add(served.by_status, again.by_status),
                )  # fmt: skip
            yield served
        finally:
            daemon.stop()


def _add(one: dict[str, int], other: dict[str, int]) -> dict[str, int]:
    return {key: one.get(key, 0) + other.get(key, 0) for key in one.keys() | other.keys()}


def _run_tasks(daemon: Aiond, stand_in: StandIn) -> Served:
    tasks = [submit(daemon, "summarize").task for _ in range(4)]
    tasks.append(submit(daemon, "summarize", "x" * 400, route=common_pb2.ROUTE_API).task)
    stand_in.script(behave.rate_limited(0.1), model="qwen2.5")
    tasks.append(submit(daemon, "summarize").task)
    stand_in.always(behave.status(503), model="qwen2.5")
    stand_in.always(behave.status(503), model="llama3.1")
    tasks.append(submit(daemon, "invoice_ocr").task)
    stand_in.clear()
    ok, error = tasks_pb2.TASK_STATUS_OK, tasks_pb2.TASK_STATUS_ERROR
    assert [task.status for task in tasks] == [ok] * 6 + [error], [task.status for task in tasks]
    assert len(tasks[5].attempts) == 2, "the rate-limited call was retried"
    by_route: dict[str, int] = {}
    for task in tasks:
        route = common_pb2.Route.Name(task.decision.route).removeprefix("ROUTE_").lower()
        by_route[route] = by_route.get(route, 0) + 1
    return Served(daemon, stand_in, len(tasks), by_route, {"OK": 6, "ERROR": 1})


def scrape(daemon: Aiond) -> str:
    """The daemon's /metrics, as Prometheus reads it."""
    response = httpx.get(f"http://{daemon.http_addr}/metrics", timeout=5, trust_env=False)
    response.raise_for_status()
    assert response.headers["content-type"].startswith("text/plain;"), "the Prometheus text format"
    return response.text


def samples(exposition: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition by (name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def value(exposition: str, name: str, **labels: str) -> float | None:
    """The sample ``name{labels}`` (exactly those labels), or None when the exposition has none."""
    return samples(exposition).get((name, frozenset(labels.items())))


__all__ = ["Served", "samples", "scrape", "served_daemon", "value"]
