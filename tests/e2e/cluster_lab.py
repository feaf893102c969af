"""The lab of issue 14 for the modules that need it (test_lab_cluster, test_store_faults):
two zones of three etcd members each (`lab up --etcd-members 3 --zones 2`), example.com in
z1 and zone2.example in z2, each allowed to call the other.

A module using it runs a lab of its own (other flags than the session lab of conftest, on
the same ports): if the session lab is up it is brought down first and up again afterwards
(its etcd data, hence its domain and accounts, survive in its var/); meanwhile BLF_VAR
points at this module's lab, so conftest's helpers (blfctl, log_sizes, wait_logged) act on it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import DOMAIN, LEASE_TTL, ROOT, blfctl

CLUSTER_VAR = Path(os.environ.get("BLF_TEST_CLUSTER_VAR", str(ROOT / "var" / "test-lab-cluster")))
Z1 = ["127.0.0.1:2379", "127.0.0.1:2389", "127.0.0.1:2399"]
Z2 = ["127.0.0.1:2479", "127.0.0.1:2489", "127.0.0.1:2499"]
ZONE2_DOMAIN = "zone2.example"
# The instances' lease TTL in this lab: the product's default (BLF_LEASE_TTL), not the
# session lab's shorter one. With 3 members a leader election holds a lease refresh up to
# its deadline (a third of the TTL): with 4 s, the notifier's ownership check (its lease
# confirmed within the TTL) lapsed during some elections, and a lapse costs a new epoch and
# a fresh read before any NOTIFY.
CLUSTER_LEASE_TTL = 6
__all__ = ["DOMAIN", "ZONE2_DOMAIN", "Z1", "Z2", "cluster", "creds", "etcdctl", "status"]


def _lab_config(var: str | None) -> str | None:
    """The configuration (`lab up --config`) of the lab in `var` if it is up, else None."""
    if not var or not (Path(var) / "lab.json").exists():
        return None
    state = json.loads((Path(var) / "lab.json").read_text())
    return str(state.get("config", "full")) if state.get("instances") else None


@contextlib.contextmanager
def session_lab_set_aside(var: Path, env: Mapping[str, str] = {}) -> Iterator[None]:  # noqa: B006 - read only
    """The lab ports free for a lab of a module's own in `var` (emptied), with `env` set: the
    session lab (if up) is brought down first and up again afterwards, the environment restored."""
    shared_config = _lab_config(os.environ.get("BLF_VAR"))
    shared_up = shared_config is not None
    names = ("BLF_VAR", "BLF_ETCD", "BLF_ZONES", *env)
    saved = {name: os.environ.get(name) for name in names}
    if shared_up:
        down = blfctl("lab", "down", check=False)
        assert down.returncode == 0, down.stderr
    shutil.rmtree(var, ignore_errors=True)
    os.environ["BLF_VAR"] = str(var)
    os.environ.pop("BLF_ETCD", None)
    os.environ.pop("BLF_ZONES", None)
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if shared_up:
            again = blfctl("lab", "up", "--instances", "2", "--lease-ttl", str(LEASE_TTL), "--config",
                           str(shared_config), check=False)
            assert again.returncode == 0, again.stdout + again.stderr
            blfctl("domain", "add", DOMAIN)


@contextlib.contextmanager
def own_lab(var: Path, up: Sequence[str], env: Mapping[str, str] = {}) -> Iterator[None]:  # noqa: B006 - read only
    """A lab of a module's own, `blfctl lab up *up` in `var` with `env` set (session_lab_set_aside)."""
    with session_lab_set_aside(var, env):
        try:
            started = blfctl("lab", "up", *up, check=False)
            assert started.returncode == 0, started.stdout + started.stderr
            yield
        finally:
            blfctl("lab", "down", check=False)


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    up = ("--etcd-members", "3", "--zones", "2", "--instances", "2", "--lease-ttl", str(CLUSTER_LEASE_TTL))
    with own_lab(CLUSTER_VAR, up):
        blfctl("domain", "add", DOMAIN, "--may-call", ZONE2_DOMAIN)
        blfctl("domain", "add", ZONE2_DOMAIN, "--zone", "z2", "--may-call", DOMAIN)
        yield


@pytest.fixture
def creds(cluster: None) -> Iterator[Any]:
    yield account_maker()


def account_maker() -> Callable[[str], tuple[str, str]]:
    """Makes accounts of DOMAIN in the module's lab: make("alice") -> ("alice-1a2b3c", password)."""

    def make(name: str) -> tuple[str, str]:
        user = f"{name}-{uuid.uuid4().hex[:6]}"
        blfctl("account", "add", f"{user}@{DOMAIN}", "--password", f"{user}-pw")
        return user, f"{user}-pw"

    return make


def status() -> dict[str, Any]:
    return dict(json.loads(blfctl("lab", "status", "--json").stdout))


def etcdctl(endpoints: list[str], *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["etcdctl", f"--endpoints={','.join(endpoints)}", "--command-timeout=2s", *args],
        env={**os.environ, "ETCDCTL_API": "3"}, capture_output=True, text=True, check=False, timeout=timeout,
    )


def zone_members(zone: str) -> list[str]:
    """The member names of a zone, in order (z1-etcd1, z1-etcd2, z1-etcd3)."""
    return list(status()["zones"][zone]["members"])


def client_of(member: str) -> str:
    for zone in status()["zones"].values():
        if member in zone["members"]:
            return str(zone["members"][member]["client"])
    raise AssertionError(f"no member {member}")


def leader_of(zone: str) -> str:
    """The member of `zone` its cluster has as leader now."""
    members = status()["zones"][zone]["members"]
    for name, member in members.items():
        answer = etcdctl([member["client"]], "endpoint", "status", "-w", "json")
        if answer.returncode != 0:
            continue
        found = json.loads(answer.stdout)[0]["Status"]
        if found["header"]["member_id"] == found["leader"]:
            return str(name)
    raise AssertionError(f"zone {zone} has no leader")


def member_answers(member: str, timeout: float) -> bool:
    """Whether `member` answers a linearizable read within `timeout` (it has joined its
    cluster and the cluster has a leader): polled, each try bounded by etcdctl's timeout."""
    client = client_of(member)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if etcdctl([client], "get", "/blf/domains/", "--prefix", "--keys-only", timeout=5).returncode == 0:
            return True
    return False
