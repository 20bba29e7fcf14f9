"""The values a TAB offers: rule ids, client contexts, intents, installed modules and runbooks.

Shells run aionctl on every TAB (the scripts ``aionctl completion SHELL`` prints call it back with
``_AIONCTL_COMPLETE`` set), so each function here answers from one cheap look at one file and imports
nothing at module level but the standard library and Typer, which is loaded already. In particular no
YAML parser (intents and runbooks are scanned line by line), no JSON Schema, no gRPC or protobuf, no
HTTP client. Where each kind of value comes from:

- rule ids: the catalogue, ``aion.config.rules`` (ids and one-line summaries; plain Python data);
- contexts: the client config file, read by ``aionctl.contexts``;
- intents: the top-level keys of ``intents.yml`` (or ``intents.yaml``) in the first of these config
  directories that has one: the command's own ``--config``, ``$AION_CONFIG``, ``$AIOND_CONFIG`` (the
  daemon's config directory, in its environment), the current directory. Only block-style keys at
  column 0 that are intent names by the intents schema's pattern count; ``apiVersion`` and ``kind``
  do not;
- modules: the module store's lock file (``aion.lock``): the command's ``--store``, else the default
  store as ``aion.modules.store.default_store`` finds it;
- runbooks: the files that declare ``kind: Runbook`` on the search path of ``aionctl.runbooks.find``
  (``--dir``, ``$AION_RUNBOOK_PATH``, ``./runbooks``, the shipped runbooks), each by its file name
  without the suffix and by its ``metadata.name``: both are names ``aionctl runbook run`` accepts.

The store and the search path are found here rather than by importing their owners (which would
load hashing, temporary files and the runbook model on every TAB); tests keep them equal.

Completion never fails loudly: a missing, oversized, unreadable or malformed file offers nothing, and
nothing here raises or prints. Every value offered matches a narrow pattern, so a file cannot put
shell syntax into the zsh script's ``eval``.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

Candidate = str | tuple[str, str]
"""A value, or a value and its help (shown by zsh, fish and PowerShell)."""


class Parsed(Protocol):
    """What a completion function sees of the command line typed so far: the values of the
    command's parameters by name (a Typer context, or ``aionctl.quick``'s stand-in for one)."""

    @property
    def params(self) -> dict[str, Any]: ...


INTENT_MODES = ("local-only", "allow-api", "hybrid", "policy")
"""The modes ``aionctl intent mode`` switches an intent to."""

MAX_FILE_BYTES = 1 << 20
"""Largest intents file or runbook head read (a config file's default limit is larger, but a file
this big is scanned by nothing that must answer a TAB)."""
MAX_LOCK_BYTES = 8 << 20
"""Largest lock file read: thousands of modules fit in a fraction of it."""
MAX_RUNBOOK_FILES = 2000
"""Most files looked at in one directory of the runbook search path (as aionctl.runbooks.find)."""
MAX_RUNBOOK_HEAD = 64 << 10
"""How much of a runbook file is read to find ``kind:`` and ``metadata.name`` (as find's sniff)."""
MAX_CANDIDATES = 1000
"""Most values offered at once: a shell shows no more than this usefully."""
MAX_HELP = 80

RUNBOOK_PATH_ENV = "AION_RUNBOOK_PATH"
INTENTS_FILES = ("intents.yml", "intents.yaml")
LOCK_FILE = "aion.lock"

# Patterns are compiled on first use (re keeps them), not at import: most TABs need one or none.
# Intent and module names, as their schemas define them.
_NAME = r"[A-Za-z][A-Za-z0-9_.-]{0,63}"
# Runbook names: file stems and metadata names that are safe words in every shell.
_RUNBOOK_NAME = r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}"
# A top-level key of a block mapping: the name, plain or quoted, then a colon and a space or the end.
_TOP_KEY = r"""(?P<q>["']?)(?P<name>[A-Za-z][A-Za-z0-9_.-]{0,63})(?P=q)[ \t]*:(?:[ \t]|$)"""
_NAME_KEY = r"""[ \t]+name[ \t]*:[ \t]*(?P<q>["']?)(?P<name>[^"'#\s]+)(?P=q)[ \t]*(?:#.*)?$"""
# The client config's top-level contexts key, a name field of one of its items, a plain name.
_CONTEXTS_KEY = r"""(contexts|"contexts"|'contexts')[ \t]*:"""
_CONTEXTS_KEY_START = r"""["']?contexts["']?[ \t]*:"""
_NO_CONTEXTS = r"""["']?contexts["']?[ \t]*:[ \t]*\[[ \t]*\][ \t]*"""
_NAME_FIELD = r"name[ \t]*:(.*)$"
_PLAIN_KEY = r"""(?:[A-Za-z0-9_][^:#{}\[\]]*|"[^"]*"|'[^']*')[ \t]*:(?:[ \t]|$)"""
_CONTEXT_NAME = r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}"
_RESERVED_KEYS = frozenset({"apiVersion", "kind"})
_UNSAFE_HELP = r"[^ -\[\]-~]"  # anything but printable ASCII, and the backslash

