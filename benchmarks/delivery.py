"""Event delivery to Kafka, side by side with its baselines, in one run (issue 13, "Performance").

Every figure comes from aion's own code on the test rig's Kafka broker (``tests/rig/services.py``
KafkaBroker: one KRaft node over SASL/SCRAM, topics of three partitions made by
``tests/integration/delivery.py``), on this machine's disk. The events are real task events: decisions
of the example config set by the routing engine, made into decision and lifecycle events by aiond's
own reporter (``aiond/serving/reporting.py`` TaskReporter) and encoded as the journal encodes them.

1. **Sustained delivery**: an outbox prefilled with ``--events`` task events (``outbox_add_tasks``
   in batches of 1,000, as the journal writes them), then :class:`aiond.events.kafka.KafkaRelay`
   with aiond's delivery metrics, timed from its start until every row is acknowledged by the broker
   and deleted from the outbox. Baseline in the same run: confluent-kafka producing the same events
   from memory (no outbox), with the relay's producer settings (idempotence, ``acks=all``, the same
   batching), a delivery report per message, until ``flush`` returns. The two alternate,
   ``--rounds`` each, each on fresh topics; the broker's high watermarks are checked after each.
   Then once more with the journal (:class:`aiond.events.journal.Journal` over the same outbox and
   a local log) writing ``--journal-rate`` new events a second meanwhile, until the backlog and what
   was written during it are delivered.
2. **Outbox write cost**: batches of 100 and 1,000 events through ``outbox_add_tasks`` (one
   transaction, ``synchronous=FULL``, WAL), each timed alone; per event is the batch's time over its
   size. Beside each, the same batch appended to the local event log alone
   (``aion.eventlog.EventLog.append_lines``: one write, one fsync), alternating which goes first.
   After each batch, untimed, the rows are marked delivered as the relay does, so the outbox stays
   as small as with a broker that keeps up; that mark is timed too and reported apart.
3. **Task latency**: two real aiond (``tests/rig/daemon.py`` Aiond), one with ``--kafka-config`` and
   one with the local log only, on the same config set and the same stand-in provider
   (``benchmarks/_fastprovider.py``), driven by ``benchmarks/_loadgen.py`` at ``--rate`` tasks a second
   (open loop, latency from each task's due time) for ``--seconds``, alternating, ``--task-rounds``
   each; then each one's RSS.

    python benchmarks/delivery.py [--events 200000] [--rounds 3] [--journal-rate 2000]
                                  [--rate 500] [--seconds 15] [--task-rounds 2]

Needs Java 17+ and the Kafka jars: ``python3 tests/rig/install.py kafka``. Targets (issue 13):
delivery >= 20,000 events/s from the outbox; outbox write p99 <= 100 us per event, batched; task
latency with Kafka against the local log only, reported.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiond.state.sqlite import SqliteState  # noqa: E402
from benchmarks._report import machine, median, percentile, today, write_section  # noqa: E402

DELIVERY_TARGET = 20_000.0
"""Events a second from the outbox to the broker (issue 13)."""
WRITE_TARGET_US = 100.0
"""Outbox write p99 per event, batched (issue 13)."""
OUTBOX_LIMIT = 4 << 30
"""The benchmark's outbox bound: far above what it holds, so that nothing is shed."""
PREFILL_BATCH = 1000
WRITE_SIZES = (100, 1000)
WRITE_EVENTS = 200_000
"""Events written through each batch size in part 2."""
WARM_BATCHES = 10
WARM_EVENTS = 20_000
"""Events of the untimed round each side runs first."""
DRAIN_TIMEOUT = 600.0
Row = tuple[str, str, str, str]
"""An outbox row as the journal makes it: (id, topic, key, encoded line)."""


# -- the events ------------------------------------------------------------------------------------


