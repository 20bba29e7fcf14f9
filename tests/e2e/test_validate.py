"""aionctl validate and explain, through the real program: exit codes, streams and every output format."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest

from aion import schemas
from aion.config import rules
from aionctl.output.findings.interface import clean
from tests.rig.daemon import EXAMPLES, aionctl, program

CORPUS = Path(__file__).resolve().parents[1] / "corpus"


@pytest.fixture
def config_set(tmp_path: Path) -> Path:
    """A copy of the corpus's clean base set, for a test to break."""
    target = tmp_path / "config"
    shutil.copytree(CORPUS / "_base", target)
    return target


def break_privacy(config: Path) -> None:
    """Make invoice_ocr (local-only) able to take the api route: an AION301 error at line 10."""
    intents = config / "intents.yml"
    intents.write_text(
        intents.read_text().replace("candidates: [local, hybrid]", "candidates: [local, api, hybrid]")
    )


def test_examples_validate_clean() -> None:
    result = aionctl("validate", str(EXAMPLES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert not re.search(r": (error|warning) ", result.stdout), result.stdout
    assert result.stderr.startswith("ok: 0 errors, 0 warnings")


def test_errors_exit_1_with_file_line_column(config_set: Path) -> None:
    break_privacy(config_set)
    result = aionctl("validate", str(config_set))
    assert result.returncode == 1
    assert result.stdout.splitlines()[0] == (
        f"{config_set}/intents.yml:10:23: error AION301 /invoice_ocr/candidates/1: intent 'invoice_ocr' is "
        "local-only (its privacy is local-only), but its candidates include the api route, "
        "which leaves the host"
    )
    assert (
        result.stdout.splitlines()[1]
        == "    hint: remove api; hybrid stays on the host for local-only intents"
    )
    assert result.stderr.strip() == "FAILED: 1 error, 0 warnings, 0 notes in 4 files"


def test_quiet_prints_errors_only(config_set: Path) -> None:
    break_privacy(config_set)
    (config_set / "models.yml").write_text(
        (config_set / "models.yml").read_text() + '  tier9:\n    cloud: ["openai:gpt-4.1"]\n'
    )
    result = aionctl("validate", "-q", str(config_set))
    assert result.returncode == 1
    assert [line.split()[2] for line in result.stdout.splitlines() if not line.startswith(" ")] == ["AION301"]
    assert result.stderr == ""


def test_warnings_pass_unless_fail_on_warn(config_set: Path) -> None:
    intents = config_set / "intents.yml"
    intents.write_text(
        intents.read_text().replace("  vector_usage: false", "  vector_usage: false\n  colour: blue")
    )
    assert aionctl("validate", str(config_set)).returncode == 0
    assert aionctl("validate", "--fail-on-warn", str(config_set)).returncode == 1
    strict = aionctl("validate", "--strict", str(config_set))
    assert strict.returncode == 1
    assert "error AION101 /summarize/colour: unknown key 'colour' in summarize" in strict.stdout


def test_json_output_matches_its_schema(config_set: Path) -> None:
    break_privacy(config_set)
    result = aionctl("validate", "-o", "json", str(config_set))
    assert result.returncode == 1
    report = json.loads(result.stdout)
    jsonschema.validate(report, schemas.load("output/validation-report"))
    assert report["summary"] == {"failed": True, "files": 4, "errors": 1, "warnings": 0, "infos": 0}
    (finding,) = report["findings"]
    assert (finding["line"], finding["column"], finding["pointer"], finding["rule"]) == (
        10, 23, "/invoice_ocr/candidates/1", "AION301",
    )  # fmt: skip
    assert result.stderr == ""


def test_sarif_output_is_valid_sarif_2_1_0(config_set: Path, sarif_schema: Path) -> None:
    break_privacy(config_set)
    (config_set / "notes.yml").write_text("hello: world\n")  # an unrecognised file: a file-level finding
    result = aionctl("validate", "-o", "sarif", str(config_set))
    assert result.returncode == 1
    log = json.loads(result.stdout)
    jsonschema.Draft4Validator(json.loads(sarif_schema.read_text())).validate(log)
    run = log["runs"][0]
    assert {r["id"] for r in run["tool"]["driver"]["rules"]} == set(rules.RULES)
    by_rule = {r["ruleId"]: r for r in run["results"]}
    located = by_rule["AION301"]["locations"][0]["physicalLocation"]
    assert located["artifactLocation"]["uri"].endswith("/intents.yml")
    assert located["region"] == {"startLine": 10, "startColumn": 23}
    assert by_rule["AION301"]["level"] == "error"
    assert "region" not in by_rule["AION008"]["locations"][0]["physicalLocation"]
    assert by_rule["AION008"]["level"] == "warning"


def test_github_annotations_carry_line_and_col(config_set: Path) -> None:
    break_privacy(config_set)
    result = aionctl("validate", "-o", "github", str(config_set))
    assert result.returncode == 1
    (line,) = result.stdout.splitlines()
    match = re.fullmatch(r"::error file=([^,]+),line=(\d+),col=(\d+),title=(AION\d{3})::(.+)", line)
    assert match is not None, line
    assert match.group(1) == f"{config_set}/intents.yml"
    assert (match.group(2), match.group(3), match.group(4)) == ("10", "23", "AION301")


def test_github_escapes_what_would_break_a_command() -> None:
    from aion.config.findings import Finding, Severity
    from aionctl.output.findings import github

    finding = Finding("dir,a:b/f.yml", 3, 4, "/x", "AION100", Severity.WARNING, "100% bad\nsecond line")
    assert github.line(finding) == (
        "::warning file=dir%2Ca%3Ab/f.yml,line=3,col=4,title=AION100::100%25 bad%0Asecond line"
    )


def test_junit_output_parses_and_fails_the_broken_file(config_set: Path) -> None:
    break_privacy(config_set)
    result = aionctl("validate", "-o", "junit", str(config_set))
    assert result.returncode == 1
    root = ET.fromstring(result.stdout)  # noqa: S314 - our own output, in a test
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures")) == ("4", "1")
    cases = {case.get("name"): case for case in root.iter("testcase")}
    assert set(cases) == {
        str(config_set / name) for name in ("intents.yml", "models.yml", "modules.yml", "policies.yml")
    }
    failure = cases[str(config_set / "intents.yml")].find("failure")
    assert failure is not None
    assert failure.get("type") == "AION301"
    assert cases[str(config_set / "models.yml")].find("failure") is None


def test_stdin_needs_a_kind() -> None:
    body = (CORPUS / "_base" / "intents.yml").read_text()
    with_kind = aionctl("validate", "--kind", "intents", "-", input=body)
    assert with_kind.returncode == 0, with_kind.stdout
    unknown = aionctl("validate", "-", input=body, env={"COLUMNS": "200"})
    assert unknown.returncode == 0
    assert "<stdin>: warning AION008" in unknown.stdout
    assert aionctl("validate", "--fail-on-warn", "-", input=body).returncode == 1
    bad = aionctl("validate", "--kind", "intents", "-", input="summarize:\n  privacy: sometimes\n")
    assert bad.returncode == 1
    assert "<stdin>:2:12: error AION100 /summarize/privacy:" in bad.stdout


def test_each_dir_validates_one_set_per_directory(tmp_path: Path) -> None:
    for env in ("dev", "prod"):
        shutil.copytree(CORPUS / "_base", tmp_path / env)
    together = aionctl("validate", str(tmp_path))
    assert together.returncode == 1
    assert together.stdout.count("AION009") == 4
    assert "hint: to validate each directory as a set of its own, pass --each-dir" in together.stdout
    break_privacy(tmp_path / "prod")
    apart = aionctl("validate", "--each-dir", "-o", "json", str(tmp_path))
    assert apart.returncode == 1
    findings = json.loads(apart.stdout)["findings"]
    assert [(f["file"], f["rule"]) for f in findings] == [(str(tmp_path / "prod" / "intents.yml"), "AION301")]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["validate", "/no/such/dir"], 3, "error: /no/such/dir: no such file or directory"),
        (["validate", "--kind", "widgets", "."], 2, "error: --kind: 'widgets' is not a file kind"),
        (["validate", "-o", "html", "."], 2, "error: --output: 'html' is not one of"),
        (["validate", "-", "-"], 2, "error: '-' (standard input) can be given only once"),
        (["explain", "AION999"], 2, "error: no rule 'AION999'"),
    ],
)
def test_usage_and_input_errors(args: list[str], code: int, message: str) -> None:
    result = aionctl(*args, input="")
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("path", "message"),
    [
        # Reading process memory from offset 0 fails with EIO, for root too: a read error no test
        # user can bypass.
        ("/proc/self/mem", "error: /proc/self/mem: cannot read: Input/output error"),
        (f"/tmp/{'x' * 300}/intents.yml", ": cannot access: File name too long"),
    ],
)
def test_unreadable_paths_are_input_errors(path: str, message: str) -> None:
    result = aionctl("validate", path)
    assert result.returncode == 3, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_explain_prints_the_rule_and_lists_all() -> None:
    result = aionctl("explain", "aion301")
    assert result.returncode == 0
    assert result.stdout.startswith("AION301 local-only-leak (error)\n\nA local-only intent can take a route")
    listing = json.loads(aionctl("explain", "-o", "json").stdout)
    assert [r["id"] for r in listing["rules"]] == list(rules.RULES)


