"""kafka.yml (aion.kafka.config): read like every config file, each bad value a finding with its line
and column, defaults filled in, never part of a policy set, and connection settings whose password
comes from the secret backend."""

from __future__ import annotations

import copy
import io
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aion import envelopes
from aion.config.findings import Finding, Severity
from aion.config.kinds import Kind
from aion.config.validate import Options, Source, collect, ignored, read_alone, validate, validate_directory
from aion.errors import InputError, InvalidConfig, UsageError
from aion.exitcodes import ExitCode
from aion.kafka.config import (
    ROLES,
    AclRule,
    KafkaConfigInvalid,
    client_settings,
    load,
    outbox_bytes,
    retention_ms,
)
from aion.secrets.base import SecretMissing
from aion.secrets.files import FileSecrets
from tests.rig.fuzz import examples

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE = EXAMPLES / "kafka.yml"
DAY = 86_400_000

MINIMAL = """\
kafka:
  bootstrap_servers: ["127.0.0.1:9092"]
  security:
    protocol: SASL_PLAINTEXT
    sasl: {username: aiond, password_secret: KAFKA_AIOND_PASSWORD}
"""


def findings_of(text: str, name: str = "kafka.yml", *, strict: bool = False) -> list[Finding]:
    report = validate([Source(name, text.encode())], Options(strict=strict))
    return list(report.findings)


def write(tmp_path: Path, text: str, name: str = "kafka.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- the example and the defaults ------------------------------------------------------------------


def test_the_example_validates_clean_and_loads() -> None:
    assert findings_of(EXAMPLE.read_text()) == []
    config = load(EXAMPLE)
    assert config.protocol == "SASL_SSL"
    assert (config.sasl_mechanism, config.sasl_username) == ("SCRAM-SHA-512", "aiond")
    assert config.sasl_password_secret == "KAFKA_AIOND_PASSWORD"
    assert config.ca_file == Path("/etc/aion/kafka/ca.pem")
    assert list(config.topics) == list(ROLES)
    assert config.topics["audit"].retention_ms == 365 * DAY
    assert config.topics["audit"].configs == {
        "min.insync.replicas": "2",
        "unclean.leader.election.enable": "false",
    }
    assert config.outbox_max_bytes == 1 << 30
    assert [(rule.principal, rule.role) for rule in config.acls] == [
        ("User:aiond", "producer"),
        ("User:audit-verify", "consumer"),
        ("User:analytics", "consumer"),
    ]


def test_every_default_is_filled_in(tmp_path: Path) -> None:
    config = load(write(tmp_path, "kafka:\n  bootstrap_servers: [k:9093]\n  security: {protocol: SSL, "
                        "tls: {cert_file: c.pem, key_file: c.key}}\n"))  # fmt: skip
    assert (config.client_id, config.protocol, config.sasl_username) == ("aiond", "SSL", None)
    assert config.cert_file == tmp_path / "c.pem"  # relative to the file
    assert config.outbox_max_bytes == 256 << 20
    assert config.acls == ()
    shapes = {
        role: (spec.name, spec.partitions, spec.replication_factor, spec.retention_ms)
        for role, spec in config.topics.items()
    }
    assert shapes == {
        "decisions": (envelopes.DECISIONS_TOPIC, 6, 3, 14 * DAY),
        "lifecycle": (envelopes.LIFECYCLE_TOPIC, 6, 3, 14 * DAY),
        "metrics": ("aion.metrics.runtime", 3, 3, 7 * DAY),
        "audit": (envelopes.AUDIT_TOPIC, 3, 3, 90 * DAY),
    }
    assert config.topics["audit"].kafka_configs() == {
        "retention.ms": str(90 * DAY),
        "min.insync.replicas": "2",
    }
    assert config.topics["decisions"].configs == {}


def test_one_field_of_a_role_keeps_the_other_defaults_and_audit_insync_fits_one_broker(
    tmp_path: Path,
) -> None:
    text = MINIMAL + "  topics:\n    audit: {replication_factor: 1, retention: forever}\n"
    audit = load(write(tmp_path, text)).topics["audit"]
    assert (audit.name, audit.partitions, audit.retention_ms) == (envelopes.AUDIT_TOPIC, 3, -1)
    assert audit.configs == {"min.insync.replicas": "1"}


def test_topic_for_maps_envelope_topics_and_roles_to_the_configured_names(tmp_path: Path) -> None:
    text = MINIMAL + "  topics:\n    audit: {name: prod.aion.audit}\n"
    config = load(write(tmp_path, text))
    assert config.topic_for(envelopes.AUDIT_TOPIC) == "prod.aion.audit"
    assert config.topic_for("audit") == "prod.aion.audit"
    assert config.topic_for(envelopes.DECISIONS_TOPIC) == envelopes.DECISIONS_TOPIC
    assert config.topic_for("aion.metrics.runtime") == "aion.metrics.runtime"
    with pytest.raises(ValueError, match="not a topic aion writes"):
        config.topic_for("aion.other")


def test_a_producer_writes_all_four_topics_unless_it_names_some(tmp_path: Path) -> None:
    text = MINIMAL + (
        "acls:\n"
        "  - {principal: 'User:aiond', role: producer}\n"
        "  - {principal: 'User:metrics', role: producer, topics: [metrics]}\n"
        "  - {principal: 'User:r', role: consumer, topics: [audit, decisions], group: g}\n"
    )
    assert load(write(tmp_path, text)).acls == (
        AclRule("User:aiond", "producer", ROLES, None),
        AclRule("User:metrics", "producer", ("metrics",), None),
        AclRule("User:r", "consumer", ("decisions", "audit"), "g"),
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [("1m", 60_000), ("36h", 36 * 3_600_000), ("2w", 14 * DAY), ("3650d", 3650 * DAY), ("forever", -1)],
)
def test_retention_reads_units(text: str, value: int) -> None:
    assert retention_ms(text) == value


@pytest.mark.parametrize("text", ["59s", "3651d", "0ms", "14", "14 d", "1y"])
def test_retention_out_of_range_or_unreadable_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="retention"):
        retention_ms(text)


