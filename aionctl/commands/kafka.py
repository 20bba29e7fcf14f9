"""``aionctl kafka topics ensure|acls apply|lag``: make a Kafka cluster hold what kafka.yml says, and
show how far a consumer group is behind.

Each command connects as kafka.yml's ``kafka:`` section says. An operator acts as an admin
principal rather than as aiond: ``--sasl-username`` and ``--sasl-password-secret`` replace the
file's SASL user, and every password is read through the secret backend, with the very options
(and environment variables) of ``aionctl secrets check`` and aiond.

``topics ensure`` and ``acls apply`` show their plan as a diff and then apply it; ``--dry-run``
stops at the plan. They only add (topics, partitions, configs, bindings); ``acls apply --prune``
also deletes the bindings of the file's principals that the file does not grant. A second run finds
nothing to do. A topic that cannot be made to match by adding (more partitions than asked, another
replication factor) is a conflict: the plan says what to do and nothing is applied (exit 6).

Exit codes: 0 done (or nothing to do); 1 kafka.yml has errors; 3 a file or secret cannot be read,
or the group has no offsets; 4 the brokers refused the credentials or the grant; 5 the brokers
cannot be reached in time; 6 a conflict, or the cluster cannot do what the file asks. Documents:
``output/kafka-topic-plan``, ``output/kafka-acl-plan``, ``output/kafka-lag``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aionctl.options import (
    DEFAULT_SECRETS_BACKEND,
    DEFAULT_SECRETS_DIR,
    DEFAULT_VAULT_MOUNT,
    DEFAULT_VAULT_PATH,
    BackendOptions,
    Output,
    SecretsBackendName,
    SecretsDir,
    SopsAgeKeyFile,
    SopsFile,
    VaultAddr,
    VaultCaCert,
    VaultMount,
    VaultPath,
    VaultRoleIdFile,
    VaultSecretIdFile,
    VaultTokenFile,
    _finite,
    backend_options,
    command_app,
    global_options,
)
from aionctl.output import OutputFormat, document, emit

if TYPE_CHECKING:
    from aion.kafka.admin import KafkaAdmin, PartitionLag
    from aion.kafka.config import KafkaConfig
    from aion.kafka.plans import AclPlan, TopicPlan

app = command_app()
app.info.help = "Create Kafka topics and ACLs from kafka.yml; show a consumer group's lag."
app.info.no_args_is_help = True
topics_app = command_app()
topics_app.info.help = "The topics aion writes, as kafka.yml describes them."
topics_app.info.no_args_is_help = True
acls_app = command_app()
acls_app.info.help = "The ACLs of the principals kafka.yml lists."
acls_app.info.no_args_is_help = True
app.add_typer(topics_app, name="topics")
app.add_typer(acls_app, name="acls")

DEFAULT_FILE = Path("kafka.yml")

KafkaFile = Annotated[
    Path,
    typer.Argument(metavar="[FILE]", envvar="AION_KAFKA_CONFIG", show_default=False,
                   help="The Kafka file ('-': standard input) [default: $AION_KAFKA_CONFIG, else "
                        "./kafka.yml]."),
]  # fmt: skip
RequiredKafkaFile = Annotated[
    Path, typer.Argument(metavar="FILE", show_default=False, help="The Kafka file whose acls: to apply.")
]
SaslUsername = Annotated[
    str | None,
    typer.Option("--sasl-username", envvar="AION_KAFKA_SASL_USERNAME", metavar="USER",
                 help="Connect as this SCRAM user (an admin) rather than the file's."),
]  # fmt: skip
SaslPasswordSecret = Annotated[
    str | None,
    typer.Option("--sasl-password-secret", envvar="AION_KAFKA_SASL_PASSWORD_SECRET", metavar="NAME",
                 help="The secret holding that user's password, read through the secret backend."),
]  # fmt: skip
KafkaTimeout = Annotated[
    float,
    typer.Option("--timeout", envvar="AION_KAFKA_TIMEOUT", min=0.1, max=600.0, metavar="SECONDS",
                 callback=_finite, help="Deadline for each call to Kafka."),
]  # fmt: skip
DryRun = Annotated[bool, typer.Option("--dry-run", help="Show the plan; change nothing.")]


@dataclasses.dataclass(frozen=True, slots=True)
class Connection:
    """How to reach the cluster, beyond what the file says."""

    sasl_username: str | None
    sasl_password_secret: str | None
    backend: BackendOptions
    timeout: float


BACKEND_OPTIONS = {
    "backend": (SecretsBackendName, DEFAULT_SECRETS_BACKEND),
    "secrets_dir": (SecretsDir, DEFAULT_SECRETS_DIR),
    "sops_file": (SopsFile, None),
    "sops_age_key_file": (SopsAgeKeyFile, None),
    "vault_addr": (VaultAddr, None),
    "vault_mount": (VaultMount, DEFAULT_VAULT_MOUNT),
    "vault_path": (VaultPath, DEFAULT_VAULT_PATH),
    "vault_token_file": (VaultTokenFile, None),
    "vault_role_id_file": (VaultRoleIdFile, None),
    "vault_secret_id_file": (VaultSecretIdFile, None),
    "vault_ca_cert": (VaultCaCert, None),
}
_CONNECTION = {
    "sasl_username": (SaslUsername, None),
    "sasl_password_secret": (SaslPasswordSecret, None),
    "timeout": (KafkaTimeout, 30.0),
    **BACKEND_OPTIONS,
}


def kafka_command(typer_app: typer.Typer, name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register a command that talks to Kafka. The command takes ``connection: Connection``; this
    adds the options every such command shares (the SASL overrides, ``--timeout`` and the secret
    backend's options) and gathers them into it, so each command states only its own options."""

    def register(command: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "connection"]
        keyword = inspect.Parameter.KEYWORD_ONLY
        added = [
            inspect.Parameter(key, keyword, default=default, annotation=annotation)
            for key, (annotation, default) in _CONNECTION.items()
        ]

        @functools.wraps(command)
        def run(**kwargs: Any) -> None:
            options = {key: kwargs.pop(key) for key in _CONNECTION}
            connection = Connection(
                sasl_username=options.pop("sasl_username"),
                sasl_password_secret=options.pop("sasl_password_secret"),
                timeout=options.pop("timeout"),
                backend=backend_options(**options),
            )
            command(connection=connection, **kwargs)

        run.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
        typer_app.command(name)(run)
        return command

    return register


