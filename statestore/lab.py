"""The local lab: etcd, memcached and N Kamailio instances on loopback, under var/.

Contract (issue 2): instance ksN listens on 127.0.0.1:(5070+N), UDP and TCP; etcd's client
port is 127.0.0.1:2379; `up` returns only when every instance answers SIP.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from statestore.domain.errors import StoreUnavailable
from statestore.etcd_store import EtcdStore

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
ETCD_CLIENT = f"{HOST}:2379"
ETCD_PEER = f"{HOST}:2380"
MEMCACHED = f"{HOST}:11211"
BASE_PORT = 5070
START_TIMEOUT = 30.0
# etcd keeps its history bounded by itself (README "Operating the store"): every minute it
# compacts away what is older than a minute; nothing of ours reads that far back. The quota
# is explicit: NOSPACE at 1 GiB, far above what compacted traffic leaves (tens of MB).
# BLF_ETCD_COMPACTION_RETENTION overrides the retention ("0" turns compaction off: only to
# measure what the history costs without it, as docs/soak.md does).
ETCD_COMPACTION = (
    "--auto-compaction-mode", "periodic",
    "--auto-compaction-retention", os.environ.get("BLF_ETCD_COMPACTION_RETENTION", "1m"),
)
ETCD_QUOTA_BYTES = 1024 * 1024 * 1024
# etcd 3.4 keeps its raft log in memory until a snapshot, by default every 100,000 entries:
# about 3.4 KiB of heap per write, 340 MiB at a time (the soak saw its RSS climb without
# end). 10,000 bounds that near 34 MiB, for a snapshot every few minutes under load.
ETCD_SNAPSHOT_COUNT = 10_000
# The host firewall's per-address TCP limit (issue 12, finding 3): the rules the project ships,
# applied by `up` to the lab's SIP TCP ports with its own address exempt, removed by `down`.
EDGE_RULES = ROOT / "etc" / "blf-edge.nft"
EDGE_TABLE = ("inet", "blf_edge")
EDGE_PORTS = f"{BASE_PORT + 1}-{BASE_PORT + 29}"


class LabError(Exception):
    pass


@dataclass(frozen=True)
class Paths:
    var: Path

    @classmethod
    def default(cls) -> Paths:
        return cls(Path(os.environ.get("BLF_VAR", str(ROOT / "var"))).resolve())

    @property
    def state(self) -> Path:
        return self.var / "lab.json"

    def instance_dir(self, name: str) -> Path:
        return self.var / name


def instance_port(name: str) -> int:
    if not name.startswith("ks") or not name[2:].isdigit() or int(name[2:]) < 1:
        raise LabError(f"instance names are ks1, ks2, ...; not {name!r}")
    return BASE_PORT + int(name[2:])


LAB_PROGRAMS = ("kamailio", "etcd", "memcached")


def alive(pid: int | None) -> bool:
    """A process the lab started is running: not gone, not a zombie, and still one of
    the lab's programs (after a reboot the PID in var/lab.json may be someone else's)."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            if stat.read().split(") ", 1)[1][:1] == "Z":
                return False
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            program = os.path.basename(cmdline.read().split(b"\0", 1)[0].decode(errors="replace"))
    except OSError:
        return False
    # An empty command line is a process in the middle of exec (Popen returns before the
    # kernel has set up the new program's arguments): the one we have just started.
    return program in LAB_PROGRAMS or program == ""