@pytest.mark.parametrize(("value", "size"), [("1Mi", 1 << 20), ("16Gi", 16 << 30), (2_000_000, 2_000_000)])
def test_outbox_sizes(value: str | int, size: int) -> None:
    assert outbox_bytes(value) == size


@pytest.mark.parametrize("value", ["1023Ki", "17Gi", 1000, "1Ti", True])
def test_outbox_sizes_out_of_range(value: str | int) -> None:
    with pytest.raises(ValueError, match="outbox_max_bytes"):
        outbox_bytes(value)


# -- every field's bad value is a finding with a line and a column -----------------------------------

BASE: dict[str, Any] = {
    "kafka": {
        "bootstrap_servers": ["kafka-1:9093"],
        "client_id": "aiond",
        "security": {
            "protocol": "SASL_SSL",
            "sasl": {"mechanism": "SCRAM-SHA-512", "username": "aiond", "password_secret": "P"},
            "tls": {"ca_file": "ca.pem"},
        },
        "topics": {
            role: {
                "name": f"t.{role}",
                "partitions": 3,
                "replication_factor": 3,
                "retention": "7d",
                "configs": {"min.insync.replicas": "2"},
            }
            for role in ROLES
        },
        "delivery": {"outbox_max_bytes": "256Mi"},
    },
    "acls": [
        {"principal": "User:aiond", "role": "producer"},
        {"principal": "User:r", "role": "consumer", "topics": ["audit"], "group": "g"},
    ],
}

