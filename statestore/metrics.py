"""The Prometheus metrics of an instance, declared once.

Kamailio's `xhttp_prom` holds the values in shared memory (every process updates them);
its declarations are modparams, rendered from `METRICS` into kamailio/blf-metrics.cfg
(`python -m statestore.metrics > kamailio/blf-metrics.cfg`; a unit test checks the file
is current). `blfctl metrics` takes each family's HELP and TYPE from here (xhttp_prom 5.6
prints neither), and docs/metrics.md describes the same list.

Label values are bounded: a package name (or `other`), a zone name, a reason from a fixed
set, an etcd RPC name. Never an account, a Call-ID or an address.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from statestore.domain.packages import PACKAGES
from statestore.notified import NOTIFIED_PATH


class Kind(Enum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True)
class Metric:
    """One metric family: what xhttp_prom declares, and what HELP and TYPE say of it."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()  # at most three names (xhttp_prom 5.6)
    # Upper bounds, increasing (histograms only; xhttp_prom adds +Inf).
    buckets: tuple[float, ...] = field(default=())

    def modparam(self) -> str:
        """Its declaration for xhttp_prom (at most three labels, 5.6)."""
        parts = [f"name={self.name}"]
        if self.labels:
            parts.append("label=" + ":".join(self.labels))
        if self.buckets:
            parts.append("buckets=" + ":".join(_number(bound) for bound in self.buckets))
        return f'modparam("xhttp_prom", "prom_{self.kind.value}", "{"; ".join(parts)};")'


def _number(value: float) -> str:
    return f"{value:g}"


# Seconds: NOTIFY latency is ~1-3 ms in the lab, etcd round trips ~1 ms; outages hit the
# request deadline (1 s by default).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

SUBSCRIPTIONS = Metric(
    "blf_subscriptions", Kind.GAUGE,
    "Subscriptions this instance is responsible for (sends the NOTIFYs of), by zone and event package.",
    ("zone", "package"),
)
NOTIFY_SENT = Metric(
    "blf_notify_sent_total", Kind.COUNTER, "NOTIFYs handed to tm, by event package.", ("package",),
)
NOTIFY_FAILED = Metric(
    "blf_notify_failed_total", Kind.COUNTER,
    "NOTIFYs that failed, by event package and reason (timeout, 3xx, 4xx, 5xx, 6xx, send-error).",
    ("package", "reason"),
)
NOTIFY_LATENCY = Metric(
    "blf_notify_latency_seconds", Kind.HISTOGRAM,
    "From the notifier taking a change off its store watch to the NOTIFY it caused handed to tm.",
    (), LATENCY_BUCKETS,
)
LEG_WRITES = Metric(
    "blf_leg_writes_total", Kind.COUNTER,
    "Calls' leg writes by the leg writer, by result (written, retried: the store could not take them).",
    ("result",),
)
STORE_UP = Metric(
    "blf_store_up", Kind.GAUGE, "1 when the lease keeper last reached the zone's store, 0 when not.", ("zone",),
)
STORE_REQUEST = Metric(
    "blf_store_request_seconds", Kind.HISTOGRAM,
    "etcd requests made by this instance, by etcd RPC (Range, Put, Txn, DeleteRange, LeaseGrant...).",
    ("operation",), LATENCY_BUCKETS,
)
REGISTRATIONS = Metric(
    "blf_registrations", Kind.GAUGE, "Accounts' registration records of the zone, as this instance's mirror sees them.",
    ("zone",),
)
PUBLICATIONS = Metric(
    "blf_publications", Kind.GAUGE, "Publication records of the zone, as this instance's mirror sees them.", ("zone",),
)
PIKE_BLOCKED = Metric(
    "blf_pike_blocked_total", Kind.COUNTER, "Requests dropped unanswered because pike found their source flooding.",
)
AUTH_FAILURES = Metric(
    "blf_auth_failures_total", Kind.COUNTER,
    "Requests whose credentials failed (challenged again), by reason.", ("reason",),
)
HTTP_REFUSED = Metric(
    "blf_http_refused_total", Kind.COUNTER,
    "HTTP requests not answered: not on the metrics socket, from a source not allowed, or another path.",
)

METRICS: tuple[Metric, ...] = (
    SUBSCRIPTIONS, NOTIFY_SENT, NOTIFY_FAILED, NOTIFY_LATENCY, LEG_WRITES, STORE_UP, STORE_REQUEST,
    REGISTRATIONS, PUBLICATIONS, PIKE_BLOCKED, AUTH_FAILURES, HTTP_REFUSED,
)
BY_NAME: dict[str, Metric] = {metric.name: metric for metric in METRICS}


class AuthFailure(Enum):
    WRONG_CREDENTIALS = "wrong-credentials"
    FORGED_NONCE = "forged-nonce"
    NONCE_COUNT_REUSED = "nc-reused"
    BAD_USERNAME = "bad-username"


OTHER = "other"


