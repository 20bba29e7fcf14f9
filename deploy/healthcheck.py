"""The container image's HEALTHCHECK: ask this container's aiond for /healthz (or the path given).

    python healthcheck.py [/healthz|/readyz]

Reads the address aiond serves HTTP on from AIOND_HTTP_LISTEN (the image sets 0.0.0.0:8471; a
wildcard address is asked on loopback) and uses HTTPS when AIOND_TLS_CERT is set. The certificate is
not verified: the check talks to its own container, and the name in the certificate is the service's,
not loopback's. Exit 0 when aiond answers 200, 1 otherwise, with one line saying why. Only the
standard library: the image's Python runs it, with no virtualenv of its own.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request

DEFAULT_LISTEN = "0.0.0.0:8471"
TIMEOUT_SECONDS = 3.0
PATHS = ("/healthz", "/readyz")


def target(listen: str, tls: bool, path: str) -> str:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"AIOND_HTTP_LISTEN={listen!r} is not HOST:PORT with a port from 1 to 65535")
    if host in ("", "0.0.0.0"):  # noqa: S104 - the wildcard is what is being translated, not bound
        host = "127.0.0.1"
    elif host in ("[::]", "::"):
        host = "[::1]"
    return f"{'https' if tls else 'http'}://{host}:{port}{path}"


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else "/healthz"
    if path not in PATHS:
        print(f"healthcheck: the path is one of {', '.join(PATHS)}, not {path!r}", file=sys.stderr)
        return 2
    try:
        listen = os.environ.get("AIOND_HTTP_LISTEN") or DEFAULT_LISTEN
        url = target(listen, bool(os.environ.get("AIOND_TLS_CERT")), path)
    except ValueError as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)
        return 2
    context = ssl._create_unverified_context() if url.startswith("https") else None  # noqa: S323 - see above
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS, context=context) as response:  # noqa: S310
            response.read(65536)
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"healthcheck: {url} answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