BAD = [
    (("kafka", "bootstrap_servers"), [], "AION100"),
    (("kafka", "bootstrap_servers"), [f"k{i}:9092" for i in range(65)], "AION100"),
    (("kafka", "bootstrap_servers", 0), "kafka-1", "AION501"),
    (("kafka", "bootstrap_servers", 0), "kafka-1:65536", "AION501"),
    (("kafka", "bootstrap_servers", 0), "kafka-1:0", "AION501"),
    (("kafka", "bootstrap_servers", 0), "ssl://kafka-1:9093", "AION501"),
    (("kafka", "client_id"), "has space", "AION100"),
    (("kafka", "client_id"), "x" * 65, "AION100"),
    (("kafka", "security", "protocol"), "TLS", "AION100"),
    (("kafka", "security", "sasl", "mechanism"), "PLAIN", "AION100"),
    (("kafka", "security", "sasl", "username"), "", "AION100"),
    (("kafka", "security", "sasl", "password_secret"), "../etc/passwd", "AION100"),
    (("kafka", "security", "tls", "ca_file"), "", "AION100"),
    (("kafka", "security", "tls", "cert_file"), "c.pem", "AION503"),
    (("kafka", "security", "tls", "key_password_secret"), "K", "AION503"),
    (("kafka", "topics", "audit", "name"), "-audit", "AION100"),
    (("kafka", "topics", "audit", "name"), "a" * 250, "AION100"),
    (("kafka", "topics", "audit", "name"), "t.decisions", "AION505"),
    (("kafka", "topics", "audit", "name"), "t_decisions", "AION505"),
    (("kafka", "topics", "audit", "partitions"), 0, "AION100"),
    (("kafka", "topics", "audit", "partitions"), 10_001, "AION100"),
    (("kafka", "topics", "audit", "partitions"), "3", "AION100"),
    (("kafka", "topics", "audit", "replication_factor"), 0, "AION100"),
    (("kafka", "topics", "audit", "replication_factor"), 33, "AION100"),
    (("kafka", "topics", "audit", "replication_factor"), 1, "AION506"),  # below min.insync.replicas 2
    (("kafka", "topics", "audit", "retention"), "30s", "AION502"),
    (("kafka", "topics", "audit", "retention"), "5000d", "AION502"),
    (("kafka", "topics", "audit", "retention"), "14 days", "AION100"),
    (("kafka", "topics", "audit", "configs", "min.insync.replicas"), "two", "AION506"),
    (("kafka", "topics", "audit", "configs", "retention.ms"), "1000", "AION506"),
    (("kafka", "topics", "audit", "configs", "Bad_Name"), "x", "AION100"),
    (("kafka", "topics", "audit", "configs", "cleanup.policy"), ["compact"], "AION100"),
    (("kafka", "topics", "audit", "configs", "cleanup.policy"), "x" * 1025, "AION100"),
    (("kafka", "delivery", "outbox_max_bytes"), "512Ki", "AION502"),
    (("kafka", "delivery", "outbox_max_bytes"), "17Gi", "AION502"),
    (("kafka", "delivery", "outbox_max_bytes"), "1Ti", "AION100"),
    (("kafka", "delivery", "outbox_max_bytes"), 12.5, "AION100"),
    (("acls", 0, "principal"), "aiond", "AION100"),
    (("acls", 0, "role"), "admin", "AION100"),
    (("acls", 0, "group"), "aiond", "AION507"),
    (("acls", 1, "topics"), ["audit", "audit"], "AION100"),
    (("acls", 1, "topics"), ["events"], "AION100"),
    (("acls", 1, "group"), "bad group", "AION100"),
    (("acls",), [{"principal": "User:x", "role": "producer"}] * 1001, "AION100"),
]


def _set(document: dict[str, Any], path: tuple[str | int, ...], value: Any) -> None:
    node: Any = document
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


# Where the finding points when not at the value itself: a cross-field check, or a whole list.
POINTED: dict[tuple[tuple[str | int, ...], str], str] = {
    (
        ("kafka", "topics", "audit", "replication_factor"),
        "1",
    ): "/kafka/topics/audit/configs/min.insync.replicas",
}


@pytest.mark.parametrize(
    ("path", "value", "rule"), BAD, ids=[f"{'/'.join(map(str, p))}={v!r:.20}" for p, v, _ in BAD]
)
def test_a_bad_value_is_a_finding_at_its_line_and_column(
    path: tuple[str | int, ...], value: Any, rule: str
) -> None:
    document = copy.deepcopy(BASE)
    _set(document, path, value)
    text = yaml.safe_dump(document, sort_keys=False, width=10_000)
    found = findings_of(text)
    errors = [f for f in found if f.severity is Severity.ERROR]
    assert [f.rule for f in errors] == [rule], found
    (finding,) = errors
    assert finding.pointer.startswith(POINTED.get((path, str(value)), "/" + "/".join(map(str, path))))
    assert finding.line >= 1
    assert finding.column >= 1
    # The line shown holds the key, or the first item of the list under it, or the item itself.
    last = finding.pointer.rsplit("/", 1)[1]
    lines = text.splitlines()
    shown = lines[finding.line - 1]
    if last.isdigit():
        assert shown.lstrip().startswith("-"), (finding, text)
    else:
        assert last in shown or (last in lines[finding.line - 2] and isinstance(value, list | dict)), (
            finding,
            text,
        )


def test_the_base_of_the_bad_values_is_clean() -> None:
    assert findings_of(yaml.safe_dump(BASE, sort_keys=False)) == []


