"""Property-based tests: whatever the input, the loader and the validator return findings (never raise),
and every finding says where it is."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aion.config import rules
from aion.config.findings import Finding, Severity
from aion.config.kinds import Kind
from aion.config.validate import Source, validate
from aion.config.yamlload import Limits, load
from tests.rig.fuzz import examples

BASE = Path(__file__).resolve().parents[1] / "corpus" / "_base"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# Two seed sets: the corpus base (small) and the examples (every section of every file kind, so that
# random values also land under breakers, retries, limits, trust, providers and prices).
SEEDS = {
    "base": {p.name: p.read_bytes() for p in sorted(BASE.glob("*.yml"))},
    "examples": {p.name: p.read_bytes() for p in sorted(EXAMPLES.glob("*.yml"))},
}
BASE_FILES = SEEDS["base"]
# AION_FUZZ_SCALE=20 runs twenty times the examples, for a longer hunt than the suite affords
# (tests/rig/fuzz.py).
# Findings about a file as a whole (its size, encoding, kind) or about the set carry no line.
WHOLE_FILE_RULES = {"AION002", "AION003", "AION008", "AION009", "AION010"}


def assert_located(findings: tuple[Finding, ...] | list[Finding], files: set[str]) -> None:
    for f in findings:
        assert f.rule in rules.RULES, f
        assert isinstance(f.severity, Severity)
        assert f.message, f
        if f.rule == "AION010":
            assert f.file == "(set)", f
            continue
        assert f.file in files, f
        if f.rule not in WHOLE_FILE_RULES:
            assert f.line >= 1, f
            assert f.column >= 1, f
        assert f.pointer == "" or f.pointer.startswith("/"), f


yaml_ish = st.text(
    alphabet=st.sampled_from(list("abc:-[]{}&*!|>'\"#?,. \n\t0123456789<~%@`\\")) | st.characters(),
    max_size=300,
)


@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(yaml_ish)
def test_any_text_loads_or_reports(text: str) -> None:
    document, findings = load(text.encode("utf-8", errors="surrogatepass"), "f.yml", Limits(max_nodes=5000))
    assert_located(findings, {"f.yml"})
    if document is None:
        assert any(f.severity is Severity.ERROR for f in findings)


@settings(max_examples=examples(200), deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_load_or_report(data: bytes) -> None:
    _, findings = load(data, "f.yml")
    assert_located(findings, {"f.yml"})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=examples(300), deadline=None)
@given(st.sampled_from(list(Kind)), json_values)
def test_random_documents_of_every_kind_validate_without_crashing(kind: Kind, value: object) -> None:
    text = yaml.safe_dump(value, allow_unicode=True)
    report = validate([Source("doc.yml", text.encode(), kind)], set_name="(set)")
    assert_located(report.findings, {"doc.yml"})


@settings(max_examples=examples(400), deadline=None)
@given(st.sampled_from(sorted(SEEDS)), st.sampled_from(sorted(BASE_FILES)), json_values, st.data())
def test_a_valid_set_with_one_value_replaced_never_crashes(
    seed: str, name: str, value: object, data: st.DataObject
) -> None:
    """Swap one node of a valid file for a random value: cross-file rules see every odd shape."""
    files = dict(SEEDS[seed])
    document = yaml.safe_load(files[name])
    node = document
    path: list[object] = []
    while isinstance(node, dict | list) and node and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(list(node) if isinstance(node, dict) else list(range(len(node)))))
        path.append(key)
        node = node[key]
    if path:
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = value
    else:
        document = value
    files[name] = yaml.safe_dump(document, allow_unicode=True).encode()
    report = validate([Source(n, b) for n, b in files.items()], set_name="(set)")
    assert_located(report.findings, set(files))


@settings(max_examples=examples(200), deadline=None)
@given(
    st.sampled_from(sorted(SEEDS)),
    st.sampled_from(sorted(BASE_FILES)),
    st.text(max_size=12),
    json_values,
    st.data(),
)
def test_unknown_keys_anywhere_never_crash(
    seed: str, name: str, key: str, value: object, data: st.DataObject
) -> None:
    """Add a key to a random mapping of a valid file: unknown keys are warnings, never crashes."""
    files = dict(SEEDS[seed])
    document = yaml.safe_load(files[name])
    mappings = [document]
    stack = [document]
    while stack:
        node = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
        for child in children:
            if isinstance(child, dict):
                mappings.append(child)
            if isinstance(child, dict | list):
                stack.append(child)
    target = data.draw(st.sampled_from(mappings))
    target[key] = value
    files[name] = yaml.safe_dump(document, allow_unicode=True).encode()
    report = validate([Source(n, b) for n, b in files.items()], set_name="(set)")
    assert_located(report.findings, set(files))


mutations = st.sampled_from(["delete", "insert", "duplicate-line", "swap-lines", "indent", "dedent"])


@settings(max_examples=examples(400), deadline=None)
@given(
    st.sampled_from(sorted(BASE_FILES)),
    st.lists(st.tuples(mutations, st.integers(0, 10_000), st.characters()), max_size=4),
)
def test_mutated_files_never_crash_the_validator(name: str, edits: list[tuple[str, int, str]]) -> None:
    text = BASE_FILES[name].decode()
    for action, position, char in edits:
        lines = text.split("\n")
        at = position % (len(text) + 1)
        row = position % len(lines)
        if action == "delete" and text:
            text = text[: min(at, len(text) - 1)] + text[min(at, len(text) - 1) + 1 :]
        elif action == "insert":
            text = text[:at] + char + text[at:]
        elif action == "duplicate-line":
            lines.insert(row, lines[row])
            text = "\n".join(lines)
        elif action == "swap-lines" and len(lines) > 1:
            other = (row + 1) % len(lines)
            lines[row], lines[other] = lines[other], lines[row]
            text = "\n".join(lines)
        elif action == "indent":
            lines[row] = "  " + lines[row]
            text = "\n".join(lines)
        elif action == "dedent":
            lines[row] = lines[row][2:] if lines[row].startswith("  ") else lines[row]
            text = "\n".join(lines)
    files = dict(BASE_FILES)
    files[name] = text.encode("utf-8", errors="surrogatepass")
    report = validate([Source(n, b) for n, b in files.items()], set_name="(set)")
    assert_located(report.findings, set(files))


@given(st.integers(-(10**20), 10**20), st.floats(allow_nan=False, allow_infinity=False))
def test_numbers_read_back_as_pyyaml_reads_them(number: int, real: float) -> None:
    text = f"a: {number}\nb: {real!r}\n"
    document, findings = load(text.encode(), "n.yml")
    assert findings == []
    assert document is not None
    expected = yaml.safe_load(text)
    # YAML 1.1 reads 1e-05 (no dot) as a string and 1.0e-05 as a float: both loaders must agree.
    assert document.data == expected


def test_trust_rule_shadowing_is_only_claimed_when_certain() -> None:
    from aion.config.semantics import _covers

    assert _covers("ghcr.io/**", "ghcr.io/aion/*")
    assert _covers("ghcr.io/aion/*", "ghcr.io/aion/ocr")
    assert _covers("ghcr.io/*", "ghcr.io/*")
    assert _covers("**", "anything/at/all")
    assert not _covers("ghcr.io/*", "ghcr.io/**")
    assert not _covers("ghcr.io/aion/*", "ghcr.io/aion/ocr/sub")
    assert not _covers("ghcr.io/a*", "ghcr.io/*")
