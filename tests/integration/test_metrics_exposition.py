"""aiond's /metrics on a daemon that has served tasks: it passes ``promtool check metrics``, every gRPC
call is counted once with the status its client saw, the event delivery families are there (at 0)
without Kafka, and the dashboards query only names this scrape offers."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aion.api.v1 import admin_pb2, admin_pb2_grpc, events_pb2, events_pb2_grpc, tasks_pb2, tasks_pb2_grpc
from aion.dashboards import unknown_metrics
from aion.envelopes import AUDIT_TOPIC, DECISIONS_TOPIC, LIFECYCLE_TOPIC
from aion.promql import exported_names
from tests.integration.metrics_daemon import Served, samples, scrape, served_daemon, value
from tests.rig import install
from tests.rig.dashboards import NAMES, shipped
from tests.rig.procs import poll

ADMIN = "aion.v1.AdminService"
EVENTS = "aion.v1.EventService"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with served_daemon(tmp_path_factory.mktemp("metrics-exposition")) as done:
        yield done


def test_promtool_passes_on_a_daemon_that_has_served_tasks(served: Served) -> None:
    promtool = install.command_path("promtool")
    assert promtool is not None, (
        "promtool ships with the prometheus package (python3 tests/rig/install.py apt)"
    )
    text = scrape(served.daemon)
    # The labelled series exist, so promtool sees them and not only the families' HELP and TYPE lines.
    assert _summed(text, "aion_route_decisions_total", "route") == served.by_route
    finished = _summed(text, "aion_task_duration_seconds_count", "status")
    assert {status: n for status, n in finished.items() if n} == served.by_status
    assert value(text, "aion_task_retries_total", provider="ollama") == 1.0
    spent = value(text, "aion_budget_spent_usd_total")
    assert spent is not None
    assert spent > 0, "the API task cost something"
    result = subprocess.run(
        [str(promtool), "check", "metrics"], input=text.encode(), capture_output=True, check=False, timeout=30
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert result.stdout.decode() + result.stderr.decode() == "", "promtool has no lint warnings either"


def test_every_grpc_call_is_counted_once_with_the_status_its_client_saw(served: Served) -> None:
    daemon = served.daemon
    before = scrape(daemon)
    seen: list[tuple[str, str, grpc.StatusCode]] = []

    def expect(service: str, method: str, call: Callable[[], object]) -> None:
        try:
            call()
            code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            code = error.code()
        seen.append((service, method, code))

    plain = grpc.insecure_channel(daemon.grpc_addr, options=[("grpc.enable_http_proxy", 0)])
    raw = {"request_serializer": lambda b: b, "response_deserializer": lambda b: b}
    with daemon.channel("viewer") as viewer, plain:
        admin = admin_pb2_grpc.AdminServiceStub(viewer)
        tail = events_pb2_grpc.EventServiceStub(viewer)
        expect(ADMIN, "WhoAmI", lambda: admin.WhoAmI(admin_pb2.WhoAmIRequest()))
        expect(ADMIN, "SetBreakerState", lambda: admin.SetBreakerState(admin_pb2.SetBreakerStateRequest()))
        expect(
            ADMIN, "WhoAmI", lambda: admin_pb2_grpc.AdminServiceStub(plain).WhoAmI(admin_pb2.WhoAmIRequest())
        )
        undecodable = plain.unary_unary(f"/{ADMIN}/WhoAmI", **raw)
        expect(ADMIN, "WhoAmI", lambda: undecodable(b"\xff\xff\xff", metadata=daemon.metadata("viewer")))
        expect(
            "aion.v1.TaskService", "GetTask",
            lambda: tasks_pb2_grpc.TaskServiceStub(viewer).GetTask(tasks_pb2.GetTaskRequest(task_id="nope")),
        )  # fmt: skip
        expect(EVENTS, "TailEvents", lambda: list(tail.TailEvents(events_pb2.TailEventsRequest(limit=3))))
        # A stream that follows forever: once past its deadline, once cancelled by the client.
        expect(
            EVENTS,
            "TailEvents",
            lambda: list(tail.TailEvents(events_pb2.TailEventsRequest(follow=True), timeout=0.5)),
        )
        for _ in range(3):  # grpc ends a cancelled stream in more than one way; each must count
            following = tail.TailEvents(events_pb2.TailEventsRequest(follow=True))
            next(following)  # the stream is being served
            following.cancel()
            seen.append((EVENTS, "TailEvents", grpc.StatusCode.CANCELLED))
        # Methods nobody serves, unary and streaming, under one bounded label set.
        expect("unknown", "unknown", lambda: plain.unary_unary("/aion.v1.Nope/Missing", **raw)(b""))
        expect("unknown", "unknown", lambda: list(plain.unary_stream("/aion.v1.Nope/Streaming", **raw)(b"")))
        watch = health_pb2_grpc.HealthStub(plain).Watch(health_pb2.HealthCheckRequest())
        next(watch)
        watch.cancel()
        seen.append(("grpc.health.v1.Health", "Watch", grpc.StatusCode.CANCELLED))

    assert [code for *_, code in seen] == [
        grpc.StatusCode.OK, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.OK,
        grpc.StatusCode.DEADLINE_EXCEEDED, *[grpc.StatusCode.CANCELLED] * 3, grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.CANCELLED,
    ]  # fmt: skip
    wanted: dict[tuple[str, str, str], float] = {}
    for service, method, code in seen:
        wanted[(service, method, code.name)] = wanted.get((service, method, code.name), 0) + 1

    def counted() -> dict[tuple[str, str, str], float] | None:
        # A cancelled call ends on the server a moment after the client has moved on.
        after = scrape(daemon)
        if value(after, "aion_grpc_requests_in_flight") != 0:
            return None
        deltas = {
            key: (value(after, "aion_grpc_requests_total", service=key[0], method=key[1], code=key[2]) or 0)
            - (value(before, "aion_grpc_requests_total", service=key[0], method=key[1], code=key[2]) or 0)
            for key in wanted
        }
        return deltas if deltas == wanted else None

    try:
        poll(counted, timeout=10, what="every call counted")
    except Exception:
        pytest.fail(f"wanted {wanted}, counted {_grpc_counts(before, scrape(daemon))}")
    after = scrape(daemon)
    for service, method, _ in wanted:  # each counted call has its duration observed too
        observed = (
            value(after, "aion_grpc_request_duration_seconds_count", service=service, method=method) or 0
        ) - (value(before, "aion_grpc_request_duration_seconds_count", service=service, method=method) or 0)
        assert observed == sum(n for (s, m, _), n in wanted.items() if (s, m) == (service, method))


def _summed(exposition: str, name: str, label: str) -> dict[str, int]:
    """The samples of ``name`` summed by ``label``."""
    sums: dict[str, int] = {}
    for (sample, labels), found in samples(exposition).items():
        if sample == name:
            key = dict(labels)[label]
            sums[key] = sums.get(key, 0) + int(found)
    return sums


def _grpc_counts(before: str, after: str) -> dict[tuple[str, ...], float]:
    counts: dict[tuple[str, ...], float] = {}
    old = samples(before)
    for (name, labels), now in samples(after).items():
        if name == "aion_grpc_requests_total" and now != old.get((name, labels), 0):
            found = dict(labels)
            counts[(found["service"], found["method"], found["code"])] = now - old.get((name, labels), 0)
    return counts


def test_the_event_delivery_families_are_exported_without_kafka(served: Served) -> None:
    text = scrape(served.daemon)
    found = samples(text)
    # The outbox exists on every daemon (audit events are written with the state they record).
    outbox = [
        ("aion_outbox_events", (("kind", "audit"),)),
        ("aion_outbox_events", (("kind", "task"),)),
        ("aion_outbox_bytes", ()),
        ("aion_outbox_oldest_event_age_seconds", ()),
        ("aion_outbox_write_duration_seconds_count", ()),
    ]
    assert [key for key in outbox if found.get((key[0], frozenset(key[1]))) is None] == []
    limit = value(text, "aion_outbox_limit_bytes")
    assert limit is not None
    assert limit > 0
    # Nothing goes to Kafka, and the series say so with 0 rather than being absent.
    kafka = {
        ("aion_kafka_connected", ()),
        ("aion_kafka_delivery_seconds_count", ()),
        *(("aion_events_shed_total", (("topic", t),)) for t in (DECISIONS_TOPIC, LIFECYCLE_TOPIC)),
        *(
            ("aion_kafka_delivered_total", (("topic", t),))
            for t in (AUDIT_TOPIC, DECISIONS_TOPIC, LIFECYCLE_TOPIC)
        ),
    }
    assert {key: found.get((key[0], frozenset(key[1]))) for key in kafka} == dict.fromkeys(kafka, 0.0)
    assert "# TYPE aion_kafka_produce_errors_total counter" in text
    assert "# TYPE aion_outbox_write_duration_seconds histogram" in text
    assert 'aion_outbox_write_duration_seconds_bucket{le="2e-05"}' in text
    assert 'aion_kafka_delivery_seconds_bucket{le="60.0"} 0.0' in text


@pytest.mark.parametrize("name", NAMES)
def test_a_dashboard_queries_only_metrics_the_daemon_exports(served: Served, name: str) -> None:
    exported = exported_names(scrape(served.daemon))
    assert unknown_metrics(shipped()[name], exported) == []


def test_process_metrics_are_exported(served: Served) -> None:
    # The Resource Utilization dashboard reads these; they come from prometheus_client on Linux.
    text = scrape(served.daemon)
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"):
        found = value(text, name)
        assert found is not None, name
        assert found > 0, name
    started = value(text, "process_start_time_seconds")
    assert started is not None
    assert started > 0
