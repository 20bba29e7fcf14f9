"""Client contexts: named sets of connection settings for aionctl (where aiond is, how to authenticate),
kept in one YAML file, like kubectl's kubeconfig.

This module owns the file: finding it (:func:`config_path`), reading and checking it (:func:`load`),
writing it atomically with mode 0600 (:func:`save`) and picking the context an invocation uses
(:func:`select`). It does not connect to anything and never prints; it imports nothing heavier than the
standard library at import time (YAML is loaded when a file is read or written), because aionctl looks
contexts up on commands that shells run in loops.

The file (schema ``client/config``)::

    apiVersion: aion/v1
    kind: ClientConfig
    current-context: prod
    contexts:
      - name: prod
        addr: aiond.prod:8470
        http-addr: aiond.prod:8471
        token-file: ~/.config/aion/prod.token
        tls: {ca: ca.pem, cert: client.pem, key: client-key.pem, server-name: aiond.prod}

Relative paths (``token-file`` and the ``tls`` files) are relative to the file's own directory, and
``~`` expands, once :func:`load` resolves them; :func:`load` with ``resolve_paths=False`` keeps them as
written, which is what an editing command saves back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from aion.errors import InputError, UsageError

if TYPE_CHECKING:
    from aion.config.yamlload import Document

CONFIG_ENV = "AION_CLIENT_CONFIG"
"""Environment variable naming the file (the default is under ``$XDG_CONFIG_HOME/aion/``)."""
API_VERSION = "aion/v1"
KIND = "ClientConfig"
MAX_FILE_BYTES = 1024 * 1024
"""Largest config file read: a few hundred contexts fit in a fraction of this."""
MAX_TOKEN_FILE_BYTES = 4 * 1024
"""Largest token file read (an aiond token is under a hundred bytes)."""
MAX_NAME_LENGTH = 253
FILE_MODE = 0o600
DIR_MODE = 0o700

# Names that work as they are in shells, tables and YAML, and that cover the usual naming schemes
# (prod, eu-west-1, alice@prod, team/prod).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@:/+-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

_TOP_KEYS = ("apiVersion", "kind", "current-context", "contexts")
_CONTEXT_KEYS = ("name", "addr", "http-addr", "token", "token-file", "tls")
_TLS_KEYS = ("ca", "cert", "key", "server-name")
# Context field for each key of a context and of its tls mapping, in the order the file is written.
_FIELD_OF_KEY = {
    "addr": "addr",
    "http-addr": "http_addr",
    "token": "token",
    "token-file": "token_file",
}
_FIELD_OF_TLS_KEY = {"ca": "ca_file", "cert": "cert_file", "key": "key_file", "server-name": "server_name"}
_PATH_FIELDS = ("token_file", "ca_file", "cert_file", "key_file")

Auth = Literal["token", "token-file", "none"]


@dataclasses.dataclass(frozen=True, slots=True)
class Context:
    """One named set of connection settings. Every setting but the name is optional: what a context
    leaves out comes from flags, the environment or the built-in defaults."""

    name: str
    addr: str | None = None
    """aiond's gRPC address, HOST:PORT."""
    http_addr: str | None = None
    """aiond's HTTP address (health, readiness, metrics), HOST:PORT."""
    token: str | None = None
    """An API token, inline (``token_file`` is preferred: it keeps the token out of this file)."""
    token_file: str | None = None
    """A file whose content (stripped of surrounding whitespace) is the API token."""
    ca_file: str | None = None
    """PEM bundle of the certificate authorities that may sign aiond's certificate."""
    cert_file: str | None = None
    """PEM client certificate, for mutual TLS (with ``key_file``)."""
    key_file: str | None = None
    """PEM private key of ``cert_file``."""
    server_name: str | None = None
    """Name to check aiond's certificate against, when it differs from the host in ``addr``."""

    @property
    def auth(self) -> Auth:
        """How the context authenticates: an inline token, a token file, or not at all."""
        if self.token is not None:
            return "token"
        if self.token_file is not None:
            return "token-file"
        return "none"

    @property
    def uses_tls(self) -> bool:
        """Whether the context sets any TLS setting (and so connects with TLS)."""
        return any(v is not None for v in (self.ca_file, self.cert_file, self.key_file, self.server_name))

    def read_token(self) -> str | None:
        """The API token: ``token``, else the stripped content of ``token_file``, else None. An unreadable,
        empty or oversized token file is an InputError (exit 3) naming the file."""
        if self.token is not None:
            return self.token
        if self.token_file is None:
            return None
        from aion.inputs import read_bounded

        where = f"context {self.name!r}: token-file {self.token_file}"
        hint = "check the path and its permissions, or change it with `aionctl config set-context`"
        # Bounded, regular files only: a token-file pointing at a FIFO or /dev/zero must neither hang
        # nor fill memory.
        data = read_bounded(
            self.token_file, MAX_TOKEN_FILE_BYTES, what=f"context {self.name!r}: token-file", hint=hint
        )
        try:
            token = data.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise InputError(f"{where}: not UTF-8 text", hint=hint) from exc
        if not token:
            raise InputError(f"{where}: the file is empty", hint="write the token into it")
        try:
            check_token(token, what=where)
        except UsageError as exc:
            raise InputError(exc.message, hint="the file must hold the token alone") from None
        return token

    def resolved(self, base: Path) -> Context:
        """This context with ``~`` expanded and relative paths made absolute against ``base``."""
        changes = {
            field: _resolve(value, base)
            for field in _PATH_FIELDS
            if (value := getattr(self, field)) is not None
        }
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass
class ClientConfig:
    """The whole file: the contexts, in file order, and the current one."""

    current_context: str | None = None
    contexts: dict[str, Context] = dataclasses.field(default_factory=dict)

    def find(self, name: str, *, source: Path) -> Context:
        """The context called ``name``; a UsageError (exit 2) with the close matches when there is none
        (``source`` is the file, for the message)."""
        found = self.contexts.get(name)
        if found is None:
            raise unknown_context(name, list(self.contexts), source)
        return found