@pytest.mark.parametrize(
    ("security", "rule", "severity"),
    [
        ({"protocol": "SASL_SSL"}, "AION503", Severity.ERROR),
        ({}, "AION503", Severity.ERROR),  # SASL_SSL is the default, and needs sasl
        ({"protocol": "SSL", "sasl": {"username": "a", "password_secret": "P"}}, "AION503", Severity.ERROR),
        ({"protocol": "SASL_PLAINTEXT", "sasl": {"username": "a", "password_secret": "P"},
          "tls": {"ca_file": "ca.pem"}}, "AION503", Severity.ERROR),
        ({"protocol": "PLAINTEXT"}, "AION504", Severity.WARNING),
        ({"protocol": "SSL"}, "AION504", Severity.WARNING),
    ],
)  # fmt: skip
def test_security_that_does_not_fit_the_protocol(
    security: dict[str, Any], rule: str, severity: Severity
) -> None:
    text = yaml.safe_dump({"kafka": {"bootstrap_servers": ["k:9093"], "security": security}})
    found = findings_of(text)
    assert (rule, severity) in [(f.rule, f.severity) for f in found], found
    assert all(f.line >= 1 and f.column >= 1 for f in found)


def test_consumers_need_a_group_and_topics() -> None:
    text = MINIMAL + "acls:\n  - {principal: 'User:r', role: consumer}\n"
    found = findings_of(text)
    assert [(f.rule, f.line, f.column) for f in found] == [("AION507", 7, 5), ("AION507", 7, 5)]
    assert {f.message for f in found} == {"consumer User:r has no group", "consumer User:r names no topics"}


def test_unknown_keys_warn_and_are_errors_when_strict() -> None:
    text = MINIMAL.replace("username: aiond", "usernme: aiond, username: aiond")
    (warned,) = findings_of(text)
    assert (warned.rule, warned.severity, warned.line, warned.hint) == (
        "AION101",
        Severity.WARNING,
        5,
        "did you mean 'username'?",
    )
    (refused,) = findings_of(text, strict=True)
    assert refused.severity is Severity.ERROR


def test_a_file_is_recognised_by_its_kind() -> None:
    text = "kind: Kafka\n" + MINIMAL.replace("127.0.0.1:9092", "127.0.0.1")
    report = validate([Source("prod-events.yml", text.encode())])
    assert report.files == {"prod-events.yml": Kind.KAFKA}
    assert [(f.rule, f.line) for f in report.findings] == [("AION501", 3)]


# -- load: the errors --------------------------------------------------------------------------------


def test_load_names_the_first_error_as_file_line_column(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        MINIMAL.replace("127.0.0.1:9092", "127.0.0.1:99999") + "  topics: {audit: {retention: 1s}}\n",
    )
    with pytest.raises(KafkaConfigInvalid) as caught:
        load(path)
    error = caught.value
    assert isinstance(error, InvalidConfig)
    assert error.exit_code is ExitCode.FINDINGS
    assert error.message.startswith(f"{path}:2:23: bootstrap server: port '99999'")
    assert error.message.endswith("(and 1 more errors)")
    assert [f.rule for f in error.findings] == ["AION501", "AION502"]
    assert error.hint is not None


def test_load_refuses_what_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load(tmp_path / "kafka.yml")
    with pytest.raises(InputError, match="is a directory"):
        load(tmp_path)
    with pytest.raises(KafkaConfigInvalid, match=r"kafka\.yml:2:1: while parsing"):
        load(write(tmp_path, "kafka: [\n"))
    with pytest.raises(KafkaConfigInvalid, match="larger than the limit"):
        load(write(tmp_path, "#" * (17 << 20)))


def test_load_reads_standard_input(tmp_path: Path) -> None:
    config = load(Path("-"), stdin=io.BytesIO(MINIMAL.encode()))
    assert config.bootstrap_servers == ("127.0.0.1:9092",)


def test_load_keeps_the_warnings(tmp_path: Path) -> None:
    config = load(
        write(tmp_path, "kafka:\n  bootstrap_servers: [k:9092]\n  security: {protocol: PLAINTEXT}\n")
    )
    assert [f.rule for f in config.findings] == ["AION504"]


# -- never part of a policy set ----------------------------------------------------------------------


def test_a_config_set_leaves_the_kafka_file_out(tmp_path: Path) -> None:
    from aionctl.commands.policy import read_directory

    config = tmp_path / "config"
    shutil.copytree(EXAMPLES, config, ignore=shutil.ignore_patterns("modules"))
    (config / "events.yml").write_text("kind: Kafka\n" + MINIMAL)
    files, left_out = read_directory(config)
    assert sorted(files) == ["intents.yml", "models.yml", "modules.yml", "policies.yml"]
    assert left_out == []  # recognised, so not reported as unknown either
    sources = {Path(s.name).name: s for s in collect([str(config)])}
    assert all(ignored(sources[n]) and read_alone(sources[n]) for n in ("kafka.yml", "events.yml"))
    assert not any(read_alone(sources[n]) or ignored(sources[n]) for n in files)
    # validate still checks it with the set, and the set stays complete and clean
    report = validate_directory(config)
    assert report.files[str(config / "kafka.yml")] is Kind.KAFKA
    assert report.findings == ()
    assert report.snapshot is not None


