"""A small OCI distribution client on httpx.

Written here rather than taken from oras-py (0.2.43), which is unsafe for an install path: it does not
verify digests on pull, has no referrers client, and retries for minutes. This client:

- resolves a tag to a manifest and computes its digest itself (a registry's Docker-Content-Digest
  header is checked, never trusted), then fetches everything else by digest and verifies every byte;
- streams blobs to the caller with a size cap, hashing as it goes;
- finds referrers through the referrers API, or the ``sha256-<hex>`` tag where there is none, and
  keeps that tag up to date when it pushes a referrer to such a registry;
- answers ``Basic`` and ``Bearer`` challenges with credentials from the environment or the docker
  client's config (:mod:`aion.oci.auth`);
- retries a few times, quickly, on connection errors, 429 and 5xx (honouring Retry-After, at most
  :data:`MAX_RETRY_AFTER` seconds), then fails with a clear error.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import ipaddress
import json
import math
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import httpx

from aion import __version__
from aion.errors import RegistryAuthError, RegistryError, VerificationError
from aion.oci import auth
from aion.oci.interface import MAX_MANIFEST_BYTES, Progress
from aion.oci.model import INDEX, MANIFEST_TYPES, Descriptor, Digest, Manifest, Reference

ATTEMPTS = 3
BACKOFF = (0.2, 0.8)
MAX_RETRY_AFTER = 5.0
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
CHUNK = 1024 * 1024
_ACCEPT = ", ".join(MANIFEST_TYPES)


MAX_TOKEN_BYTES = 1024 * 1024
MIN_RATE = 64 * 1024
"""Bytes per second below which a blob download counts as stalled (see fetch_blob)."""
CREDENTIALS_HINT = (
    "set AION_REGISTRY_HOST (this registry), AION_REGISTRY_USERNAME and AION_REGISTRY_PASSWORD, "
    "or log in with docker login"
)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context per process (loading the CA bundle costs tens of milliseconds), honouring
    SSL_CERT_FILE and SSL_CERT_DIR like httpx does."""
    return httpx.create_ssl_context(trust_env=True)