class _Collected:
    """Stands in for the journal under aiond's TaskReporter: keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit_soon(self, event: dict[str, Any]) -> None:
        self.events.append(event)


def task_events(count: int) -> list[dict[str, Any]]:
    """``count`` task events as aiond makes them: for each task, the decision event at admission and
    the lifecycle event at its end, over the example set's intents and a few input sizes."""
    from aion.config.validate import validate_directory
    from aion.ids import ulid
    from aion.routing import LiveState, Request, compile_table
    from aion.routing.engine import Decision
    from aiond.events.journal import Journal
    from aiond.execution.taskstore import Attempt, Status, TaskRecord
    from aiond.serving.reporting import TaskReporter
    from aiond.serving.telemetry import Metrics

    report = validate_directory(ROOT / "examples")
    if report.snapshot is None:
        raise SystemExit("the example config set does not validate")
    table = compile_table(report.snapshot)
    decisions = []
    for name in report.snapshot.intents:
        for size in (200, 2_000, 12_000):
            decision = table.decide(Request(intent=name, input_bytes=size), LiveState())
            if isinstance(decision, Decision):
                decisions.append((name, decision))
    collected = _Collected()
    reporter = TaskReporter(Metrics(), cast(Journal, collected))
    started = dt.datetime.now(dt.UTC)
    for i in range(count // 2 + count % 2):
        name, decision = decisions[i % len(decisions)]
        task = TaskRecord(task_id=ulid(), intent=name, decision=decision, policy_version=3)
        reporter.changed(task, "admitted")
        task.status = Status.OK
        task.finished_at = started + dt.timedelta(milliseconds=40 + i % 900)
        task.attempts = [Attempt(1, decision.target, Status.OK, started, latency_ms=40 + i % 900)]
        task.cost_nano = 1_000 + (i * 7919) % 5_000_000
        reporter.changed(task, task.status.name.lower())
    return collected.events[:count]


def rows_of(events: Sequence[dict[str, Any]]) -> list[Row]:
    """The outbox rows the journal makes of these events (``Journal.emit_soon``)."""
    from aion.eventlog import encode

    return [(e["id"], e["topic"], str(e.get("task_id") or ""), encode(e)) for e in events]


# -- the broker ------------------------------------------------------------------------------------


def start_broker(work: Path) -> Any:
    from tests.rig import install
    from tests.rig.services import KafkaBroker

    java, classpath = install.java_path(), install.kafka_classpath()
    if java is None or classpath is None:
        raise SystemExit("needs Java 17+ and the Kafka jars: sudo python3 tests/rig/install.py apt kafka")
    print("starting the rig's Kafka broker", file=sys.stderr)
    return KafkaBroker(work / "kafka", java, classpath).start()


@dataclasses.dataclass(frozen=True)
class Connection:
    """A kafka.yml of fresh topics on the broker, as aiond reads it."""

    path: Path
    settings: dict[str, str]
    topic_for: Callable[[str], str]


def connection(broker: Any, root: Path) -> Connection:
    from aion.kafka.config import client_settings
    from aion.kafka.config import load as load_kafka
    from aion.secrets.files import FileSecrets
    from tests.integration.delivery import delivery_config

    root.mkdir(parents=True, exist_ok=True)
    delivery = delivery_config(broker, root, root / "secrets")
    kafka = load_kafka(delivery.path)
    return Connection(delivery.path, client_settings(kafka, FileSecrets(root / "secrets")), kafka.topic_for)


def on_broker(broker: Any, topics: Sequence[str]) -> int:
    """Messages the broker holds in ``topics`` (the sum of their partitions' high watermarks)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        broker.client_config(broker.admin, **{"group.id": "aion-bench-watermarks", "log_level": 2})
    )
    try:
        metadata = consumer.list_topics(timeout=30)
        total = 0
        for name in topics:
            for partition in metadata.topics[name].partitions:
                _low, high = consumer.get_watermark_offsets(TopicPartition(name, partition), timeout=30)
                total += high
        return total
    finally:
        consumer.close()


# -- 1. sustained delivery -------------------------------------------------------------------------


class CountingObserver:
    """aiond's own delivery metrics (``reporting.DeliveryReporter``), counting the reports besides."""

    def __init__(self) -> None:
        from aiond.serving.reporting import DeliveryReporter
        from aiond.serving.telemetry import Metrics

        self._metrics = DeliveryReporter(Metrics())
        self.delivered_count = 0
        self.failures: dict[str, int] = {}

    def delivered(self, topic: str, seconds: float) -> None:
        self.delivered_count += 1
        self._metrics.delivered(topic, seconds)

    def failed(self, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1
        self._metrics.failed(reason)

    def connected(self, up: bool) -> None:
        self._metrics.connected(up)

    def levels(self, levels: Any, shed: Mapping[str, int]) -> None:
        self._metrics.levels(levels, shed)


@dataclasses.dataclass
class Delivered:
    label: str
    events: int
    seconds: float
    on_broker: int
    failures: dict[str, int] = dataclasses.field(default_factory=dict)
    journal_written: int = 0
    journal_batches: list[tuple[float, int]] = dataclasses.field(default_factory=list)
    """With the journal writing alongside: each of its outbox batches (seconds, events)."""

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def direct_round(broker: Any, root: Path, rows: Sequence[Row]) -> Delivered:
    """confluent-kafka producing the events from memory with the relay's producer settings."""
    from confluent_kafka import Producer

    from aiond.events.kafka import PRODUCER_SETTINGS

    conn = connection(broker, root)
    names = {topic: conn.topic_for(topic) for topic in {row[1] for row in rows}}
    messages = [(names[topic], line.encode().rstrip(b"\n"), key.encode()) for _id, topic, key, line in rows]
    acked = 0
    failures: dict[str, int] = {}

    def report(err: Any, _msg: Any) -> None:
        nonlocal acked
        if err is None:
            acked += 1
        else:
            failures[err.name()] = failures.get(err.name(), 0) + 1

    started = time.perf_counter()
    producer = Producer({**conn.settings, **PRODUCER_SETTINGS})
    for i, (topic, value, key) in enumerate(messages):
        while True:
            try:
                producer.produce(topic, value, key=key, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.01)  # the queue is full: serve reports, then go on
        if i % 1000 == 999:
            producer.poll(0)
    left = producer.flush(DRAIN_TIMEOUT)
    elapsed = time.perf_counter() - started
    if left or acked != len(messages):
        raise SystemExit(f"direct: {acked:,} of {len(messages):,} acknowledged, {left} left, {failures}")
    return Delivered("direct", len(messages), elapsed, on_broker(broker, list(names.values())), failures)


class _TimedOutbox(SqliteState):
    """The state backend, timing each batch the journal writes to the outbox, with its size."""

    def __init__(self, path: Path, *, initialise: bool = False) -> None:
        super().__init__(path, initialise=initialise)
        self.batches: list[tuple[float, int]] = []

    def outbox_add_tasks(self, rows: Sequence[Row]) -> dict[str, int]:
        began = time.perf_counter()
        shed = super().outbox_add_tasks(rows)
        self.batches.append((time.perf_counter() - began, len(rows)))
        return shed


def prefilled(root: Path, rows: Sequence[Row]) -> _TimedOutbox:
    state = cast(_TimedOutbox, _TimedOutbox.open(root / "state"))
    state.configure_outbox(kafka=True, max_bytes=OUTBOX_LIMIT)
    for start in range(0, len(rows), PREFILL_BATCH):
        state.outbox_add_tasks(rows[start : start + PREFILL_BATCH])
    state.batches = []
    return state


def _drained(state: Any, observer: CountingObserver, expected: int) -> bool:
    if observer.delivered_count < expected:
        return False
    levels = state.outbox_levels()
    return bool(levels.audit + levels.task == 0)


def _give_up(label: str, observer: CountingObserver, expected: int) -> None:
    raise SystemExit(
        f"{label}: {observer.delivered_count:,} of {expected:,} delivered within {DRAIN_TIMEOUT:g} s "
        f"(errors: {observer.failures})"
    )


def relay_round(broker: Any, root: Path, rows: Sequence[Row]) -> Delivered:
    """KafkaRelay over an outbox prefilled with ``rows``, until it is empty."""
    from aiond.events.kafka import KafkaRelay

    conn = connection(broker, root)
    state = prefilled(root, rows)
    observer = CountingObserver()
    relay = KafkaRelay(state, conn.topic_for, conn.settings, observer=observer)
    started = time.perf_counter()
    relay.start()
    try:
        deadline = started + DRAIN_TIMEOUT
        while not _drained(state, observer, len(rows)):
            if time.perf_counter() > deadline:
                _give_up("relay", observer, len(rows))
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
    finally:
        relay.close()
        state.close()
    topics = sorted({conn.topic_for(row[1]) for row in rows})
    return Delivered("relay", len(rows), elapsed, on_broker(broker, topics), observer.failures)


def relay_with_journal(
    broker: Any, root: Path, rows: Sequence[Row], fresh: Sequence[dict[str, Any]], rate: float
) -> Delivered:
    """The relay over a prefilled outbox while the journal writes ``rate`` new events a second into
    it (and the local log), until the backlog is delivered; then until what it wrote is too."""
    from aiond.events.journal import KEEP_BYTES, SEGMENT_BYTES, Journal, LocalSink
    from aiond.events.kafka import KafkaRelay

    conn = connection(broker, root)
    state = prefilled(root, rows)
    observer = CountingObserver()
    relay = KafkaRelay(state, conn.topic_for, conn.settings, observer=observer)

    def on_outbox(_seconds: float) -> None:
        relay.wake()

    async def run() -> tuple[int, float]:
        journal = Journal(
            LocalSink(root / "state", segment_bytes=SEGMENT_BYTES, keep_bytes=KEEP_BYTES),
            outbox=state, kafka=True, on_outbox=on_outbox,
        )  # fmt: skip
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        relay.start()
        written, begun = 0, loop.time()
        while observer.delivered_count < len(rows) and written < len(fresh):
            due = min(len(fresh), int((loop.time() - begun) * rate))
            while written < due:
                journal.emit_soon(fresh[written])
                written += 1
            await asyncio.sleep(0.005)
            if time.perf_counter() - started > DRAIN_TIMEOUT:
                _give_up("relay with the journal", observer, len(rows))
        await journal.flush()
        expected = len(rows) + written
        while not await asyncio.to_thread(_drained, state, observer, expected):
            if time.perf_counter() - started > DRAIN_TIMEOUT:
                _give_up("relay with the journal", observer, expected)
            await asyncio.sleep(0.005)
        return written, time.perf_counter() - started

    try:
        written, elapsed = asyncio.run(run())
    finally:
        relay.close()
        state.close()
    topics = sorted({conn.topic_for(row[1]) for row in rows})
    return Delivered(
        "relay + journal", len(rows) + written, elapsed, on_broker(broker, topics), observer.failures,
        written, state.batches,
    )  # fmt: skip


# -- 2. outbox write cost --------------------------------------------------------------------------


@dataclasses.dataclass
class Writes:
    size: int
    outbox: list[float]
    log: list[float]
    marked: list[float]
    """Marking the batch delivered (and so deleting it), as the relay does after its reports."""


def write_costs(root: Path, rows: Sequence[Row]) -> list[Writes]:
    from aion.eventlog import EventLog
    from aiond.events.journal import KEEP_BYTES, SEGMENT_BYTES
    from aiond.state.sqlite import SqliteState

    state = SqliteState.open(root / "state")
    state.configure_outbox(kafka=True, max_bytes=OUTBOX_LIMIT)
    log = EventLog(root / "state" / "events.jsonl", segment_bytes=SEGMENT_BYTES, keep_bytes=KEEP_BYTES)
    cursor = 0
    results = []
    try:
        for size in WRITE_SIZES:
            figures = Writes(size, [], [], [])
            count = WRITE_EVENTS // size
            for i in range(-WARM_BATCHES, count):
                start = (i % count) * size % max(1, len(rows) - size)
                batch = rows[start : start + size]
                lines = "".join(row[3] for row in batch).encode()
                for which in (0, 1) if i % 2 else (1, 0):
                    began = time.perf_counter()
                    if which == 0:
                        state.outbox_add_tasks(batch)
                    else:
                        log.append_lines(lines)
                    took = time.perf_counter() - began
                    if i >= 0:
                        (figures.outbox if which == 0 else figures.log).append(took)
                found = state.outbox_undelivered(after=cursor, limit=size)
                began = time.perf_counter()
                state.outbox_delivered([row.seq for row in found])
                if i >= 0:
                    figures.marked.append(time.perf_counter() - began)
                cursor = found[-1].seq
            results.append(figures)
            print(
                f"writes of {size}: outbox p99 {percentile(figures.outbox, 99) * 1e3:.2f} ms, "
                f"log p99 {percentile(figures.log, 99) * 1e3:.2f} ms",
                file=sys.stderr,
            )
    finally:
        state.close()
    return results


# -- 3. task latency -------------------------------------------------------------------------------


@dataclasses.dataclass
class Tasks:
    label: str
    latencies_ms: list[float]
    failures: int
    sent: int
    rss_mib: float
    peak_rss_mib: float
    delivered: float = 0.0
    """With Kafka: events aiond's metrics count as delivered."""
    task_events_on_broker: int = 0


def _status_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no {field} for process {pid}")


def _metric(http_addr: str, name: str) -> float:
    text = httpx.get(f"http://{http_addr}/metrics", timeout=10, trust_env=False).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((f"{name} ", f"{name}{{"))
    )


def task_config(work: Path, provider_url: str) -> Path:
    """The example set with its local models at the stand-in, and room for the load (as
    ``benchmarks/tasks.py`` configures it)."""
    config = work / "config"
    shutil.copytree(ROOT / "examples", config)
    models = yaml.safe_load((config / "models.yml").read_text())
    models["providers"] = {
        name: {"base_url": provider_url, "locality": "local", "timeout_ms": 10_000}
        for name in ("ollama", "vllm")
    }
    (config / "models.yml").write_text(yaml.safe_dump(models, sort_keys=False))
    policies = yaml.safe_load((config / "policies.yml").read_text())
    policies["limits"] = {"concurrency": {"local": 512}, "queue_depth": {"local": 4096}}
    (config / "policies.yml").write_text(yaml.safe_dump(policies, sort_keys=False))
    return config


def task_latency(broker: Any, work: Path, args: argparse.Namespace) -> list[Tasks]:
    from aion.envelopes import DECISIONS_TOPIC, LIFECYCLE_TOPIC
    from benchmarks.tasks import loadgen
    from tests.rig.daemon import Aiond
    from tests.rig.procs import poll

    work.mkdir(parents=True)
    provider = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "_fastprovider.py")], stdout=subprocess.PIPE, text=True
    )
    daemons: dict[str, Aiond] = {}
    try:
        assert provider.stdout is not None
        config = task_config(work, provider.stdout.readline().strip())
        conn = connection(broker, work / "kafka")
        quiet = ["--log-level", "warning"]
        daemons["local log only"] = Aiond(work / "local", config_dir=config, extra_args=quiet)
        daemons["Kafka delivery"] = Aiond(
            work / "kafka", config_dir=config, extra_args=[*quiet, "--kafka-config", str(conn.path)]
        )
        for daemon in daemons.values():
            daemon.start(timeout=60)
        runs: dict[str, Tasks] = {label: Tasks(label, [], 0, 0, 0.0, 0.0) for label in daemons}
        for round_ in range(args.task_rounds):
            for label in list(daemons)[:: 1 if round_ % 2 == 0 else -1]:
                daemon = daemons[label]
                run = loadgen(
                    "open", str(args.rate), str(args.seconds), "aiond", daemon.grpc_addr,
                    daemon.tokens["operator"],
                )  # fmt: skip
                runs[label].latencies_ms += run["latencies_ms"]
                runs[label].failures += run["failures"]
                runs[label].sent += run["sent"]
                print(f"{label}: p50 {percentile(run['latencies_ms'], 50):.2f} ms", file=sys.stderr)
        for label, daemon in daemons.items():
            runs[label].rss_mib = _status_mib(daemon.process.pid, "VmRSS")
            runs[label].peak_rss_mib = _status_mib(daemon.process.pid, "VmHWM")
        kafka = daemons["Kafka delivery"]
        poll(
            lambda: _metric(kafka.http_addr, "aion_outbox_events") == 0 or None,
            timeout=120,
            what="the Kafka aiond's outbox to empty",
        )
        kafka_run = runs["Kafka delivery"]
        kafka_run.delivered = _metric(kafka.http_addr, "aion_kafka_delivered_total")
        kafka_run.task_events_on_broker = on_broker(
            broker, [conn.topic_for(DECISIONS_TOPIC), conn.topic_for(LIFECYCLE_TOPIC)]
        )
    finally:
        for daemon in daemons.values():
            daemon.stop()
        provider.terminate()
        provider.wait(timeout=30)
    return list(runs.values())


