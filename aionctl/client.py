"""How aionctl reaches aiond: endpoint resolution, gRPC channels, HTTP probes and error translation.

aionctl connects to the daemon directly: proxy settings in the environment (http_proxy, ...) are not
used, for gRPC and HTTP alike, so both reach the same place and loopback never goes through a proxy.

gRPC and httpx errors never leave this module raw: they become :mod:`aion.errors` exceptions whose exit
codes scripts can branch on (5 unreachable or timed out, 4 refused, 6 precondition, 1 other).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aion.addresses import HostPort, parse_hostport
from aion.errors import (
    DaemonUnavailable,
    Error,
    Forbidden,
    InputError,
    Saturated,
    ServiceError,
    Unauthenticated,
    UsageError,
    from_status,
)

_T = TypeVar("_T")

if TYPE_CHECKING:
    import ssl

    import grpc
    import httpx

DEFAULT_GRPC_ADDR = "127.0.0.1:8470"
DEFAULT_HTTP_ADDR = "127.0.0.1:8471"
MAX_PEM_BYTES = 1024 * 1024
"""Largest TLS file read (a CA bundle of every public root is about 200 KiB)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Tls:
    """TLS settings for reaching aiond: the CA that signs its certificate, and, for mTLS, the client
    certificate and key. Paths; read when a connection is made."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None

    def read(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """(CA, key, certificate) bytes; a file that cannot be read, is not a regular file or is
        larger than :data:`MAX_PEM_BYTES` is an InputError naming it and the limit."""
        from aion.inputs import read_bounded

        def load(path: str | None, what: str) -> bytes | None:
            if path is None:
                return None
            return read_bounded(path, MAX_PEM_BYTES, what=what, hint="check the TLS settings")

        return (
            load(self.ca_file, "the TLS CA file"),
            load(self.key_file, "the TLS client key"),
            load(self.cert_file, "the TLS client certificate"),
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
        """Flag or environment value when given (Typer has merged the two), else the default. Only
        None means "not given": an empty address is a usage error naming the flag."""
        return cls(
            grpc=parse_hostport(DEFAULT_GRPC_ADDR if addr is None else addr, what="--addr"),
            http=parse_hostport(DEFAULT_HTTP_ADDR if http_addr is None else http_addr, what="--http-addr"),
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
    # grpc's C core writes its own lines to stderr (a failed TLS handshake, for one) which say
    # less than the error aionctl prints; AION_DEBUG or GRPC_VERBOSITY bring them back.
    if not os.environ.get("AION_DEBUG"):
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
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


ERROR_TRAILER = "aion-error"
HINT_TRAILER = "aion-hint-bin"


def every_page(
    endpoint: Endpoint,
    method: Callable[..., Any],
    request_for: Callable[[str], Any],
    items: Callable[[Any], Sequence[_T]],
    what: str,
) -> list[_T]:
    """Every item of a paged list, page after page (the daemon answers at most one page per call):
    ``request_for(token)`` makes each request, ``items(reply)`` takes the page's items."""
    found: list[_T] = []
    token, seen = "", set()
    while True:
        reply = call(endpoint, method, request_for(token), what)
        found.extend(items(reply))
        token = reply.next_page_token
        if not token:
            return found
        if token in seen:  # a server that repeats itself would keep this loop going forever
            raise ServiceError(f"{what}: aiond at {endpoint.grpc} gave the same page token twice")
        seen.add(token)


def translate_rpc_error(exc: grpc.RpcError, endpoint: Endpoint, what: str) -> Error:
    """The aion error a failed call stands for, with the exit code it means for a user: the class
    the daemon named in its ``aion-error`` trailer (so a remote failure exits as a local one would),
    else what the gRPC status means (the call never reached a handler: no daemon, a TLS handshake
    that failed, a deadline, another server)."""
    import grpc

    code, detail = rpc_status(exc)
    trailers = _trailers(exc)
    name = trailers.get(ERROR_TRAILER)
    where = f"aiond at {endpoint.grpc}"
    raw_hint = trailers.get(HINT_TRAILER)
    hint = raw_hint.decode("utf-8", "replace") if isinstance(raw_hint, bytes) else None
    if not isinstance(name, str):
        if code is grpc.StatusCode.UNAVAILABLE:
            tls = tls_failure(detail, endpoint)
            if tls is not None:
                return DaemonUnavailable(
                    f"{what}: the TLS handshake with {where} failed: {tls[0]}", hint=tls[1]
                )
            return DaemonUnavailable(
                f"{what}: cannot reach {where}: {detail}",
                hint="is aiond running? set the address with --addr or AION_ADDR",
            )
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            return DaemonUnavailable(
                f"{what}: {where} did not answer within {endpoint.timeout:g}s",
                hint="raise --timeout, or check the daemon",
            )
        if code is grpc.StatusCode.UNIMPLEMENTED:
            return ServiceError(f"{what}: {where} does not offer this call: {detail}", hint="upgrade aiond")
        name = None
    message = detail.removesuffix(f" ({hint})") if hint else detail
    error = from_status(code.name, f"{what}: {message}", name=name, hint=hint)
    if isinstance(error, Unauthenticated):
        error.message = f"{what}: {where} refused the call: {message}"
        error.hint = error.hint or (
            "set a token with AION_TOKEN, --token-file or a context (aionctl config set-context)"
            if endpoint.token is None
            else "the token was refused: check it with the daemon's operator (aiond token list)"
        )
    elif isinstance(error, Forbidden):
        error.message = f"{what}: {where} refused the call: {message}"
        error.hint = error.hint or "use a token with a stronger role"
    elif isinstance(error, Saturated):
        millis = trailers.get("retry-after-ms")
        if isinstance(millis, str) and millis.isdigit():
            error.retry_after = int(millis) / 1000
        error.hint = error.hint or "retry later"
    elif type(error) is ServiceError and name is None:
        error.message = f"{what}: {where} answered {code.name}: {detail}"
    return error


