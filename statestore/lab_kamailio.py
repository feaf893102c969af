"""The lab's Kamailio instances: their command line and environment, and a SIP probe."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from pathlib import Path

from statestore import lab_edge, lab_sites
from statestore.lab_process import ROOT, binary

HOST = "127.0.0.1"
# Instance ksN serves its Prometheus metrics on TCP port METRICS_BASE_PORT + N (docs/metrics.md).
METRICS_BASE_PORT = lab_edge.METRICS_BASE_PORT
SIP_BASE_PORT = 5070


def metrics_port(sip_port: int) -> int:
    """The lab instance's metrics port, from its SIP port (5071 -> 9471)."""
    return METRICS_BASE_PORT + sip_port - SIP_BASE_PORT


# The instance configurations `blfctl lab up --config` offers (docs/dropin.md).
CONFIGS = ("full", "dropin")
FULL_CONFIG = ROOT / "kamailio" / "kamailio.cfg"


def kamailio_command(run: Path, host: str, port: int, config: Path = FULL_CONFIG) -> list[str]:
    """An instance on host:port (UDP and TCP), its runtime directory `run`, in the foreground,
    running configuration file `config`, with its metrics socket (tcp_listen_order)."""
    return [
        binary("kamailio"), "-f", str(config), "-Y", str(run),
        "-l", f"udp:{host}:{port}", *tcp_listen_order(host, port), "-DD", "-E", "-m", shm_megabytes(os.environ),
    ]


def tcp_listen_order(host: str, port: int) -> list[str]:
    """The SIP and metrics TCP sockets, in the order that makes the SIP one Kamailio's default
    TCP socket, the one it sends SIP from when nothing chooses: the first socket not on a
    loopback address, or, when all are on one, the last (Kamailio 5.6, main.c). Sent from
    the metrics socket, a request would carry its address in Via and Record-Route, and the
    phone's answers would be dropped there (docs/metrics.md)."""
    sip, metrics = ["-l", f"tcp:{host}:{port}"], ["-l", f"tcp:{host}:{metrics_port(port)}"]
    return metrics + sip if host.startswith("127.") else sip + metrics


def metrics_environment(host: str, port: int) -> dict[str, str]:
    """BLF_METRICS_PORT and BLF_METRICS_ADDRESS (the socket's), and who may scrape: the lab's
    own loopback address (blfctl, the tests), or in a site the host's address on the sites'
    bridge."""
    allow = "127.0.0.1/32" if host == HOST else f"{host}/32,{lab_sites.HOST_ADDRESS}/32"
    return {"BLF_METRICS_PORT": str(metrics_port(port)), "BLF_METRICS_ALLOW": allow, "BLF_METRICS_ADDRESS": host}


# Where Debian's python3 lives: Kamailio's embedded Python (libpython3.11) derives its prefix
# from the first `python3` on PATH, so these go first (KAMAILIO-NOTES).
SYSTEM_PYTHON_DIRS = ("/usr/bin", "/bin")
# Settings of another Python that the embedded one would take for its own.
FOREIGN_PYTHON_VARIABLES = ("PYTHONHOME", "PYTHONEXECUTABLE")


def kamailio_environment(caller: Mapping[str, str]) -> dict[str, str]:
    """The environment an instance starts with: the caller's, with a PATH that finds
    /usr/bin/python3 first and without another Python's home. A program running under a
    pyenv or conda Python passes that Python's bin/ first on PATH; the embedded
    interpreter then took its prefix, lost Debian's dist-packages and died at start-up."""
    env = {name: value for name, value in caller.items() if name not in FOREIGN_PYTHON_VARIABLES}
    rest = [part for part in caller.get("PATH", "").split(os.pathsep) if part and part not in SYSTEM_PYTHON_DIRS]
    env["PATH"] = os.pathsep.join([*SYSTEM_PYTHON_DIRS, *rest])
    return env


def shm_megabytes(env: Mapping[str, str]) -> str:
    """Kamailio's shared memory in MB (`kamailio -m`), BLF_SHM_MB or 256. Every NOTIFY is a
    tm transaction kept until 5 s after its answer: Kamailio's default of 64 MB ran out at
    about 1,500 NOTIFYs/s in the benchmark (`could not allocate shared memory`)."""
    value = env.get("BLF_SHM_MB", "256")
    if not value.isdigit() or int(value) < 64:
        raise SystemExit(f"BLF_SHM_MB must be a number of megabytes, at least 64 (got {value!r})")
    return value


def sip_options(host: str, port: int, timeout: float = 0.5) -> int:
    """Send one OPTIONS over UDP; the status code of the answer, 0 when none came."""
    call_id = uuid.uuid4().hex
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        # From loopback to a loopback instance; from the address the kernel routes by to a
        # site's (statestore.lab_sites: the bridge's).
        sock.bind((HOST if host.startswith("127.") else "0.0.0.0", 0))  # noqa: S104
        sock.connect((host, port))
        local, local_port = sock.getsockname()
        request = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {local}:{local_port};branch=z9hG4bK{call_id[:16]};rport\r\n"
            f"From: <sip:lab@{local}>;tag={call_id[:8]}\r\nTo: <sip:{host}:{port}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        sock.settimeout(timeout)
        sock.send(request.encode())
        try:
            data = sock.recv(65535)
        except OSError:
            return 0
    parts = data.split(b" ", 2)
    return int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else 0
