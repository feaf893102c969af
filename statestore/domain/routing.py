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

from statestore.domain.uri_identity import normalise_uri

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
#   blf=<token>  HMAC of the entry's own host:port, the Call-ID, the caller's tag (rr's
#                ftag) and every parameter below: a copy of the entry with another host,
#                port or flow is not ours
#   tf=<flow>    where requests towards the callee go from the last instance on the route
#   cf=<flow>    where requests towards the caller go
#   tp=<protos>  the transports of the two sides (udp, or udp.tcp when they differ): an
#                entry's transport= must be one of them
#   st=<secs>    when the call was set up: a route set is refused DIALOG_LIFETIME after it
#   bt=<boot>    only in the entry of the instance tracking the call (dlg_manage): its boot;
#                while that boot lasts the instance routes only dialogs its dialog module
#                still holds (a request after the BYE gets 481); a restarted instance
#                knows none and routes the older boot's dialogs until their lifetime ends
# Kamailio adds lr, ftag (rr's append_fromtag), did (the dialog module) and, when the two
# sides use different transports, a second entry with transport= and r2=on: those are the
# only other parameters an entry of ours may carry (no maddr, no anything else).
# An in-dialog request is routed only along a route set the cluster issued, to the next
# instance of ours (a signed entry naming a live instance's host:port) or to the transport
# address recorded when the call was set up: never to a host named only by the request.
#
# Flow route (a request for a phone whose connection, or NAT pinhole, another instance
# holds, RFC 5626 §5.3 in spirit): the sending instance puts
#   <sip:HOLDER;lr;flow=<proto:host:port>;fsig=<HMAC of flow and Call-ID>>
# on top and sends to the holder, which relays over that flow.

TOKEN_CHARS = 20
# kamailio.cfg: dialog default_timeout. No dialog outlives it, nor does its route set.
DIALOG_LIFETIME = 43200
_SIGNED = ("tf", "cf", "tp", "st", "bt")
_ROUTE_PARAMS = frozenset({"lr", "r2", "transport", "ftag", "did", "blf", *_SIGNED})
_DID = re.compile(r"^[0-9a-fA-F]+\.[0-9a-fA-F]+(\.[0-9a-fA-F]+)?$")


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

    @property
    def hostport(self) -> str:
        """host:port as an instance's SIP address is written (port 5060 when absent)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port or 5060}"


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


def _hostport(sip: str) -> str:
    """An instance's SIP address as its entries are checked: host lower case, port explicit."""
    entry = parse_route(f"<sip:{sip}>")
    return entry.hostport.lower() if entry is not None else sip.lower()


def dialog_token(secret: str, hostport: str, call_id: str, ftag: str, signed: dict[str, str]) -> str:
    return _mac(secret, "rr2", _hostport(hostport), call_id, ftag, *(f"{k}={signed.get(k, '')}" for k in _SIGNED))


def record_route_params(
    secret: str, me_sip: str, call_id: str, ftag: str, tf: str, cf: str, started: int, boot: str = "",
    transports: tuple[str, ...] = ("udp",),
) -> str:
    """Parameters for the Record-Route entry instance `me_sip` writes (rr appends lr and
    ftag itself, the dialog module did) for a request that came in over one of `transports`
    and goes out over the other. `boot` only from the instance tracking the call."""
    protos = ".".join(sorted({proto.lower() for proto in transports}))
    signed = {"tf": tf, "cf": cf, "tp": protos, "st": str(started), **({"bt": boot} if boot else {})}
    token = dialog_token(secret, me_sip, call_id, ftag, signed)
    return f";blf={token}" + "".join(f";{name}={value}" for name, value in signed.items())


def _well_formed(params: dict[str, str]) -> bool:
    """Only the parameters we or Kamailio write, each in the form written."""
    return (
        set(params) <= _ROUTE_PARAMS
        and params.get("lr", "") in ("", "on")
        and params.get("r2", "on") == "on"
        and params.get("transport", "udp").lower() in params.get("tp", "").split(".")
        and ("did" not in params or _DID.match(params["did"]) is not None)
        and params.get("st", "").isdigit()
    )


def valid_dialog_route(
    entry: RouteEntry, secret: str, call_id: str, from_tag: str, to_tag: str, now: float,
) -> bool:
    """Our Record-Route entry of this dialog: only our parameters, token right for this
    entry's host:port and this Call-ID, ftag one of the request's tags, within its lifetime."""
    params = entry.params
    ftag, token = params.get("ftag", ""), params.get("blf", "")
    if not ftag or not token or ftag not in (from_tag, to_tag) or not _well_formed(params):
        return False
    if not now < int(params["st"]) + DIALOG_LIFETIME:
        return False
    signed = {name: params[name] for name in _SIGNED if name in params}
    return hmac.compare_digest(token, dialog_token(secret, entry.hostport, call_id, ftag, signed))


def tracks_dialog(entry: RouteEntry, boot: str) -> bool:
    """Whether this entry is the one of the instance tracking the call, written in its
    current boot: that instance then routes only a dialog its dialog module holds."""
    return entry.params.get("bt", "") == boot


def proven_instance(entry: RouteEntry, instances: dict[str, str]) -> bool:
    """The next hop after our entries is another instance of ours: its (signed, checked)
    entry names a live instance's SIP host:port."""
    return entry.hostport.lower() in {_hostport(sip) for sip in instances.values()}


def flow_of(entry: RouteEntry, from_tag: str) -> Address | None:
    """Where the last instance on the route sends an in-dialog request: to the callee's flow
    when it comes from the caller (From tag is the dialog's ftag), else to the caller's."""
    downstream = entry.params.get("ftag", "") == from_tag
    return Address.parse(entry.params.get("tf" if downstream else "cf", ""))


def sent_by_its_party(entry: RouteEntry, from_tag: str, source: Address) -> bool:
    """Whether an in-dialog request reaching its first instance from outside the cluster
    comes from the flow recorded for its sender when the call was set up: the caller's
    (`cf`) when its From tag is the dialog's ftag, else the callee's (`tf`). Whoever else
    holds the dialog's route set (a tenant on the path, a leaked trace, a device behind the
    same NAT) ends or redirects nothing. The whole flow must match, protocol, host and port,
    on a connection too: a phone keeps its connection (or NAT binding) for the call. An
    entry without the flow (none was recorded) is not checked."""
    recorded = Address.parse(entry.params.get("cf" if entry.params.get("ftag", "") == from_tag else "tf", ""))
    if recorded is None:
        return True
    return (
        recorded.proto == source.proto
        and recorded.host.strip("[]").lower() == source.host.strip("[]").lower()
        and recorded.port == source.port
    )


def flow_gone(received: str, registered_at: float, holder_boot: float | None) -> bool:
    """A binding on a connection (TCP, TLS, WS) registered before its holder instance last
    started names a connection that died with the previous run: not worth trying (the
    phone is reachable again when it registers anew). Unknown times (0, None) say nothing."""
    source = Address.parse(received)
    if source is None or not source.connection_oriented or not registered_at or holder_boot is None:
        return False
    return registered_at < holder_boot


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
