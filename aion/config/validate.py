"""Validating config files as a set: read, parse, recognise each file's kind, check it against its
schema, then check the set across files, and build the immutable snapshot when all is well.

This is the one validation path: ``aionctl validate`` and the daemon's policy activation both use it,
so a set the CI gate accepts is exactly a set the daemon accepts.

Reading is part of it, and a config directory is outside input: only regular files are ever opened
for reading, each opened without blocking (a FIFO named ``intents.yml`` must not hang a CI job or a
daemon reload) and read up to the size limit, never past it. A FIFO, socket or device met while
walking a directory is a finding (AION012); one named on the command line is an input error.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import difflib
import errno
import hashlib
import multiprocessing
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO

from aion.config import kinds, schema, semantics
from aion.config.findings import Finding, Severity
from aion.config.kinds import CONFIG_SET, Kind
from aion.config.model import ConfigSnapshot, Models
from aion.config.yamlload import Document, Limits, load
from aion.errors import InputError, UsageError
from aion.inputs import file_kind

STDIN = "-"
STDIN_NAME = "<stdin>"


@dataclasses.dataclass(frozen=True, slots=True)
class Source:
    """One file to validate."""

    name: str
    """As shown in findings: the path as the user gave it (or as found under a directory)."""
    data: bytes
    kind: Kind | None = None
    """Forced by the user (--kind); else recognised by name or content."""
    explicit: bool = True
    """Named by the user, rather than found by walking a directory."""
    stdin: bool = False
    """Read from standard input (shown as <stdin>)."""
    not_a_file: str | None = None
    """What the entry is when it is not a regular file (``a FIFO``, ...): never read, reported as
    AION012 (``data`` is empty)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Options:
    strict: bool = False
    """Unknown keys are errors, not warnings."""
    limits: Limits = dataclasses.field(default_factory=Limits)


@dataclasses.dataclass(frozen=True, slots=True)
class Report:
    findings: tuple[Finding, ...]
    files: Mapping[str, Kind | None]
    """Every file read, with the kind it was recognised as (None: not recognised)."""
    snapshot: ConfigSnapshot | None
    """The set, when it is complete (intents and models at least) and has no errors."""
    omitted: int = 0
    """Findings left out of ``findings`` to keep the report bounded (see :meth:`capped`)."""

    def capped(self, limit: int) -> Report:
        """This report with at most ``limit`` findings, the worst first kept, and the rest counted
        in :attr:`omitted`. The daemon bounds what a config set can make it hold and send."""
        if len(self.findings) <= limit:
            return self
        kept = sorted(self.findings, key=lambda f: -f.severity.rank)[:limit]
        kept.sort(key=Finding.sort_key)
        omitted = self.omitted + len(self.findings) - limit
        return dataclasses.replace(self, findings=tuple(kept), omitted=omitted)

    def count(self, severity: Severity) -> int:
        return sum(1 for f in self.findings if f.severity is severity)

    def failed(self, *, fail_on_warn: bool = False) -> bool:
        worst = Severity.WARNING if fail_on_warn else Severity.ERROR
        return any(f.severity.rank >= worst.rank for f in self.findings)