def test_schema_list_includes_every_file_kind() -> None:
    listed = {s["name"] for s in json.loads(aionctl("schema", "list", "-o", "json").stdout)["schemas"]}
    assert {"config/intents", "config/policies", "config/models", "config/modules"} <= listed
    assert {"package/agent-package", "runbook", "output/validation-report"} <= listed


ODD_NAMES = ["ctl\x01\x1b[31m.yml", "tab\tand\u2028line.yml"]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_odd_file_names_cannot_break_any_format(tmp_path: Path, name: str, sarif_schema: Path) -> None:
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / name).write_text('kind: Intents\nsummarize:\n  bogus: "\\x1b[31mred"\n')
    text = aionctl("validate", str(folder))
    assert not any(ch in text.stdout for ch in "\x01\x1b\t\u2028")
    assert clean(name) in text.stdout
    ET.fromstring(aionctl("validate", "-o", "junit", str(folder)).stdout)  # noqa: S314 - our own output
    report = json.loads(aionctl("validate", "-o", "json", str(folder)).stdout)
    jsonschema.validate(report, schemas.load("output/validation-report"))
    log = json.loads(aionctl("validate", "-o", "sarif", str(folder)).stdout)
    jsonschema.Draft4Validator(json.loads(sarif_schema.read_text())).validate(log)
    for line in aionctl("validate", "-o", "github", str(folder)).stdout.splitlines():
        assert "\x1b" not in line
        assert line.startswith("::")


