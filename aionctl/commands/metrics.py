"""``aionctl metrics show|check|canary``: read aiond's /metrics, as the observability and release
runbooks need it, without a Prometheus in between.

- ``show`` prints the samples (``--match`` keeps the families whose name matches a regular expression).
- ``check --dashboards DIR`` says whether every metric the dashboards' queries read is exported
  (exit 1 naming the panel and the metric otherwise).
- ``canary --window 30s --max-error-ratio 0.05 --max-p95 2s`` scrapes twice, a window apart, and judges
  the tasks that finished in between (:mod:`aion.canary`); exit 1 when they do not pass, so a release
  runbook can roll back.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from aion.errors import DaemonUnavailable, FindingsError, InputError, UsageError
from aionctl.client import Endpoint, http_client
from aionctl.connect import TlsCa, TlsCert, TlsKey, TlsServerName, endpoint
from aionctl.options import Address, HttpAddress, Output, Timeout, command_app, global_options
from aionctl.output import OutputFormat, document, emit

app = command_app()
app.info.help = "Read aiond's metrics: show them, check dashboards against them, judge a canary."
app.info.no_args_is_help = True

MAX_SAMPLES = 100_000


def _target(
    ctx: typer.Context, addr: str | None, http_addr: str | None, timeout: float, tls: tuple[Any, ...]
) -> Endpoint:
    ca, cert, key, name = tls
    return endpoint(
        ctx, addr=addr, http_addr=http_addr, timeout=timeout, tls_ca=ca, tls_cert=cert, tls_key=key,
        tls_server_name=name,
    )  # fmt: skip


def scrape(target: Endpoint) -> str:
    """The daemon's /metrics text, read up to :data:`aion.canary.MAX_EXPOSITION` bytes."""
    import httpx

    from aion.canary import MAX_EXPOSITION

    url = target.http_url("/metrics")
    try:
        with http_client(target) as client, client.stream("GET", url) as answer:
            if answer.status_code != 200:
                raise DaemonUnavailable(f"{url} answered HTTP {answer.status_code}")
            data = bytearray()
            for chunk in answer.iter_bytes():
                data += chunk
                if len(data) > MAX_EXPOSITION:
                    raise InputError(f"{url}: the metrics are larger than {MAX_EXPOSITION >> 20} MiB")
    except httpx.TimeoutException as exc:
        raise DaemonUnavailable(f"{url}: no answer within {target.timeout:g}s") from exc
    except httpx.HTTPError as exc:
        raise DaemonUnavailable(
            f"cannot reach {url}: {str(exc) or type(exc).__name__}",
            hint="check --http-addr (or AION_HTTP_ADDR) and that aiond is running",
        ) from exc
    return data.decode("utf-8", errors="replace")


def _families(text: str) -> list[Any]:
    from prometheus_client.parser import text_string_to_metric_families

    try:
        return list(text_string_to_metric_families(text))
    except ValueError as exc:
        raise InputError(f"the daemon's /metrics is not a Prometheus exposition: {exc}") from exc


@app.command()
def show(
    ctx: typer.Context,
    match: Annotated[
        str | None, typer.Option("--match", metavar="REGEX", help="Only families whose name matches.")
    ] = None,
    addr: Address = None,
    http_addr: HttpAddress = None,
    timeout: Timeout = 5.0,
    output: Output = OutputFormat.TEXT,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_server_name: TlsServerName = None,
) -> None:
    """Print the daemon's metric samples."""
    try:
        pattern = re.compile(match) if match else None
    except re.error as exc:
        raise UsageError(f"--match {match!r} is not a regular expression: {exc}") from exc
    target = _target(ctx, addr, http_addr, timeout, (tls_ca, tls_cert, tls_key, tls_server_name))
    samples: list[dict[str, Any]] = []
    for family in _families(scrape(target)):
        if pattern is not None and not pattern.search(family.name):
            continue
        for sample in family.samples:
            if len(samples) >= MAX_SAMPLES:
                break
            samples.append({"name": sample.name, "labels": dict(sample.labels), "value": sample.value})
    doc = document("MetricSamples", {"url": target.http_url("/metrics"), "samples": samples})

    def text() -> str:
        lines = []
        for s in samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s["labels"].items()))
            lines.append(
                f"{s['name']}{{{labels}}} {s['value']:g}" if labels else f"{s['name']} {s['value']:g}"
            )
        return "\n".join(lines) + "\n"

    if not (global_options(ctx).quiet and output is OutputFormat.TEXT):
        emit(doc, output, text=text)