def collect(
    paths: Sequence[str],
    *,
    kind: Kind | None = None,
    stdin: BinaryIO | None = None,
    limits: Limits | None = None,
    confined: bool = False,
) -> list[Source]:
    """Files to validate from command-line paths: files, directories (walked for *.yml and *.yaml,
    skipping hidden entries), or ``-`` for standard input. Raises InputError for a path that cannot
    be read, UsageError for ``-`` given twice.

    With ``confined``, a symbolic link found in a directory (to a file or a directory) must resolve
    inside that directory: one that leads out of it is an InputError naming the link and its target,
    for callers that send a directory's content elsewhere (``policy apply``)."""
    limits = limits or Limits()
    sources: list[Source] = []
    seen: set[str] = set()
    for given in paths:
        if given == STDIN:
            if any(s.stdin for s in sources):
                raise UsageError("'-' (standard input) can be given only once")
            if stdin is None:
                raise UsageError("'-' given, but there is no standard input to read")
            try:
                data = stdin.read(limits.max_bytes + 1)
            except OSError as exc:
                raise InputError(f"cannot read standard input: {exc.strerror}") from exc
            sources.append(Source(STDIN_NAME, data, kind, explicit=True, stdin=True))
            continue
        path = Path(given)
        try:
            is_dir, exists = path.is_dir(), path.exists()
        except OSError as exc:  # for example a parent directory that cannot be searched
            raise InputError(f"{given}: cannot access: {exc.strerror}", hint=_hint(exc)) from exc
        if is_dir:
            before = len(sources)
            for found in _walk(path, confined=confined):
                _add(sources, seen, found, str(found), kind, explicit=False, limits=limits)
            if len(sources) == before and not any(
                os.path.realpath(f) in seen for f in _walk(path, confined=confined)
            ):
                raise InputError(
                    f"{given}: no *.yml or *.yaml files in this directory", hint="check the path"
                )
        elif exists:
            _add(sources, seen, path, given, kind, explicit=True, limits=limits)
        else:
            raise InputError(f"{given}: no such file or directory", hint="check the path")
    return sources


def _walk(root: Path, *, confined: bool = False) -> Iterable[Path]:
    """YAML files under ``root``, sorted, hidden entries skipped. Symbolic links to directories are
    followed (config repositories use them for shared sets), each real directory once, so a link
    loop ends; with ``confined``, only links that stay inside ``root``."""
    visited: set[str] = set()
    inside = Path(os.path.realpath(root))
    for directory, dirnames, filenames in os.walk(root, onerror=_raise, followlinks=True):
        real = os.path.realpath(directory)
        if real in visited:
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files = [
            Path(directory) / name
            for name in sorted(filenames)
            if not name.startswith(".") and name.lower().endswith(kinds.YAML_SUFFIXES)
        ]
        if confined:
            for entry in [*(Path(directory) / d for d in dirnames), *files]:
                _check_inside(entry, inside, root)
        yield from files


def _check_inside(entry: Path, inside: Path, root: Path) -> None:
    """Refuse a symbolic link whose target resolves outside ``inside`` (the real path of ``root``).
    Directories are checked before they are entered, so a file reached through them can leave only
    by a link of its own."""
    if not entry.is_symlink():
        return
    target = Path(os.path.realpath(entry))
    if not target.is_relative_to(inside):
        raise InputError(
            f"{entry} is a symbolic link to {target}, outside {root}",
            hint=f"only what is inside {root} is read: copy the file in, or remove the link",
        )


def _raise(error: OSError) -> None:
    raise InputError(f"{error.filename}: cannot read: {error.strerror}", hint=_hint(error)) from error


def _hint(error: OSError) -> str | None:
    return "check the permissions" if error.errno in (errno.EACCES, errno.EPERM) else None


def _add(
    sources: list[Source],
    seen: set[str],
    path: Path,
    name: str,
    kind: Kind | None,
    *,
    explicit: bool,
    limits: Limits,
) -> None:
    real = os.path.realpath(path)
    if real in seen:
        return
    seen.add(real)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then says what was opened.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise InputError(f"{name}: cannot read: {exc.strerror}", hint=_hint(exc)) from exc
    try:
        mode = os.fstat(fd).st_mode
        what = file_kind(mode)
        if what is not None and explicit:
            raise InputError(
                f"{name} is {what}, not a regular file",
                hint="give a file; to validate what a pipe carries, pass - and pipe it to standard input"
                if stat.S_ISFIFO(mode)
                else "give a file",
            )
        data = b"" if what is not None else _read_at_most(fd, limits.max_bytes + 1)
    except OSError as exc:
        raise InputError(f"{name}: cannot read: {exc.strerror}", hint=_hint(exc)) from exc
    finally:
        os.close(fd)
    # One byte over the limit is enough for the loader to report it (AION003).
    sources.append(Source(name, data, kind, explicit, not_a_file=what))