# -- the run and its report ------------------------------------------------------------------------


@dataclasses.dataclass
class Figures:
    event_bytes: float
    direct: list[Delivered]
    relay: list[Delivered]
    alongside: Delivered | None
    writes: list[Writes]
    tasks: list[Tasks]
    load: tuple[float, float]
    busiest: str
    """The busiest other process when the run started (ps), to show the machine was quiet."""


def busiest_process() -> str:
    result = subprocess.run(
        ["ps", "-eo", "pcpu,comm", "--sort=-pcpu", "--no-headers"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    for line in result.stdout.splitlines():
        cpu, _, command = line.strip().partition(" ")
        if command.strip() not in ("ps", "python", "python3"):
            return f"{command.strip()} at {cpu}% CPU"
    return "none"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="events in the prefilled outbox")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of the relay and of the direct producer"
    )
    parser.add_argument(
        "--journal-rate", type=float, default=2000, help="events/s the journal writes during delivery"
    )
    parser.add_argument("--rate", type=float, default=500, help="open-loop tasks/s through each aiond")
    parser.add_argument("--seconds", type=float, default=15, help="length of each open-loop run")
    parser.add_argument("--task-rounds", type=int, default=2, help="open-loop runs of each aiond")
    args = parser.parse_args()
    for name, low, high in (("events", 10_000, 5_000_000), ("rounds", 1, 20), ("task_rounds", 1, 10)):
        if not low <= getattr(args, name) <= high:
            parser.error(f"--{name.replace('_', '-')} must be from {low:,} to {high:,}")
    if not 0 <= args.journal_rate <= 100_000 or not 1 <= args.rate <= 5_000 or not 1 <= args.seconds <= 600:
        parser.error("--journal-rate is 0 to 100000, --rate 1 to 5000, --seconds 1 to 600")

    load_before, busiest = os.getloadavg()[0], busiest_process()
    print(f"making {args.events:,} task events", file=sys.stderr)
    events = task_events(args.events * 2 if args.journal_rate else args.events)
    rows = rows_of(events[: args.events])
    event_bytes = sum(len(row[3]) for row in rows) / len(rows)
    # The relay runs in this process, which holds every event: kept out of the collector's sight,
    # they cost its collections nothing, as they would in aiond (which holds none of them).
    gc.collect()
    gc.freeze()
    with tempfile.TemporaryDirectory(prefix="aion-bench-delivery-") as tmp:
        work = Path(tmp)
        writes = write_costs(work / "writes", rows)
        broker = start_broker(work)
        try:
            # The broker's first clients wait for its coordinators to load and its code to warm up.
            for side in (direct_round, relay_round):
                side(broker, work / f"warm-{side.__name__}", rows[:WARM_EVENTS])
            direct: list[Delivered] = []
            relay: list[Delivered] = []
            for i in range(args.rounds):
                for side in (direct_round, relay_round)[:: 1 if i % 2 == 0 else -1]:
                    done = side(broker, work / f"{side.__name__}-{i}", rows)
                    (direct if side is direct_round else relay).append(done)
                    print(f"{done.label}: {done.rate:,.0f} events/s", file=sys.stderr)
            alongside = None
            if args.journal_rate:
                alongside = relay_with_journal(
                    broker, work / "alongside", rows, events[args.events :], args.journal_rate
                )
                print(f"{alongside.label}: {alongside.rate:,.0f} events/s", file=sys.stderr)
            tasks = task_latency(broker, work / "tasks", args)
        finally:
            broker.stop()
    figures = Figures(
        event_bytes, direct, relay, alongside, writes, tasks, (load_before, os.getloadavg()[0]), busiest
    )
    body = report(args, figures)
    write_section("delivery", body)
    print(body)
    return 0


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**MISSED**"


