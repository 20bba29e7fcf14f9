"""kafka.yml: how aion reaches Kafka, the topics it writes, and the ACLs of the principals using them.

The file is read like every config file (the bounded YAML loader, its JSON Schema,
``schemas/config/kafka.json``), then :func:`check` adds what a schema cannot say, each finding with
its line and column: broker addresses, durations and sizes in range, a protocol and the credentials
it needs, topic names that do not collide, topic configs that a producer with ``acks=all`` can
satisfy, and ACL entries that have what their role needs. ``aionctl validate`` runs the same checks
(:mod:`aion.config.validate` calls :func:`check`), so a file the CI gate accepts is a file aiond and
``aionctl kafka`` accept.

:func:`load` gives the immutable :class:`KafkaConfig`, defaults filled in; :func:`client_settings`
turns it into librdkafka settings, the password read through the secret backend. Nothing here
imports confluent_kafka or opens a connection.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, BinaryIO

from aion import envelopes
from aion.config.findings import Finding, Severity
from aion.errors import InputError, InvalidConfig, UsageError

if TYPE_CHECKING:
    from aion.config.yamlload import Document
    from aion.secrets.base import SecretsBackend

ROLES = ("decisions", "lifecycle", "metrics", "audit")
"""The topics aion writes, by role: kafka.yml names and sizes each one."""
PRODUCER, CONSUMER = "producer", "consumer"
PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")
DEFAULT_PROTOCOL = "SASL_SSL"
DEFAULT_MECHANISM = "SCRAM-SHA-512"
DEFAULT_CLIENT_ID = "aiond"
METRICS_TOPIC = "aion.metrics.runtime"

FOREVER = -1
"""``retention: forever``, as Kafka's retention.ms spells it."""
MIN_RETENTION_MS = 60_000
MAX_RETENTION_MS = 3650 * 86_400_000
MIN_OUTBOX_BYTES = 1 << 20
MAX_OUTBOX_BYTES = 16 << 30
DEFAULT_OUTBOX_BYTES = 256 << 20

_DAY_MS = 86_400_000


@dataclasses.dataclass(frozen=True, slots=True)
class _Default:
    name: str
    partitions: int
    retention_ms: int
    replication_factor: int = 3


_DEFAULTS: Mapping[str, _Default] = MappingProxyType(
    {
        "decisions": _Default(envelopes.DECISIONS_TOPIC, 6, 14 * _DAY_MS),
        "lifecycle": _Default(envelopes.LIFECYCLE_TOPIC, 6, 14 * _DAY_MS),
        "metrics": _Default(METRICS_TOPIC, 3, 7 * _DAY_MS),
        "audit": _Default(envelopes.AUDIT_TOPIC, 3, 90 * _DAY_MS),
    }
)
_ROLE_OF_TOPIC = {default.name: role for role, default in _DEFAULTS.items()}
# An audit event must be on two brokers before it is acknowledged, so one broker lost cannot lose it.
AUDIT_MIN_INSYNC = 2


@dataclasses.dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic as kafka.yml asks for it (defaults filled in)."""

    role: str
    name: str
    partitions: int
    replication_factor: int
    retention_ms: int
    """-1 (:data:`FOREVER`): kept for good."""
    configs: Mapping[str, str]
    """Other topic configs by their Kafka names; never ``retention.ms`` (that is :attr:`retention_ms`)."""

    def kafka_configs(self) -> dict[str, str]:
        """Every topic config aion sets on the topic: retention.ms and :attr:`configs`."""
        return {"retention.ms": str(self.retention_ms), **self.configs}


@dataclasses.dataclass(frozen=True, slots=True)
class AclRule:
    """One entry of kafka.yml's ``acls``: a principal and the role it has on some topics."""

    principal: str
    role: str
    """:data:`PRODUCER` or :data:`CONSUMER`."""
    topics: tuple[str, ...]
    """Topic roles (:data:`ROLES`), not names; a producer's default is all four."""
    group: str | None
    """The consumer group a consumer reads with; None for a producer."""


