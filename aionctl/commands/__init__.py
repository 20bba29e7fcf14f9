"""The registry of aionctl's commands, one module per noun, imported only when that command runs.

Each module exposes ``app``, made by :func:`aionctl.options.command_app`. The one-line help here is
what ``aionctl --help`` lists, so listing commands never imports them.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str
    module: str
    help: str


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec("validate", "aionctl.commands.validate", "Validate config files offline: the CI gate."),
    CommandSpec("explain", "aionctl.commands.explain", "Explain a validation rule (or list them all)."),
    CommandSpec("install", "aionctl.commands.install", "Verify a signed module, then install it."),
    CommandSpec(
        "module",
        "aionctl.commands.module",
        "Build, publish, sign, install, inspect, verify, remove modules.",
    ),
    CommandSpec(
        "verify", "aionctl.commands.verify", "Verify signatures offline (Sigstore bundles of files)."
    ),
    CommandSpec("health", "aionctl.commands.health", "Check that aiond is alive and ready (gRPC and HTTP)."),
    CommandSpec("status", "aionctl.commands.status", "Show what the running aiond reports about itself."),
    CommandSpec("whoami", "aionctl.commands.whoami", "Show the principal and role aiond sees for you."),
    CommandSpec(
        "config",
        "aionctl.commands.config",
        "Manage client contexts: where aiond is and how to authenticate.",
    ),
    CommandSpec(
        "policy", "aionctl.commands.policy", "Apply, reload, roll back, diff and list policy versions."
    ),
    CommandSpec("events", "aionctl.commands.events", "Read and follow the daemon's event log (audit)."),
    CommandSpec("task", "aionctl.commands.task", "Submit tasks to aiond, and read, watch or cancel them."),
    CommandSpec("route", "aionctl.commands.route", "Explain what the router would decide for a task."),
    CommandSpec("breaker", "aionctl.commands.breaker", "List circuit breakers, or force one open or closed."),
    CommandSpec("intent", "aionctl.commands.intent", "Switch an intent's privacy at runtime; list switches."),
    CommandSpec("secrets", "aionctl.commands.secrets", "Check that the secrets needed resolve (names only)."),
    CommandSpec("kafka", "aionctl.commands.kafka", "Create Kafka topics and ACLs from kafka.yml; show lag."),
    CommandSpec("audit", "aionctl.commands.audit", "Confirm that aiond's audit events reached Kafka."),
    CommandSpec("schema", "aionctl.commands.schema", "Print the JSON Schemas that ship with aion."),
    CommandSpec("metrics", "aionctl.commands.metrics", "Read aiond's metrics; check dashboards; a canary."),
    CommandSpec(
        "runbook", "aionctl.commands.runbook", "Run the operational runbook as code (list, show, run)."
    ),
    CommandSpec("backup", "aionctl.commands.backup", "Back up aiond's state; list, verify, restore backups."),
    CommandSpec("token", "aionctl.commands.token", "List API tokens by age and last use; rotate them."),
    CommandSpec(
        "completion", "aionctl.commands.completion", "Print the shell completion script (bash, zsh, ...)."
    ),
)

BY_NAME = {spec.name: spec for spec in COMMANDS}