class Lab:
    def __init__(self, paths: Paths | None = None) -> None:
        self.paths = paths or Paths.default()
        self.paths.var.mkdir(parents=True, exist_ok=True)
        self.state: dict[str, Any] = self._load()

    # --- state file -------------------------------------------------------------------------

    def _load(self) -> dict[str, Any]:
        if self.paths.state.exists():
            data: dict[str, Any] = json.loads(self.paths.state.read_text())
            return data
        return {"instances": {}, "etcd": {}, "memcached": {}, "secret": secrets.token_hex(16)}

    def _save(self) -> None:
        tmp = self.paths.state.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2, sort_keys=True))
        tmp.replace(self.paths.state)

    # --- commands -----------------------------------------------------------------------------

    def up(self, instances: int = 2, lease_ttl: int = 6) -> None:
        self.state["lease_ttl"] = lease_ttl
        self.state["edge_firewall"] = apply_edge_firewall()
        self._save()
        if not self.state["edge_firewall"]["applied"]:
            print(f"blfctl lab: edge firewall {self.state['edge_firewall']['report']}", file=sys.stderr)
        self._ensure_etcd()
        self._ensure_memcached()
        for index in range(1, instances + 1):
            self.start(f"ks{index}", wait=False, etcd=ETCD_CLIENT)
        for index in range(1, instances + 1):
            self._wait_instance(f"ks{index}")

    def start(self, name: str, wait: bool = True, etcd: str | None = None) -> None:
        """Start instance `name` (if it is not running) against `etcd` (host:port), by default
        the caller's BLF_ETCD or else the lab's etcd: `BLF_ETCD=... blfctl lab start ks1` puts
        something between one instance and the store (a delaying proxy in
        tests/e2e/test_edge_store.py). `up` always uses the lab's. The lab's own etcd is
        started either way."""
        etcd = etcd or os.environ.get("BLF_ETCD") or ETCD_CLIENT
        port = instance_port(name)
        entry = self.state["instances"].get(name, {})
        if not alive(entry.get("pid")):
            _require_free(name, f"{HOST}:{port}", socket.SOCK_DGRAM)
            self._ensure_etcd()
            self._ensure_memcached()
            pid = self._spawn_kamailio(name, port, etcd)
            self.state["instances"][name] = {"sip": f"{HOST}:{port}", "pid": pid, "etcd": etcd}
            self._save()
        if wait:
            self._wait_instance(name)

    def kill(self, name: str) -> None:
        entry = self.state["instances"].get(name)
        if not entry or not alive(entry.get("pid")):
            raise LabError(f"{name} is not running")
        # The whole process group: Kamailio's children (SIP workers, the lease keeper)
        # would otherwise outlive a SIGKILLed main process and keep its lease alive.
        _signal_group(entry["pid"], signal.SIGKILL)
        _reap(entry["pid"], 5.0)

    def down(self) -> None:
        for entry in self.state["instances"].values():
            _stop(entry.get("pid"))
        _stop(self.state["memcached"].get("pid"))
        _stop(self.state["etcd"].get("pid"))
        if self.state.get("edge_firewall", {}).get("applied"):
            self.state["edge_firewall"] = remove_edge_firewall()
        self.state["instances"] = {}
        self.state["etcd"] = {}
        self.state["memcached"] = {}
        self._save()

    def status(self) -> dict[str, Any]:
        instances = {
            name: {"sip": entry["sip"], "pid": entry["pid"], "alive": alive(entry["pid"])}
            for name, entry in sorted(self.state["instances"].items())
        }
        etcd = dict(self.state["etcd"]) or {"client": ETCD_CLIENT, "pid": None}
        etcd["alive"] = alive(etcd.get("pid"))
        memcached = dict(self.state["memcached"]) or {"address": MEMCACHED, "pid": None}
        memcached["alive"] = alive(memcached.get("pid"))
        edge = self.state.get("edge_firewall", {"applied": False, "report": "not applied (lab not up)"})
        return {"instances": instances, "etcd": etcd, "memcached": memcached, "edge_firewall": edge}

    # --- components ---------------------------------------------------------------------------

    def _ensure_etcd(self) -> None:
        if alive(self.state["etcd"].get("pid")) and _etcd_answers():
            return
        _require_free("etcd", ETCD_CLIENT, socket.SOCK_STREAM)
        data = self.paths.var / "etcd"
        data.mkdir(parents=True, exist_ok=True)
        command = [
            _binary("etcd"), "--name", "blf", "--data-dir", str(data / "data"),
            "--listen-client-urls", f"http://{ETCD_CLIENT}", "--advertise-client-urls", f"http://{ETCD_CLIENT}",
            "--listen-peer-urls", f"http://{ETCD_PEER}", "--initial-advertise-peer-urls", f"http://{ETCD_PEER}",
            "--initial-cluster", f"blf=http://{ETCD_PEER}", "--listen-metrics-urls", f"http://{HOST}:2381",
            *ETCD_COMPACTION, "--quota-backend-bytes", str(ETCD_QUOTA_BYTES),
            "--snapshot-count", str(ETCD_SNAPSHOT_COUNT),
        ]
        pid = _spawn(command, self.paths.var / "etcd.log", os.environ.copy())
        self.state["etcd"] = {"client": ETCD_CLIENT, "pid": pid, "data": str(data / "data")}
        self._save()
        _wait_for("etcd", _etcd_answers, pid)

    def _ensure_memcached(self) -> None:
        if alive(self.state["memcached"].get("pid")):
            return
        _require_free("memcached", MEMCACHED, socket.SOCK_STREAM)
        host, _, port = MEMCACHED.partition(":")
        command = [_binary("memcached"), "-l", host, "-p", port, "-U", "0", "-m", "64"]
        if os.geteuid() == 0:
            command += ["-u", "root"]
        pid = _spawn(command, self.paths.var / "memcached.log", os.environ.copy())
        self.state["memcached"] = {"address": MEMCACHED, "pid": pid}
        self._save()
        _wait_for("memcached", lambda: _tcp_answers(host, int(port)), pid)

    def _spawn_kamailio(self, name: str, port: int, etcd: str) -> int:
        directory = self.paths.instance_dir(name)
        run = directory / "run"
        run.mkdir(parents=True, exist_ok=True)
        env = kamailio_environment(os.environ)
        env.update(
            BLF_KEMI_SCRIPT=str(ROOT / "kemi" / "blf_kemi.py"),
            BLF_AUTH_SECRET=self.state["secret"],
            BLF_INSTANCE=name,
            BLF_SIP=f"{HOST}:{port}",
            BLF_ETCD=etcd,
            BLF_MEMCACHED=MEMCACHED,
            BLF_LEASE_TTL=str(self.state.get("lease_ttl", 6)),
        )
        command = [
            _binary("kamailio"), "-f", str(ROOT / "kamailio" / "kamailio.cfg"), "-Y", str(run),
            "-l", f"udp:{HOST}:{port}", "-l", f"tcp:{HOST}:{port}", "-DD", "-E",
            "-m", shm_megabytes(os.environ),
        ]
        return _spawn(command, directory / "kamailio.log", env)

    def _wait_instance(self, name: str) -> None:
        entry = self.state["instances"][name]
        port = instance_port(name)
        _wait_for(name, lambda: sip_options(HOST, port) == 200 and _instance_announced(name), entry["pid"])


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