def package_label(event: str) -> str:
    """A package served (its name) or `other`: an Event header never becomes a label as is."""
    name = event.split(";", 1)[0].strip().lower()
    return name if name in PACKAGES else OTHER


# Kamailio answers a NOTIFY nobody answered with a local 408.
def notify_failure_reason(status: int) -> str:
    """The failure reason of a NOTIFY's final response `status` (>= 300); 0 when tm could not
    send it at all."""
    if status == 0:
        return "send-error"
    if status == 408:
        return "timeout"
    return f"{min(max(status // 100, 3), 6)}xx"


@dataclass(frozen=True)
class Access:
    """Who gets the metrics: HTTP on the metrics socket (its port, and its address when
    BLF_METRICS_ADDRESS names one) from an allowed network. Every other HTTP request (the
    SIP sockets, another source) is left unanswered."""

    port: int | None
    allowed: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Access:
        """BLF_METRICS_PORT (unset: no metrics served), BLF_METRICS_ALLOW (networks,
        comma-separated; default 127.0.0.1/32) and BLF_METRICS_ADDRESS (the socket's address:
        when it is an IP address, a request received on another address is not for us)."""
        port = env.get("BLF_METRICS_PORT", "").strip()
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"BLF_METRICS_PORT must be a TCP port (got {port!r})")
        networks = env.get("BLF_METRICS_ALLOW", DEFAULT_ALLOW)
        try:
            allowed = tuple(ipaddress.ip_network(n.strip(), strict=False) for n in networks.split(",") if n.strip())
        except ValueError as exc:
            raise ValueError(f"BLF_METRICS_ALLOW: {exc}") from exc
        return cls(int(port) if port else None, allowed, _ip(env.get("BLF_METRICS_ADDRESS", "")))

    def on_metrics_socket(self, received_port: int, received_address: str) -> bool:
        """Whether a request came in on the metrics socket (Kamailio's $Rp and $Ri)."""
        if self.port is None or received_port != self.port:
            return False
        return self.address is None or _ip(received_address) == self.address

    def serves(self, received_port: int, received_address: str, source: str, path: str) -> bool:
        """Whether an HTTP request received on `received_address:received_port` from `source`
        for `path` gets an answer: the metrics, or the last NOTIFYs (statestore/notified.py)."""
        if not self.on_metrics_socket(received_port, received_address):
            return False
        if path.split("?", 1)[0] not in SERVED_PATHS:
            return False
        address = _ip(source)
        return address is not None and any(address in network for network in self.allowed)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP address ("[v6]" too); None for a host name or nothing."""
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


def announced_address(env: Mapping[str, str], sip: str) -> str | None:
    """The metrics socket an instance announces in its instance record (`metrics`), where
    `blfctl why` and `blfctl metrics` reach it: BLF_METRICS_ADDRESS (a host, or [IPv6]) or
    else the host of its SIP address, and BLF_METRICS_PORT; None without a metrics socket."""
    port = env.get("BLF_METRICS_PORT", "").strip()
    if not port:
        return None
    host = env.get("BLF_METRICS_ADDRESS", "").strip() or sip.rpartition(":")[0] or sip
    return f"{host}:{port}"


METRICS_PATH = "/metrics"
SERVED_PATHS = (METRICS_PATH, NOTIFIED_PATH)
DEFAULT_ALLOW = "127.0.0.1/32"


CONFIG_HEADER = """\
# GENERATED from statestore/metrics.py: python -m statestore.metrics > kamailio/blf-metrics.cfg
# Prometheus metrics (docs/metrics.md): xhttp answers HTTP on TCP sockets, kemi/blf_metrics.py
# decides (only the metrics socket, BLF_METRICS_PORT, from BLF_METRICS_ALLOW) and xhttp_prom
# serves the values, kept in shared memory and updated by every process. The includer routes
# HTTP to kemi's ksr_xhttp_event: KEMI, modparam("xhttp", "event_callback", "ksr_xhttp_event");
# a native config, event_route[xhttp:request] { python_exec("ksr_xhttp_event", "xhttp:request"); }
# HTTP GETs carry no Content-Length: accept TCP messages without one (xhttp's requirement).
tcp_accept_no_cl=yes
# A native configuration may load xhttp already (the stock WITH_JSONRPC): a second loadmodule
# of a module is a start-up error, and Kamailio defines MOD_<name> for every module loaded.
#!ifndef MOD_xhttp
loadmodule "xhttp.so"
#!endif
#!ifndef MOD_xhttp_prom
loadmodule "xhttp_prom.so"
#!endif
modparam("xhttp_prom", "xhttp_prom_beginning", "")
# Series are kept while the instance lives (the default drops one unused for 60 minutes).
modparam("xhttp_prom", "xhttp_prom_timeout", 0)
"""


def kamailio_config() -> str:
    """The content of kamailio/blf-metrics.cfg."""
    return CONFIG_HEADER + "".join(metric.modparam() + "\n" for metric in METRICS)


if __name__ == "__main__":
    sys.stdout.write(kamailio_config())
