"""Findings as JUnit XML, for CI systems that show test reports: one test case per file.

A file's case fails when it has errors (or warnings, with --fail-on-warn); every finding is listed in
the failure text, or in system-out when it does not fail the case.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import defaultdict

from aion.config.findings import Finding, Severity
from aionctl.output.findings.interface import Rendering
from aionctl.output.findings.text import where


def render(rendering: Rendering) -> str:
    by_file: dict[str, list[Finding]] = defaultdict(list)
    for path in rendering.files:
        by_file[path]
    for finding in rendering.findings:
        by_file[finding.file or "(set)"].append(finding)
    failing = {Severity.ERROR, Severity.WARNING} if rendering.fail_on_warn else {Severity.ERROR}
    suites = ET.Element("testsuites", name="aionctl validate")
    suite = ET.SubElement(suites, "testsuite", name="aionctl validate")
    failures = 0
    for path, findings in by_file.items():
        case = ET.SubElement(suite, "testcase", classname="aion.config", name=path, file=path)
        bad = [f for f in findings if f.severity in failing]
        text = "\n".join(
            f"{where(f)}: {f.severity.value} {f.rule} {f.pointer}: {f.message}" for f in findings
        )
        if bad:
            failures += 1
            failure = ET.SubElement(
                case, "failure", type=bad[0].rule, message=f"{len(bad)} finding(s): {bad[0].message}"
            )
            failure.text = text
        elif findings:
            ET.SubElement(case, "system-out").text = text
    for element in (suites, suite):
        element.set("tests", str(len(by_file)))
        element.set("failures", str(failures))
        element.set("errors", "0")
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