_TLS_REASONS = (
    ("CERTIFICATE_VERIFY_FAILED", "aiond's certificate is not trusted",
     "give the CA that signed it with --tls-ca, and --tls-server-name if it names another host"),
    ("WRONG_VERSION_NUMBER", "aiond does not speak TLS on this address",
     "drop --tls-ca (and the context's tls settings), or point --addr at aiond's TLS listener"),
    ("CERTIFICATE_REQUIRED", "aiond wants a client certificate",
     "give --tls-cert and --tls-key (or the context's tls cert and key)"),
    ("HANDSHAKE_FAILURE", "aiond refused the client certificate, or wants one",
     "give a client certificate signed by the CA aiond trusts (--tls-cert, --tls-key)"),
    ("UNKNOWN_CA", "aiond does not trust the client certificate",
     "use a client certificate signed by the CA aiond trusts (--tls-client-ca on aiond)"),
    ("BAD_CERTIFICATE", "aiond refused the client certificate",
     "use a client certificate signed by the CA aiond trusts (--tls-client-ca on aiond)"),
)  # fmt: skip


def tls_failure(detail: str, endpoint: Endpoint) -> tuple[str, str] | None:
    """(what went wrong, what to do) when ``detail`` says a TLS handshake failed; None otherwise. A
    plain-text client that reaches a TLS listener sees its connection closed, which says no more than
    that: the hint then points at TLS."""
    if "andshake" in detail or "SSL_ERROR" in detail:
        for marker, reason, hint in _TLS_REASONS:
            if marker in detail:
                return reason, hint
        return "the handshake was refused", "check the TLS settings of aionctl and aiond"
    if "Socket closed" in detail or "Connection reset" in detail:
        if endpoint.tls is None:
            return (
                "the connection was closed at once (is aiond serving TLS?)",
                "if aiond serves TLS, give its CA with --tls-ca (or set up a context with tls)",
            )
        return (
            "aiond closed the connection: it wants a client certificate it trusts",
            "give --tls-cert and --tls-key: a certificate signed by a CA in aiond's --tls-client-ca",
        )
    return None


def _trailers(exc: grpc.RpcError) -> dict[str, str | bytes]:
    method = getattr(exc, "trailing_metadata", None)
    try:
        pairs = method() if callable(method) else None
    except Exception:  # a call object that has no trailers to give
        pairs = None
    return dict(pairs or ())


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
        verify = _ssl_context(endpoint.tls)
    with httpx.Client(
        timeout=endpoint.timeout, trust_env=False, verify=verify, headers=endpoint.headers()
    ) as client:
        yield client


def _ssl_context(tls: Tls) -> ssl.SSLContext:
    """The TLS context of the HTTP client, from the bytes :meth:`Tls.read` read (bounded, regular
    files only), never from paths handed to OpenSSL, which would read whatever they name."""
    import ssl

    ca, key, cert = tls.read()
    if (key is None) != (cert is None):
        raise UsageError("a client certificate and its key go together", hint="give both, or neither")
    try:
        # cadata takes PEM as ASCII text; bundles may carry non-ASCII comments between certificates.
        context = ssl.create_default_context(cadata=ca.decode("ascii", "ignore") if ca else None)
        if key is not None and cert is not None:
            _load_cert_chain(context, cert, key)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise InputError(f"cannot use the TLS files: {exc}", hint="check the TLS settings") from exc
    return context


def _load_cert_chain(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """ssl loads a client certificate only from a path: give it the bytes already read through a
    private temporary file (mode 0600, in a directory only we can enter), removed at once."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="aionctl-tls-") as directory:
        chain = Path(directory) / "client.pem"
        fd = os.open(chain, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(cert.rstrip(b"\n") + b"\n" + key)
        context.load_cert_chain(chain)


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
