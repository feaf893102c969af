"""Where a request goes and which requests the cluster routes at all. Pure: no I/O.

- NAT: a phone is behind NAT when the address it says it sends from (Via sent-by) is not
  the one its request came from, or when its Contact is a private address (RFC 1918,
  RFC 6598). It is then reached at the source address it registered from (RFC 3581 rport).
"""

from __future__ import annotations

import hashlib
import hmac
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


def contact_address(uri: str) -> Address | None:
    """Where RFC 3261 §8.1.2 sends to a URI without DNS: its transport parameter (TLS for
    sips), its host, its port (5060, or 5061 for TLS, when absent)."""
    host, port = uri_hostport(uri)
    if not host:
        return None
    match = re.search(r";\s*transport=([A-Za-z]+)", uri.split("?", 1)[0], re.IGNORECASE)
    proto = match.group(1).lower() if match else ("tls" if uri.lower().startswith("sips:") else "udp")
    return Address(proto, host, port or (5061 if proto == "tls" else 5060))


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


# --- Route entries the cluster writes and checks ---------------------------------------------
#
# Record-Route (every dialog the cluster routes): our URI carries
#   blf=<token>  HMAC of the Call-ID, the caller's tag (rr's ftag) and the two flows below
#   tf=<flow>    where requests towards the callee go from the last instance on the route
#   cf=<flow>    where requests towards the caller go
# so an in-dialog request is routed only along a route set the cluster issued, and only to
# the transport addresses recorded when the call was set up: never to a host named by the
# request itself (no open relay, whatever its Request-URI says).
#
# Flow route (a request for a phone whose connection, or NAT pinhole, another instance
# holds, RFC 5626 §5.3 in spirit): the sending instance puts
#   <sip:HOLDER;lr;flow=<proto:host:port>;fsig=<HMAC of flow and Call-ID>>
# on top and sends to the holder, which relays over that flow.

TOKEN_CHARS = 20


@dataclass(frozen=True)
class RouteEntry:
    """One Route or Record-Route value: the URI, its host and port, its parameters."""

    uri: str
    host: str
    port: int | None
    params: dict[str, str]

    @property
    def loose(self) -> bool:
        return "lr" in self.params


def parse_route(value: str) -> RouteEntry | None:
    """A name-addr Route value (`<sip:host;lr;...>`); None when it does not parse."""
    text = value.strip()
    if text.startswith("<"):
        end = text.find(">")
        if end < 0:
            return None
        uri = text[1:end].strip()
    else:
        uri = text
    host, port = uri_hostport(uri)
    if not host:
        return None
    params: dict[str, str] = {}
    head = uri.split("?", 1)[0]
    for item in head.split(";")[1:]:
        name, _, param_value = item.partition("=")
        params[name.strip().lower()] = param_value.strip()
    return RouteEntry(uri, host, port, params)


def _mac(secret: str, *parts: str) -> str:
    digest = hmac.new(secret.encode(), "\x00".join(parts).encode(), hashlib.sha256).hexdigest()
    return digest[:TOKEN_CHARS]


def dialog_token(secret: str, call_id: str, ftag: str, tf: str, cf: str) -> str:
    return _mac(secret, "rr", call_id, ftag, tf, cf)


def record_route_params(secret: str, call_id: str, ftag: str, tf: str, cf: str) -> str:
    """Parameters for our Record-Route entry (rr appends ftag itself)."""
    return f";blf={dialog_token(secret, call_id, ftag, tf, cf)};tf={tf};cf={cf}"


def valid_dialog_route(entry: RouteEntry, secret: str, call_id: str, from_tag: str, to_tag: str) -> bool:
    """Our Record-Route entry of this dialog: token right, ftag one of the request's tags."""
    params = entry.params
    ftag, token = params.get("ftag", ""), params.get("blf", "")
    if not ftag or not token or ftag not in (from_tag, to_tag):
        return False
    expected = dialog_token(secret, call_id, ftag, params.get("tf", ""), params.get("cf", ""))
    return hmac.compare_digest(token, expected)


def flow_of(entry: RouteEntry, from_tag: str) -> Address | None:
    """Where the last instance on the route sends an in-dialog request: to the callee's flow
    when it comes from the caller (From tag is the dialog's ftag), else to the caller's."""
    downstream = entry.params.get("ftag", "") == from_tag
    return Address.parse(entry.params.get("tf" if downstream else "cf", ""))


def sent_by_its_party(entry: RouteEntry, from_tag: str, source: Address) -> bool:
    """Whether an in-dialog request reaching its first instance from outside the cluster
    comes from the flow recorded for its sender when the call was set up: the caller's
    (`cf`) when its From tag is the dialog's ftag, else the callee's (`tf`). Whoever else
    holds the dialog's route set (a tenant on the path, a leaked trace) ends or redirects
    nothing. The host must match; the port too on UDP (a phone sends from its SIP port, or
    its NAT binding), not on a connection, which a phone may open anew mid-call. An entry
    without the flow (none was recorded) is not checked."""
    recorded = Address.parse(entry.params.get("cf" if entry.params.get("ftag", "") == from_tag else "tf", ""))
    if recorded is None:
        return True
    if recorded.host.strip("[]").lower() != source.host.strip("[]").lower():
        return False
    return recorded.connection_oriented or source.connection_oriented or recorded.port == source.port


def flow_route(secret: str, holder_sip: str, flow: Address, call_id: str) -> str:
    return f"<sip:{holder_sip};lr;flow={flow};fsig={_mac(secret, 'flow', str(flow), call_id)}>"


def valid_flow_route(entry: RouteEntry, secret: str, call_id: str) -> Address | None:
    """The flow a flow route names when its signature is right, else None."""
    flow = Address.parse(entry.params.get("flow", ""))
    signature = entry.params.get("fsig", "")
    if flow is None or not signature:
        return None
    return flow if hmac.compare_digest(signature, _mac(secret, "flow", str(flow), call_id)) else None


@dataclass(frozen=True)
class Reach:
    """How to send a request to a phone: Request-URI, destination, an extra Route, and the
    flow to record for the dialog (`tf`)."""

    ruri: str
    dst: str = ""
    route: str = ""
    flow: str = ""


def reach(
    contact: str, received: str, holder: str, nat: bool, me: str, instances: dict[str, str],
    secret: str, call_id: str,
) -> Reach | None:
    """How instance `me` reaches a phone registered (or subscribed) at `holder` from `received`.

    - A phone on a connection (TCP, TLS, WS) or behind NAT is reached over the flow it
      registered on: directly when this instance holds it, else through the holder with a
      flow route. A connection whose holder is gone is gone too (None: skip the binding);
      a NAT pinhole is tried from here.
    - Otherwise (a reachable UDP phone) at its Contact, as RFC 3261 has it.
    `instances` maps live instance names to their SIP host:port.
    """
    source = Address.parse(received)
    if source is None or not (source.connection_oriented or nat):
        direct = contact_address(contact)
        return Reach(contact, flow=str(direct) if direct else "")
    if holder == me or not holder:
        return Reach(contact, dst=source.sip_uri(), flow=str(source))
    holder_sip = instances.get(holder)
    if holder_sip is None:
        if source.connection_oriented:
            return None
        return Reach(contact, dst=source.sip_uri(), flow=str(source))
    return Reach(
        contact, dst=f"sip:{holder_sip}", route=flow_route(secret, holder_sip, source, call_id),
        flow=f"udp:{holder_sip}",
    )