@dataclasses.dataclass(frozen=True, slots=True)
class KafkaConfig:
    """kafka.yml, checked, with every default filled in."""

    path: Path
    bootstrap_servers: tuple[str, ...]
    client_id: str
    protocol: str
    sasl_mechanism: str | None
    sasl_username: str | None
    sasl_password_secret: str | None
    ca_file: Path | None
    cert_file: Path | None
    key_file: Path | None
    topics: Mapping[str, TopicSpec]
    """By role; all four roles are present."""
    outbox_max_bytes: int
    acls: tuple[AclRule, ...]
    key_password_secret: str | None = None
    findings: tuple[Finding, ...] = ()
    """The warnings and notes the file had (errors refuse it)."""

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def topic_for(self, envelope_topic: str) -> str:
        """The configured name of the topic an envelope is for: ``aion.audit.activity``
        (:data:`aion.envelopes.AUDIT_TOPIC`, ...) or a role (``audit``) -> the name kafka.yml gives
        it. ValueError for a topic aion does not write (a bug in the caller)."""
        role = _ROLE_OF_TOPIC.get(envelope_topic, envelope_topic)
        spec = self.topics.get(role)
        if spec is None:
            raise ValueError(f"{envelope_topic!r} is not a topic aion writes (roles: {', '.join(ROLES)})")
        return spec.name


# -- values ----------------------------------------------------------------------------------------

_DURATION = re.compile(r"([0-9]{1,9})(ms|s|m|h|d|w)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": _DAY_MS, "w": 7 * _DAY_MS}
_SIZE = re.compile(r"([0-9]{1,12})(Ki|Mi|Gi)?")
_UNIT_BYTES = {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}


def retention_ms(text: str) -> int:
    """``14d``, ``36h``, ``forever`` -> milliseconds (-1 for forever). ValueError, saying the range,
    for anything else."""
    if text == "forever":
        return FOREVER
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"retention {text!r} is not a duration (a number and ms, s, m, h, d or w)")
    value = int(match[1]) * _UNIT_MS[match[2]]
    if not MIN_RETENTION_MS <= value <= MAX_RETENTION_MS:
        raise ValueError(f"retention {text} is out of range: from 1m to 3650d, or forever")
    return value


def outbox_bytes(value: str | int) -> int:
    """``256Mi``, ``1Gi`` or a byte count -> bytes, from 1Mi to 16Gi; ValueError otherwise."""
    match = _SIZE.fullmatch(str(value))
    if isinstance(value, bool) or match is None:
        raise ValueError(f"outbox_max_bytes {value!r} is not a size (bytes, or with Ki, Mi or Gi)")
    size = int(match[1]) * _UNIT_BYTES[match[2]]
    if not MIN_OUTBOX_BYTES <= size <= MAX_OUTBOX_BYTES:
        raise ValueError(f"outbox_max_bytes {value} is out of range: from 1Mi to 16Gi")
    return size