def apply_edge_firewall() -> dict[str, Any]:
    """Apply etc/blf-edge.nft to the lab's SIP TCP ports, 127.0.0.1 (the instances) exempt.

    Only as root and with nft installed (Debian `nftables`); otherwise the lab runs without
    it and says so in `blfctl lab status` (the per-address limit then does not hold). It
    replaces only its own table, in the network namespace the lab runs in."""
    nft = _nft()
    if os.geteuid() != 0:
        return {"applied": False, "report": "not applied: not root (per-address TCP limit off)"}
    if nft is None:
        return {"applied": False, "report": "not applied: nft not installed (apt-get install nftables)"}
    command = [
        nft, "-D", f"sip_tcp_ports={EDGE_PORTS}", "-D", f"cluster_v4={{ {HOST} }}",
        "-D", "cluster_v6={ ::1 }", "-f", str(EDGE_RULES),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"applied": False, "report": f"not applied: nft failed: {done.stderr.strip()}"}
    return {"applied": True, "report": f"applied: {EDGE_RULES.name} on tcp {EDGE_PORTS}, {HOST} exempt"}


def remove_edge_firewall() -> dict[str, Any]:
    nft = _nft()
    if nft is None:
        return {"applied": True, "report": "not removed: nft not installed"}
    done = subprocess.run([nft, "delete", "table", *EDGE_TABLE], capture_output=True, text=True, check=False)
    if done.returncode != 0 and "No such file" not in done.stderr:
        return {"applied": True, "report": f"not removed: nft failed: {done.stderr.strip()}"}
    return {"applied": False, "report": "removed"}


