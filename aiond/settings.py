"""aiond's settings, each defined once.

Every setting is one dataclass field whose metadata names its command-line flag, its environment
variable, how to parse it and its help text; the argument parser, the environment lookup and the
documentation are all derived from that one definition. Precedence: flag > environment > default.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aion.addresses import HostPort, parse_hostport
from aion.errors import UsageError
from aion.secrets.select import BACKENDS as SECRETS_BACKENDS
from aion.secrets.select import check_addr, check_location
from aion.secrets.select import check_settings as check_secrets_settings
from aiond.quick import default_state_dir  # there, so that --help need not load this module

DEFAULT_GRPC_LISTEN = HostPort("127.0.0.1", 8470)
DEFAULT_HTTP_LISTEN = HostPort("127.0.0.1", 8471)
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
DEFAULT_SECRETS_DIR = Path("/run/secrets/aion")
"""The same directory models.yml's secrets.directory defaults to (aion.config.model), not imported
from there: aiond's flags must not wait for the config model to load."""


@dataclasses.dataclass(frozen=True, slots=True)
class Option:
    """How one setting is spelled outside the program."""

    flag: str
    env: str
    help: str
    metavar: str
    parse: Callable[[str, str], Any]
    """Called with (raw text, the name the user used); raises UsageError naming that name."""
    switch: bool = False
    """A flag that takes no value: given, it stands for the text ``true``; the variable takes text."""


def parse_path(text: str, name: str) -> Path:
    """An absolute path from a flag or variable called ``name``; UsageError when it is empty."""
    if not text.strip():
        raise UsageError(f"{name}: a path is required, got an empty value")
    return Path(text).expanduser().absolute()


_path = parse_path


def _hostport(text: str, name: str) -> HostPort:
    return parse_hostport(text, what=name)


