"""Where a request goes and which requests the cluster routes at all. Pure: no I/O.

- NAT: a phone is behind NAT when the address it says it sends from (Via sent-by) is not
  the one its request came from, or when its Contact is a private address (RFC 1918,
  RFC 6598). It is then reached at the source address it registered from (RFC 3581 rport).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from statestore.domain.registrar import normalise_uri

_CONNECTION_ORIENTED = ("tcp", "tls", "ws", "wss")
# sip:[user@]host[:port][;params]: host is a name, an IPv4 address or [IPv6].
_HOSTPORT = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:(?:[^@]*@)?(\[[^\]]+\]|[^:;?>]+)(?::(\d+))?")
_PRIVATE = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")]


@dataclass(frozen=True)
class Address:
    """A transport address: protocol (udp, tcp, tls, ws, wss), host, port."""

    proto: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Address | None:
        """From "proto:host:port" (the form `received` is stored in); None if malformed."""
        proto, _, rest = text.partition(":")
        host, _, port = rest.rpartition(":")
        if not proto or not host or not port.isdigit():
            return None
        return cls(proto.lower(), host, int(port))

    def __str__(self) -> str:
        return f"{self.proto}:{self.host}:{self.port}"

    @property
    def connection_oriented(self) -> bool:
        return self.proto in _CONNECTION_ORIENTED

    def sip_uri(self) -> str:
        """A URI that makes Kamailio send to exactly this address over this protocol."""
        suffix = "" if self.proto == "udp" else f";transport={self.proto}"
        return f"sip:{self.host}:{self.port}{suffix}"


def uri_hostport(uri: str) -> tuple[str, int | None]:
    """Host (lower case, IPv6 without brackets) and port of a SIP URI; ("", None) if none."""
    match = _HOSTPORT.match(normalise_uri(uri))
    if match is None:
        return "", None
    host = match.group(1).strip("[]")
    return host, int(match.group(2)) if match.group(2) else None


def is_private(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in _PRIVATE if network.version == address.version)


def behind_nat(contact_uri: str, via_host: str, via_port: int | None, source_ip: str, source_port: int) -> bool:
    """Whether a request from `source_ip:source_port` comes from a phone behind NAT.

    True when the top Via's sent-by (the address the phone thinks it has; port 5060 when
    absent) differs from the source, or the Contact names a private address.
    """
    if via_host.strip("[]").lower() != source_ip.lower() or (via_port or 5060) != source_port:
        return True
    host, _ = uri_hostport(contact_uri)
    return is_private(host)
