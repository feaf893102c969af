"""The three-VM cluster as an operator builds it (issue 15 part 4), with network namespaces
standing in for the Vagrantfile's VMs (Vagrant cannot run here).

Three namespaces vm1..vm3 on a bridge (statestore.lab_sites' helpers, addresses
198.18.77.1-3, the test in the bridge's namespace at .254). etc/provision/provision.sh runs
once per VM, as the Vagrantfile calls it, with PROVISION_ROOT (a directory standing for the
VM's /) and --no-systemctl: the only differences from a production run. The units it would
have enabled (its "skipped: systemctl enable ..." lines) are then started from the unit files
it installed, inside the VM's namespace, as their User (tests/e2e/units.py), except
Debian's own memcached.service, which daemonizes with a pid file under the host's /run: a
memcached with its defaults (127.0.0.1:11211 of the VM) stands in for it.

Then: the three members make one healthy cluster, each instance holds its lease, a call
between two accounts through vm1 lights the lamp of a watcher subscribed through vm2, and
blfctl run in vm3 with vm3's environment file shows the call.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from statestore import lab_sites
from statestore.etcd_store import EtcdStore
from statestore.lab_process import binary, stop_all
from statestore.lab_sites import Site
from tests.e2e import units
from tests.e2e.blf_watch import Watcher
from tests.e2e.conftest import ROOT, wait_logged
from tests.e2e.tenants import hang_up, invite
from tests.sipua import UserAgent

SCRIPT = ROOT / "etc" / "provision" / "provision.sh"
# Per clone (two clones may run this at once): the VMs' roots under /tmp, which the units'
# users (kamailio, etcd) can traverse whatever the clone's parent directories allow, and
# namespace names (global to the machine) of their own.
_CLONE = hashlib.sha1(str(ROOT).encode()).hexdigest()[:6]
VMS_VAR = Path(os.environ.get("BLF_TEST_PROVISION_VAR", f"/tmp/blf-test-provision-{_CLONE}"))
PREFIX = os.environ.get("BLF_TEST_PROVISION_PREFIX", f"vm{_CLONE}")
SECRET = "provision-test-secret"
SIP_PORT = 5060
DOMAIN = "example.com"
ACCOUNTS = {"alice": "alice-pw", "boris": "boris-pw", "catherine": "catherine-pw"}
START_SECONDS = 60.0
UNIT_LINE = re.compile(r"^skipped: systemctl enable (?:--now )?(.+)$", re.MULTILINE)


@dataclass
class Vm:
    site: Site
    root: Path
    units: list[str]

    @property
    def name(self) -> str:
        return f"vm{self.site.index}"

    @property
    def instance(self) -> str:
        return f"ks{self.site.index}"

    @property
    def sip(self) -> tuple[str, int]:
        return self.site.address, SIP_PORT

    @property
    def env_file(self) -> Path:
        return self.root / "etc" / "blf" / "blf.env"

    @property
    def unit_dir(self) -> Path:
        return self.root / "etc" / "systemd" / "system"

    def blfctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """blfctl as installed on the VM, run inside it with its environment file."""
        env = {**os.environ, **units.read_env_file(self.env_file), "BLF_ENV_FILE": str(self.env_file)}
        env.pop("BLF_VAR", None)
        return subprocess.run(
            ["ip", "netns", "exec", self.site.netns, str(self.root / "opt/blf/.venv/bin/blfctl"), *args],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )


def provision(sites: list[Site]) -> list[Vm]:
    """provision.sh for every VM at once, as `vagrant up` would run it on each."""
    members = ",".join(site.address for site in sites)
    runs = []
    for site in sites:
        root = VMS_VAR / f"vm{site.index}"
        root.mkdir(parents=True)
        for directory in (VMS_VAR, root):
            directory.chmod(0o755)  # the units' users (kamailio, etcd) must reach the VM's files
        args = [str(SCRIPT), "--no-systemctl", "--instance", f"ks{site.index}", "--ip", site.address,
                "--members", members, "--secret", SECRET, "--sip-port", str(SIP_PORT)]
        runs.append((site, root, subprocess.Popen(
            args, env={**os.environ, "PROVISION_ROOT": str(root)}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)))
    vms = []
    for site, root, run in runs:
        output, _ = run.communicate(timeout=300)
        assert run.returncode == 0, output
        enabled = [unit for line in UNIT_LINE.findall(output) for unit in line.split()]
        vms.append(Vm(site, root, enabled))
    return vms


def wait_every_log(vms: list[Vm], kind: str, pattern: str) -> None:
    """Until every unit `kind`* of every VM has logged a line matching `pattern` (each log
    followed with `tail -F`: a wait wakes when the unit writes, not on a clock)."""
    deadline = time.monotonic() + START_SECONDS
    for vm in vms:
        for unit in (unit for unit in vm.units if unit.startswith(kind)):
            wait_logged({vm.root / "var" / "log" / f"{unit}.log": 0}, pattern, max(deadline - time.monotonic(), 0.1))


def start_units(vms: list[Vm], pids: list[int]) -> None:
    """Every VM's etcd member first (a new cluster needs its quorum up), then the rest."""
    for kind in ("blf-etcd@", "memcached", "blf-kamailio@"):
        for vm in vms:
            for unit in (unit for unit in vm.units if unit.startswith(kind)):
                log = vm.root / "var" / "log" / f"{unit}.log"
                if unit == "memcached.service":
                    command = [binary("memcached"), "-l", "127.0.0.1", "-p", "11211", "-m", "64", "-u", "memcache"]
                    pids.append(lab_sites.spawn_in(vm.site.netns, command, log, dict(os.environ)))
                else:
                    pids.append(units.start(vm.unit_dir, unit, vm.site.netns, log))


