"""``aionctl audit verify`` and ``aionctl events tail --from kafka`` against the rig's real Kafka
broker and a real aiond delivering to it (``--kafka-config``): the runbook's "apply a policy, then
confirm the audit event in Kafka"; an audit event in aiond's trail that never reached Kafka named,
exit 1; the topics read back as the local tail prints them, and followed until Ctrl-C; each failure
with its exit code and no traceback."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from aion.envelopes import AUDIT_TOPIC
from tests.integration.delivery import Delivery, delivery_config
from tests.integration.supply import conforms
from tests.rig.daemon import EXAMPLES, REPO, Aiond, aionctl, clean_env, program
from tests.rig.procs import ManagedProcess, free_port, http_ok, poll, start_with_retries
from tests.rig.services import KafkaBroker


def _first_start(workdir: Path, delivery: Delivery) -> None:
    """Start aiond once with --kafka-config on a new state directory, before any token exists, and
    stop it: from then on every audit event written there waits for Kafka (aiond records that it
    has Kafka in its state, and ``aiond token`` follows it)."""
    ports: dict[str, int] = {}

    def launch() -> ManagedProcess:
        ports.update(grpc=free_port(), http=free_port())
        argv = [
            program("aiond"),
            "--config", str(EXAMPLES),
            "--state-dir", str(workdir / "state"),
            "--grpc-listen", f"127.0.0.1:{ports['grpc']}",
            "--http-listen", f"127.0.0.1:{ports['http']}",
            "--secrets-dir", str(workdir / "secrets"),
            "--kafka-config", str(delivery.path),
        ]  # fmt: skip
        return ManagedProcess("aiond", argv, log_path=workdir / "aiond-first.log", env=clean_env()).start()

    first = start_with_retries(
        launch, lambda: http_ok(f"http://127.0.0.1:{ports['http']}/readyz"), timeout=30
    )
    assert first.stop() == 0


@pytest.fixture
def delivery(tmp_path: Path, kafka_broker: KafkaBroker) -> Delivery:
    return delivery_config(kafka_broker, tmp_path, tmp_path / "secrets")


@pytest.fixture
def daemon(tmp_path: Path, delivery: Delivery) -> Iterator[Aiond]:
    """aiond that has delivered to Kafka since its state directory was made (its tokens included)."""
    _first_start(tmp_path, delivery)
    daemon = Aiond(tmp_path, extra_args=["--kafka-config", str(delivery.path)]).start()
    yield daemon
    daemon.stop()


@pytest.fixture
def late(tmp_path: Path, delivery: Delivery) -> Iterator[Aiond]:
    """aiond whose tokens were made before it had Kafka: their audit events are in its trail and
    will never be in Kafka (the relay delivers only what was recorded while it had Kafka)."""
    daemon = Aiond(tmp_path, extra_args=["--kafka-config", str(delivery.path)]).start()
    yield daemon
    daemon.stop()


def ctl(daemon: Aiond, delivery: Delivery, *args: str, role: str = "viewer") -> Any:
    """aionctl with the daemon's address and a token, and the secret backend aiond reads (the
    environment an operator on aiond's host has)."""
    env = {**daemon.aionctl_env(role), "AIOND_SECRETS_DIR": str(delivery.path.parent / "secrets")}
    result = aionctl(*args, env=env)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def trail(daemon: Aiond) -> list[dict[str, Any]]:
    path = daemon.state_dir / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def applied(daemon: Aiond, delivery: Delivery) -> list[dict[str, Any]]:
    """Apply the example policy set twice (the runbook's first step); the policy.apply events."""
    for _ in range(2):
        result = ctl(daemon, delivery, "policy", "apply", str(EXAMPLES), role="admin")
        assert result.returncode == 0, result.stderr
    return [e for e in trail(daemon) if e["action"] == "policy.apply"]


def runbook() -> list[list[str]]:
    """The commands of docs/kafka.md's "Confirm an audit event in Kafka", as written there."""
    text = (REPO / "docs" / "kafka.md").read_text()
    section = text.split("\n## Confirm an audit event in Kafka\n", 1)[1]
    block = section.split("```\n", 2)[1]
    return [shlex.split(line) for line in block.splitlines()]


