"""blfctl's exit codes and the one way it reports an error: `blfctl: <message>` on stderr,
one line, no traceback (statestore.cli.main maps every error type here)."""

from __future__ import annotations

import socket
from collections.abc import Sequence

OK = 0
REFUSED = 1  # not found, or refused by what the store holds
USAGE = 2  # a usage error or malformed input (argparse exits 2 too)
UNREACHABLE = 3  # the store (etcd) cannot be reached
UNHEALTHY = 4  # store health: a member unreachable or a zone without leader

EXIT_CODES_EPILOG = """exit codes:
  0  done (store health: healthy)
  1  not found, or refused by what the store holds (a name taken, a domain in another zone,
     a write contended every time it was tried; store health: an alarm is raised)
  2  usage error or malformed input (an unknown option, a malformed name, an unreadable file)
  3  the store (etcd) unreachable: connection refused, timed out, or no leader
  4  store health: a member unreachable or a zone without leader

environment: BLF_ENV_FILE names a file of KEY=VALUE lines (default /etc/blf/blf.env when it
exists) read for BLF_ZONES, BLF_ETCD, ...; variables already set win over the file."""

PROBE_SECONDS = 1.0
# What an endpoint's TCP probe found (probe_endpoint); any other finding is the OS's reason
# (e.g. "Network is unreachable", "Name or service not known").
REFUSED_CONNECTION, NO_CONNECTION, CONNECTED = "refused", "timed out", "connected"


class Refused(Exception):
    """Not found, or refused after reading the store (exit code 1)."""


class Malformed(Exception):
    """Malformed input: a name, an endpoint list, a file (exit code 2)."""


def probe_endpoint(endpoint: str, timeout: float = PROBE_SECONDS) -> str:
    """Whether a TCP connection to `endpoint` ("host:port") is refused, times out, or is
    accepted: what tells "nothing listens" from "a member that does not answer"."""
    host, _, port = endpoint.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return CONNECTED
    except ConnectionRefusedError:
        return REFUSED_CONNECTION
    except TimeoutError:
        return NO_CONNECTION
    except OSError as exc:  # no route, a name that does not resolve
        return exc.strerror or str(exc)
    except ValueError:
        return "not HOST:PORT"


def describe_unreachable(probes: Sequence[tuple[str, str]], detail: str) -> str:
    """One line naming each endpoint and why it could not be used: `probes` are
    (endpoint, probe_endpoint's finding); `detail` the store adapter's message (it says
    "no leader" when a member answered so)."""
    if not probes:
        return f"etcd unreachable: {detail.splitlines()[0] if detail else 'no endpoint'}"
    reasons = {
        REFUSED_CONNECTION: "connection refused",
        NO_CONNECTION: "connection timed out",
        CONNECTED: _answered_reason(detail),
    }
    return "etcd unreachable at " + "; ".join(f"{endpoint}: {reasons.get(found, found)}" for endpoint, found in probes)


def _answered_reason(detail: str) -> str:
    """Why a member that accepts connections could not be used, from what etcd said."""
    if "no leader" in detail:
        return "no leader"
    if "database space exceeded" in detail:
        return "database space exceeded (the NOSPACE alarm: blfctl store maintain)"
    return "connected, but no answer in time (stopped, overloaded or no leader)"


def unreachable_message(endpoint: str, detail: str) -> str:
    """describe_unreachable for the members in `endpoint` ("h:p[,h:p...]"), each probed."""
    members = [member.strip() for member in endpoint.split(",") if member.strip()]
    return describe_unreachable([(member, probe_endpoint(member)) for member in members], detail)
