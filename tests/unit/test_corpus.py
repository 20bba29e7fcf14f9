"""Golden tests: every case in tests/corpus yields exactly its expected findings (rule, severity, line,
column), and together the cases cover every rule in the catalogue."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from aion.config import kinds, rules
from aion.config.validate import Options, collect, validate
from aion.config.yamlload import Limits

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
CASES = sorted(p for p in CORPUS.iterdir() if p.is_dir() and not p.name.startswith("_"))


def expected(case: Path) -> list[str]:
    lines = (case / "expected.txt").read_text(encoding="utf-8").splitlines()
    return sorted(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def run_case(case: Path, workdir: Path) -> list[str]:
    options_file = case / "options.json"
    options = json.loads(options_file.read_text()) if options_file.exists() else {}
    target = workdir / "set"
    target.mkdir()
    if options.get("base", True):
        for base_file in (CORPUS / "_base").iterdir():
            shutil.copy(base_file, target / base_file.name)
    for file in case.iterdir():
        if file.name in ("expected.txt", "options.json"):
            continue
        if file.name.endswith(".absent"):
            (target / file.name.removesuffix(".absent")).unlink()
        elif file.name.endswith(".fifo"):  # git cannot hold a FIFO: the case names one to make
            replaced = target / file.name.removesuffix(".fifo")
            replaced.unlink(missing_ok=True)
            os.mkfifo(replaced)
        else:
            shutil.copy(file, target / file.name)
    limits = Limits(max_bytes=options.get("max_bytes", Limits().max_bytes))
    forced = kinds.parse(options["kind"]) if "kind" in options else None
    sources = collect([str(target)], kind=forced, limits=limits)
    report = validate(sources, Options(strict=options.get("strict", False), limits=limits), set_name="(set)")
    prefix = str(target) + "/"
    lines = []
    for f in report.findings:
        where = f"{f.file.removeprefix(prefix) or '(set)'}:{f.line}:{f.column}"
        lines.append(f"{where} {f.rule} {f.severity.value} {f.pointer}".rstrip())
    return sorted(lines)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case: Path, tmp_path: Path) -> None:
    assert run_case(case, tmp_path) == expected(case)


def test_base_set_is_clean(tmp_path: Path) -> None:
    report = validate(collect([str(CORPUS / "_base")]))
    assert report.findings == ()
    assert report.snapshot is not None


def test_every_rule_has_a_case() -> None:
    covered = {line.split()[1] for case in CASES for line in expected(case)}
    assert sorted(set(rules.RULES) - covered) == []