def test_the_runbook_confirms_a_policy_apply_in_kafka(daemon: Aiond, delivery: Delivery) -> None:
    commands = runbook()
    assert [c[:3] for c in commands] == [["aionctl", "policy", "apply"], ["aionctl", "audit", "verify"]]
    files = {"DIR": str(EXAMPLES), "kafka.yml": str(delivery.path)}
    apply, verify = ([files.get(word, word) for word in command[1:]] for command in commands)
    for _ in range(2):
        done = ctl(daemon, delivery, *apply, role="admin")
        assert done.returncode == 0, done.stderr
    applies = [e for e in trail(daemon) if e["action"] == "policy.apply"]
    assert len(applies) == 2
    result = ctl(daemon, delivery, *verify)  # right after the apply, as the runbook runs it
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("verified: all ")
    assert f" are in {delivery.topics['audit']} at " in result.stdout

    report = conforms(
        json.loads(
            ctl(
                daemon, delivery, "audit", "verify", "--since", "10m", "--kafka-config", str(delivery.path),
                "-o", "json",
            ).stdout
        ),
        "output/audit-verification",
    )  # fmt: skip
    events = [e for e in trail(daemon) if e["topic"] == AUDIT_TOPIC]
    assert report["verified"] is True
    assert report["local"]["source"] == "daemon"
    assert report["local"]["events"] == report["found"] == len(events)  # the tokens, the applies
    assert report["missing"] == []
    assert report["kafka"]["topic"] == delivery.topics["audit"]

    # The trail read directly, on the daemon's host, says the same.
    direct = ctl(
        daemon, delivery, "audit", "verify", "--since", "10m", "--kafka-config", str(delivery.path),
        "--state-dir", str(daemon.state_dir), "-o", "yaml",
    )  # fmt: skip
    assert direct.returncode == 0, direct.stderr
    document = conforms(yaml.safe_load(direct.stdout), "output/audit-verification")
    assert (document["local"]["source"], document["found"]) == ("trail", len(events))


def test_an_audit_event_that_never_reached_kafka_is_named(late: Aiond, delivery: Delivery) -> None:
    applies = applied(late, delivery)
    tokens = [e for e in trail(late) if e["action"] == "token.create"]
    assert len(tokens) == 3  # made before aiond had Kafka: in the trail, never in the topic
    verify = ("audit", "verify", "--since", "1h", "--kafka-config", str(delivery.path), "--wait", "0")

    text = ctl(late, delivery, *verify)
    assert text.returncode == 1, text.stdout + text.stderr
    lines = text.stdout.splitlines()
    assert lines[:-1] == [
        f"missing {e['id']} {e['time']} token.create {e['target']}" for e in tokens
    ]  # fmt: skip
    recorded = len(trail(late))  # the tokens, the policy aiond loaded at start, the applies
    assert recorded == 3 + 1 + len(applies)
    assert lines[-1].startswith(f"not verified: 3 of {recorded} audit events since ")
    assert "hint: " in text.stderr

    for source in ([], ["--state-dir", str(late.state_dir)]):
        result = ctl(late, delivery, *verify, *source, "-o", "json")
        assert result.returncode == 1, result.stderr
        report = conforms(json.loads(result.stdout), "output/audit-verification")
        assert report["verified"] is False
        assert report["found"] == recorded - 3
        assert report["missing"] == [
            {"id": e["id"], "time": e["time"], "action": "token.create", "target": e["target"]}
            for e in tokens
        ]
    # -q: the exit code alone
    quiet = ctl(late, delivery, "-q", *verify)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (1, "", "")