_F = TypeVar("_F", bound=Callable[..., list[Any]])


def _quiet(function: _F) -> _F:
    """Whatever goes wrong while looking values up offers nothing instead: a TAB must never print an
    error or a traceback into the user's command line."""

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> list[Any]:
        try:
            return function(*args, **kwargs)
        except Exception:  # no value is better than a broken prompt
            return []

    return guarded  # type: ignore[return-value]


def plain_help() -> None:
    """Give zsh, fish and PowerShell the help of each value as it is written. Typer renders it with
    rich first, to strip rich markup; aionctl's help has none (``rich_markup_mode=None`` everywhere),
    and importing rich would double the time of every TAB that shows help. aionctl.app calls this
    when it answers a TAB."""
    from typer import _completion_classes

    _completion_classes._sanitize_help_text = _plain


def _plain(text: str) -> str:
    return text


# -- rule ids ----------------------------------------------------------------------------------------


@_quiet
def rule_ids(incomplete: str) -> list[Candidate]:
    """Rule ids starting with ``incomplete``, each with its summary."""
    from aion.config import rules

    return [(r.id, _help(r.summary)) for r in rules.RULES.values() if r.id.startswith(incomplete)]


# -- contexts ----------------------------------------------------------------------------------------


@_quiet
def context_names(incomplete: str) -> list[Candidate]:
    """Client context names starting with ``incomplete``: scanned from a client config in block style
    (as ``aionctl config set-context`` writes it), else read by ``aionctl.contexts``, which parses
    YAML (and costs a TAB twice as much)."""
    data = _read(client_config_path(), MAX_FILE_BYTES)
    if data is None:
        return []
    names = scanned_contexts(data)
    if names is None:
        from aionctl.contexts import complete_names

        return list(complete_names(incomplete)[:MAX_CANDIDATES])
    return _starting(incomplete, names)


