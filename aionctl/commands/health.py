"""``aionctl health``: is aiond alive and ready? Probes gRPC health, HTTP /healthz and HTTP /readyz,
concurrently, each within ``--timeout``.

Exit 0 when every probe passes, 5 when any endpoint cannot be reached or times out, 1 when the daemon
answers but is not healthy or not ready (for example while it drains).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import typer

from aion.exitcodes import ExitCode
from aionctl.client import Probe, http_client, probe_grpc_health, probe_http
from aionctl.connect import TlsCa, TlsCert, TlsKey, TlsServerName, endpoint
from aionctl.options import Address, HttpAddress, Output, Timeout, command_app, global_options
from aionctl.output import OutputFormat, document, emit

app = command_app()


@app.command()
def health(
    ctx: typer.Context,
    addr: Address = None,
    http_addr: HttpAddress = None,
    timeout: Timeout = 5.0,
    output: Output = OutputFormat.TEXT,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_server_name: TlsServerName = None,
) -> None:
    """Check that aiond is alive and ready (gRPC and HTTP). The probes need no token."""
    target = endpoint(
        ctx, addr=addr, http_addr=http_addr, timeout=timeout,
        tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key, tls_server_name=tls_server_name,
    )  # fmt: skip
    # The probes run at once, so the whole check takes at most --timeout, not three times it.
    with http_client(target) as client, ThreadPoolExecutor(max_workers=3) as pool:
        futures = [
            pool.submit(probe_grpc_health, target),
            pool.submit(probe_http, client, target, "http-live", "/healthz"),
            pool.submit(probe_http, client, target, "http-ready", "/readyz"),
        ]
        probes = [f.result() for f in futures]
    code = outcome(probes)
    opts = global_options(ctx)
    doc = document(
        "HealthReport",
        {
            "healthy": code is ExitCode.OK,
            "checks": [_probe_doc(p) for p in probes],
        },
    )
    if not (opts.quiet and output is OutputFormat.TEXT):
        emit(doc, output, text=lambda: render_text(probes, color=opts.color()))
    raise typer.Exit(int(code))


def outcome(probes: list[Probe]) -> ExitCode:
    if not all(p.reachable for p in probes):
        return ExitCode.UNAVAILABLE
    if not all(p.ok for p in probes):
        return ExitCode.FINDINGS
    return ExitCode.OK


def _probe_doc(p: Probe) -> dict[str, object]:
    return {
        "name": p.name,
        "target": p.target,
        "reachable": p.reachable,
        "ok": p.ok,
        "status": p.status,
        "latencyMs": round(p.latency_ms, 3),
        "error": p.error,
    }


def render_text(probes: list[Probe], *, color: bool) -> str:
    width = max(len(p.name) for p in probes)
    lines = []
    for p in probes:
        mark = "ok" if p.ok else ("unreachable" if not p.reachable else "FAIL")
        if color:
            mark = typer.style(mark, fg="green" if p.ok else "red", bold=not p.ok)
        line = f"{p.name:<{width}}  {mark:<11}  {p.status:<11}  {p.latency_ms:7.1f} ms  {p.target}"
        if p.error:
            line += f"\n{'':<{width}}  {p.error}"
        lines.append(line)
    return "\n".join(lines) + "\n"