def test_events_tail_from_kafka_shows_the_applies_as_the_local_tail_does(
    daemon: Aiond, delivery: Delivery
) -> None:
    applies = applied(daemon, delivery)
    kafka = ("--from", "kafka", "--kafka-config", str(delivery.path))
    local = [
        json.loads(line)
        for line in ctl(
            daemon, delivery, "events", "tail", "--topic", AUDIT_TOPIC, "-o", "json"
        ).stdout.splitlines()
    ]

    def from_kafka(*args: str) -> list[dict[str, Any]]:
        def read() -> list[dict[str, Any]] | None:
            result = ctl(daemon, delivery, "events", "tail", *kafka, *args, "-o", "json")
            assert result.returncode == 0, result.stderr
            found = [json.loads(line) for line in result.stdout.splitlines()]
            ids = {r["id"] for r in found}
            return found if all(e["id"] in ids for e in applies[-2:]) else None

        return poll(read, timeout=30, what="the applies in Kafka")

    records = [conforms(r, "output/event") for r in from_kafka("--topic", AUDIT_TOPIC)]
    for record in records:
        assert list(record)[:3] == ["apiVersion", "kind", "kafka"]
        assert record["kafka"]["topic"] == delivery.topics["audit"]
    # The same events, in the same order, with the same fields as the daemon's own log shows them.
    strip = ("apiVersion", "kind", "sequence", "kafka")
    assert [{k: v for k, v in r.items() if k not in strip} for r in records] == [
        {k: v for k, v in r.items() if k not in strip} for r in local
    ]
    newest = from_kafka("--topic", "audit", "-n", "2")
    assert [r["id"] for r in newest] == [e["id"] for e in applies[-2:]]

    # Text: the local tail's lines, with PARTITION:OFFSET where the local one has the sequence.
    text = ctl(daemon, delivery, "events", "tail", *kafka, "--topic", AUDIT_TOPIC, "-n", "2")
    assert text.returncode == 0, text.stderr
    local_text = ctl(daemon, delivery, "events", "tail", "--topic", AUDIT_TOPIC, "-n", "2").stdout
    assert [line.split(" ", 1)[1] for line in text.stdout.splitlines()] == [
        line.split(" ", 1)[1] for line in local_text.splitlines()
    ]
    assert [line.split(" ", 1)[0] for line in text.stdout.splitlines()] == [
        f"{r['kafka']['partition']}:{r['kafka']['offset']}" for r in newest
    ]

    # Every topic, merged in time order: the task-less example set records audit events only, and
    # the window holds them all.
    everything = from_kafka("--since", "10m")
    assert [r["id"] for r in everything] == [r["id"] for r in sorted(everything, key=lambda r: r["time"])]
    assert {e["id"] for e in applies} <= {r["id"] for r in everything}