def test_undecodable_file_name(tmp_path: Path, sarif_schema: Path) -> None:
    folder = tmp_path / "bytes"
    folder.mkdir()
    raw_name = os.fsencode(folder) + b"/int\xffents.yml"
    with open(raw_name, "w") as handle:  # noqa: PTH123 - pathlib cannot name a file with undecodable bytes
        handle.write("kind: Intents\nsummarize:\n  privacy: nope\n")
    shown = str(folder / "int\\xffents.yml")
    for fmt in ("text", "junit", "github"):
        result = aionctl("validate", "-o", fmt, str(folder))
        assert result.returncode == 1, (fmt, result.stderr)
        assert "int\\xffents.yml" in result.stdout, fmt
    assert json.loads(aionctl("validate", "-o", "json", str(folder)).stdout)["files"] == [
        {"path": shown, "kind": "intents"}
    ]
    log = json.loads(aionctl("validate", "-o", "sarif", str(folder)).stdout)
    jsonschema.Draft4Validator(json.loads(sarif_schema.read_text())).validate(log)


def test_sarif_keeps_set_notes_out_of_results(config_set: Path, sarif_schema: Path) -> None:
    result = aionctl("validate", "-o", "sarif", str(config_set / "intents.yml"))
    log = json.loads(result.stdout)
    jsonschema.Draft4Validator(json.loads(sarif_schema.read_text())).validate(log)
    run = log["runs"][0]
    assert all(r.get("locations") for r in run["results"])
    notes = run["invocations"][0]["toolExecutionNotifications"]
    assert {n["descriptor"]["id"] for n in notes} == {"AION010"}
    assert run["columnKind"] == "unicodeCodePoints"