@app.command()
def check(
    ctx: typer.Context,
    dashboards: Annotated[
        Path, typer.Option("--dashboards", metavar="DIR", help="Grafana dashboard JSON files (*.json).")
    ],
    addr: Address = None,
    http_addr: HttpAddress = None,
    timeout: Timeout = 5.0,
    output: Output = OutputFormat.TEXT,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_server_name: TlsServerName = None,
) -> None:
    """Check that every metric the dashboards query is exported by the daemon."""
    import json

    from aion.dashboards import queries
    from aion.inputs import read_bounded
    from aion.promql import PromQLError, exported_names

    if not dashboards.is_dir():
        raise InputError(
            f"--dashboards {dashboards}: not a directory", hint="the directory of *.json dashboards"
        )
    files = sorted(dashboards.glob("*.json"))[:1000]
    if not files:
        raise InputError(f"--dashboards {dashboards}: no *.json files", hint="check the path")
    target = _target(ctx, addr, http_addr, timeout, (tls_ca, tls_cert, tls_key, tls_server_name))
    exported = exported_names(scrape(target))
    reports: list[dict[str, Any]] = []
    for path in files:
        try:
            board = json.loads(read_bounded(path, 16 << 20, what="dashboard"))
            used = sorted({name for query in queries(board) for name in query.metrics()})
            missing = [
                f"{query.where}: {name}" for query in queries(board) for name in sorted(query.metrics())
                if name not in exported
            ]  # fmt: skip
            error = None
        except (ValueError, KeyError, TypeError, PromQLError) as exc:
            used, missing, error = [], [], f"cannot read the dashboard: {exc}"
        reports.append({"file": str(path), "metrics": used, "missing": missing, "error": error})
    ok = all(not r["missing"] and r["error"] is None for r in reports)
    doc = document("DashboardMetricsCheck", {"ok": ok, "exported": len(exported), "dashboards": reports})

    def text() -> str:
        lines = []
        for r in reports:
            state = "ok" if not r["missing"] and not r["error"] else "MISSING"
            lines.append(f"{r['file']}: {state} ({len(r['metrics'])} metrics)")
            lines += [f"  {where}" for where in r["missing"]]
            if r["error"]:
                lines.append(f"  {r['error']}")
        return "\n".join(lines) + "\n"

    if not (global_options(ctx).quiet and output is OutputFormat.TEXT):
        emit(doc, output, text=text)
    if not ok:
        raise FindingsError(
            "dashboards query metrics the daemon does not export",
            hint="rename the queries' metrics, or check the daemon's version",
        )


def _seconds(text: str, option: str, low: float, high: float) -> float:
    from aion.runbook.model import seconds

    try:
        value = seconds(text, what=option)
    except ValueError as exc:
        raise UsageError(str(exc), hint="for example 500ms, 30s or 5m") from None
    if not low <= value <= high:
        raise UsageError(f"{option} {text} is out of range", hint=f"{low:g}s to {high:g}s")
    return value


@app.command()
def canary(
    ctx: typer.Context,
    window: Annotated[
        str, typer.Option("--window", metavar="DURATION", help="How long to watch (1s to 1h).")
    ] = "30s",
    max_error_ratio: Annotated[
        float, typer.Option("--max-error-ratio", min=0.0, max=1.0, help="Most errors per task allowed.")
    ] = 0.05,
    max_p95: Annotated[
        str, typer.Option("--max-p95", metavar="DURATION", help="Longest 95th-percentile task duration.")
    ] = "2s",
    min_tasks: Annotated[
        int, typer.Option("--min-tasks", min=0, max=10_000_000, help="Fewest tasks needed to judge at all.")
    ] = 1,
    route: Annotated[
        str | None,
        typer.Option("--route", metavar="ROUTE", help="Only tasks of this route (local, api, hybrid)."),
    ] = None,
    addr: Address = None,
    http_addr: HttpAddress = None,
    timeout: Timeout = 5.0,
    output: Output = OutputFormat.TEXT,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_server_name: TlsServerName = None,
) -> None:
    """Judge the tasks that finish during a window: error ratio and p95 against limits (exit 1 if over)."""
    from aion import canary as verdicts

    if max_error_ratio != max_error_ratio:  # noqa: PLR0124 - NaN
        raise UsageError("--max-error-ratio must be a number", hint="0 to 1")
    span = _seconds(window, "--window", 1.0, 3600.0)
    p95_limit = _seconds(max_p95, "--max-p95", 0.001, 3600.0)
    target = _target(ctx, addr, http_addr, timeout, (tls_ca, tls_cert, tls_key, tls_server_name))
    before = verdicts.parse(scrape(target), route=route)
    began = time.monotonic()
    time.sleep(span)
    after = verdicts.parse(scrape(target), route=route)
    watched = time.monotonic() - began
    result = verdicts.window(before, after)
    verdict = verdicts.judge(result, max_error_ratio=max_error_ratio, max_p95=p95_limit, min_tasks=min_tasks)
    doc = document("CanaryReport", {
        "passed": verdict.passed, "reasons": list(verdict.reasons), "windowSeconds": round(watched, 3),
        "route": route, "tasks": result.tasks, "errors": result.errors, "errorRatio": result.error_ratio,
        "p50Seconds": result.p50, "p95Seconds": result.p95, "p99Seconds": result.p99,
        "byStatus": dict(result.by_status), "byRoute": dict(result.by_route),
        "thresholds": {"maxErrorRatio": max_error_ratio, "maxP95Seconds": p95_limit, "minTasks": min_tasks},
    })  # fmt: skip

    def text() -> str:
        ratio = "-" if result.error_ratio is None else f"{result.error_ratio:.3f}"
        p95 = "-" if result.p95 is None else f"{result.p95:.3f}s"
        head = f"canary {'passed' if verdict.passed else 'FAILED'}: {result.tasks} tasks in {watched:.1f}s, "
        lines = [head + f"error ratio {ratio} (max {max_error_ratio:g}), p95 {p95} (max {p95_limit:g}s)"]
        lines += [f"  {reason}" for reason in verdict.reasons]
        return "\n".join(lines) + "\n"

    if not (global_options(ctx).quiet and output is OutputFormat.TEXT):
        emit(doc, output, text=text)
    if not verdict.passed:
        raise FindingsError(
            f"canary failed: {'; '.join(verdict.reasons)}", hint="roll back (aionctl policy rollback)"
        )


__all__ = ["app", "scrape"]