def test_events_tail_from_kafka_follows_until_ctrl_c(daemon: Aiond, delivery: Delivery) -> None:
    env = clean_env(
        {**daemon.aionctl_env("viewer"), "AIOND_SECRETS_DIR": str(delivery.path.parent / "secrets")}
    )
    argv = [
        program("aionctl"), "events", "tail", "--from", "kafka", "--kafka-config", str(delivery.path),
        "--topic", AUDIT_TOPIC, "--follow", "-o", "json",
    ]  # fmt: skip
    out = daemon.workdir / "follow.out"
    with out.open("w") as stdout:
        follower = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.PIPE, text=True, env=env)
    try:
        poll(lambda: out.read_text().count("\n") >= 3, timeout=30, what="the tokens' events")  # made first
        before = out.read_text().count("\n")
        applies = applied(daemon, delivery)

        def arrived() -> bool:
            ids = {json.loads(line)["id"] for line in out.read_text().splitlines()}
            return all(e["id"] in ids for e in applies)

        poll(arrived, timeout=30, what="the applies, followed")
        assert out.read_text().count("\n") >= before + 2
        follower.send_signal(signal.SIGINT)
        _, stderr = follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            os.kill(follower.pid, signal.SIGKILL)
            follower.wait(10)
    assert follower.returncode == 0, stderr
    assert "Traceback" not in stderr
    for line in out.read_text().splitlines():
        conforms(json.loads(line), "output/event")


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["audit", "verify", "--since", "10x"], "error: --since: '10x' is not a duration"),
        (["audit", "verify", "--since", "0s"], "error: --since: 0s is out of range: from 1s to 366d"),
        (["audit", "verify", "--since", "367d"], "error: --since: 367d is out of range"),
        (["audit", "verify", "--wait", "2h"], "error: --wait: 2h is out of range: from 0s to 1h"),
        (["audit", "verify", "--timeout", "0"], "error: --timeout: 0.0 is outside 0.1..600.0"),
        (["audit", "verify", "extra"], "error: unexpected argument: extra"),
        (["events", "tail", "--from", "nowhere"], "error: --from: 'nowhere' is not one of"),
        (["events", "tail", "--since", "1h"], "error: --since reads Kafka's topics by time"),
        (["events", "tail", "--from", "kafka", "--after", "3"], "error: --after SEQ is a position"),
        (["events", "tail", "--from", "kafka", "--since", "1y"], "error: --since: '1y' is not a duration"),
    ],
)
def test_bad_flags_exit_2_without_a_traceback(args: list[str], said: str) -> None:
    result = aionctl(*args)
    assert result.returncode == 2, result.stderr
    assert said in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_a_topic_aion_does_not_write_is_a_usage_error(tmp_path: Path, delivery: Delivery) -> None:
    result = aionctl(
        "events", "tail", "--from", "kafka", "--kafka-config", str(delivery.path), "--topic", "nope",
        "--secrets-dir", str(tmp_path / "secrets"),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "error: --topic 'nope' is not a topic aion writes" in result.stderr
    assert "Traceback" not in result.stderr


def _kafka_file(delivery: Delivery, path: Path, **changes: Any) -> Path:
    document = yaml.safe_load(delivery.path.read_text())
    document["kafka"].update(changes)
    path.write_text(yaml.safe_dump(document))
    return path


def test_unreachable_brokers_exit_5_and_refused_credentials_exit_4(
    tmp_path: Path, delivery: Delivery
) -> None:
    offline = Aiond(tmp_path)  # never started: its trail holds the tokens' events
    base = [
        "audit",
        "verify",
        "--state-dir",
        str(offline.state_dir),
        "--secrets-dir",
        str(tmp_path / "secrets"),
    ]

    nowhere = _kafka_file(delivery, tmp_path / "nowhere.yml", bootstrap_servers=[f"127.0.0.1:{free_port()}"])
    result = aionctl(*base, "--kafka-config", str(nowhere), "--timeout", "2")
    assert result.returncode == 5, result.stderr
    assert result.stderr.startswith("error: Kafka at 127.0.0.1:")
    assert "Traceback" not in result.stderr

    (tmp_path / "secrets" / "WRONG").write_text("not the password\n")
    security = yaml.safe_load(delivery.path.read_text())["kafka"]["security"]
    security["sasl"]["password_secret"] = "WRONG"
    refused = _kafka_file(delivery, tmp_path / "refused.yml", security=security)
    result = aionctl(*base, "--kafka-config", str(refused), "--timeout", "10")
    assert result.returncode == 4, result.stderr
    assert "refused the credentials of SASL user" in result.stderr
    assert "Traceback" not in result.stderr

    missing = yaml.safe_load(delivery.path.read_text())["kafka"]["topics"]
    missing["audit"]["name"] = f"{missing['audit']['name']}.absent"
    absent = _kafka_file(delivery, tmp_path / "absent.yml", topics=missing)
    result = aionctl(*base, "--kafka-config", str(absent))
    assert result.returncode == 3, result.stderr
    assert f"has no topic {missing['audit']['name']}" in result.stderr


def test_the_trail_is_read_only_as_a_regular_file(tmp_path: Path, delivery: Delivery) -> None:
    offline = Aiond(tmp_path)
    elsewhere = tmp_path / "elsewhere.jsonl"
    (offline.state_dir / "audit.jsonl").rename(elsewhere)
    (offline.state_dir / "audit.jsonl").symlink_to(elsewhere)
    result = aionctl(
        "audit", "verify", "--state-dir", str(offline.state_dir), "--kafka-config", str(delivery.path),
        "--secrets-dir", str(tmp_path / "secrets"),
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert "audit.jsonl: a symbolic link" in result.stderr
    (offline.state_dir / "audit.jsonl").unlink()
    os.mkfifo(offline.state_dir / "audit.jsonl")
    result = aionctl(
        "audit", "verify", "--state-dir", str(offline.state_dir), "--kafka-config", str(delivery.path),
        "--secrets-dir", str(tmp_path / "secrets"), timeout=30,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert "is a FIFO, not a regular file" in result.stderr