def config_path() -> Path:
    """The client config file: ``$AION_CLIENT_CONFIG``, else ``$XDG_CONFIG_HOME/aion/config.yaml``, else
    ``~/.config/aion/config.yaml``."""
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME")
    # The XDG spec says a relative value is invalid and to be ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".config"
    return base / "aion" / "config.yaml"


def load(path: Path, *, resolve_paths: bool = True) -> ClientConfig:
    """Read and check the file at ``path``; a missing file is an empty config. Anything wrong with the
    file is an InputError (exit 3) naming the file, the line and the field.

    With ``resolve_paths`` (the default), file paths in contexts are absolute, as connecting needs
    them; without, they are as written, as saving an edited file needs them."""
    source = _read(path)
    if source is None:
        return ClientConfig()
    config = _Parser(path, source).parse()
    if resolve_paths:
        base = path.absolute().parent
        config.contexts = {name: ctx.resolved(base) for name, ctx in config.contexts.items()}
    return config


def save(path: Path, config: ClientConfig) -> None:
    """Write ``config`` to ``path`` atomically (a temporary file in the same directory, flushed to disk,
    then renamed over the old one), with mode 0600, creating the directory (mode 0700) if needed. A
    failure leaves the old file as it was and is an InputError (exit 3). A symbolic link is followed:
    the file it points to is replaced, the link stays."""
    import tempfile

    import yaml

    for name, ctx in config.contexts.items():
        if name != ctx.name:
            raise ValueError(f"context {ctx.name!r} is filed under {name!r}")
    if config.current_context is not None and config.current_context not in config.contexts:
        raise ValueError(f"current context {config.current_context!r} is not among the contexts")
    text = yaml.safe_dump(to_document(config), sort_keys=False, allow_unicode=True, width=1000)
    target = Path(os.path.realpath(path))
    hint = f"check that {target.parent} is a writable directory (or set {CONFIG_ENV} to another file)"
    try:
        target.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}", hint=hint) from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), FILE_MODE)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        Path(temp).replace(target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            Path(temp).unlink()
        raise InputError(f"cannot write {path}: {exc.strerror or exc}", hint=hint) from exc
    # The rename is durable once the directory is: best effort, some file systems refuse.
    with contextlib.suppress(OSError):
        dir_fd = os.open(target.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def select(name: str | None, path: Path) -> Context | None:
    """The context an invocation uses: the one called ``name`` (``--context`` or ``AION_CONTEXT``), else
    the file's current context, else None. An unknown name is a UsageError (exit 2) listing the known
    ones. Paths in the context are absolute."""
    config = load(path)
    if name:
        return config.find(name, source=path)
    if config.current_context is None:
        return None
    return config.contexts[config.current_context]


def to_document(config: ClientConfig) -> dict[str, Any]:
    """The file's content as plain data, keys in their documented order, unset settings left out."""
    doc: dict[str, Any] = {"apiVersion": API_VERSION, "kind": KIND}
    if config.current_context is not None:
        doc["current-context"] = config.current_context
    doc["contexts"] = [_context_document(ctx) for ctx in config.contexts.values()]
    return doc


def check_name(name: str, *, what: str) -> None:
    """A UsageError unless ``name`` can name a context (``what`` names the setting in the message)."""
    if not name:
        raise UsageError(f"{what}: a context name cannot be empty")
    if len(name) > MAX_NAME_LENGTH or not _NAME.fullmatch(name):
        raise UsageError(
            f"{what}: {_clip(name)!r} is not a valid context name",
            hint=f"use letters, digits and _ . @ : / + - (starting with a letter or digit), "
            f"at most {MAX_NAME_LENGTH} characters",
        )


def check_addr(text: str, *, what: str) -> None:
    """A UsageError unless ``text`` is an address to connect to: HOST:PORT or [IPV6]:PORT, port 1-65535."""
    from aion.addresses import parse_hostport

    if parse_hostport(text, what=what).port == 0:
        raise UsageError(f"{what}: port 0 cannot be connected to", hint="give aiond's port, e.g. 8470")


def check_text(value: str, *, what: str) -> None:
    """A UsageError when ``value`` is empty or holds control characters (which could rewrite a terminal
    or split a header)."""
    if not value:
        raise UsageError(f"{what}: cannot be empty")
    if _CONTROL.search(value):
        raise UsageError(f"{what}: contains control characters")


def check_token(value: str, *, what: str) -> None:
    """A UsageError unless ``value`` can be a token: one word of printable characters."""
    check_text(value, what=what)
    if any(ch.isspace() for ch in value):
        raise UsageError(f"{what}: a token cannot contain whitespace")


def unknown_context(name: str, known: Sequence[str], source: Path) -> UsageError:
    """The error for a context name the file lacks: close matches first, then every known name."""
    if not known:
        return UsageError(
            f"no context named {_clip(name)!r}: {source} has no contexts",
            hint="create one with `aionctl config set-context NAME --addr HOST:PORT`",
        )
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    guess = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    return UsageError(
        f"no context named {_clip(name)!r} in {source}",
        hint=f"{guess}known contexts: {', '.join(known)}",
    )


def complete_names(incomplete: str) -> list[str]:
    """Context names that start with ``incomplete``, for shell completion (nothing when the file is
    unreadable: completion must never fail loudly)."""
    try:
        names = list(load(config_path(), resolve_paths=False).contexts)
    except (InputError, OSError):
        return []
    return [n for n in names if n.startswith(incomplete)]


# -- reading -----------------------------------------------------------------------------------------


def _read(path: Path) -> bytes | None:
    hint = f"check the path, or set {CONFIG_ENV} to the client config file"
    try:
        # O_NONBLOCK: opening a FIFO by mistake must not hang; it is refused below as not a file.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}", hint=hint) from exc
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            # A directory here is usually a config-set directory given by mistake; say which file is meant.
            raise InputError(
                f"cannot read {path}: it is a directory, not the client config file",
                hint=f"set {CONFIG_ENV} to the client config file (e.g. ~/.config/aion/config.yaml)",
            )
        if not stat.S_ISREG(mode):
            raise InputError(f"cannot read {path}: not a regular file", hint=hint)
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_FILE_BYTES and (chunk := os.read(fd, MAX_FILE_BYTES + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}", hint=hint) from exc
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise InputError(
            f"{path}: the file is larger than the limit of {MAX_FILE_BYTES} bytes",
            hint="a client config holds a few contexts; is this the right file?",
        )
    return data


class _Parser:
    """Checks a loaded document against the file format, raising at the first problem with its place."""

    def __init__(self, path: Path, source: bytes) -> None:
        self.path = path
        self.source = source
        self._doc: Document | None = None

    def parse(self) -> ClientConfig:
        from aion.config import yamlload

        limits = yamlload.Limits(max_bytes=MAX_FILE_BYTES, max_nodes=100_000, max_depth=20)
        self._doc, findings = yamlload.load(self.source, str(self.path), limits)
        for finding in findings:
            if finding.severity == "error":
                where = f"{finding.file}:{finding.line}:{finding.column}" if finding.line else finding.file
                field = _field_of_pointer(finding.pointer)
                raise InputError(
                    f"{where}: {field + ': ' if field else ''}{finding.message}",
                    hint=finding.hint
                    or "fix the YAML there; `aionctl schema show client/config` shows the format",
                )
        if self._doc is None:  # yamlload returns a document whenever it reports no error
            raise InputError(f"{self.path}: cannot be read as YAML")
        data = self._doc.data
        if data is None:  # an empty file
            return ClientConfig()
        if not isinstance(data, dict):
            raise self._error([], f"the file must be a mapping, not {_type_name(data)}", key=False)
        self._check_keys(data, [], _TOP_KEYS, "the top level")
        for key, expected in (("apiVersion", API_VERSION), ("kind", KIND)):
            if key in data and data[key] != expected:
                raise self._error(
                    [key],
                    f"{key}: {data[key]!r} is not {expected!r}",
                    hint=f"a client config file has `{key}: {expected}`; is this the right file?",
                )
        contexts = self._contexts(data.get("contexts"))
        current = data.get("current-context")
        if current is None or current == "":
            return ClientConfig(None, contexts)
        current = self._string(current, ["current-context"], "current-context")
        if current not in contexts:
            error = unknown_context(current, list(contexts), self.path)
            raise self._error(
                ["current-context"],
                f"current-context: {current!r} names no context",
                hint=f"{error.hint}; fix current-context, or set it with `aionctl config use-context NAME`",
            )
        return ClientConfig(current, contexts)

    def _contexts(self, items: Any) -> dict[str, Context]:
        if items is None:
            return {}
        if not isinstance(items, list):
            raise self._error(["contexts"], f"contexts: must be a list, not {_type_name(items)}")
        contexts: dict[str, Context] = {}
        first_at: dict[str, int] = {}
        for index, item in enumerate(items):
            ctx = self._context(item, index)
            if ctx.name in contexts:
                line, _ = self._position(["contexts", first_at[ctx.name], "name"])
                raise self._error(
                    ["contexts", index, "name"],
                    f"contexts[{index}].name: duplicate context name {ctx.name!r} (first at line {line})",
                    hint="context names must be unique; rename or remove one of them",
                )
            contexts[ctx.name] = ctx
            first_at[ctx.name] = index
        return contexts

    def _context(self, item: Any, index: int) -> Context:
        at: list[str | int] = ["contexts", index]
        field = f"contexts[{index}]"
        if not isinstance(item, dict):
            raise self._error(at, f"{field}: must be a mapping, not {_type_name(item)}")
        self._check_keys(item, at, _CONTEXT_KEYS, field)
        if "name" not in item:
            raise self._error(at, f"{field}: has no name", hint="give every context a `name:`")
        name = self._string(item["name"], [*at, "name"], f"{field}.name")
        self._checked(check_name, name, [*at, "name"], f"{field}.name")
        values: dict[str, str] = {}
        for key, attr in _FIELD_OF_KEY.items():
            if key in item and item[key] is not None:
                values[attr] = self._string(item[key], [*at, key], f"{field}.{key}")
        for key in ("addr", "http-addr"):
            if (value := values.get(_FIELD_OF_KEY[key])) is not None:
                self._checked(check_addr, value, [*at, key], f"{field}.{key}")
        if "token" in values:
            self._checked(check_token, values["token"], [*at, "token"], f"{field}.token")
        if "token" in values and "token_file" in values:
            raise self._error(
                [*at, "token"],
                f"{field}: has both token and token-file",
                hint="keep one of them (token-file keeps the token out of this file)",
            )
        if item.get("tls") is not None:
            values.update(self._tls(item["tls"], [*at, "tls"], f"{field}.tls"))
        return Context(name=name, **values)

    def _tls(self, tls: Any, at: list[str | int], field: str) -> dict[str, str]:
        if not isinstance(tls, dict):
            raise self._error(at, f"{field}: must be a mapping, not {_type_name(tls)}")
        self._check_keys(tls, at, _TLS_KEYS, field)
        values = {
            attr: self._string(tls[key], [*at, key], f"{field}.{key}")
            for key, attr in _FIELD_OF_TLS_KEY.items()
            if tls.get(key) is not None
        }
        if ("cert_file" in values) != ("key_file" in values):
            given, missing = ("cert", "key") if "cert_file" in values else ("key", "cert")
            raise self._error(
                [*at, given],
                f"{field}: has {given} but no {missing}",
                hint="a client certificate and its key come together; give both or neither",
            )
        return values

    def _string(self, value: Any, at: list[str | int], field: str) -> str:
        if not isinstance(value, str):
            raise self._error(at, f"{field}: must be a string, not {_type_name(value)}")
        self._checked(check_text, value, at, field)
        return value

    def _checked(self, check: Any, value: str, at: list[str | int], field: str) -> None:
        try:
            check(value, what=field)
        except UsageError as exc:
            raise self._error(at, exc.message, hint=exc.hint) from None

    def _check_keys(
        self, mapping: dict[str, Any], at: list[str | int], known: Sequence[str], what: str
    ) -> None:
        for key in mapping:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
                guess = f"did you mean {close[0]!r}? " if close else ""
                field = _clip(key) if not at else f"{what}.{_clip(key)}"
                raise self._error(
                    [*at, key],
                    f"{field}: unknown key",
                    hint=f"{guess}the keys of {what} are: {', '.join(known)}",
                    key=True,
                )

    def _position(self, at: Sequence[str | int], *, key: bool = False) -> tuple[int, int]:
        if self._doc is None:
            return 0, 0
        return self._doc.positions.locate(self._doc.data, at, key=key)

    def _error(
        self, at: Sequence[str | int], message: str, *, hint: str | None = None, key: bool = False
    ) -> InputError:
        line, column = self._position(at, key=key)
        return InputError(
            f"{self.path}:{line}:{column}: {message}",
            hint=hint or "see `aionctl schema show client/config` for the file format",
        )


# -- writing -----------------------------------------------------------------------------------------


def _context_document(ctx: Context) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": ctx.name}
    for key, attr in _FIELD_OF_KEY.items():
        if (value := getattr(ctx, attr)) is not None:
            doc[key] = value
    tls = {key: value for key, attr in _FIELD_OF_TLS_KEY.items() if (value := getattr(ctx, attr)) is not None}
    if tls:
        doc["tls"] = tls
    return doc


# -- helpers -----------------------------------------------------------------------------------------


def _resolve(value: str, base: Path) -> str:
    path = Path(value)
    with contextlib.suppress(RuntimeError):  # no home directory to expand to: leave the path as written
        path = path.expanduser()
    return str(path if path.is_absolute() else base / path)


def _field_of_pointer(pointer: str) -> str:
    """``/contexts/0/name`` -> ``contexts[0].name``, as the other messages name fields."""
    field = ""
    for token in pointer.split("/")[1:]:
        part = token.replace("~1", "/").replace("~0", "~")
        field += f"[{part}]" if part.isdigit() else f".{part}" if field else part
    return field


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = [
    "API_VERSION",
    "CONFIG_ENV",
    "KIND",
    "MAX_FILE_BYTES",
    "MAX_TOKEN_FILE_BYTES",
    "ClientConfig",
    "Context",
    "check_addr",
    "check_name",
    "check_text",
    "check_token",
    "complete_names",
    "config_path",
    "load",
    "save",
    "select",
    "to_document",
    "unknown_context",
]