def _read_at_most(fd: int, limit: int) -> bytes:
    """Up to ``limit`` bytes, read in pieces: a large limit must not allocate a buffer that large."""
    chunks: list[bytes] = []
    size = 0
    while size < limit and (chunk := os.read(fd, min(1 << 20, limit - size))):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def check_file(source: Source, options: Options) -> tuple[Kind | None, Document | None, list[Finding]]:
    """One file on its own: read it, recognise its kind, check it against that kind's schema."""
    kind = source.kind or kinds.by_name(source.name)
    if source.not_a_file is not None:
        return kind, None, [_not_a_file(source, source.not_a_file)]
    document, findings = load(source.data, source.name, options.limits)
    if document is not None and kind is None:
        kind = kinds.by_content(document.data)
    if document is not None:
        if kind is not None:
            findings.extend(schema.check(document, kind, strict=options.strict))
            if kind is Kind.KAFKA and not any(f.severity is Severity.ERROR for f in findings):
                from aion.kafka.config import check as check_kafka

                findings.extend(check_kafka(document))
            if kind is Kind.RUNBOOK and not any(f.severity is Severity.ERROR for f in findings):
                from aion.runbook.check import check as check_runbook

                findings.extend(check_runbook(document))
        elif (value := kinds.declared(document.data)) is not None:
            findings.append(_unknown_kind(document, value))
        else:
            findings.append(_unknown_file(source))
    return kind, document, findings


def ignored(source: Source, options: Options | None = None) -> bool:
    """Whether a config set leaves ``source`` out: a file :func:`validate` recognises neither by name
    nor by a top-level ``kind:`` (it reports AION008 and checks nothing else), or one of a kind read
    on its own (:func:`read_alone`). A file that cannot be parsed is not ignored: its errors are
    findings."""
    if source.not_a_file:
        return False
    if source.kind is not None or kinds.by_name(source.name) is not None:
        return read_alone(source, options)
    kind, _, findings = check_file(source, options or Options())
    return (kind is None and any(f.rule == "AION008" for f in findings)) or (
        kind is not None and kind.read_alone
    )


def read_alone(source: Source, options: Options | None = None) -> bool:
    """Whether ``source`` is of a kind read on its own, never as part of a config set (kafka.yml):
    :func:`validate` checks it, and a set sent to the daemon leaves it out without a word."""
    if source.not_a_file:
        return False
    kind = source.kind or kinds.by_name(source.name)
    if kind is None:
        kind, _, _ = check_file(source, options or Options())
    return kind is not None and kind.read_alone


def _not_a_file(source: Source, what: str) -> Finding:
    return Finding(
        source.name,
        0,
        0,
        "",
        "AION012",
        Severity.ERROR,
        f"{what}, not a regular file; not read",
        hint="config files must be regular files: replace it with the file it stands for, or remove it",
    )


def _unknown_kind(document: Document, value: str) -> Finding:
    known = kinds.kind_values()
    close = difflib.get_close_matches(value, known, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}?" if close else f"one of {', '.join(known)}"
    return document.finding(
        "AION011", Severity.ERROR, ["kind"], f"kind: {value!r} is not a kind aion knows", hint=hint
    )


def validate(
    sources: Sequence[Source],
    options: Options | None = None,
    *,
    set_name: str = "",
    base_dir: Path | None = None,
) -> Report:
    """Validate ``sources`` as one set. Relative paths inside the files (trust keys) resolve against
    ``base_dir`` when given, else against the policies file's directory."""
    options = options or Options()
    findings: list[Finding] = []
    files: dict[str, Kind | None] = {}
    valid: dict[Kind, Document] = {}
    raw: dict[Kind, bytes] = {}
    broken: dict[Kind, str] = {}
    manifests: list[Document] = []
    for source in sources:
        kind, document, found = check_file(source, options)
        findings.extend(found)
        files[source.name] = kind
        clean = document is not None and not any(f.severity is Severity.ERROR for f in found)
        if kind is Kind.AGENT_PACKAGE and clean:
            assert document is not None
            manifests.append(document)
        if kind is None or not kind.in_config_set:
            continue
        if kind in valid or kind in broken:
            findings.append(_second_file(source, kind, files))
        elif document is None or not clean:
            broken[kind] = source.name
        else:
            valid[kind], raw[kind] = document, source.data
            if kind is Kind.POLICIES and not source.stdin and base_dir is None:
                base_dir = Path(source.name).parent
    view = None
    if valid or broken:
        findings.extend(_incomplete(set_name, valid, broken))
        view = semantics.SetView.build(valid, base_dir, frozenset(broken), tuple(manifests))
        findings.extend(semantics.run(view))
    findings.sort(key=Finding.sort_key)
    snapshot = None
    complete = view is not None and view.models is not None and Kind.INTENTS in valid
    if complete and not any(f.severity is Severity.ERROR for f in findings):
        assert view is not None
        assert view.models is not None
        snapshot = _snapshot(view, view.models, raw)
    return Report(tuple(findings), files, snapshot)