def load_config(file: Path, ctx: typer.Context) -> KafkaConfig:
    from aion.kafka.config import load

    config = load(file)
    if not global_options(ctx).quiet:
        for finding in config.findings:
            where = f"{finding.file}:{finding.line}:{finding.column}" if finding.line else finding.file
            sys.stderr.write(f"{where}: {finding.severity.value} {finding.rule}: {finding.message}\n")
    return config


def _admin(config: KafkaConfig, connection: Connection) -> KafkaAdmin:
    from aion.kafka.admin import KafkaAdmin
    from aion.kafka.config import client_settings
    from aion.secrets.select import backend_for

    needs_secret = config.uses_sasl or config.key_password_secret is not None
    secrets = backend_for(connection.backend) if needs_secret else None
    settings = client_settings(
        config, secrets, username=connection.sasl_username, password_secret=connection.sasl_password_secret
    )
    return KafkaAdmin(settings, timeout=connection.timeout)


def _quiet_text(ctx: typer.Context, output: OutputFormat) -> bool:
    return global_options(ctx).quiet and output is OutputFormat.TEXT


# -- topics ensure ----------------------------------------------------------------------------------


@kafka_command(topics_app, "ensure")
def ensure_command(
    ctx: typer.Context,
    connection: Connection,
    file: KafkaFile = DEFAULT_FILE,
    dry_run: DryRun = False,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Create the topics kafka.yml describes, add partitions, and set their configs (retention.ms,
    ...); show the plan as a diff. Never removes a partition or deletes anything: a topic with more
    partitions than asked, or another replication factor, is a conflict (exit 6, nothing applied)."""
    from aion.errors import ConflictError
    from aion.kafka.plans import plan_topics

    config = load_config(file, ctx)
    with _admin(config, connection) as admin:
        keys = {key for spec in config.topics.values() for key in spec.kafka_configs()}
        plan = plan_topics(config, admin.topics([spec.name for spec in config.topics.values()], keys))
        conflicts = plan.conflicts
        applied = not dry_run and not conflicts and bool(plan.changes)
        if applied:
            admin.apply_topics(plan.changes)
    body = _topic_body(config, plan, dry_run=dry_run, applied=applied)
    if not _quiet_text(ctx, output):
        emit(document("KafkaTopicPlan", body), output, text=lambda: _topic_text(body))
    if conflicts:
        first = conflicts[0].problems[0]
        count = sum(len(step.problems) for step in conflicts)
        raise ConflictError(
            f"{count} {'conflict' if count == 1 else 'conflicts'} between kafka.yml and the cluster: "
            f"{first.message}; nothing was applied",
            hint=first.hint,
        )


def _topic_body(config: KafkaConfig, plan: TopicPlan, *, dry_run: bool, applied: bool) -> dict[str, Any]:
    steps = [
        {
            "role": step.role,
            "name": step.name,
            "action": step.action,
            "partitions": {"before": step.partitions[0], "after": step.partitions[1]},
            "replicationFactor": {"before": step.replication_factor[0], "after": step.replication_factor[1]},
            "configs": [{"key": c.key, "before": c.before, "after": c.after} for c in step.configs],
            "problems": [{"message": p.message, "hint": p.hint} for p in step.problems],
        }
        for step in plan.steps
    ]
    summary = {action: sum(1 for s in plan.steps if s.action == action) for action in _ACTIONS}
    return {
        "file": str(config.path),
        "bootstrapServers": list(config.bootstrap_servers),
        "dryRun": dry_run,
        "applied": applied,
        "topics": steps,
        "summary": summary,
    }


_ACTIONS = ("create", "change", "ok", "conflict")
_MARK = {"create": "+", "change": "~", "ok": "=", "conflict": "!", "delete": "-", "extra": "?"}


def _topic_text(body: dict[str, Any]) -> str:
    lines = []
    for step in body["topics"]:
        before, after = step["partitions"]["before"], step["partitions"]["after"]
        rf = step["replicationFactor"]
        head = f"{_MARK[step['action']]} {step['name']} ({step['role']}): {step['action']}"
        if step["action"] == "create":
            head += f", {after} partition{'s' if after != 1 else ''}, replication factor {rf['after']}"
        lines.append(head)
        if before is not None and before != after:
            lines.append(f"    partitions {before} -> {after}")
        if rf["before"] is not None and rf["before"] != rf["after"]:
            lines.append(f"    replication factor {rf['before']} -> {rf['after']}")
        for change in step["configs"]:
            if change["before"] is None:
                lines.append(f"    {change['key']} = {change['after']}")
            else:
                lines.append(f"    {change['key']} {change['before']} -> {change['after']}")
        for problem in step["problems"]:
            lines.append(f"    conflict: {problem['message']}")
            lines.append(f"    hint: {problem['hint']}")
    counts = body["summary"]
    said = ", ".join(f"{counts[a]} {a if a != 'conflict' else 'in conflict'}" for a in _ACTIONS if counts[a])
    if counts["conflict"]:
        tail = "nothing applied"
    elif counts["create"] + counts["change"] == 0:
        tail = "nothing to do"
    elif body["dryRun"]:
        tail = "dry run: nothing applied"
    else:
        tail = "applied"
    lines.append(f"topics at {','.join(body['bootstrapServers'])}: {said}; {tail}")
    return "\n".join(lines) + "\n"


# -- acls apply -----------------------------------------------------------------------------------


@kafka_command(acls_app, "apply")
def acls_command(
    ctx: typer.Context,
    connection: Connection,
    file: RequiredKafkaFile,
    dry_run: DryRun = False,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune", help="Also delete the bindings of the file's principals that it does not grant."
        ),
    ] = False,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Grant each principal of kafka.yml's acls: exactly what its role needs (producer: WRITE and
    DESCRIBE on its topics, IDEMPOTENT_WRITE on the cluster; consumer: READ and DESCRIBE on its
    topics, READ on its group); show the plan as a diff. Bindings it does not grant are listed,
    and deleted only with --prune; principals the file does not list are never touched."""
    from aion.errors import UsageError
    from aion.kafka.plans import plan_acls

    config = load_config(file, ctx)
    if not config.acls:
        raise UsageError(f"{file} has no acls: to apply", hint="add acls: entries (docs/kafka.md)")
    with _admin(config, connection) as admin:
        principals = list(dict.fromkeys(rule.principal for rule in config.acls))
        plan = plan_acls(config, admin.acls(principals), prune=prune)
        applied = not dry_run and plan.changes > 0
        if applied:
            admin.create_acls(plan.create)
            admin.delete_acls(plan.delete)
    body = _acl_body(config, plan, dry_run=dry_run, applied=applied, prune=prune)
    if not _quiet_text(ctx, output):
        emit(document("KafkaAclPlan", body), output, text=lambda: _acl_text(body))


def _acl_body(
    config: KafkaConfig, plan: AclPlan, *, dry_run: bool, applied: bool, prune: bool
) -> dict[str, Any]:
    rows = []
    for action, bindings in (
        ("create", plan.create),
        ("delete", plan.delete),
        ("ok", plan.ok),
        ("extra", plan.extra),
    ):
        for b in bindings:
            rows.append(
                {
                    "action": action,
                    "principal": b.principal,
                    "resourceType": b.resource_type.lower(),
                    "resource": b.resource,
                    "pattern": b.pattern.lower(),
                    "operation": b.operation.lower(),
                    "permission": b.permission.lower(),
                    "host": b.host,
                }
            )
    rows.sort(key=lambda r: (r["principal"], r["resourceType"], r["resource"], r["operation"], r["action"]))
    return {
        "file": str(config.path),
        "bootstrapServers": list(config.bootstrap_servers),
        "dryRun": dry_run,
        "applied": applied,
        "prune": prune,
        "principals": list(plan.principals),
        "bindings": rows,
        "summary": {
            "create": len(plan.create),
            "delete": len(plan.delete),
            "ok": len(plan.ok),
            "extra": len(plan.extra),
        },
    }


def _acl_text(body: dict[str, Any]) -> str:
    lines = []
    for row in body["bindings"]:
        where = f"{row['resourceType']} {row['resource']}"
        if row["pattern"] != "literal":
            where += f" ({row['pattern']})"
        host = "" if row["host"] == "*" else f" from {row['host']}"
        verb = "" if row["permission"] == "allow" else f"{row['permission']} "
        note = "  (not granted by the file; --prune deletes it)" if row["action"] == "extra" else ""
        operation = row["operation"].upper()
        lines.append(f"{_MARK[row['action']]} {row['principal']} {verb}{operation} on {where}{host}{note}")
    counts = body["summary"]
    said = ", ".join(f"{counts[a]} {a}" for a in ("create", "delete", "ok", "extra") if counts[a]) or "none"
    if counts["create"] + counts["delete"] == 0:
        tail = "nothing to do"
    elif body["dryRun"]:
        tail = "dry run: nothing applied"
    else:
        tail = "applied"
    lines.append(f"ACLs at {','.join(body['bootstrapServers'])}: {said}; {tail}")
    return "\n".join(lines) + "\n"


# -- lag ------------------------------------------------------------------------------------------


@kafka_command(app, "lag")
def lag_command(
    ctx: typer.Context,
    connection: Connection,
    group: Annotated[str, typer.Argument(metavar="GROUP", help="The consumer group.")],
    file: KafkaFile = DEFAULT_FILE,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Show, per partition of the topics the consumer group reads, its committed offset, the high
    watermark and the lag (records still to read), and the total."""
    from aion.errors import UsageError

    if not group or len(group) > 249 or not group.isprintable():
        raise UsageError(
            f"GROUP {group[:80]!r} is not a consumer group name", hint="1 to 249 printable characters"
        )
    config = load_config(file, ctx)
    with _admin(config, connection) as admin:
        rows = admin.lag(group)
    body = _lag_body(config, group, rows)
    if not _quiet_text(ctx, output):
        emit(document("KafkaLag", body), output, text=lambda: _lag_text(body))


def _lag_body(config: KafkaConfig, group: str, rows: list[PartitionLag]) -> dict[str, Any]:
    return {
        "bootstrapServers": list(config.bootstrap_servers),
        "group": group,
        "partitions": [
            {
                "topic": row.topic,
                "partition": row.partition,
                "committed": row.committed,
                "lowWatermark": row.low_watermark,
                "highWatermark": row.high_watermark,
                "lag": row.lag,
            }
            for row in rows
        ],
        "total": sum(row.lag for row in rows),
    }


def _lag_text(body: dict[str, Any]) -> str:
    table = [("TOPIC", "PARTITION", "COMMITTED", "HIGH WATERMARK", "LAG")] + [
        (
            row["topic"],
            str(row["partition"]),
            "-" if row["committed"] is None else str(row["committed"]),
            str(row["highWatermark"]),
            str(row["lag"]),
        )
        for row in body["partitions"]
    ]
    widths = [max(len(r[i]) for r in table) for i in range(5)]
    lines = [
        "  ".join(f"{cell:<{widths[i]}}" if i == 0 else f"{cell:>{widths[i]}}" for i, cell in enumerate(r))
        for r in table
    ]
    lines.append(f"group {body['group']}: total lag {body['total']}")
    return "\n".join(line.rstrip() for line in lines) + "\n"
