"""The rig's real Prometheus scrapes an aiond that has served tasks; the values read back through its
query API are the ones the tasks should have produced, and every query of the shipped dashboards is
valid PromQL that Prometheus evaluates over that data."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from aion.dashboards import panels
from tests.integration.metrics_daemon import Served, served_daemon
from tests.rig.daemon import Aiond
from tests.rig.dashboards import instantiate, shipped
from tests.rig.procs import poll
from tests.rig.services import Prometheus

# Panels that must show data once the daemon has served tasks (the others may be empty: no Kafka,
# no module calls, no refusals).
SHOW_DATA = {
    "router-overview.json": {"Tasks admitted", "Cost per task", "Route distribution", "Route share",
                             "Task latency by route", "Decision time", "Active policy version"},
    "task-health.json": {"Tasks finished by status", "Success ratio", "Retries by provider",
                         "Failure heatmap", "Failures by route and status", "Refused at admission"},
    "resource-utilization.json": {"CPU", "Memory", "Open files", "Uptime", "Ready", "Outbox depth",
                                  "Kafka connected", "gRPC handling time"},
}  # fmt: skip


@dataclass(frozen=True)
class Scraped:
    """The served daemon, and a moment at which Prometheus had scraped all it did."""

    served: Served
    at: float

    @property
    def instance(self) -> str:
        return f'instance="{self.served.daemon.http_addr}"'


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory, prometheus: Prometheus) -> Iterator[Scraped]:
    """Prometheus scrapes the daemon from between its two rounds of tasks until after the second."""

    def scrape_from_here(daemon: Aiond) -> None:
        prometheus.set_targets([daemon.http_addr], labels={"job": "aiond"})
        prometheus.wait_for(f'aion_route_decisions_total{{instance="{daemon.http_addr}"}}')

    root = tmp_path_factory.mktemp("metrics-prometheus")
    with served_daemon(root, between=scrape_from_here) as served:
        counted = f'sum(aion_route_decisions_total{{instance="{served.daemon.http_addr}"}}) == {served.tasks}'
        poll(
            lambda: prometheus.query(counted) or None,
            timeout=30, what="a scrape after the last task",
        )  # fmt: skip
        yield Scraped(served, time.time())
        prometheus.set_targets([])


def query(prometheus: Prometheus, expr: str, at: float) -> httpx.Response:
    return httpx.get(
        f"{prometheus.url}/api/v1/query",
        params={"query": expr, "time": f"{at:.3f}"},
        timeout=10,
        trust_env=False,
    )


def rows(prometheus: Prometheus, expr: str, at: float) -> list[dict[str, Any]]:
    response = query(prometheus, expr, at)
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["data"]["result"]
    return result


def scalar(prometheus: Prometheus, expr: str, at: float) -> float | None:
    found = rows(prometheus, expr, at)
    return float(found[0]["value"][1]) if found else None


def test_prometheus_reads_back_what_the_tasks_did(prometheus: Prometheus, scraped: Scraped) -> None:
    served, at, on = scraped.served, scraped.at, scraped.instance

    def by(label: str, expr: str) -> dict[str, float]:
        return {row["metric"][label]: float(row["value"][1]) for row in rows(prometheus, expr, at)}

    assert scalar(prometheus, f"sum(aion_route_decisions_total{{{on}}})", at) == served.tasks
    assert by("route", f"sum by (route) (aion_route_decisions_total{{{on}}})") == served.by_route
    assert by("status", f"sum by (status) (aion_task_duration_seconds_count{{{on}}})") == served.by_status
    submitted = f'sum(aion_grpc_requests_total{{{on}, method="SubmitTask", code="OK"}})'
    assert scalar(prometheus, submitted, at) == served.tasks
    assert scalar(prometheus, f'aion_task_retries_total{{{on}, provider="ollama"}}', at) == 2
    # The histograms work as histograms: Prometheus finds a median inside the buckets.
    median = scalar(
        prometheus, f"histogram_quantile(0.5, sum by (le) (aion_task_duration_seconds_bucket{{{on}}}))", at
    )
    assert median is not None
    assert 0 < median < 60
    spent = scalar(prometheus, f"aion_budget_spent_usd_total{{{on}}}", at)
    assert spent is not None
    assert spent > 0
    memory = scalar(prometheus, f"process_resident_memory_bytes{{{on}}}", at)
    assert memory is not None
    assert memory > 1_000_000
    assert scalar(prometheus, f"aion_daemon_ready{{{on}}}", at) == 1
    assert scalar(prometheus, f"aion_kafka_connected{{{on}}}", at) == 0


@pytest.mark.parametrize("name", sorted(SHOW_DATA))
def test_prometheus_evaluates_every_query_of_a_dashboard(
    prometheus: Prometheus, scraped: Scraped, name: str
) -> None:
    doc = shipped()[name]
    titles = {panel["id"]: panel["title"] for panel in panels(doc)}
    assert SHOW_DATA[name] <= set(titles.values()), f"{name} lacks {SHOW_DATA[name] - set(titles.values())}"
    refused: list[str] = []
    with_data: set[str] = set()
    for panel in panels(doc):
        for target in panel.get("targets", []):
            # The rate windows cover both rounds of tasks; the time range, the whole test.
            expr = instantiate(target["expr"], interval="2m", time_range="10m")
            response = query(prometheus, expr, scraped.at)
            body = response.json()
            if response.status_code != 200 or body.get("status") != "success":
                refused.append(f"panel {panel['id']} {target['refId']}: {body.get('error')} in {expr}")
            elif any(not math.isnan(float(row["value"][1])) for row in body["data"]["result"]):
                with_data.add(panel["title"])
    assert refused == []
    assert sorted(SHOW_DATA[name] - with_data) == [], "panels with no data after the tasks"