def _bytes_limit(text: str, name: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{name}: {text!r} is not a whole number of bytes") from None
    if not 1024 <= value <= 256 * 1024 * 1024:
        raise UsageError(f"{name}: {value} is outside 1 KiB..256 MiB")
    return value


def _duration(low: float, high: float) -> Callable[[str, str], float]:
    """A number of seconds within ``low..high``."""

    def parse(text: str, name: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise UsageError(f"{name}: {text!r} is not a number of seconds") from None
        if not low <= value <= high:
            raise UsageError(f"{name}: {value:g} is outside {low:g}..{high:g} seconds")
        return value

    return parse


_INTERVAL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _interval(low: float, high: float) -> Callable[[str, str], float]:
    """A duration with a unit (``2s``, ``15m``, ``1h``, ``1d``) or plain seconds, within ``low..high``."""

    def parse(text: str, name: str) -> float:
        raw = text.strip().lower()
        unit = raw[-1:] if raw[-1:] in _INTERVAL_UNITS else ""
        try:
            value = float(raw[: len(raw) - len(unit)]) * _INTERVAL_UNITS.get(unit, 1)
        except ValueError:
            raise UsageError(
                f"{name}: {text!r} is not a duration", hint="give seconds, or a number with s, m, h or d"
            ) from None
        if not low <= value <= high:
            raise UsageError(f"{name}: {text} is outside {low:g}..{high:g} seconds")
        return value

    return parse


def _count(low: int, high: int) -> Callable[[str, str], int]:
    """A whole number within ``low..high``."""

    def parse(text: str, name: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise UsageError(f"{name}: {text!r} is not a whole number") from None
        if not low <= value <= high:
            raise UsageError(f"{name}: {value} is outside {low}..{high}")
        return value

    return parse


_UNITS = {"": 1, "B": 1, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}


def _size(low: int, high: int) -> Callable[[str, str], int]:
    """A size in bytes, plain or with a binary unit (``64MiB``, ``1 GiB``), within ``low..high``."""

    def parse(text: str, name: str) -> int:
        number = text.strip().rstrip("BbIiKkMmGgTt ")
        unit = text.strip()[len(number) :].strip().upper()
        if unit not in _UNITS or not number.isdigit():
            raise UsageError(
                f"{name}: {text!r} is not a size", hint="give bytes, or a number with KiB, MiB, GiB or TiB"
            )
        value = int(number) * _UNITS[unit]
        if not low <= value <= high:
            raise UsageError(f"{name}: {text} is outside {_human(low)}..{_human(high)}")
        return value

    return parse


def _human(value: int) -> str:
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        if value and value % _UNITS[unit.upper()] == 0:
            return f"{value // _UNITS[unit.upper()]} {unit}"
    return f"{value} bytes"


def _hosts(text: str, name: str) -> tuple[str, ...]:
    hosts = tuple(h.strip() for h in text.split(",") if h.strip())
    bad = [h for h in hosts if "/" in h or " " in h]
    if bad:
        raise UsageError(f"{name}: {bad[0]!r} is not a registry host[:port]")
    return hosts


def _choice(*choices: str) -> Callable[[str, str], str]:
    def parse(text: str, name: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise UsageError(f"{name}: {text!r} is not one of {', '.join(choices)}")
        return value

    return parse


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def _boolean(text: str, name: str) -> bool:
    value = text.strip().lower()
    if value not in _TRUE + _FALSE:
        raise UsageError(
            f"{name}: {text!r} is neither yes nor no", hint="use 1, true, yes or on; or 0, false, no or off"
        )
    return value in _TRUE


def _opt(
    flag: str, env: str, help_text: str, metavar: str, parse: Callable[[str, str], Any]
) -> dict[str, Option]:
    return {"option": Option(flag=flag, env=env, help=help_text, metavar=metavar, parse=parse)}


def _switch(flag: str, env: str, help_text: str) -> dict[str, Option]:
    """A setting that is off unless its flag is given or its variable says yes (1, true, yes, on)."""
    return {"option": Option(flag=flag, env=env, help=help_text, metavar="", parse=_boolean, switch=True)}


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Everything aiond needs to start. Build it with :func:`load`."""

    config_dir: Path = dataclasses.field(
        metadata=_opt("--config", "AIOND_CONFIG", "directory holding the config set (intents, policies, ...)",
                      "DIR", _path)
    )  # fmt: skip
    state_dir: Path = dataclasses.field(
        default_factory=default_state_dir,
        metadata=_opt("--state-dir", "AIOND_STATE_DIR", "directory for the daemon's durable state",
                      "DIR", _path),
    )  # fmt: skip
    init_state: bool = dataclasses.field(
        default=False,
        metadata=_switch("--init-state", "AIOND_INIT_STATE",
                         "set up fresh state in an existing but empty STATE_DIR/state.db (a 0-byte file, "
                         "say); without it aiond refuses to start on one, which may be state that lost "
                         "its contents. A missing state.db is always created"),
    )  # fmt: skip
    grpc_listen: HostPort = dataclasses.field(
        default=DEFAULT_GRPC_LISTEN,
        metadata=_opt("--grpc-listen", "AIOND_GRPC_LISTEN", "gRPC API address; port 0 picks a free port",
                      "HOST:PORT", _hostport),
    )  # fmt: skip
    http_listen: HostPort = dataclasses.field(
        default=DEFAULT_HTTP_LISTEN,
        metadata=_opt("--http-listen", "AIOND_HTTP_LISTEN",
                      "HTTP address for /healthz, /readyz and /metrics; port 0 picks a free port",
                      "HOST:PORT", _hostport),
    )  # fmt: skip
    shutdown_delay: float = dataclasses.field(
        default=0.0,
        metadata=_opt("--shutdown-delay", "AIOND_SHUTDOWN_DELAY",
                      "seconds /readyz reports 503 before draining starts, so load balancers stop "
                      "sending work first", "SECONDS", _duration(0, 3600)),
    )  # fmt: skip
    shutdown_grace: float = dataclasses.field(
        default=10.0,
        metadata=_opt("--shutdown-grace", "AIOND_SHUTDOWN_GRACE",
                      "seconds in-flight calls may take to finish on shutdown before they are cancelled",
                      "SECONDS", _duration(0, 3600)),
    )  # fmt: skip
    grpc_max_message_bytes: int = dataclasses.field(
        default=4 * 1024 * 1024,
        metadata=_opt("--grpc-max-message-bytes", "AIOND_GRPC_MAX_MESSAGE_BYTES",
                      "largest gRPC message accepted or sent", "BYTES", _bytes_limit),
    )  # fmt: skip
    http_header_timeout: float = dataclasses.field(
        default=10.0,
        metadata=_opt("--http-header-timeout", "AIOND_HTTP_HEADER_TIMEOUT",
                      "seconds an HTTP connection has to send a request's line and headers, from its "
                      "accept (TLS handshake included) or from its next request's first byte",
                      "SECONDS", _duration(0.1, 300)),
    )  # fmt: skip
    http_idle_timeout: float = dataclasses.field(
        default=75.0,
        metadata=_opt("--http-idle-timeout", "AIOND_HTTP_IDLE_TIMEOUT",
                      "seconds a keep-alive HTTP connection may wait for its next request before it is "
                      "closed", "SECONDS", _duration(0.1, 3600)),
    )  # fmt: skip
    stream_write_timeout: float = dataclasses.field(
        default=30.0,
        metadata=_opt("--stream-write-timeout", "AIOND_STREAM_WRITE_TIMEOUT",
                      "seconds a streaming caller (server-sent events on /v1/chat/completions) may leave "
                      "an answer unread before it is cut off and its task canceled", "SECONDS",
                      _duration(0.1, 3600)),
    )  # fmt: skip
    grpc_handshake_timeout: float = dataclasses.field(
        default=10.0,
        metadata=_opt("--grpc-handshake-timeout", "AIOND_GRPC_HANDSHAKE_TIMEOUT",
                      "seconds a gRPC connection has for its TLS handshake and HTTP/2 settings before it "
                      "is closed", "SECONDS", _duration(0.1, 300)),
    )  # fmt: skip
    grpc_idle_timeout: float = dataclasses.field(
        default=300.0,
        metadata=_opt("--grpc-idle-timeout", "AIOND_GRPC_IDLE_TIMEOUT",
                      "seconds a gRPC connection may go without a call before the daemon asks the "
                      "client to go away (it reconnects for its next call)", "SECONDS",
                      _duration(1, 86400)),
    )  # fmt: skip
    max_connections: int | None = dataclasses.field(
        default=None,
        metadata=_opt("--max-connections", "AIOND_MAX_CONNECTIONS",
                      "most connections each listener (HTTP, gRPC) holds at once; past it HTTP closes "
                      "the connection that has waited longest for a request (else the new one) and "
                      "gRPC refuses the new one [default: (open-file limit - 64) / 2]", "N",
                      _count(1, 1_000_000)),
    )  # fmt: skip
    log_level: str = dataclasses.field(
        default="info",
        metadata=_opt("--log-level", "AIOND_LOG_LEVEL", "one of " + ", ".join(LOG_LEVELS), "LEVEL",
                      _choice(*LOG_LEVELS)),
    )  # fmt: skip
    module_store: Path | None = dataclasses.field(
        default=None,
        metadata=_opt("--module-store", "AIOND_MODULE_STORE",
                      "directory of installed modules (the store aionctl install --store uses) "
                      "[default: STATE_DIR/modules]", "DIR", _path),
    )  # fmt: skip
    sandbox_uid: int = dataclasses.field(
        default=65534,
        metadata=_opt("--sandbox-uid", "AIOND_SANDBOX_UID",
                      "unprivileged uid (and gid) subprocess modules run as; give them an account of "
                      "their own [default: 65534, nobody]", "UID", _count(1, 4_294_967_294)),
    )  # fmt: skip
    registry_plain_http: tuple[str, ...] = dataclasses.field(
        default=(),
        metadata=_opt("--registry-plain-http", "AIOND_REGISTRY_PLAIN_HTTP",
                      "comma-separated registries (host:port) to reach over HTTP instead of HTTPS; "
                      "for a local test registry only", "HOSTS", _hosts),
    )  # fmt: skip
    secrets_dir: Path = dataclasses.field(
        default=DEFAULT_SECRETS_DIR,
        metadata=_opt("--secrets-dir", "AIOND_SECRETS_DIR",
                      "directory of the provider API key files, one per secret, named after it: the "
                      "only place aiond reads keys from (a config set's secrets.directory is not read)",
                      "DIR", _path),
    )  # fmt: skip
    secrets_backend: str = dataclasses.field(
        default="files",
        metadata=_opt("--secrets-backend", "AIOND_SECRETS_BACKEND",
                      "where provider API keys and module secrets are read: files (--secrets-dir), sops "
                      "(--sops-file) or vault (--vault-addr); fixed at start-up, never by a config set",
                      "BACKEND", _choice(*SECRETS_BACKENDS)),
    )  # fmt: skip
    sops_file: Path | None = dataclasses.field(
        default=None,
        metadata=_opt("--sops-file", "AIOND_SOPS_FILE",
                      "sops-encrypted YAML or JSON file (age recipients), one top-level key per secret; "
                      "decrypted by the sops program on PATH into memory only, again whenever it changes",
                      "FILE", _path),
    )  # fmt: skip
    sops_age_key_file: Path | None = dataclasses.field(
        default=None,
        metadata=_opt("--sops-age-key-file", "AIOND_SOPS_AGE_KEY_FILE",
                      "age identity file that decrypts --sops-file (given to sops as SOPS_AGE_KEY_FILE "
                      "in its own environment only)", "FILE", _path),
    )  # fmt: skip
    vault_addr: str | None = dataclasses.field(
        default=None,
        metadata=_opt("--vault-addr", "AIOND_VAULT_ADDR",
                      "HashiCorp Vault address; the secrets are the keys of the KV v2 secret "
                      "--vault-mount/--vault-path", "URL", check_addr),
    )  # fmt: skip
    vault_mount: str = dataclasses.field(
        default="secret",
        metadata=_opt("--vault-mount", "AIOND_VAULT_MOUNT", "mount point of the KV v2 secrets engine",
                      "MOUNT", check_location),
    )  # fmt: skip
    vault_path: str = dataclasses.field(
        default="aion",
        metadata=_opt("--vault-path", "AIOND_VAULT_PATH",
                      "path, under --vault-mount, of the one secret whose keys are the secret names",
                      "PATH", check_location),
    )  # fmt: skip
    vault_token_file: Path | None = dataclasses.field(
        default=None,
        metadata=_opt("--vault-token-file", "AIOND_VAULT_TOKEN_FILE",
                      "file holding a Vault token (read again when it changes, renewed while renewable)",
                      "FILE", _path),
    )  # fmt: skip
    vault_role_id_file: Path | None = dataclasses.field(
        default=None,
        metadata=_opt("--vault-role-id-file", "AIOND_VAULT_ROLE_ID_FILE",
                      "file holding the AppRole role_id (with --vault-secret-id-file, instead of a token)",
                      "FILE", _path),
    )  # fmt: skip
    vault_secret_id_file: Path | None = dataclasses.field(
        default=None,
        metadata=_opt("--vault-secret-id-file", "AIOND_VAULT_SECRET_ID_FILE",
                      "file holding the AppRole secret_id, read again at each login", "FILE", _path),
    )  # fmt: skip
    vault_ca_cert: Path | None = dataclasses.field(
        default=None,
        metadata=_opt("--vault-ca-cert", "AIOND_VAULT_CA_CERT",
                      "PEM CA bundle that verifies Vault's TLS certificate [default: the system's CAs]",
                      "FILE", _path),
    )  # fmt: skip
    vault_cache_ttl: float = dataclasses.field(
        default=60.0,
        metadata=_opt("--vault-cache-ttl", "AIOND_VAULT_CACHE_TTL",
                      "seconds values read from Vault are used before they are read again (a rotation "
                      "takes effect within this; 0 reads at every use)", "SECONDS", _duration(0, 86400)),
    )  # fmt: skip
    kafka_config: Path | None = dataclasses.field(
        default=None,
        metadata=_opt("--kafka-config", "AIOND_KAFKA_CONFIG",
                      "kafka.yml: deliver every event to Kafka through the outbox (docs/kafka.md) "
                      "[default: events stay in the local event log]", "FILE", _path),
    )  # fmt: skip
    trust_keys_dir: Path | None = dataclasses.field(
        default=None,
        metadata=_opt("--trust-keys-dir", "AIOND_TRUST_KEYS_DIR",
                      "directory of public keys that trust rules may name by absolute path, besides "
                      "keys inside --config; a key anywhere else is refused", "DIR", _path),
    )  # fmt: skip
    tls_cert: Path | None = dataclasses.field(
        default=None,
        metadata=_opt("--tls-cert", "AIOND_TLS_CERT",
                      "PEM server certificate (chain); serves gRPC and HTTP over TLS", "FILE", _path),
    )  # fmt: skip
    tls_key: Path | None = dataclasses.field(
        default=None,
        metadata=_opt("--tls-key", "AIOND_TLS_KEY", "PEM private key of --tls-cert", "FILE", _path),
    )  # fmt: skip
    tls_client_ca: Path | None = dataclasses.field(
        default=None,
        metadata=_opt("--tls-client-ca", "AIOND_TLS_CLIENT_CA",
                      "PEM CA bundle; gRPC clients must then present a certificate it signed (mTLS), "
                      "and the certificate's identity becomes the caller's principal", "FILE", _path),
    )  # fmt: skip
    startup_policy: str = dataclasses.field(
        default="resume",
        metadata=_opt("--startup-policy", "AIOND_STARTUP_POLICY",
                      "resume: start on the stored active policy version (the config directory only "
                      "when there is none); config: activate the config directory if it is valid",
                      "MODE", _choice("resume", "config")),
    )  # fmt: skip
    backup_dir: Path | None = dataclasses.field(
        default=None,
        metadata=_opt("--backup-dir", "AIOND_BACKUP_DIR",
                      "take a snapshot of the state into DIR at start-up and every --backup-interval "
                      "(aion-backup-<time>.tar, `aionctl backup verify|restore`) [default: none]",
                      "DIR", _path),
    )  # fmt: skip
    backup_interval: float = dataclasses.field(
        default=900.0,
        metadata=_opt("--backup-interval", "AIOND_BACKUP_INTERVAL",
                      "time between scheduled snapshots: seconds, or with a unit (30s, 15m, 1h); "
                      "1s..7d", "DURATION", _interval(1, 7 * 86400)),
    )  # fmt: skip
    backup_keep: int = dataclasses.field(
        default=96,
        metadata=_opt("--backup-keep", "AIOND_BACKUP_KEEP",
                      "scheduled snapshots kept in --backup-dir, the newest; older ones are deleted "
                      "after each new one is complete", "N", _count(1, 100_000)),
    )  # fmt: skip
    event_log_segment: int = dataclasses.field(
        default=64 << 20,
        metadata=_opt("--event-log-segment", "AIOND_EVENT_LOG_SEGMENT",
                      "size past which STATE_DIR/events.jsonl is sealed into a numbered segment",
                      "SIZE", _size(1 << 20, 4 << 30)),
    )  # fmt: skip
    event_log_keep: int = dataclasses.field(
        default=1 << 30,
        metadata=_opt("--event-log-keep", "AIOND_EVENT_LOG_KEEP",
                      "sealed event-log segments beyond this size in total are deleted, oldest first "
                      "(STATE_DIR/audit.jsonl never is)", "SIZE", _size(0, 1 << 40)),
    )  # fmt: skip
    token_use_interval: float = dataclasses.field(
        default=60.0,
        metadata=_opt("--token-use-interval", "AIOND_TOKEN_USE_INTERVAL",
                      "how often credentials' last use is written to the state (at most once per "
                      "credential each time)", "SECONDS", _duration(1, 3600)),
    )  # fmt: skip
    log_format: str = dataclasses.field(
        default="text",
        metadata=_opt("--log-format", "AIOND_LOG_FORMAT", "text, or json (one object per line)", "FORMAT",
                      _choice(*LOG_FORMATS)),
    )  # fmt: skip

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise UsageError("--tls-cert and --tls-key go together", hint="give both, or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise UsageError(
                "--tls-client-ca needs --tls-cert and --tls-key", hint="mTLS runs over a TLS server"
            )
        check_secrets_settings(self)

    @property
    def modules_dir(self) -> Path:
        """The module store: --module-store, else STATE_DIR/modules."""
        return self.module_store or self.state_dir / "modules"


def options() -> list[tuple[dataclasses.Field[Any], Option]]:
    """Every setting with its spelling, in declaration order."""
    return [(f, f.metadata["option"]) for f in dataclasses.fields(Settings)]


def _is_required(field: dataclasses.Field[Any]) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _default_text(field: dataclasses.Field[Any]) -> str:
    if field.default is not dataclasses.MISSING:
        return str(field.default)
    if field.default_factory is not dataclasses.MISSING:
        return str(field.default_factory())
    return "required"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting; every flag defaults to None so that the environment can fill it in."""
    for field, opt in options():
        shows_default = not opt.switch and field.default not in (None, ())
        default = f"; default: {_default_text(field)}" if shows_default else ""
        help_text = f"{opt.help} [env {opt.env}{default}]"
        if opt.switch:
            # The flag stands for the text "true", so load() treats flags and variables alike.
            parser.add_argument(
                opt.flag, dest=field.name, action="store_const", const="true", default=None, help=help_text
            )
        else:
            parser.add_argument(opt.flag, dest=field.name, metavar=opt.metavar, default=None, help=help_text)


def load(flags: Mapping[str, str | None], environ: Mapping[str, str]) -> Settings:
    """Resolve every setting from flags, then the environment, then its default."""
    values: dict[str, Any] = {}
    for field, opt in options():
        raw = flags.get(field.name)
        name = opt.flag
        if raw is None and opt.env in environ:
            raw, name = environ[opt.env], opt.env
        if raw is not None:
            values[field.name] = opt.parse(raw, name)
        elif _is_required(field):
            raise UsageError(
                f"{opt.flag} is required", hint=f"pass {opt.flag} {opt.metavar} or set {opt.env}"
            )
    return Settings(**values)


__all__ = ["Option", "Settings", "add_arguments", "default_state_dir", "load", "options", "parse_path"]