def test_yaml_output(config_set: Path) -> None:
    import yaml

    break_privacy(config_set)
    report = yaml.safe_load(aionctl("validate", "-o", "yaml", str(config_set)).stdout)
    jsonschema.validate(report, schemas.load("output/validation-report"))
    assert [f["rule"] for f in report["findings"]] == ["AION301"]


def test_stdin_edge_cases(tmp_path: Path) -> None:
    closed = subprocess.run(
        [program("aionctl"), "validate", "-"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    assert closed.returncode == 0  # an empty input is an empty document, recognised as nothing
    literally = tmp_path / "<stdin>"
    literally.write_text("kind: Intents\nsummarize: {}\n")
    both = aionctl("validate", "--kind", "intents", "-", str(literally), input="summarize: {}\n")
    assert both.returncode == 1
    assert "AION009" in both.stdout
    assert "Traceback" not in both.stderr


def test_stdin_that_does_not_exist_is_a_usage_error() -> None:
    script = "import sys; sys.stdin = None; from aionctl.main import main; sys.exit(main(['validate', '-']))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == 2, result.stderr
    assert "there is no standard input to read" in result.stderr


def test_an_empty_directory_is_an_input_error(tmp_path: Path) -> None:
    result = aionctl("validate", str(tmp_path))
    assert result.returncode == 3
    assert "no *.yml or *.yaml files in this directory" in result.stderr


def test_directory_links_are_followed_and_loops_end(tmp_path: Path) -> None:
    real = tmp_path / "real"
    shutil.copytree(CORPUS / "_base", real)
    break_privacy(real)
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "prod").symlink_to(real, target_is_directory=True)
    (real / "loop").symlink_to(repo, target_is_directory=True)
    result = aionctl("validate", "--each-dir", str(repo))
    assert result.returncode == 1
    assert "AION301" in result.stdout


def test_long_values_are_not_echoed_whole(config_set: Path) -> None:
    intents = config_set / "intents.yml"
    intents.write_text(intents.read_text().replace("vector_usage: false", "vector_usage: " + "x" * 100_000))
    result = aionctl("validate", "-o", "json", str(config_set))
    (finding,) = [f for f in json.loads(result.stdout)["findings"] if f["rule"] == "AION100"]
    assert len(finding["message"]) < 400
    assert finding["message"].endswith('is not of type "boolean"')


def test_parallel_sets_report_exactly_what_sequential_ones_do(tmp_path: Path) -> None:
    for n in range(6):
        shutil.copytree(CORPUS / "_base", tmp_path / f"env{n}")
    break_privacy(tmp_path / "env2")
    (tmp_path / "env4" / "models.yml").write_text('tiers: {tier0: {local: ["nobody:x"]}}\n')
    one = aionctl("validate", "--each-dir", "--jobs", "1", "-o", "json", str(tmp_path))
    many = aionctl("validate", "--each-dir", "--jobs", "3", "-o", "json", str(tmp_path))
    assert one.returncode == many.returncode == 1
    assert json.loads(one.stdout) == json.loads(many.stdout)
    assert {f["rule"] for f in json.loads(many.stdout)["findings"]} >= {"AION301", "AION203"}