def _second_file(source: Source, kind: Kind, files: Mapping[str, Kind | None]) -> Finding:
    first = next((name for name, k in files.items() if k is kind and name != source.name), "another file")
    hint = None
    if Path(first).parent != Path(source.name).parent:
        hint = "to validate each directory as a set of its own, pass --each-dir"
    message = f"a second {kind.value} file; {first} is the first"
    return Finding(source.name, 0, 0, "", "AION009", Severity.ERROR, message, hint)


def _unknown_file(source: Source) -> Finding:
    return Finding(
        source.name,
        0,
        0,
        "",
        "AION008",
        Severity.WARNING,
        "not recognised as an aion config file (by name or top-level kind:); ignored",
        hint="name it intents.yml, policies.yml, models.yml or modules.yml, add kind:, or pass --kind",
    )


def _incomplete(
    set_name: str, valid: Mapping[Kind, Document], broken: Mapping[Kind, str]
) -> Iterable[Finding]:
    for kind in CONFIG_SET:
        if kind in valid:
            continue
        why = f"{broken[kind]} has errors" if kind in broken else f"the set has no {kind.value} file"
        yield Finding(
            set_name,
            0,
            0,
            "",
            "AION010",
            Severity.INFO,
            f"cross-file checks that need {kind.value} were skipped: {why}",
        )


def _snapshot(view: semantics.SetView, models: Models, raw: Mapping[Kind, bytes]) -> ConfigSnapshot:
    """The set as the daemon holds it, from the model the checks already built."""
    digest = hashlib.sha256()
    for kind in CONFIG_SET:
        if kind in raw:
            digest.update(kind.value.encode() + b"\0" + raw[kind] + b"\0")
    return ConfigSnapshot(
        intents=MappingProxyType(view.intents),
        policies=view.policies,
        models=models,
        modules=MappingProxyType(view.modules or {}),
        tag="sha256:" + digest.hexdigest(),
    )


def validate_many(
    sets: Sequence[tuple[str, Sequence[Source]]], options: Options | None = None, *, jobs: int = 1
) -> list[tuple[tuple[Finding, ...], dict[str, Kind | None]]]:
    """Validate independent sets, each as :func:`validate` would, on up to ``jobs`` processes; the
    results come back in the order of ``sets``. Snapshots are not returned (they stay in-process)."""
    options = options or Options()
    work = [(name, tuple(members), options) for name, members in sets]
    if jobs <= 1 or len(work) <= 1:
        return [_validate_quietly(item) for item in work]
    context = (
        multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None
    )
    with concurrent.futures.ProcessPoolExecutor(max_workers=min(jobs, len(work)), mp_context=context) as pool:
        return list(pool.map(_validate_quietly, work, chunksize=max(1, len(work) // (4 * jobs))))


def _validate_quietly(
    item: tuple[str, tuple[Source, ...], Options],
) -> tuple[tuple[Finding, ...], dict[str, Kind | None]]:
    name, members, options = item
    report = validate(members, options, set_name=name)
    return report.findings, dict(report.files)


def validate_directory(directory: Path, options: Options | None = None) -> Report:
    """Validate every config file under ``directory`` as one set (what the daemon loads)."""
    options = options or Options()
    return validate(collect([str(directory)], limits=options.limits), options, set_name=str(directory))


__all__ = [
    "STDIN",
    "STDIN_NAME",
    "Options",
    "Report",
    "Source",
    "check_file",
    "collect",
    "ignored",
    "read_alone",
    "validate",
    "validate_directory",
    "validate_many",
]
