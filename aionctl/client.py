"""How aionctl reaches aiond: endpoint resolution, gRPC channels, HTTP probes and error translation.

aionctl connects to the daemon directly: proxy settings in the environment (http_proxy, ...) are not
used, for gRPC and HTTP alike, so both reach the same place and loopback never goes through a proxy.

gRPC and httpx errors never leave this module raw: they become :mod:`aion.errors` exceptions whose exit
codes scripts can branch on (5 unreachable or timed out, 4 refused, 6 precondition, 1 other).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aion.addresses import HostPort, parse_hostport
from aion.errors import (
    AuthError,
    ConflictError,
    DaemonUnavailable,
    Error,
    InputError,
    ServiceError,
    UsageError,
)

_T = TypeVar("_T")

if TYPE_CHECKING:
    import grpc
    import httpx

DEFAULT_GRPC_ADDR = "127.0.0.1:8470"
DEFAULT_HTTP_ADDR = "127.0.0.1:8471"


@dataclasses.dataclass(frozen=True, slots=True)
class Tls:
    """TLS settings for reaching aiond: the CA that signs its certificate, and, for mTLS, the client
    certificate and key. Paths; read when a connection is made."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None

    def read(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """(CA, key, certificate) bytes; an unreadable file is an InputError naming it."""

        def load(path: str | None, what: str) -> bytes | None:
            if path is None:
                return None
            try:
                return Path(path).expanduser().read_bytes()
            except OSError as exc:
                raise InputError(
                    f"cannot read the {what} {path}: {exc.strerror}", hint="check the TLS settings"
                ) from exc

        return (
            load(self.ca_file, "CA file"),
            load(self.key_file, "client key"),
            load(self.cert_file, "client certificate"),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the daemon is, how to authenticate, and how long to wait for it."""

    grpc: HostPort
    http: HostPort
    timeout: float
    token: str | None = dataclasses.field(default=None, repr=False)
    tls: Tls | None = None

    @classmethod
    def resolve(
        cls,
        addr: str | None,
        http_addr: str | None,
        timeout: float,
        *,
        token: str | None = None,
        tls: Tls | None = None,
    ) -> Endpoint:
        """Flag or environment value when given (Typer has merged the two), else the default."""
        return cls(
            grpc=parse_hostport(addr or DEFAULT_GRPC_ADDR, what="--addr"),
            http=parse_hostport(http_addr or DEFAULT_HTTP_ADDR, what="--http-addr"),
            timeout=timeout,
            token=token,
            tls=tls,
        )

    def http_url(self, path: str) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{self.http.url_host}:{self.http.port}{path}"

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Call metadata carrying the token, when there is one."""
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


@contextlib.contextmanager
def channel(endpoint: Endpoint) -> Iterator[grpc.Channel]:
    """A gRPC channel to the daemon (TLS when the endpoint has TLS settings), closed on exit."""
    import grpc

    options: list[tuple[str, Any]] = [("grpc.enable_retries", 0), ("grpc.enable_http_proxy", 0)]
    if endpoint.tls is None:
        ch = grpc.insecure_channel(str(endpoint.grpc), options=options)
    else:
        ca, key, cert = endpoint.tls.read()
        if (key is None) != (cert is None):
            raise UsageError("a client certificate and its key go together", hint="give both, or neither")
        if endpoint.tls.server_name:
            options.append(("grpc.ssl_target_name_override", endpoint.tls.server_name))
        credentials = grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=cert
        )
        ch = grpc.secure_channel(str(endpoint.grpc), credentials, options=options)
    try:
        yield ch
    finally:
        ch.close()


def call(endpoint: Endpoint, method: Callable[..., _T], request: Any, what: str) -> _T:
    """One unary call with the endpoint's deadline and token; failures become aion errors."""
    import grpc

    try:
        return method(request, timeout=endpoint.timeout, metadata=endpoint.metadata())
    except grpc.RpcError as exc:
        raise translate_rpc_error(exc, endpoint, what) from exc


def translate_rpc_error(exc: grpc.RpcError, endpoint: Endpoint, what: str) -> Error:
    """Map a failed call to the aion error (and so the exit code) it means for a user."""
    import grpc

    code, detail = rpc_status(exc)
    where = f"aiond at {endpoint.grpc}"
    if code is grpc.StatusCode.UNAVAILABLE:
        return DaemonUnavailable(
            f"{what}: cannot reach {where}: {detail}",
            hint="is aiond running? set the address with --addr or AION_ADDR",
        )
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return DaemonUnavailable(
            f"{what}: {where} did not answer within {endpoint.timeout:g}s",
            hint="raise --timeout, or check the daemon",
        )
    if code is grpc.StatusCode.UNAUTHENTICATED:
        hint = (
            "set a token with AION_TOKEN, --token-file or a context (aionctl config set-context)"
            if endpoint.token is None
            else "the token was refused: check it with the daemon's operator (aiond token list)"
        )
        return AuthError(f"{what}: {where} refused the call: {detail}", hint=hint)
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return AuthError(
            f"{what}: {where} refused the call: {detail}", hint="use a token with a stronger role"
        )
    if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED, grpc.StatusCode.ALREADY_EXISTS):
        return ConflictError(f"{what}: {detail}")
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return UsageError(f"{what}: {detail}")
    if code is grpc.StatusCode.NOT_FOUND:
        return InputError(f"{what}: {detail}")
    if code is grpc.StatusCode.UNIMPLEMENTED:
        return ServiceError(f"{what}: {where} does not offer this call: {detail}", hint="upgrade aiond")
    return ServiceError(f"{what}: {where} answered {code.name}: {detail}")