def _config_text(value: Any) -> str:
    """A topic config's value as Kafka takes it: text (YAML's true and 2 become "true" and "2")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# -- checks ------------------------------------------------------------------------------------------


def check(document: Document) -> list[Finding]:
    """What the schema cannot say about a kafka.yml that matches it (AION501-AION507)."""
    return list(_check(document))


def _check(document: Document) -> Iterator[Finding]:
    data = document.data
    kafka = data["kafka"]
    yield from _servers(document, kafka["bootstrap_servers"])
    yield from _security(document, kafka.get("security", {}))
    yield from _topics(document, kafka.get("topics", {}))
    delivery = kafka.get("delivery", {})
    if "outbox_max_bytes" in delivery:
        try:
            outbox_bytes(delivery["outbox_max_bytes"])
        except ValueError as exc:
            yield document.finding(
                "AION502", Severity.ERROR, ["kafka", "delivery", "outbox_max_bytes"], str(exc),
                hint="for example 256Mi or 2Gi",
            )  # fmt: skip
    yield from _acls(document, data.get("acls", []))


def _servers(document: Document, servers: list[str]) -> Iterator[Finding]:
    from aion.addresses import parse_hostport

    hint = "HOST:PORT, for example kafka-1.internal:9093 or [2001:db8::1]:9093"
    for index, server in enumerate(servers):
        path: list[str | int] = ["kafka", "bootstrap_servers", index]
        try:
            address = parse_hostport(server, what="bootstrap server")
        except UsageError as exc:
            yield document.finding("AION501", Severity.ERROR, path, exc.message, hint=hint)
            continue
        if address.port == 0:
            yield document.finding(
                "AION501", Severity.ERROR, path, f"bootstrap server {server!r}: port 0 is no broker's port",
                hint=hint,
            )  # fmt: skip


def _security(document: Document, security: Mapping[str, Any]) -> Iterator[Finding]:
    here: list[str | int] = ["kafka", "security"]
    protocol = security.get("protocol", DEFAULT_PROTOCOL)
    at_protocol = [*here, "protocol"] if "protocol" in security else here
    said = f"protocol {protocol}" + ("" if "protocol" in security else " (the default)")
    if protocol.startswith("SASL_") and "sasl" not in security:
        yield document.finding(
            "AION503", Severity.ERROR, at_protocol,
            f"{said} authenticates with SCRAM, and there is no security.sasl",
            hint="add sasl: {username: ..., password_secret: ...}, or choose SSL (mTLS) or PLAINTEXT",
        )  # fmt: skip
    if not protocol.startswith("SASL_") and "sasl" in security:
        yield document.finding(
            "AION503", Severity.ERROR, [*here, "sasl"],
            f"security.sasl is given, but {said} does not use SASL: it would be ignored",
            hint="choose SASL_SSL (or SASL_PLAINTEXT), or remove sasl", key=True,
        )  # fmt: skip
    tls = security.get("tls")
    if tls is not None and protocol not in ("SSL", "SASL_SSL"):
        yield document.finding(
            "AION503", Severity.ERROR, [*here, "tls"],
            f"security.tls is given, but {said} does not use TLS: it would be ignored",
            hint="choose SASL_SSL or SSL, or remove tls", key=True,
        )  # fmt: skip
    tls = tls or {}
    if ("cert_file" in tls) != ("key_file" in tls):
        given, missing = ("cert_file", "key_file") if "cert_file" in tls else ("key_file", "cert_file")
        yield document.finding(
            "AION503", Severity.ERROR, [*here, "tls", given],
            f"tls.{given} is given without tls.{missing}: a client certificate needs its key",
            hint=f"add {missing}, or remove {given}", key=True,
        )  # fmt: skip
    if "key_password_secret" in tls and "key_file" not in tls:
        yield document.finding(
            "AION503", Severity.ERROR, [*here, "tls", "key_password_secret"],
            "tls.key_password_secret is given without tls.key_file", hint="remove it, or add the key",
            key=True,
        )  # fmt: skip
    if protocol == "PLAINTEXT":
        yield document.finding(
            "AION504", Severity.WARNING, at_protocol,
            "protocol PLAINTEXT neither encrypts nor authenticates: anyone on the network can read "
            "the events, and the brokers cannot tell aiond from anyone else",
            hint="use SASL_SSL (SCRAM over TLS) or SSL with a client certificate outside development",
        )  # fmt: skip
    elif protocol == "SSL" and "cert_file" not in tls:
        yield document.finding(
            "AION504", Severity.WARNING, at_protocol,
            "protocol SSL without tls.cert_file: the connection is encrypted but not authenticated, "
            "so the brokers see aiond as User:ANONYMOUS",
            hint="add tls.cert_file and tls.key_file (mTLS), or use SASL_SSL",
        )  # fmt: skip


def _topics(document: Document, topics: Mapping[str, Any]) -> Iterator[Finding]:
    taken: dict[str, tuple[str, str]] = {}
    for role in ROLES:
        spec = topics.get(role, {})
        here: list[str | int] = ["kafka", "topics", role]
        default = _DEFAULTS[role]
        if "retention" in spec:
            try:
                retention_ms(spec["retention"])
            except ValueError as exc:
                yield document.finding(
                    "AION502", Severity.ERROR, [*here, "retention"], str(exc), hint="for example 14d"
                )
        configs = spec.get("configs", {})
        if "retention.ms" in configs:
            yield document.finding(
                "AION506", Severity.ERROR, [*here, "configs", "retention.ms"],
                "retention.ms is set with the topic's retention, not in configs",
                hint="write retention: 14d (or 36h, forever) beside name and partitions", key=True,
            )  # fmt: skip
        replication = spec.get("replication_factor", default.replication_factor)
        if "min.insync.replicas" in configs:
            yield from _min_insync(document, [*here, "configs", "min.insync.replicas"], configs, replication)
        name = spec.get("name", default.name)
        # Kafka's metric names turn '.' into '_', so two such names collide there.
        collision = name.replace(".", "_")
        if collision in taken:
            other_role, other_name = taken[collision]
            same = other_name == name
            yield document.finding(
                "AION505", Severity.ERROR, [*here, "name"] if "name" in spec else here,
                f"the {role} topic {name!r} "
                + (f"is also the {other_role} topic" if same else f"collides with the {other_role} topic "
                   f"{other_name!r} (Kafka treats '.' and '_' alike in metric names)"),
                hint="give each role a topic of its own",
            )  # fmt: skip
        else:
            taken[collision] = (role, name)


def _min_insync(
    document: Document, path: list[str | int], configs: Mapping[str, Any], replication: int
) -> Iterator[Finding]:
    value = _config_text(configs["min.insync.replicas"])
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= 32:
        yield document.finding(
            "AION506", Severity.ERROR, path, f"min.insync.replicas {value!r} is not a number from 1 to 32"
        )
    elif int(value) > replication:
        yield document.finding(
            "AION506", Severity.ERROR, path,
            f"min.insync.replicas {value} is more than the replication factor {replication}: with "
            "acks=all, every write to the topic would be refused",
            hint=f"at most {replication}, or raise replication_factor",
        )  # fmt: skip


def _acls(document: Document, acls: list[Mapping[str, Any]]) -> Iterator[Finding]:
    for index, rule in enumerate(acls):
        here: list[str | int] = ["acls", index]
        who = rule["principal"]
        if rule["role"] == CONSUMER:
            if "group" not in rule:
                yield document.finding(
                    "AION507", Severity.ERROR, here, f"consumer {who} has no group",
                    hint="add group: the consumer group it reads with (it may READ that group only)",
                )  # fmt: skip
            if "topics" not in rule:
                yield document.finding(
                    "AION507", Severity.ERROR, here, f"consumer {who} names no topics",
                    hint="add topics: the roles it reads, for example [audit] (least privilege: no "
                    "default)",
                )  # fmt: skip
        elif "group" in rule:
            yield document.finding(
                "AION507", Severity.ERROR, [*here, "group"],
                f"producer {who} has a group, which a producer does not use",
                hint="remove group; a principal that also consumes gets a consumer entry of its own",
                key=True,
            )  # fmt: skip


# -- building ------------------------------------------------------------------------------------------


def build(document: Document, path: Path, findings: tuple[Finding, ...] = ()) -> KafkaConfig:
    """The config of a document that :func:`check` (and the schema) found no error in. Relative TLS
    paths resolve against ``path``'s directory."""
    data = document.data
    kafka = data["kafka"]
    security = kafka.get("security", {})
    sasl = security.get("sasl")
    tls = security.get("tls", {})
    base = path.absolute().parent

    def file(key: str) -> Path | None:
        return base / tls[key] if key in tls else None

    return KafkaConfig(
        path=path,
        bootstrap_servers=tuple(kafka["bootstrap_servers"]),
        client_id=kafka.get("client_id", DEFAULT_CLIENT_ID),
        protocol=security.get("protocol", DEFAULT_PROTOCOL),
        sasl_mechanism=sasl.get("mechanism", DEFAULT_MECHANISM) if sasl else None,
        sasl_username=sasl["username"] if sasl else None,
        sasl_password_secret=sasl["password_secret"] if sasl else None,
        ca_file=file("ca_file"),
        cert_file=file("cert_file"),
        key_file=file("key_file"),
        key_password_secret=tls.get("key_password_secret"),
        topics=MappingProxyType(
            {role: _topic(role, kafka.get("topics", {}).get(role, {})) for role in ROLES}
        ),
        outbox_max_bytes=outbox_bytes(
            kafka.get("delivery", {}).get("outbox_max_bytes", DEFAULT_OUTBOX_BYTES)
        ),
        acls=tuple(_acl(rule) for rule in data.get("acls", [])),
        findings=findings,
    )