@pytest.fixture(scope="module")
def vms() -> Iterator[list[Vm]]:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces stand in for the VMs")
    for tool in ("kamailio", "etcd", "memcached", "setpriv"):
        binary(tool)
    sites = lab_sites.plan(3, PREFIX)
    shutil.rmtree(VMS_VAR, ignore_errors=True)
    lab_sites.remove_network(sites)  # what a run killed before its teardown left
    lab_sites.build_network(sites)
    pids: list[int] = []
    try:
        # VM to VM over the bridge (lab_sites routes a site only to the host, for its WAN emulator).
        for site in sites:
            subprocess.run(["ip", "-n", site.netns, "route", "add", f"{lab_sites.SUBNET}.0/24", "dev", "eth0",
                            "src", site.address], check=True)
        machines = provision(sites)
        start_units(machines, pids)
        yield machines
    finally:
        stop_all(list(pids))
        lab_sites.remove_network(sites)


def test_provisioning_script_passes_bash_n():
    checked = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_provisioning_script_passes_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (Debian package shellcheck)")
    checked = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--instance", "ks1", "--ip", "198.18.77.1", "--members", "198.18.77.1"], "are required"),
        (["--instance", "ks1", "--ip", "198.18.77.9", "--members", "198.18.77.1,198.18.77.2,198.18.77.3",
          "--secret", "s"], "is not in --members"),
        (["--instance", "ks 1", "--ip", "198.18.77.1", "--members", "198.18.77.1", "--secret", "s"], "--instance"),
        (["--bogus"], "unknown argument --bogus"),
    ],
)
def test_provisioning_refuses_bad_arguments_with_exit_code_2_and_writes_nothing(tmp_path, args, said):
    if os.geteuid() != 0:
        pytest.skip("needs root: the script refuses to run otherwise")
    done = subprocess.run([str(SCRIPT), "--no-systemctl", *args], env={**os.environ, "PROVISION_ROOT": str(tmp_path)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and said in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []


def test_vagrantfile_is_valid_ruby():
    if shutil.which("ruby") is None:
        pytest.skip("ruby is not installed: the Vagrantfile's syntax was not checked")
    checked = subprocess.run(["ruby", "-c", str(ROOT / "Vagrantfile")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_vagrantfile_runs_the_provisioning_script_on_three_vms():
    text = (ROOT / "Vagrantfile").read_text()
    assert 'path: "etc/provision/provision.sh"' in text
    assert len(re.findall(r'"blf\d" => "192\.168\.56\.\d+"', text)) == 3


def test_installed_units_pass_systemd_analyze_verify(vms):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed: the unit files were not verified")
    vm = vms[0]
    names = [unit for unit in vm.units if unit.startswith("blf")] + ["blfctl-maintain.service"]
    checked = subprocess.run(["systemd-analyze", "verify", *names], cwd=vm.unit_dir, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert sorted(vm.units) == sorted(["blf-etcd@z1-etcd1.service", "memcached.service",
                                       "blf-kamailio@ks1.service", "blfctl-maintain.timer"])
    assert "blfctl-maintain.timer" not in vms[1].units  # maintenance from one host only


def test_three_vms_make_one_cluster_and_a_call_on_vm1_lights_a_lamp_on_vm2(vms):
    endpoints = [f"{vm.site.address}:2379" for vm in vms]

    def healthy() -> bool:
        done = subprocess.run(["etcdctl", "--endpoints", ",".join(endpoints), "endpoint", "health"],
                              env={**os.environ, "ETCDCTL_API": "3"}, capture_output=True, text=True)
        return done.returncode == 0 and (done.stdout + done.stderr).count("is healthy") == 3  # 3.4: on stderr

    # A member of a new cluster says it is ready once the cluster has its quorum and leader.
    wait_every_log(vms, "blf-etcd@", r"ready to serve client requests")
    assert healthy()
    members = subprocess.run(["etcdctl", "--endpoints", endpoints[0], "member", "list"],
                             env={**os.environ, "ETCDCTL_API": "3"}, capture_output=True, text=True, check=True)
    assert sorted(re.findall(r"z1-etcd\d", members.stdout)) == ["z1-etcd1", "z1-etcd2", "z1-etcd3"]

    store = EtcdStore(endpoints[1], timeout=2.0)
    try:
        wait_every_log(vms, "blf-kamailio@", r"blf lease: instance ks\d holds lease")
        assert sorted(store.instances()) == ["ks1", "ks2", "ks3"]
    finally:
        store.close()

    vm1, vm2, vm3 = vms
    assert vm1.blfctl("domain", "add", DOMAIN).returncode == 0
    for user, password in ACCOUNTS.items():
        added = vm1.blfctl("account", "add", f"{user}@{DOMAIN}", "--password", password)
        assert added.returncode == 0, added.stderr

    phones: list[UserAgent] = []
    try:
        def phone(user: str, vm: Vm) -> UserAgent:
            ua = UserAgent(user, DOMAIN, ACCOUNTS[user], vm.sip, bind=lab_sites.HOST_ADDRESS)
            phones.append(ua)
            return ua

        boris = phone("boris", vm1)
        assert boris.register().status == 200
        watcher = Watcher(phone("catherine", vm2))
        lamp = watcher.subscribe("boris")
        assert lamp.lamp == "idle"
        alice = phone("alice", vm1)
        answer = invite(alice, f"sip:boris@{DOMAIN}")
        assert answer.status == 200, answer.first_line
        watcher.wait_lamp(lamp, "busy", 10)

        shown = vm3.blfctl("show", f"boris@{DOMAIN}", "--json")
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["state"] == "busy"

        assert hang_up(alice, answer).status == 200
        watcher.wait_lamp(lamp, "idle", 10)
    finally:
        for ua in phones:
            ua.close()


def test_provisioning_twice_changes_nothing(vms):
    vm = vms[2]
    before = {path: path.read_bytes() for path in (vm.root / "etc").rglob("*") if path.is_file()}
    again = subprocess.run(
        [str(SCRIPT), "--no-systemctl", "--instance", vm.instance, "--ip", vm.site.address,
         "--members", ",".join(other.site.address for other in vms), "--secret", SECRET],
        env={**os.environ, "PROVISION_ROOT": str(vm.root)}, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    after = {path: path.read_bytes() for path in (vm.root / "etc").rglob("*") if path.is_file()}
    assert after == before
