"""A private 3-member etcd cluster on free loopback ports (heartbeat 100 ms, election 1 s):
the one of the failover benchmark (bench/failover.py) and of the failover integration
tests (tests/integration/test_failover.py), which add what each does with it.

Also where both, and the integration tests' single etcd (tests/integration/conftest.py),
find the etcd binary and free ports. It never uses the lab's ports.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
ETCD_BINARY = os.environ.get("BLF_ITEST_ETCD", "/usr/bin/etcd")
# etcd logs this (3.4 text and 3.5 JSON logs alike) once its client listeners serve.
READY_MARKER = b"ready to serve client requests"
RESERVED_PORTS = frozenset({2379, 2380, 2381, 5071, 5072})  # the lab's; never ours
MEMBERS = 3


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports: all sockets are held until every port is chosen."""
    sockets: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((HOST, 0))
            port = sock.getsockname()[1]
            if port not in RESERVED_PORTS and port not in ports:
                ports.append(port)
    finally:
        for sock in sockets:
            sock.close()
    return ports


def clean_env() -> dict[str, str]:
    """This process's environment without the lab's ETCD_* settings (data dir, URLs), which
    must not leak into a private etcd."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "ETCDCTL_"))}


@dataclass
class Member:
    name: str
    client: str
    peer: str
    data: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None


class EtcdCluster:
    """Members m0, m1 and m2, each with its data dir and log under `root`. `token` is the
    cluster's --initial-cluster-token; `extra_ports` more free ports are chosen with the
    members' (for the caller's own use: `spare_ports`)."""

    def __init__(self, root: Path, token: str, extra_ports: int = 0) -> None:
        ports = free_ports(2 * MEMBERS + extra_ports)
        self.token = token
        self.members = [
            Member(f"m{index}", f"{HOST}:{ports[2 * index]}", f"{HOST}:{ports[2 * index + 1]}",
                   root / f"m{index}", root / f"m{index}.log")
            for index in range(MEMBERS)
        ]
        self.initial = ",".join(f"{m.name}=http://{m.peer}" for m in self.members)
        self.spare_ports = ports[2 * MEMBERS:]

    @property
    def endpoints(self) -> str:
        return ",".join(member.client for member in self.members)

    def member_env(self) -> dict[str, str] | None:
        """The environment a member starts with (None: this process's)."""
        return None

    def start(self, member: Member) -> None:
        """Start `member`: a new one bootstraps the cluster, one with data rejoins it."""
        state = "existing" if member.data.exists() else "new"
        command = [
            ETCD_BINARY, "--name", member.name, "--data-dir", str(member.data),
            "--listen-client-urls", f"http://{member.client}", "--advertise-client-urls", f"http://{member.client}",
            "--listen-peer-urls", f"http://{member.peer}", "--initial-advertise-peer-urls", f"http://{member.peer}",
            "--initial-cluster", self.initial, "--initial-cluster-state", state,
            "--initial-cluster-token", self.token,
            "--heartbeat-interval", "100", "--election-timeout", "1000",
        ]
        with member.log.open("ab") as log:
            member.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.member_env())

    def revive(self) -> None:
        """Every member running again: a killed one started (with its data), a stopped one
        continued."""
        for member in self.members:
            if member.process is None:
                self.start(member)
            else:
                member.process.send_signal(signal.SIGCONT)