class RegistryClient:
    """One client for any number of registries; use as a context manager, or call :meth:`close`."""

    def __init__(
        self,
        *,
        plain_http: frozenset[str] = frozenset(),
        timeout: float = 30.0,
        environ: dict[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._plain_http = plain_http
        self._timeout = timeout
        self._environ = environ
        self._sleep = sleep
        self._http = httpx.Client(
            verify=_tls_context(),
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            follow_redirects=True,
            # Bodies are checked and capped as they arrive; a compressed body could expand without
            # bound before any cap applied, so none is accepted.
            headers={"User-Agent": f"aion/{__version__}", "Accept-Encoding": "identity"},
            trust_env=True,
        )
        self._tokens: dict[tuple[str, str], str] = {}
        self._no_referrers_api: set[str] = set()
        """Registries that answered 404 to the referrers API: the tag fallback is used directly."""
        self._basic: set[str] = set()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- the ArtifactStore interface ---------------------------------------------------------------

    def resolve(self, ref: Reference) -> Manifest:
        target = str(ref.digest) if ref.digest else ref.tag or "latest"
        raw, headers = self._get_manifest(ref, target)
        digest = ref.digest or Digest.of(raw)
        claimed = headers.get("docker-content-digest")
        if claimed and claimed != str(Digest.of(raw, Digest.parse(claimed).algorithm)):
            raise VerificationError(
                f"{ref}: the registry says the manifest is {claimed}, but its bytes hash otherwise",
                hint="the registry serves inconsistent content; do not trust it",
            )
        digest.verify(raw, f"{ref} manifest")
        return Manifest.parse(raw, digest, f"{ref} manifest")

    def manifest(self, ref: Reference, digest: Digest) -> Manifest:
        raw, _ = self._get_manifest(ref, str(digest))
        digest.verify(raw, f"{ref.name}@{digest}")
        return Manifest.parse(raw, digest, f"{ref.name}@{digest}")

    def tag_digest(self, ref: Reference, tag: str) -> Digest | None:
        try:
            raw, _ = self._get_manifest(ref, tag)
        except RegistryError as exc:
            if "not found" in exc.message:
                return None
            raise
        return Digest.of(raw)

    def fetch_blob(
        self,
        ref: Reference,
        descriptor: Descriptor,
        out: BinaryIO,
        *,
        limit: int,
        progress: Progress | None = None,
    ) -> None:
        what = f"{ref.name} blob {descriptor.digest}"
        if descriptor.size > limit:
            raise VerificationError(f"{what} is {descriptor.size} bytes; the limit is {limit}")
        url = self._url(ref, f"/blobs/{descriptor.digest}")
        received = 0
        try:
            with self._stream(ref, "GET", url) as response, _HashingWriter(out, descriptor.digest) as sink:
                self._raise_for(response, ref, what)
                _check_identity(response, what)
                # However slowly it trickles, a blob arrives within the timeout plus 64 KiB/s.
                deadline = time.monotonic() + self._timeout + descriptor.size / MIN_RATE
                for chunk in response.iter_raw():
                    if time.monotonic() > deadline:
                        raise RegistryError(f"{what}: too slow; gave up after {received} bytes")
                    received += len(chunk)
                    if received > descriptor.size:
                        raise VerificationError(
                            f"{what}: the registry sent more than the {descriptor.size} bytes named"
                        )
                    sink.write(chunk)
                    if progress is not None:
                        progress(len(chunk))
        except httpx.HTTPError as exc:
            raise RegistryError(f"{what}: the download broke off after {received} bytes: {exc}") from exc
        if received != descriptor.size:
            raise VerificationError(f"{what}: got {received} bytes of {descriptor.size}")
        if sink.hexdigest != descriptor.digest.hex:
            raise VerificationError(
                f"{what}: content does not match its digest",
                hint="the registry served other bytes than the ones it named; do not trust it",
            )

    def referrers(self, ref: Reference, digest: Digest, artifact_type: str | None = None) -> list[Descriptor]:
        response = None
        if ref.registry not in self._no_referrers_api:
            url = self._url(ref, f"/referrers/{digest}")
            params = {"artifactType": artifact_type} if artifact_type else None
            response = self._request(ref, "GET", url, params=params, headers={"Accept": INDEX})
        if (
            response is not None
            and response.status_code == 200
            and response.headers.get("content-type", "").startswith(INDEX)
        ):
            raw = self._read_capped(response, MAX_MANIFEST_BYTES, f"{ref.name} referrers of {digest}")
            index = Manifest.parse(raw, Digest.of(raw), f"{ref.name} referrers of {digest}")
        elif response is None or response.status_code in (404, 405):
            if response is not None:
                response.close()
            self._no_referrers_api.add(ref.registry)
            # No referrers API: the fallback is an index under the tag sha256-<hex>.
            try:
                raw, _ = self._get_manifest(ref, digest.tag_fallback)
            except RegistryError as exc:
                if "not found" in exc.message:
                    return []
                raise
            index = Manifest.parse(raw, Digest.of(raw), f"{ref.name}:{digest.tag_fallback}")
        else:
            self._raise_for(response, ref, f"referrers of {digest}")
            return []
        return [d for d in index.manifests if artifact_type is None or d.artifact_type == artifact_type]

    def push_blob(self, ref: Reference, descriptor: Descriptor, data: BinaryIO) -> None:
        exists = self._request(ref, "HEAD", self._url(ref, f"/blobs/{descriptor.digest}"))
        exists.close()
        if exists.status_code == 200:
            return
        start = self._request(ref, "POST", self._url(ref, "/blobs/uploads/"))
        self._raise_for(start, ref, f"upload of {descriptor.digest}", expected=(202,))
        start.close()
        location = httpx.URL(start.headers.get("location", ""))
        if not location.is_absolute_url:
            location = httpx.URL(self._url(ref, "")).join(location)
        target = location.copy_merge_params({"digest": str(descriptor.digest)})
        data.seek(0)
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(descriptor.size)}
        done = self._request(ref, "PUT", target, content=_chunks(data), headers=headers, retry=False)
        self._raise_for(done, ref, f"upload of {descriptor.digest}", expected=(201,))
        done.close()

    def push_manifest(self, ref: Reference, raw: bytes, media_type: str, tag: str | None) -> Digest:
        digest = Digest.of(raw)
        target = tag or str(digest)
        response = self._request(
            ref,
            "PUT",
            self._url(ref, f"/manifests/{target}"),
            content=raw,
            headers={"Content-Type": media_type},
        )
        self._raise_for(response, ref, f"push of manifest {target}", expected=(201,))
        response.close()
        manifest = Manifest.parse(raw, digest, f"{ref.name} manifest")
        if manifest.subject is not None and "oci-subject" not in response.headers:
            self._add_to_fallback(ref, manifest)
        return digest

    # -- referrers fallback ------------------------------------------------------------------------

    def _add_to_fallback(self, ref: Reference, manifest: Manifest) -> None:
        assert manifest.subject is not None
        tag = manifest.subject.digest.tag_fallback
        entries: list[Descriptor] = []
        try:
            raw, _ = self._get_manifest(ref, tag)
            entries = list(Manifest.parse(raw, Digest.of(raw), f"{ref.name}:{tag}").manifests)
        except RegistryError as exc:
            if "not found" not in exc.message:
                raise
        descriptor = dataclasses.replace(manifest.descriptor, annotations=dict(manifest.annotations))
        if not any(e.digest == descriptor.digest for e in entries):
            entries.append(descriptor)
        index = json.dumps(
            {"schemaVersion": 2, "mediaType": INDEX, "manifests": [e.to_json() for e in entries]},
            separators=(",", ":"),
        )
        response = self._request(
            ref,
            "PUT",
            self._url(ref, f"/manifests/{tag}"),
            content=index.encode(),
            headers={"Content-Type": INDEX},
        )
        self._raise_for(response, ref, f"push of referrers tag {tag}", expected=(201,))
        response.close()

    # -- HTTP ----------------------------------------------------------------------------------------

    def _base(self, ref: Reference) -> str:
        host = "registry-1.docker.io" if ref.registry == "docker.io" else ref.registry
        scheme = "http" if ref.registry in self._plain_http else "https"
        return f"{scheme}://{host}"

    def _url(self, ref: Reference, path: str) -> str:
        return f"{self._base(ref)}/v2/{ref.repository}{path}"

    def _get_manifest(self, ref: Reference, target: str) -> tuple[bytes, httpx.Headers]:
        response = self._request(
            ref, "GET", self._url(ref, f"/manifests/{target}"), headers={"Accept": _ACCEPT}
        )
        self._raise_for(response, ref, f"manifest {target}")
        raw = self._read_capped(response, MAX_MANIFEST_BYTES, f"{ref.name}:{target} manifest")
        return raw, response.headers

    def _read_capped(self, response: httpx.Response, limit: int, what: str) -> bytes:
        """The whole (identity-encoded) body, read as it arrives: refused once it passes ``limit``
        bytes or takes longer than the timeout in all; the response is closed either way."""
        try:
            _check_identity(response, what)
            length = response.headers.get("content-length", "")
            if length.isdigit() and int(length) > limit:
                raise VerificationError(f"{what} is {length} bytes; the limit is {limit}")
            deadline = time.monotonic() + self._timeout
            body = bytearray()
            for chunk in response.iter_raw():
                body += chunk
                if len(body) > limit:
                    raise VerificationError(f"{what} is over the {limit}-byte limit")
                if time.monotonic() > deadline:
                    raise RegistryError(f"{what}: the registry took over {self._timeout:.0f} s to send it")
            return bytes(body)
        except httpx.HTTPError as exc:
            raise RegistryError(f"{what}: the download broke off: {exc}") from exc
        finally:
            response.close()

    def _request(
        self,
        ref: Reference,
        method: str,
        url: httpx.URL | str,
        *,
        retry: bool = True,
        **kwargs: Any,
    ) -> httpx.Response:
        """One request, with auth challenges answered and transient failures retried. The body is
        left unread: the caller reads it (capped, :meth:`_read_capped`) or closes the response."""
        attempts = ATTEMPTS if retry else 1
        for attempt in range(1, attempts + 1):
            try:
                response = self._send(ref, method, url, **kwargs)
            except (httpx.TooManyRedirects, httpx.DecodingError, httpx.InvalidURL) as exc:
                raise RegistryError(
                    f"{ref.registry or ref.repository}: {method} {_path(url)}: {exc}"
                ) from exc
            except httpx.TransportError as exc:
                if attempt == attempts:
                    reason = str(exc) or type(exc).__name__
                    raise RegistryError(
                        f"{ref.registry or ref.repository}: {method} {_path(url)} failed: {reason}",
                        hint="check the registry address, the network, and --plain-http for an HTTP registry",
                    ) from exc
                self._sleep(BACKOFF[min(attempt - 1, len(BACKOFF) - 1)])
                continue
            if response.status_code in RETRY_STATUS and attempt < attempts:
                response.close()
                self._sleep(_retry_after(response, BACKOFF[min(attempt - 1, len(BACKOFF) - 1)]))
                continue
            return response
        raise AssertionError("unreachable")

    def _send(self, ref: Reference, method: str, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        extra = kwargs.pop("headers", None)
        origin = httpx.URL(self._base(ref)).netloc
        if httpx.URL(str(url)).netloc != origin:
            # Never send the registry's credentials elsewhere (an upload location on another host,
            # say); such a URL is authorised by its own query string, or not at all.
            return self._http.send(
                self._http.build_request(method, url, headers=extra, **kwargs), stream=True
            )
        response = self._http.send(
            self._http.build_request(method, url, headers=self._auth_headers(ref, extra), **kwargs),
            stream=True,
        )
        if response.status_code != 401 or response.url.netloc != origin:
            return response  # a challenge from a host the registry redirected to is not answered
        challenge = auth.parse_challenge(response.headers.get("www-authenticate", ""))
        if challenge is None or not self._answer(ref, challenge, method):
            return response
        response.close()
        # The same request again, with the same headers (Accept matters) and the new credentials.
        return self._http.send(
            self._http.build_request(method, url, headers=self._auth_headers(ref, extra), **kwargs),
            stream=True,
        )

    @contextlib.contextmanager
    def _stream(self, ref: Reference, method: str, url: str) -> Iterator[httpx.Response]:
        """A response whose body is read as it arrives (auth, redirects and retries as for any request)."""
        response = self._request(ref, method, url)
        try:
            yield response
        finally:
            response.close()

    def _auth_headers(self, ref: Reference, extra: dict[str, str] | None) -> dict[str, str]:
        headers = dict(extra or {})
        token = self._tokens.get((ref.registry, ref.repository))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif ref.registry in self._basic:
            creds = auth.credentials_for(ref.registry, self._environ)
            if creds and creds.username is not None:
                pair = f"{creds.username}:{creds.password or ''}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        return headers

    def _answer(self, ref: Reference, challenge: auth.Challenge, method: str) -> bool:
        creds = auth.credentials_for(ref.registry, self._environ)
        if challenge.scheme == "basic":
            if creds is None or creds.username is None or ref.registry in self._basic:
                return False
            self._basic.add(ref.registry)
            return True
        realm = challenge.params.get("realm")
        if not realm:
            return False
        self._check_realm(ref, realm)
        actions = "pull,push" if method in ("POST", "PUT", "PATCH", "DELETE") else "pull"
        scope = f"repository:{ref.repository}:{actions}"
        params = {k: v for k, v in {"service": challenge.params.get("service"), "scope": scope}.items() if v}
        request_auth = None
        if creds and creds.identity_token:
            data = {"grant_type": "refresh_token", "refresh_token": creds.identity_token, **params}
            try:
                token_response = self._http.send(
                    self._http.build_request("POST", realm, data=data), stream=True, follow_redirects=False
                )
            except httpx.TransportError as exc:
                raise RegistryError(
                    f"{ref.registry}: the token service at {realm} is unreachable: {exc}"
                ) from exc
        else:
            if creds and creds.username is not None:
                request_auth = httpx.BasicAuth(creds.username, creds.password or "")
            try:
                token_response = self._http.send(
                    self._http.build_request("GET", realm, params=params),
                    auth=request_auth,
                    stream=True,
                    follow_redirects=False,
                )
            except httpx.TransportError as exc:
                raise RegistryError(
                    f"{ref.registry}: the token service at {realm} is unreachable: {exc}"
                ) from exc
        if token_response.status_code in (401, 403):
            token_response.close()
            refused = "the credentials" if creds else "anonymous access (no credentials were found)"
            raise RegistryAuthError(
                f"{ref.registry}: the token service refused {refused} ({token_response.status_code})",
                hint=CREDENTIALS_HINT,
            )
        body = self._read_capped(
            token_response, MAX_TOKEN_BYTES, f"{ref.registry}: the token service's answer"
        )
        token = None
        with contextlib.suppress(ValueError, UnicodeDecodeError, RecursionError):
            document = json.loads(body)
            if isinstance(document, dict):
                token = document.get("token") or document.get("access_token")
        if token_response.status_code != 200 or not isinstance(token, str):
            raise RegistryAuthError(f"{ref.registry}: the token service at {realm} gave no token")
        self._tokens[(ref.registry, ref.repository)] = token
        return True

    def _check_realm(self, ref: Reference, realm: str) -> None:
        """Refuse a token realm the registry should not be able to send aion to. The realm receives
        the user's credentials, so it must be HTTPS (HTTP only for a --plain-http registry), and,
        unless it is the registry's own host:port, every address its host resolves to must be of a
        kind the registry itself could reach us as: never link-local (cloud metadata services) or
        unspecified; loopback only for a registry on loopback; private only for a registry on a
        private or loopback address. Names are resolved, so ``127.1`` or ``2852039166`` cannot pass
        as host names. (A name that resolves differently a moment later is outside this check.)"""
        try:
            url = httpx.URL(realm)
        except httpx.InvalidURL as exc:
            raise RegistryAuthError(f"{ref.registry}: the token realm {realm!r} is not a URL") from exc
        if url.scheme != "https" and not (url.scheme == "http" and ref.registry in self._plain_http):
            raise RegistryAuthError(
                f"{ref.registry}: refusing the token realm {realm}: it must be https",
                hint="only a registry given with --plain-http may use an http token service",
            )
        if url.netloc.decode("ascii", "replace") == httpx.URL(self._base(ref)).netloc.decode(
            "ascii", "replace"
        ):
            return
        realm_kind = _address_kind(url.host)
        registry_kind = _address_kind(httpx.URL(self._base(ref)).host)
        allowed = {
            "loopback": {"public", "loopback"},
            "private": {"public", "private"},
            "public": {"public"},
        }.get(registry_kind, {"public"})
        if realm_kind not in allowed:
            raise RegistryAuthError(
                f"{ref.registry}: refusing the token realm {realm}: a {realm_kind} address, "
                f"which a {registry_kind} registry may not send aion's credentials to",
                hint="the token service must be the registry itself, or reachable the way the registry is",
            )

    @staticmethod
    def _raise_for(
        response: httpx.Response, ref: Reference, what: str, *, expected: tuple[int, ...] = (200,)
    ) -> None:
        status = response.status_code
        if status in expected:
            return
        if status in (401, 403):
            raise RegistryAuthError(
                f"{ref.registry}: {what}: access refused ({status}{_codes(response)})",
                hint=CREDENTIALS_HINT,
            )
        if status == 404:
            raise RegistryError(f"{ref.name}: {what} not found{_codes(response)}")
        raise RegistryError(f"{ref.registry}: {what}: the registry answered {status}{_codes(response)}")


def _codes(response: httpx.Response) -> str:
    """The registry's error codes from an error body (at most 64 KiB of it is read)."""
    body = bytearray()
    with contextlib.suppress(httpx.HTTPError, RuntimeError):
        for chunk in response.iter_raw():
            body += chunk
            if len(body) > 64 * 1024:
                break
    response.close()
    with contextlib.suppress(ValueError, UnicodeDecodeError, RecursionError, AttributeError, TypeError):
        errors = json.loads(bytes(body)).get("errors") or []
        codes = [f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict)]
        if codes:
            return " - " + _printable("; ".join(codes))[:300]
    return ""


def _printable(text: str) -> str:
    """Registry-supplied text with control characters escaped, so it cannot rewrite a terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _check_identity(response: httpx.Response, what: str) -> None:
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise RegistryError(f"{what}: the registry sent a {encoding!r}-encoded body; aion asks for identity")


class _HashingWriter:
    """Writes a blob to ``out`` in 1 MiB batches while a second thread hashes the same batches.

    hashlib releases the GIL while it hashes a large buffer, so the digest is computed alongside the
    network reads and file writes instead of after each of them (about a fifth off a large pull).
    The hash thread always ends with the ``with`` block; :attr:`hexdigest` is read after it.
    """

    BATCH = 1024 * 1024

    def __init__(self, out: BinaryIO, digest: Digest) -> None:
        self._out = out
        self._hasher = digest.hasher()
        self._pending = bytearray()
        self._batches: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self._thread = threading.Thread(target=self._hash, name="aion-blob-hash", daemon=True)
        self.hexdigest = ""

    def _hash(self) -> None:
        while (batch := self._batches.get()) is not None:
            self._hasher.update(batch)

    def __enter__(self) -> _HashingWriter:
        self._thread.start()
        return self

    def write(self, chunk: bytes) -> None:
        self._pending += chunk
        if len(self._pending) >= self.BATCH:
            self._flush()

    def _flush(self) -> None:
        batch = bytes(self._pending)
        self._pending.clear()
        self._batches.put(batch)
        self._out.write(batch)

    def __exit__(self, kind: object, *rest: object) -> None:
        try:
            if kind is None and self._pending:
                self._flush()
        finally:
            self._batches.put(None)
            self._thread.join()
        self.hexdigest = self._hasher.hexdigest()


def _address_kind(host: str) -> str:
    """How a host's addresses are reachable: "link-local" (or unspecified, multicast, reserved) if any
    is, else "loopback", "private" or "public"; "unresolved" when the name does not resolve."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return "unresolved"
    kinds = set()
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if address.is_loopback:
            kinds.add("loopback")
        elif address.is_link_local or address.is_unspecified or address.is_multicast or address.is_reserved:
            kinds.add("link-local")
        elif address.is_private:
            kinds.add("private")
        else:
            kinds.add("public")
    for kind in ("link-local", "loopback", "private", "public"):
        if kind in kinds:
            return kind
    return "unresolved"


def _retry_after(response: httpx.Response, default: float) -> float:
    value = response.headers.get("retry-after", "")
    try:
        seconds = float(value)
    except ValueError:
        return default
    return min(max(seconds, 0.0), MAX_RETRY_AFTER) if math.isfinite(seconds) else default


def _path(url: httpx.URL | str) -> str:
    return httpx.URL(str(url)).path


def _chunks(data: BinaryIO) -> Iterator[bytes]:
    while chunk := data.read(CHUNK):
        yield chunk


__all__ = ["RegistryClient"]