def rpc_status(exc: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    """Status code and details of a failed call. Errors raised by calls are also grpc.Call objects,
    which carry both; anything else counts as UNKNOWN."""
    import grpc

    code = getattr(exc, "code", None)
    details = getattr(exc, "details", None)
    status = code() if callable(code) else None
    text = details() if callable(details) else None
    return (
        status if isinstance(status, grpc.StatusCode) else grpc.StatusCode.UNKNOWN,
        text if isinstance(text, str) else str(exc),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Probe:
    """The outcome of one health probe."""

    name: str
    target: str
    reachable: bool
    """False when nothing answered in time (refused, reset, timed out)."""
    ok: bool
    status: str
    """What answered: a gRPC serving status, or an HTTP status code."""
    latency_ms: float
    error: str | None = None


def probe_grpc_health(endpoint: Endpoint, service: str = "") -> Probe:
    """grpc.health.v1 Check for ``service`` ("" is the whole server)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    target = str(endpoint.grpc)
    started = time.perf_counter()
    with channel(endpoint) as ch:
        try:
            reply = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=endpoint.timeout
            )
        except grpc.RpcError as exc:
            elapsed = (time.perf_counter() - started) * 1000
            code, detail = rpc_status(exc)
            reachable = code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            return Probe("grpc", target, reachable, False, code.name, elapsed, detail or code.name)
    elapsed = (time.perf_counter() - started) * 1000
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return Probe(
        "grpc", target, True, reply.status == health_pb2.HealthCheckResponse.SERVING, status, elapsed
    )


@contextlib.contextmanager
def http_client(endpoint: Endpoint, *, authenticated: bool = False) -> Iterator[httpx.Client]:
    """An HTTP client for the daemon's listener (no proxies from the environment: it is our daemon).
    The token goes along only when ``authenticated``: probes are open and need none."""
    import httpx

    verify: Any = True
    if endpoint.tls is not None:
        import ssl

        try:
            verify = ssl.create_default_context(cafile=endpoint.tls.ca_file)
            if endpoint.tls.cert_file and endpoint.tls.key_file:
                verify.load_cert_chain(endpoint.tls.cert_file, endpoint.tls.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise InputError(f"cannot use the TLS files: {exc}", hint="check the TLS settings") from exc
    with httpx.Client(
        timeout=endpoint.timeout, trust_env=False, verify=verify, headers=endpoint.headers()
    ) as client:
        yield client


def probe_http(client: httpx.Client, endpoint: Endpoint, name: str, path: str) -> Probe:
    """GET ``path`` on the daemon's HTTP listener; 200 is ok."""
    import httpx

    url = endpoint.http_url(path)
    started = time.perf_counter()
    try:
        response = client.get(url)
    except httpx.TimeoutException:
        elapsed = (time.perf_counter() - started) * 1000
        return Probe(name, url, False, False, "TIMEOUT", elapsed, f"no answer within {endpoint.timeout:g}s")
    except httpx.HTTPError as exc:
        elapsed = (time.perf_counter() - started) * 1000
        return Probe(name, url, False, False, "UNREACHABLE", elapsed, str(exc) or type(exc).__name__)
    elapsed = (time.perf_counter() - started) * 1000
    ok = response.status_code == 200
    return Probe(name, url, True, ok, str(response.status_code), elapsed, None if ok else response.text[:200])


__all__ = [
    "Endpoint",
    "Probe",
    "Tls",
    "call",
    "channel",
    "http_client",
    "probe_grpc_health",
    "probe_http",
    "rpc_status",
    "translate_rpc_error",
]
