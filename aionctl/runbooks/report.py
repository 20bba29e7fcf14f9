"""A run's record in the forms it leaves: the ``RunbookReport`` document (JSON, schema
``output/runbook-report``), JUnit XML for CI, the text an operator reads, and the resume state.

The state file sits next to the report (``NAME.state.json`` beside ``NAME.json``). ``--from STEP``
reads it so the steps before STEP keep their results: a later step's ``${steps.X/...}`` still
resolves, and the report still shows them (as ``reused``). It is written after every run, through a
temporary file and a rename, so a crash never leaves half a state.
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aionctl.output import document
from aionctl.runbooks.executor import CheckRecord, Run, StepRecord, iso

STATE_VERSION = 1
MAX_STATE_BYTES = 64 << 20
MAX_SHOWN = 4000


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else iso(epoch)


def step_doc(record: StepRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "kind": record.kind,
        "status": record.status,
        "description": record.description,
        "command": record.command,
        "changesState": record.changes_state,
        "startedAt": _iso(record.started_at),
        "seconds": round(record.seconds, 3),
        "attempts": record.attempts,
        "exit": record.exit,
        "result": record.result,
        "checks": [
            {
                "pointer": c.pointer,
                "operator": c.operator,
                "expected": c.expected,
                "ok": c.ok,
                "detail": c.detail,
                "message": c.message,
            }
            for c in record.checks
        ],
        "error": record.error,
        "stderr": record.stderr,
    }


def resume_command(run: Run, source: str, given: Mapping[str, str], extra: list[str]) -> str | None:
    failed = run.first_failure
    if failed is None:
        return None
    words = ["aionctl", "runbook", "run", source, "--from", failed.name]
    secret = {name for name, var in run.book.vars.items() if var.secret}
    for name, value in given.items():
        words += ["--var", f"{name}={'***' if name in secret else value}"]
    return shlex.join(words + extra)


def report_doc(run: Run, *, file_sha256: str, resume: str | None) -> dict[str, Any]:
    book = run.book
    secret = {name for name, var in book.vars.items() if var.secret}
    counts: dict[str, int] = {}
    for record in run.steps:
        counts[record.status] = counts.get(record.status, 0) + 1
    failed = run.first_failure
    return document(
        "RunbookReport",
        {
            "runbook": {"name": book.name, "file": book.file, "section": book.section, "sha256": file_sha256},
            "runId": run.run_id,
            "status": run.status,
            "dryRun": run.dry_run,
            "startedAt": _iso(run.started_at),
            "finishedAt": _iso(run.finished_at),
            "seconds": round(max(0.0, run.finished_at - run.started_at), 3),
            "failedStep": failed.name if failed else None,
            "interrupted": run.interrupted,
            "resume": resume,
            "vars": {name: ("***" if name in secret else value) for name, value in run.values.items()},
            "counts": counts,
            "steps": [step_doc(record) for record in run.steps],
            "onFailure": [step_doc(record) for record in run.on_failure],
        },
    )


def junit(doc: Mapping[str, Any]) -> str:
    """JUnit XML: one test suite for the run, one test case per step (not-run steps as skipped)."""
    from xml.etree import ElementTree as ET

    steps = [*doc["steps"], *({**s, "name": f"on_failure/{s['name']}"} for s in doc["onFailure"])]
    suite = ET.Element(
        "testsuite",
        name=f"runbook.{doc['runbook']['name']}",
        tests=str(len(steps)),
        failures=str(sum(1 for s in steps if s["status"] == "failed")),
        skipped=str(sum(1 for s in steps if s["status"] in ("skipped", "not-run", "reused", "planned"))),
        time=f"{doc['seconds']:.3f}",
        timestamp=str(doc["startedAt"]),
    )
    for step in steps:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"runbook.{doc['runbook']['name']}",
            name=step["name"],
            time=f"{step['seconds']:.3f}",
        )
        if step["status"] == "failed":
            failure = ET.SubElement(case, "failure", message=str(step["error"] or "failed"))
            failure.text = _details(step)
        elif step["status"] in ("skipped", "not-run", "reused", "planned"):
            ET.SubElement(case, "skipped", message=step["status"])
        if step["command"]:
            ET.SubElement(case, "system-out").text = step["command"]
    suites = ET.Element("testsuites")
    suites.append(suite)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def _details(step: Mapping[str, Any]) -> str:
    lines = [f"command: {step['command']}", f"error: {step['error']}"]
    for c in step["checks"]:
        verdict = "ok" if c["ok"] else "FAILED"
        compared = f"{c['pointer'] or '/'} {c['operator']} {json.dumps(c['expected'])}"
        lines.append(f"check {compared}: {verdict} ({c['detail']})")
    if step["result"] is not None:
        lines.append("result: " + _clip(json.dumps(step["result"], indent=2, ensure_ascii=False)))
    if step["stderr"]:
        lines.append("stderr: " + _clip(step["stderr"]))
    return "\n".join(lines)


def _clip(text: str) -> str:
    return (
        text
        if len(text) <= MAX_SHOWN
        else text[:MAX_SHOWN] + f"\n… ({len(text) - MAX_SHOWN} more characters in the JSON report)"
    )


def text(doc: Mapping[str, Any], *, report_path: str | None) -> str:
    """The summary an operator reads after the progress lines: the outcome, and for a failure the
    step, what it found, its result, and the command that resumes."""
    book = doc["runbook"]
    lines: list[str] = []
    if doc["dryRun"]:
        lines.append(f"plan of runbook {book['name']} ({book['file']}): nothing was run")
        for index, step in enumerate(doc["steps"], 1):
            mark = "changes state" if step["changesState"] else "reads"
            lines.append(f"  {index:>2}. {step['name']:<24} [{mark}] {step['command']}")
            if step["error"]:
                lines.append(f"      cannot resolve: {step['error']}")
        for step in doc["onFailure"]:
            lines.append(f"  on failure: {step['name']:<20} {step['command']}")
        return "\n".join(lines) + "\n"
    counts = ", ".join(f"{n} {status}" for status, n in sorted(doc["counts"].items()))
    lines.append(f"runbook {book['name']}: {doc['status']} in {doc['seconds']:.2f}s ({counts})")
    failed = next((s for s in doc["steps"] if s["name"] == doc["failedStep"]), None)
    if failed is not None:
        lines.append(f"failed at step {failed['name']}: {failed['error']}")
        lines.append(_details(failed))
    for step in doc["onFailure"]:
        lines.append(
            f"on failure: {step['name']} {step['status']}" + (f": {step['error']}" if step["error"] else "")
        )
    for step in doc["steps"]:
        if step["status"] == "failed" and step is not failed:
            lines.append(f"also failed (on_failure: continue): {step['name']}: {step['error']}")
    if report_path:
        lines.append(f"report: {report_path}")
    if doc["resume"]:
        lines.append(f"resume: {doc['resume']}")
    return "\n".join(lines) + "\n"


# -- the resume state -------------------------------------------------------------------------------


def state_path(report: Path) -> Path:
    return report.with_name(report.stem + ".state.json")


def save_state(path: Path, doc: Mapping[str, Any]) -> None:
    state = {
        "version": STATE_VERSION,
        "runbook": doc["runbook"],
        "runId": doc["runId"],
        "steps": doc["steps"],
    }
    _write(path, json.dumps(state, ensure_ascii=False))


def load_state(path: Path, name: str) -> tuple[dict[str, StepRecord], str | None]:
    """The steps of the last run of runbook ``name`` from ``path``, and its runbook file's digest;
    nothing when there is no state (a first run)."""
    from aion.errors import InputError

    try:
        with path.open("rb") as f:
            data = f.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return {}, None
    except OSError as exc:
        raise InputError(f"cannot read the resume state {path}: {exc.strerror}") from exc
    try:
        if len(data) > MAX_STATE_BYTES:
            raise ValueError("too large")
        state = json.loads(data)
        if state.get("version") != STATE_VERSION or state["runbook"]["name"] != name:
            raise ValueError("not this runbook's state")
        records = {s["name"]: _record(s) for s in state["steps"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"the resume state {path} cannot be used: {exc}",
            hint="run the whole runbook again (without --from), or pass --report for another place",
        ) from exc
    return records, state["runbook"].get("sha256")


def _record(doc: Mapping[str, Any]) -> StepRecord:
    started = doc.get("startedAt")
    return StepRecord(
        name=doc["name"],
        kind=doc["kind"],
        status=doc["status"],
        description=doc.get("description", ""),
        command=doc.get("command", ""),
        changes_state=bool(doc.get("changesState")),
        started_at=datetime.datetime.fromisoformat(started).timestamp() if started else None,
        seconds=float(doc.get("seconds", 0)),
        attempts=int(doc.get("attempts", 0)),
        exit=doc.get("exit"),
        result=doc.get("result"),
        error=doc.get("error"),
        stderr=doc.get("stderr", ""),
        checks=[CheckRecord(**c) for c in doc.get("checks", [])],
    )


def _write(path: Path, content: str) -> None:
    from aion.errors import storage_error

    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temp.open("w", encoding="utf-8") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        temp.replace(path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise storage_error(exc, str(path)) from exc


def write_report(path: Path, content: str) -> None:
    _write(path, content)


__all__ = [
    "junit",
    "load_state",
    "report_doc",
    "resume_command",
    "save_state",
    "state_path",
    "text",
    "write_report",
]