def _topic(role: str, spec: Mapping[str, Any]) -> TopicSpec:
    default = _DEFAULTS[role]
    replication = spec.get("replication_factor", default.replication_factor)
    configs = {str(key): _config_text(value) for key, value in spec.get("configs", {}).items()}
    if role == "audit":
        configs.setdefault("min.insync.replicas", str(min(AUDIT_MIN_INSYNC, replication)))
    return TopicSpec(
        role=role,
        name=spec.get("name", default.name),
        partitions=spec.get("partitions", default.partitions),
        replication_factor=replication,
        retention_ms=retention_ms(spec["retention"]) if "retention" in spec else default.retention_ms,
        configs=MappingProxyType(dict(sorted(configs.items()))),
    )


def _acl(rule: Mapping[str, Any]) -> AclRule:
    role = rule["role"]
    topics = rule.get("topics", ROLES if role == PRODUCER else ())
    return AclRule(
        principal=rule["principal"],
        role=role,
        topics=tuple(r for r in ROLES if r in topics),
        group=rule.get("group"),
    )


class KafkaConfigInvalid(InvalidConfig):
    """kafka.yml has errors; :attr:`findings` holds every finding (errors and warnings)."""

    def __init__(self, message: str, findings: tuple[Finding, ...], *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.findings = findings


def load(path: Path, *, strict: bool = False, stdin: BinaryIO | None = None) -> KafkaConfig:
    """kafka.yml at ``path`` (``-``: standard input, relative TLS paths then resolving against the
    working directory), read bounded and checked as ``aionctl validate`` checks it. Raises
    InputError when it cannot be read, :class:`KafkaConfigInvalid` (exit 1) naming the first error
    as ``file:line:col`` when it has errors; with ``strict``, unknown keys are errors."""
    from aion.config.kinds import Kind
    from aion.config.validate import STDIN, Options, check_file, collect

    name = str(path)
    if name != STDIN and path.is_dir():
        raise InputError(f"{path} is a directory", hint="give the Kafka config file (kafka.yml)")
    if stdin is None and name == STDIN and sys.stdin is not None:
        stdin = sys.stdin.buffer
    (source,) = collect([name], kind=Kind.KAFKA, stdin=stdin)
    _kind, document, found = check_file(source, Options(strict=strict))
    found.sort(key=Finding.sort_key)
    errors = [f for f in found if f.severity is Severity.ERROR]
    if errors or document is None:
        first = errors[0] if errors else found[0]
        more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
        where = f"{first.file}:{first.line}:{first.column}" if first.line else first.file
        raise KafkaConfigInvalid(
            f"{where}: {first.message}{more}",
            tuple(found),
            hint=first.hint or f"aionctl validate {name} shows every finding",
        )
    return build(document, path, tuple(found))  # "-": TLS paths resolve against the working directory


# -- connecting --------------------------------------------------------------------------------------


def client_settings(
    config: KafkaConfig,
    secrets: SecretsBackend | None,
    *,
    username: str | None = None,
    password_secret: str | None = None,
) -> dict[str, str]:
    """The librdkafka settings of a connection as kafka.yml describes it: bootstrap.servers,
    client.id, security.protocol, sasl.* (the password read through ``secrets``), ssl.*.location.

    ``username`` and ``password_secret`` replace the file's SASL user (an operator acting as an
    admin); a new username needs its own password secret. A secret that does not resolve raises the
    backend's error (SecretMissing, SecretsUnavailable: exit 3) naming the secret, the user and the
    backend; a TLS file that is not there is an InputError naming it."""
    settings = {
        "bootstrap.servers": ",".join(config.bootstrap_servers),
        "client.id": config.client_id,
        "security.protocol": config.protocol,
    }
    if not config.uses_sasl and (username is not None or password_secret is not None):
        raise UsageError(
            f"{config.path}: security.protocol is {config.protocol}, which does not use SASL, so a SASL "
            "username or password secret cannot be used",
            hint="set security.protocol: SASL_SSL and security.sasl in the file, or connect as it says",
        )
    if config.uses_sasl:
        if username is not None and password_secret is None and username != config.sasl_username:
            raise UsageError(
                f"a SASL username ({username}) other than the file's needs its own password secret",
                hint="give the name of the secret that holds its password (aionctl: --sasl-password-secret)",
            )
        user = username if username is not None else config.sasl_username
        secret = password_secret if password_secret is not None else config.sasl_password_secret
        assert user is not None
        assert secret is not None
        assert config.sasl_mechanism is not None
        settings["sasl.mechanism"] = config.sasl_mechanism
        settings["sasl.username"] = user
        settings["sasl.password"] = _secret(
            secrets, secret, f"the Kafka password of SASL user {user}", config
        )
    if config.uses_tls:
        for key, file in (
            ("ssl.ca.location", config.ca_file),
            ("ssl.certificate.location", config.cert_file),
            ("ssl.key.location", config.key_file),
        ):
            if file is None:
                continue
            if not file.is_file():
                raise InputError(
                    f"{config.path}: the TLS file {file} ({key.split('.')[1]}) is not there",
                    hint="check the path in security.tls (a relative path is read from the file's directory)",
                )
            settings[key] = str(file)
        if config.key_password_secret is not None:
            settings["ssl.key.password"] = _secret(
                secrets, config.key_password_secret, "the passphrase of the Kafka TLS key", config
            )
    return settings


def _secret(secrets: SecretsBackend | None, name: str, what: str, config: KafkaConfig) -> str:
    from aion.secrets.base import SecretMissing, SecretsUnavailable
    from aion.secrets.select import describe

    if secrets is None:
        raise InputError(
            f"{what} is the secret {name!r} ({config.path}), and no secret backend was given",
            hint="choose one with --secrets-backend (files, sops or vault)",
        )
    try:
        return secrets.get(name)
    except SecretMissing as exc:
        raise SecretMissing(
            name, f"{what} ({config.path}), from {describe(secrets)}: {exc.message}", hint=exc.hint
        ) from exc
    except SecretsUnavailable as exc:
        raise SecretsUnavailable(
            name, f"{what} ({config.path}), from {describe(secrets)}: {exc.message}", hint=exc.hint
        ) from exc


__all__ = [
    "CONSUMER",
    "FOREVER",
    "MECHANISMS",
    "PRODUCER",
    "PROTOCOLS",
    "ROLES",
    "AclRule",
    "KafkaConfig",
    "KafkaConfigInvalid",
    "TopicSpec",
    "build",
    "check",
    "client_settings",
    "load",
    "outbox_bytes",
    "retention_ms",
]