def _nft() -> str | None:
    for candidate in (shutil.which("nft"), "/usr/sbin/nft"):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def _require_free(what: str, address: str, kind: socket.SocketKind) -> None:
    """Refuse to start over a port someone else holds (another lab, a system service)."""
    host, _, port = address.rpartition(":")
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError as exc:
            raise LabError(f"cannot start {what}: {address} is in use by another process ({exc.strerror})") from exc


def shm_megabytes(env: Mapping[str, str]) -> str:
    """Kamailio's shared memory in MB (`kamailio -m`), BLF_SHM_MB or 256. Every NOTIFY is a
    tm transaction kept until 5 s after its answer: Kamailio's default of 64 MB ran out at
    about 1,500 NOTIFYs/s in the benchmark (`could not allocate shared memory`)."""
    value = env.get("BLF_SHM_MB", "256")
    if not value.isdigit() or int(value) < 64:
        raise SystemExit(f"BLF_SHM_MB must be a number of megabytes, at least 64 (got {value!r})")
    return value


def _binary(name: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and os.path.exists(candidate):
            return candidate
    raise LabError(f"{name} is not installed; run `make setup`")


def _spawn(command: list[str], log: Path, env: dict[str, str]) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, start_new_session=True, cwd=str(ROOT),
        )
    return process.pid


def _wait_for(what: str, ready: Any, pid: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not alive(pid):
            raise LabError(f"{what} exited during start-up; see its log under var/")
        try:
            if ready():
                return
        except Exception:  # noqa: BLE001, S110 - not ready yet, whatever the probe raised; retry
            pass
        time.sleep(0.1)
    raise LabError(f"{what} did not become ready within {START_TIMEOUT:.0f}s")


def _stop(pid: int | None, timeout: float = 10.0) -> None:
    if not alive(pid):
        return
    assert pid is not None
    _signal_group(pid, signal.SIGTERM)
    if not _reap(pid, timeout):
        _signal_group(pid, signal.SIGKILL)
        _reap(pid, 5.0)


def _signal_group(pid: int, signum: int) -> None:
    """Signal the process group the lab started `pid` as the leader of (start_new_session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)


def _reap(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return True
        except ChildProcessError:
            if not alive(pid):
                return True
        time.sleep(0.05)
    return not alive(pid)


def _etcd_answers() -> bool:
    store = EtcdStore(ETCD_CLIENT, timeout=1.0)
    try:
        store.domains()
        return True
    except StoreUnavailable:
        return False
    finally:
        store.close()


def _instance_announced(name: str) -> bool:
    store = EtcdStore(ETCD_CLIENT, timeout=1.0)
    try:
        return name in store.instances()
    finally:
        store.close()


def _tcp_answers(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=0.5):
        return True


def sip_options(host: str, port: int, timeout: float = 0.5) -> int:
    """Send one OPTIONS over UDP; the status code of the answer, 0 when none came."""
    call_id = uuid.uuid4().hex
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        local_port = sock.getsockname()[1]
        request = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{local_port};branch=z9hG4bK{call_id[:16]};rport\r\n"
            f"From: <sip:lab@{HOST}>;tag={call_id[:8]}\r\nTo: <sip:{host}:{port}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        sock.settimeout(timeout)
        sock.sendto(request.encode(), (host, port))
        try:
            data, _ = sock.recvfrom(65535)
        except OSError:
            return 0
    parts = data.split(b" ", 2)
    return int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else 0