# -- connection settings -----------------------------------------------------------------------------


def test_client_settings_read_the_password_through_the_backend(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "KAFKA_AIOND_PASSWORD").write_text("s3cret\n")
    (secrets / "ADMIN_PW").write_text("adm1n")
    config = load(write(tmp_path, MINIMAL))
    assert client_settings(config, FileSecrets(secrets)) == {
        "bootstrap.servers": "127.0.0.1:9092",
        "client.id": "aiond",
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "aiond",
        "sasl.password": "s3cret",
    }
    admin = client_settings(config, FileSecrets(secrets), username="admin", password_secret="ADMIN_PW")
    assert (admin["sasl.username"], admin["sasl.password"]) == ("admin", "adm1n")


def test_a_missing_password_names_the_secret_the_user_and_the_backend(tmp_path: Path) -> None:
    config = load(write(tmp_path, MINIMAL))
    with pytest.raises(SecretMissing) as caught:
        client_settings(config, FileSecrets(tmp_path / "nowhere"))
    message = caught.value.message
    assert "KAFKA_AIOND_PASSWORD" in message
    assert "SASL user aiond" in message
    assert f"files in {tmp_path / 'nowhere'}" in message
    assert caught.value.exit_code is ExitCode.INPUT
    with pytest.raises(InputError, match="no secret backend"):
        client_settings(config, None)


def test_overrides_that_cannot_work_are_usage_errors(tmp_path: Path) -> None:
    config = load(write(tmp_path, MINIMAL))
    with pytest.raises(UsageError, match="needs its own password secret"):
        client_settings(config, None, username="admin")
    plain = load(write(tmp_path, "kafka: {bootstrap_servers: ['k:9092'], security: {protocol: PLAINTEXT}}\n",
                       "plain.yml"))  # fmt: skip
    assert client_settings(plain, None)["security.protocol"] == "PLAINTEXT"
    with pytest.raises(UsageError, match="does not use SASL"):
        client_settings(plain, None, username="admin", password_secret="P")


def test_tls_files_resolve_against_the_file_and_must_exist(tmp_path: Path) -> None:
    text = (
        "kafka:\n  bootstrap_servers: ['k:9093']\n  security:\n    protocol: SSL\n"
        "    tls: {ca_file: certs/ca.pem, cert_file: certs/c.pem, key_file: /abs/c.key}\n"
    )
    config = load(write(tmp_path, text))
    with pytest.raises(InputError, match=r"the TLS file .*certs/ca\.pem \(ca\) is not there"):
        client_settings(config, None)
    (tmp_path / "certs").mkdir()
    for name in ("ca.pem", "c.pem"):
        (tmp_path / "certs" / name).write_text("pem")
    key = tmp_path / "c.key"
    key.write_text("key")
    config = load(write(tmp_path, text.replace("/abs/c.key", str(key))))
    settings_ = client_settings(config, None)
    assert settings_["ssl.ca.location"] == str(tmp_path / "certs" / "ca.pem")
    assert settings_["ssl.certificate.location"] == str(tmp_path / "certs" / "c.pem")
    assert settings_["ssl.key.location"] == str(key)
    assert "sasl.username" not in settings_


# -- any value anywhere ------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
    | st.sampled_from(["1Mi", "17Gi", "0ms", "forever", "k:0", "User:x", "producer", "consumer", "audit"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)  # fmt: skip


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values, st.data())
def test_any_value_anywhere_is_located_or_loads(value: object, data: st.DataObject) -> None:
    document: Any = yaml.safe_load(EXAMPLE.read_text())
    node, path = document, []
    while isinstance(node, dict | list) and node and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(list(node) if isinstance(node, dict) else list(range(len(node)))))
        path.append(key)
        node = node[key]
    if path:
        _set(document, tuple(path), value)
    else:
        document = value
    text = yaml.safe_dump(document, allow_unicode=True).encode()
    found = validate([Source("kafka.yml", text)]).findings
    for finding in found:
        assert finding.file == "kafka.yml"
        assert finding.rule.startswith("AION")
        if finding.rule not in ("AION002", "AION003"):
            assert finding.line >= 1, finding
            assert finding.column >= 1, finding
    if not any(f.severity is Severity.ERROR for f in found):
        config = load(Path("-"), stdin=io.BytesIO(text))
        assert set(config.topics) == set(ROLES)
