"""Parsing of ``HOST:PORT`` listen and connect addresses, shared by aiond (listen) and aionctl (connect)."""

from __future__ import annotations

import dataclasses
import ipaddress
import re

from aion.errors import UsageError

MAX_PORT = 65535
_HOSTNAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252}[A-Za-z0-9_])?")


@dataclasses.dataclass(frozen=True, slots=True)
class HostPort:
    """A host (name, IPv4 or IPv6 literal, without brackets) and a TCP port (0 means "any free port")."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url_host(self) -> str:
        """The host as it goes into a URL authority (IPv6 literals in brackets)."""
        return f"[{self.host}]" if ":" in self.host else self.host


def parse_hostport(text: str, *, what: str) -> HostPort:
    """Parse ``HOST:PORT`` or ``[IPV6]:PORT``; ``what`` names the setting in the error message.

    >>> parse_hostport("127.0.0.1:8470", what="--grpc-listen")
    HostPort(host='127.0.0.1', port=8470)
    >>> str(parse_hostport("[::1]:0", what="--grpc-listen"))
    '[::1]:0'
    """
    example = "for example 127.0.0.1:8470 or [::1]:8470"
    value = text.strip()
    if "://" in value:
        raise UsageError(f"{what}: {text!r} is a URL; give HOST:PORT without a scheme", hint=example)
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise UsageError(f"{what}: {text!r} is not [IPV6]:PORT", hint=example)
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise UsageError(f"{what}: {host!r} is not an IPv6 address", hint=example) from None
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or not host:
            raise UsageError(f"{what}: {text!r} is not HOST:PORT", hint=example)
        if ":" in host:
            raise UsageError(f"{what}: put an IPv6 address in brackets, as in [{host}]:{port_text}")
        if not _HOSTNAME.fullmatch(host):
            raise UsageError(f"{what}: {host!r} is not a host name or IP address", hint=example)
    if not port_text.isascii() or not port_text.isdigit() or int(port_text) > MAX_PORT:
        raise UsageError(f"{what}: port {port_text!r} is not a number from 0 to {MAX_PORT}", hint=example)
    return HostPort(host=host, port=int(port_text))


__all__ = ["HostPort", "parse_hostport"]