def _rates(runs: Sequence[Delivered]) -> str:
    return ", ".join(f"{r.rate:,.0f}" for r in runs)


def report(args: argparse.Namespace, f: Figures) -> str:
    relay_rate = median([r.rate for r in f.relay])
    direct_rate = median([r.rate for r in f.direct])
    checked = all(r.on_broker == r.events for r in [*f.relay, *f.direct])
    delivery_rows = [
        "| | events/s (median of rounds) | each round | seconds (median) | on the broker |",
        "|---|---|---|---|---|",
        f"| confluent-kafka, from memory (no outbox) | {direct_rate:,.0f} | {_rates(f.direct)} | "
        f"{median([r.seconds for r in f.direct]):.2f} | {f.direct[0].on_broker:,} a round |",
        f"| `KafkaRelay` from the outbox, until it is empty | {relay_rate:,.0f} | {_rates(f.relay)} | "
        f"{median([r.seconds for r in f.relay]):.2f} | {f.relay[0].on_broker:,} a round |",
    ]
    alongside = ""
    if f.alongside is not None:
        a = f.alongside
        delivery_rows.append(
            f"| `KafkaRelay` while the journal writes {args.journal_rate:,.0f} events/s | {a.rate:,.0f} | | "
            f"{a.seconds:.2f} | {a.on_broker:,} |"
        )
        seconds = [t for t, _n in a.journal_batches]
        per_event = [t / n for t, n in a.journal_batches if n]
        mean_batch = sum(n for _t, n in a.journal_batches) / max(1, len(a.journal_batches))
        busy99 = percentile(per_event, 99) * 1e6
        alongside = (
            f"\nWhile the relay delivered, the journal wrote {a.journal_written:,} new events in "
            f"{len(a.journal_batches):,} outbox batches ({mean_batch:,.0f} events on average, one every "
            f"50 ms): a batch took p50 {percentile(seconds, 50) * 1e3:.2f} ms and p99 "
            f"{percentile(seconds, 99) * 1e3:.2f} ms, per event p50 {percentile(per_event, 50) * 1e6:.1f} us "
            f"and p99 {busy99:.1f} us ({'within' if busy99 <= WRITE_TARGET_US else 'over'} the "
            f"{WRITE_TARGET_US:.0f} us of the write target below), as it waits for the relay's "
            "transactions that delete what the broker acknowledged.\n"
        )
    failures = {k: v for r in [*f.relay, *f.direct] for k, v in r.failures.items()}

    def us(values: Sequence[float], size: int, q: float) -> float:
        return percentile(values, q) / size * 1e6

    write_rows = [
        "| batch | outbox per event p50 / p99 us | outbox batch p50 / p99 ms | event log per event p50 / p99 us | "
        "event log batch p50 / p99 ms | outbox / log (p50) | marking delivered per event p50 / p99 us |",
        "|---|---|---|---|---|---|---|",
    ]
    for w in f.writes:
        write_rows.append(
            f"| {w.size:,} events | {us(w.outbox, w.size, 50):.1f} / {us(w.outbox, w.size, 99):.1f} | "
            f"{percentile(w.outbox, 50) * 1e3:.2f} / {percentile(w.outbox, 99) * 1e3:.2f} | "
            f"{us(w.log, w.size, 50):.1f} / {us(w.log, w.size, 99):.1f} | "
            f"{percentile(w.log, 50) * 1e3:.2f} / {percentile(w.log, 99) * 1e3:.2f} | "
            f"{percentile(w.outbox, 50) / percentile(w.log, 50):.2f}x | "
            f"{us(w.marked, w.size, 50):.1f} / {us(w.marked, w.size, 99):.1f} |"
        )
    worst = max(f.writes, key=lambda w: us(w.outbox, w.size, 99))
    write_ok = all(us(w.outbox, w.size, 99) <= WRITE_TARGET_US for w in f.writes)

    local, kafka = f.tasks
    task_rows = [
        "| aiond | tasks answered | failed | p50 | p99 | RSS after | peak RSS |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in f.tasks:
        task_rows.append(
            f"| {t.label} | {len(t.latencies_ms):,} of {t.sent:,} | {t.failures} | "
            f"{percentile(t.latencies_ms, 50):.2f} ms | {percentile(t.latencies_ms, 99):.2f} ms | "
            f"{t.rss_mib:.1f} MiB | {t.peak_rss_mib:.1f} MiB |"
        )
    d50 = percentile(kafka.latencies_ms, 50) - percentile(local.latencies_ms, 50)
    d99 = percentile(kafka.latencies_ms, 99) - percentile(local.latencies_ms, 99)
    task_rows.append(
        f"| difference (Kafka - local) | | | {d50:+.2f} ms | {d99:+.2f} ms | "
        f"{kafka.rss_mib - local.rss_mib:+.1f} MiB | {kafka.peak_rss_mib - local.peak_rss_mib:+.1f} MiB |"
    )
    answered = len(kafka.latencies_ms) + 20 * args.task_rounds  # the load generator warms up with 20
    return f"""
## Event delivery (`benchmarks/delivery.py`)

{today()}, {machine()}. Load average {f.load[0]:.2f} when the run started, {f.load[1]:.2f} when it
ended; the busiest other process at the start: {f.busiest}. The rig's Kafka broker (one KRaft node,
SASL/SCRAM on loopback, 512 MiB heap) on this machine; topics of three partitions, fresh for each
round. Events: decision and lifecycle events of the example set's intents, made by aiond's
TaskReporter, {f.event_bytes:,.0f} bytes on average. Rerun: `.nox/tests/bin/python benchmarks/delivery.py`
(or `nox -s bench`).

**Sustained delivery**, {args.events:,} events each round, {args.rounds} rounds a side, alternating.
The relay is timed from its start until every row is acknowledged and deleted from the outbox; the
direct producer from its creation until `flush` returns; both with the relay's producer settings
(`enable.idempotence`, `acks=all`, `linger.ms` 10, lz4) and a delivery report per event.

{chr(10).join(delivery_rows)}
{alongside}
Relay / direct: **{relay_rate / direct_rate:.2f}x**. Target >= {DELIVERY_TARGET:,.0f} events/s from the
outbox: {verdict(relay_rate >= DELIVERY_TARGET)} ({relay_rate:,.0f}). The broker's high watermarks
{"match the events of every round" if checked else "do NOT match the events of every round"}; delivery
errors: {failures or "none"}.

**Outbox write cost**: {WRITE_EVENTS:,} events a batch size, each batch one `outbox_add_tasks`
transaction (WAL, `synchronous=FULL`, on this machine's disk), beside the same lines appended to the
event log alone (`EventLog.append_lines`, one write and one fsync); {WARM_BATCHES} batches of warm-up
each. Per event is the batch's time over its size.

{chr(10).join(write_rows)}

Target outbox write p99 <= {WRITE_TARGET_US:.0f} us per event, batched: {verdict(write_ok)} (worst:
batches of {worst.size:,}, {us(worst.outbox, worst.size, 99):.1f} us).

**Task latency**, {args.rate:g} tasks/s for {args.seconds:g} s (open loop), {args.task_rounds} runs
of each aiond, alternating; both on the same config set and stand-in provider, route local.

{chr(10).join(task_rows)}

The Kafka aiond's metrics count {kafka.delivered:,.0f} events delivered, and the broker holds
{kafka.task_events_on_broker:,} task events for its {answered:,} tasks (two a task); its outbox was
empty at the end.
"""


if __name__ == "__main__":
    raise SystemExit(main())