def client_config_path() -> Path:
    """The client config file, as ``aionctl.contexts.config_path`` finds it."""
    explicit = os.environ.get("AION_CLIENT_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".config"
    return base / "aion" / "config.yaml"


def scanned_contexts(data: bytes) -> list[str] | None:  # noqa: PLR0912 - one pass, its state in view
    """The ``name`` of each item of the top-level ``contexts:`` list, when the file is written in
    plain block style and every item has a plain name; None when it is anything else (flow style, a
    quoted or unusual name, an item without a name), for the YAML reader to decide."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    items: list[str | None] = []
    inside = False
    dash = key = -1
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        line = raw.split(" #", 1)[0].rstrip()
        stripped = line.lstrip()
        column = len(line) - len(stripped)
        if "\t" in line[:column]:
            return None
        if column == 0 and not line.startswith("-"):  # a top-level key, or a document marker
            if line in ("---", "..."):
                continue
            if not re.match(_PLAIN_KEY, line):
                return None  # a flow mapping, a directive, a complex key: not plain block style
            if re.fullmatch(_NO_CONTEXTS, line):
                inside = False
                continue
            inside = re.fullmatch(_CONTEXTS_KEY, line) is not None
            if not inside and re.match(_CONTEXTS_KEY_START, line):
                return None  # contexts: [...]: flow style
            continue
        if not inside:
            continue
        if stripped == "-" or stripped.startswith("- "):
            dash = column if dash == -1 else dash
            if column == dash:  # a new item
                items.append(None)
                rest = stripped[1:].lstrip()
                key = column + len(stripped) - len(rest)
                if not rest:  # the item's keys start on the next line
                    key = -2
                    continue
                if rest[0] in "{[&*!?|>":
                    return None
                stripped, column = rest, key
        if key == -2:
            key = column
        if items and column == key and (match := re.match(_NAME_FIELD, stripped)):
            value = match[1].strip()
            if not re.fullmatch(_CONTEXT_NAME, value):
                return None
            items[-1] = value
    if any(name is None for name in items):
        return None
    return [name for name in items if name is not None]


# -- intents -----------------------------------------------------------------------------------------


@_quiet
def intent_modes(incomplete: str) -> list[Candidate]:
    """The modes an intent can be switched to, starting with ``incomplete``."""
    return _starting(incomplete, INTENT_MODES)


@_quiet
def intent_names(ctx: Parsed, incomplete: str) -> list[Candidate]:
    """Intent names starting with ``incomplete``, from the intents file of the first config directory
    that has one (see the module's docstring for the order)."""
    for directory in config_dirs(ctx):
        for name in INTENTS_FILES:
            data = _read(directory / name, MAX_FILE_BYTES)
            if data is not None:
                return _starting(incomplete, top_level_keys(data))
    return []


def config_dirs(ctx: Parsed | None) -> list[Path]:
    """Where intents are looked for: the command's ``--config``, ``$AION_CONFIG``, ``$AIOND_CONFIG``,
    the current directory."""
    found: list[Path] = []
    given = ctx.params.get("config") if ctx is not None else None
    if isinstance(given, (str, Path)) and str(given):
        found.append(Path(given))
    found += [Path(v) for k in ("AION_CONFIG", "AIOND_CONFIG") if (v := os.environ.get(k, ""))]
    found.append(Path())
    return found


def top_level_keys(data: bytes) -> list[str]:
    """The intent-like keys at column 0 of a block-style YAML mapping, in file order, without
    ``apiVersion`` and ``kind``. Not UTF-8: none."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return []
    keys: list[str] = []
    for line in text.splitlines():
        match = re.match(_TOP_KEY, line)
        if match and match["name"] not in _RESERVED_KEYS and match["name"] not in keys:
            keys.append(match["name"])
    return keys


# -- modules -----------------------------------------------------------------------------------------


@_quiet
def module_names(ctx: Parsed, incomplete: str) -> list[Candidate]:
    """Installed module names starting with ``incomplete``, from the lock file of the command's
    ``--store`` (else the default store), each with the reference it was installed from."""
    given = ctx.params.get("store")
    root = Path(given) if isinstance(given, (str, Path)) and str(given) else default_store()
    found: list[Candidate] = [c for c in installed(root) if c[0].startswith(incomplete)]
    return found[:MAX_CANDIDATES]


def default_store() -> Path:
    """The default module store, found as ``aion.modules.store.default_store`` finds it."""
    if os.environ.get("AION_MODULE_STORE"):
        return Path(os.environ["AION_MODULE_STORE"])
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "aion" / "modules"


def installed(root: Path) -> list[tuple[str, str]]:
    """The modules of the store at ``root``'s lock file, sorted, with their references; none when the
    file is missing or is not a lock file."""
    import json

    data = _read(root / LOCK_FILE, MAX_LOCK_BYTES)
    try:
        document = json.loads(data) if data is not None else None
    except ValueError:  # not JSON, or not UTF-8
        return []
    modules = document.get("modules") if isinstance(document, dict) else None
    if not isinstance(modules, dict):
        return []
    found = []
    for name, entry in modules.items():
        if isinstance(name, str) and re.fullmatch(_NAME, name):
            ref = entry.get("ref") if isinstance(entry, dict) else None
            found.append((name, _help(ref) if isinstance(ref, str) else ""))
    return sorted(found)


# -- runbooks ----------------------------------------------------------------------------------------


@_quiet
def runbook_names(incomplete: str, dirs: Sequence[Path] = ()) -> list[str]:
    """Names of the runbooks on the search path (``dirs`` first) starting with ``incomplete``: file
    names without ``.yml``/``.yaml`` and ``metadata.name`` values, each once, in search order."""
    names: list[str] = []
    for path in runbook_files(dirs):
        head = _read(path, MAX_RUNBOOK_HEAD, truncate=True)
        if head is None or not declares_runbook(head):
            continue
        for name in (path.stem, metadata_name(head)):
            if (
                name
                and re.fullmatch(_RUNBOOK_NAME, name)
                and name.startswith(incomplete)
                and name not in names
            ):
                names.append(name)
        if len(names) >= MAX_CANDIDATES:
            break
    return names


@_quiet
def runbook_names_for(ctx: Parsed, incomplete: str) -> list[str]:
    """:func:`runbook_names` for a command with ``--dir`` options (``autocompletion=`` takes this)."""
    given = ctx.params.get("dirs")
    dirs = [Path(d) for d in given if isinstance(d, (str, Path))] if isinstance(given, (list, tuple)) else []
    return runbook_names(incomplete, dirs)


def runbook_search_path(dirs: Sequence[Path] = ()) -> list[Path]:
    """The runbook search path, as ``aionctl.runbooks.find.search_path`` has it."""
    found = [*dirs]
    found += [Path(p) for p in os.environ.get(RUNBOOK_PATH_ENV, "").split(os.pathsep) if p.strip()]
    found += [Path("runbooks"), shipped_runbooks()]
    unique: list[Path] = []
    for path in found:
        if path not in unique:
            unique.append(path)
    return unique


def shipped_runbooks() -> Path:
    """The runbooks aion ships: in the wheel, ``aion/_data/runbooks``; in a checkout,
    ``examples/runbooks``."""
    import aion

    packaged = Path(aion.__file__).parent / "_data" / "runbooks"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[1] / "examples" / "runbooks"


def runbook_files(dirs: Sequence[Path] = ()) -> Iterator[Path]:
    """The YAML files (not hidden) of each directory of the search path, sorted within each."""
    for directory in runbook_search_path(dirs):
        try:
            entries = sorted(directory.iterdir())[:MAX_RUNBOOK_FILES]
        except OSError:
            continue
        for entry in entries:
            if entry.suffix in (".yml", ".yaml") and not entry.name.startswith("."):
                yield entry


def declares_runbook(head: bytes) -> bool:
    """Whether a file's first bytes hold a ``kind: Runbook`` line (find's test, byte for byte)."""
    return any(line.strip().lower() in (b"kind: runbook", b'kind: "runbook"') for line in head.splitlines())


def metadata_name(head: bytes) -> str | None:
    """The ``name:`` of the block-style ``metadata:`` mapping at the top level, if it is there."""
    text = head.decode("utf-8-sig", errors="replace")
    inside = False
    indent = ""
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            inside = line.split("#", 1)[0].rstrip() in ("metadata:", '"metadata":', "'metadata':")
            indent = ""
            continue
        if not inside:
            continue
        # The first key under metadata: sets the indentation of its keys; deeper ones are not its own.
        here = line[: len(line) - len(line.lstrip())]
        indent = indent or here
        if here == indent and (match := re.match(_NAME_KEY, line)):
            return match["name"]
    return None


# -- helpers -----------------------------------------------------------------------------------------


def _starting(incomplete: str, names: Iterable[str]) -> list[Candidate]:
    found: list[Candidate] = [n for n in names if n.startswith(incomplete)]
    return found[:MAX_CANDIDATES]


def _help(text: str) -> str:
    """``text`` as a one-line help safe for every shell's script: printable ASCII, clipped."""
    clean = re.sub(_UNSAFE_HELP, " ", text).strip()
    return clean if len(clean) <= MAX_HELP else clean[: MAX_HELP - 3].rstrip() + "..."


def _read(path: Path, limit: int, *, truncate: bool = False) -> bytes | None:
    """The bytes of the regular file at ``path`` (the first ``limit`` with ``truncate``); None when it
    is missing, not a regular file, unreadable, or larger than ``limit``. Opened without blocking, so
    a FIFO in its place cannot hang a TAB."""
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks: list[bytes] = []
        size = 0
        while size <= limit and (chunk := os.read(fd, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        return data[:limit] if truncate else None
    return data


__all__ = [
    "INTENT_MODES",
    "Candidate",
    "Parsed",
    "client_config_path",
    "config_dirs",
    "context_names",
    "declares_runbook",
    "default_store",
    "installed",
    "intent_modes",
    "intent_names",
    "metadata_name",
    "module_names",
    "plain_help",
    "rule_ids",
    "runbook_files",
    "runbook_names",
    "runbook_names_for",
    "runbook_search_path",
    "scanned_contexts",
    "shipped_runbooks",
    "top_level_keys",
]
