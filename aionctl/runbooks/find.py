"""Finding runbooks by name, and reading one (checked as ``aionctl validate`` checks it).

The search path, first match wins: the ``--dir`` directories, then ``$AION_RUNBOOK_PATH`` (directories
separated by ``:``), then ``./runbooks``, then the runbooks aion ships (``examples/runbooks`` in a
checkout, ``aion/_data/runbooks`` in the wheel). A name is a runbook's ``metadata.name`` or its file
name without ``.yml``/``.yaml``; a path (anything with a ``/`` or a YAML suffix) names the file itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from aion.config.findings import Finding, Severity
from aion.errors import InputError, InvalidConfig, NotFound
from aion.runbook.model import Runbook, build

ENV_PATH = "AION_RUNBOOK_PATH"
MAX_FILES = 2000
"""Most files looked at in one directory of the search path."""
_MAX_SNIFF = 64 << 10


def shipped() -> Path:
    from importlib import resources

    packaged = resources.files("aion").joinpath("_data", "runbooks")
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "examples" / "runbooks"


def search_path(dirs: Sequence[Path] = ()) -> list[Path]:
    found = [*dirs]
    found += [Path(p) for p in os.environ.get(ENV_PATH, "").split(os.pathsep) if p.strip()]
    found += [Path("runbooks"), shipped()]
    unique: list[Path] = []
    for path in found:
        if path not in unique:
            unique.append(path)
    return unique


def candidates(dirs: Sequence[Path] = ()) -> Iterator[Path]:
    """YAML files on the search path that declare ``kind: Runbook`` near their top (a cheap look:
    the full read happens in :func:`load`)."""
    for directory in search_path(dirs):
        try:
            entries = sorted(directory.iterdir())[:MAX_FILES]
        except OSError:
            continue
        for entry in entries:
            if (
                entry.suffix in (".yml", ".yaml")
                and not entry.name.startswith(".")
                and _declares_runbook(entry)
            ):
                yield entry


def _declares_runbook(path: Path) -> bool:
    try:
        if not path.is_file():
            return False
        with path.open("rb") as f:
            head = f.read(_MAX_SNIFF)
    except OSError:
        return False
    return any(line.strip().lower() in (b"kind: runbook", b'kind: "runbook"') for line in head.splitlines())


def locate(name: str, dirs: Sequence[Path] = ()) -> Path:
    """The file of runbook ``name`` (or ``name`` itself when it is a path)."""
    if "/" in name or name.endswith((".yml", ".yaml")) or Path(name).is_file():
        path = Path(name)
        if not path.exists():
            raise NotFound(f"{name}: no such runbook file", hint="check the path, or give a runbook's name")
        return path
    names: list[str] = []
    for path in candidates(dirs):
        if path.stem == name:
            return path
        names.append(path.stem)
    for path in candidates(dirs):  # by metadata.name, which may differ from the file's name
        try:
            book = load(path)
        except (InputError, InvalidConfig):
            continue
        if book.runbook.name == name:
            return path
    import difflib

    close = difflib.get_close_matches(name, names, n=1)
    raise NotFound(
        f"no runbook named {name!r} on the search path",
        hint=(f"did you mean {close[0]}? " if close else "")
        + f"aionctl runbook list shows them; searched {', '.join(str(d) for d in search_path(dirs))}",
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Loaded:
    runbook: Runbook
    path: Path
    sha256: str
    findings: tuple[Finding, ...]


def load(path: Path) -> Loaded:
    """Read and check the runbook at ``path``; InvalidConfig (with each error's position in the
    message) when it has errors, so nothing of a broken runbook runs."""
    from aion.config.kinds import Kind
    from aion.config.validate import Options, check_file, collect

    sources = collect([str(path)], kind=Kind.RUNBOOK)
    if not sources:
        raise InputError(f"{path}: not read", hint="give a runbook's YAML file")
    source = sources[0]
    _, document, findings = check_file(source, Options())
    errors = [f for f in findings if f.severity is Severity.ERROR]
    if errors or document is None:
        shown = "\n".join(
            f"  {f.file}:{f.line}:{f.column}: {f.rule} {f.message}" + (f" (hint: {f.hint})" if f.hint else "")
            for f in sorted(errors, key=Finding.sort_key)[:20]
        )
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise InvalidConfig(
            f"runbook {path} has {len(errors)} error(s); nothing was run:\n{shown}{more}",
            hint=f"aionctl validate {path} shows them; aionctl explain RULE says what each rule means",
        )
    book = build(document.data, str(path))
    return Loaded(book, path, hashlib.sha256(source.data).hexdigest(), tuple(findings))


__all__ = ["ENV_PATH", "Loaded", "candidates", "load", "locate", "search_path", "shipped"]
