"""blfctl as a new user meets it (issue 15 part 6), against a real etcd: `show` through an
alias, a name without a domain, the exit codes of docs/operations.md, `account list` and
`account show`, the password-changed message, the environment file, and etcd refused or
stopped: one line, the `blfctl:` prefix, exit 3."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.etcd_cluster import ETCD_BINARY, free_ports
from statestore.domain.model import Binding
from statestore.etcd_store import EtcdStore
from tests.integration.conftest import running_etcd

pytestmark = [pytest.mark.integration]

D = "example.com"
PW = "pw-secret"
# blfctl's store deadline is 2 s (cli_zones.STORE_TIMEOUT), its TCP probe 1 s: a stopped etcd
# is reported within a few seconds, never hangs.
STOPPED_BUDGET_SECONDS = 15.0


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BLF_")}
    environ["BLF_VAR"] = "/nonexistent/blf-var"  # no lab's zones
    environ["BLF_ENV_FILE"] = os.devnull  # not the host's /etc/blf/blf.env
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "statestore.cli", *args], capture_output=True, text=True, timeout=120, check=False,
        env=environ,
    )


def one_error_line(done: subprocess.CompletedProcess[str], code: int, message: str) -> None:
    assert done.returncode == code, done
    assert done.stderr.startswith("blfctl: ") and done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr, done.stderr


@pytest.fixture
def directory(etcd_endpoint: str, store: EtcdStore) -> str:
    for args in (("account", "add", f"alice@{D}", "--password", PW, "--alias", "104", "sales"),
                 ("account", "add", f"bob@{D}", "--password", PW),
                 ("account", "add", "carol@other.example", "--password", PW)):
        assert run("--etcd", etcd_endpoint, *args).returncode == 0
    return etcd_endpoint


def test_show_an_alias_shows_its_account(directory: str) -> None:
    shown = run("--etcd", directory, "show", f"104@{D}")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0] == f"alice@{D}: terminated (through its alias 104@{D})"
    as_json = json.loads(run("--etcd", directory, "show", f"104@{D}", "--json").stdout)
    assert (as_json["account"], as_json["alias"]) == (f"alice@{D}", f"104@{D}")
    assert "alias" not in json.loads(run("--etcd", directory, "show", f"alice@{D}", "--json").stdout)
    one_error_line(run("--etcd", directory, "show", f"999@{D}"), 1, f"no account 999@{D} (and no alias 999@{D})")


def test_a_name_without_domain_is_a_usage_error(directory: str) -> None:
    for args in (("show", "alice"), ("account", "show", "alice"), ("account", "remove", "alice"),
                 ("watcher", "list", "alice")):
        one_error_line(run("--etcd", directory, *args), 2, "'alice' is not USER@DOMAIN")


def test_account_list_and_aliases(directory: str, store: EtcdStore) -> None:
    # One key a page: every page is read, other domains' keys skipped.
    assert list(store.accounts_in(D, page=1)) == [f"alice@{D}", f"bob@{D}"]
    assert list(store.accounts_in(None, page=2)) == [f"alice@{D}", f"bob@{D}", "carol@other.example"]
    listed = run("--etcd", directory, "account", "list", D)
    assert listed.returncode == 0 and listed.stdout.splitlines() == [f"alice@{D}", f"bob@{D}"], listed
    assert json.loads(run("--etcd", directory, "account", "list", "--json").stdout) == [
        f"alice@{D}", f"bob@{D}", "carol@other.example"
    ]
    one_error_line(run("--etcd", directory, "account", "list", "nowhere.example"), 1, "no domain nowhere.example")
    one_error_line(run("--etcd", directory, "account", "list", "bad_domain"), 2, "domain 'bad_domain'")
    shown = run("--etcd", directory, "account", "show", f"alice@{D}")
    assert shown.stdout.splitlines() == [f"alice@{D} (zone z1)", f"  alias  104@{D}", f"  alias  sales@{D}"], shown
    through = json.loads(run("--etcd", directory, "alias", "list", f"sales@{D}", "--json").stdout)
    assert through == {"account": f"alice@{D}", "zone": "z1", "aliases": [f"104@{D}", f"sales@{D}"],
                       "alias": f"sales@{D}"}
    one_error_line(run("--etcd", directory, "account", "show", f"nobody@{D}"), 1, f"no account nobody@{D}")


def test_changing_a_password_says_so(directory: str) -> None:
    changed = run("--etcd", directory, "account", "add", f"bob@{D}", "--password", "new-secret", "--alias", "200")
    assert changed.returncode == 0 and changed.stdout == f"account bob@{D}: password changed; aliases 200 added\n"
    added = run("--etcd", directory, "account", "add", f"dave@{D}", "--password", PW)
    assert added.stdout == f"account dave@{D} added\n"


def test_the_environment_file_gives_the_store(directory: str, tmp_path: Path) -> None:
    env_file = tmp_path / "blf.env"
    env_file.write_text(f"# as etc/blf.env.example\nexport BLF_ZONES='z1={directory}'\n")
    shown = run("show", f"alice@{D}", env={"BLF_ENV_FILE": str(env_file)})
    assert shown.returncode == 0 and shown.stdout.startswith(f"alice@{D}: "), shown
    env_file.write_text("not a line\n")
    one_error_line(run("show", f"alice@{D}", env={"BLF_ENV_FILE": str(env_file)}), 2, f"{env_file}:1: not KEY=VALUE")


def test_nothing_listening_is_refused_in_one_line() -> None:
    (port,) = free_ports(1)
    endpoint = f"127.0.0.1:{port}"
    for args in (("show", f"alice@{D}"), ("account", "list"), ("account", "add", f"a@{D}", "--password", PW),
                 ("store", "maintain"), ("domain", "show", D)):
        one_error_line(run("--etcd", endpoint, *args), 3, f"etcd unreachable at {endpoint}: connection refused")


@pytest.fixture
def stopped_etcd(tmp_path: Path) -> Iterator[str]:
    """An etcd of the test's own, SIGSTOPped once ready (SIGCONT and stopped on exit)."""
    if not os.access(ETCD_BINARY, os.X_OK):
        pytest.fail(f"no etcd binary at {ETCD_BINARY}")
    with running_etcd(tmp_path) as (endpoint, process):
        os.kill(process.pid, signal.SIGSTOP)
        yield endpoint


def test_a_stopped_etcd_is_reported_in_one_line_in_time(stopped_etcd: str) -> None:
    started = time.monotonic()
    done = run("--etcd", stopped_etcd, "show", f"alice@{D}")
    elapsed = time.monotonic() - started
    one_error_line(done, 3, f"etcd unreachable at {stopped_etcd}: connected, but no answer in time")
    assert elapsed < STOPPED_BUDGET_SECONDS, elapsed


def test_show_calls_a_tcp_phone_behind_nat_only_for_another_address(directory: str, store: EtcdStore) -> None:
    """A TCP phone's source port is ephemeral: the registrar's flag (set when Via's port is
    not the source port) is not what `show` says; the address decides."""
    now = time.time()
    bindings = [
        ("tcp-direct", "sip:alice@203.0.113.5:5060;transport=tcp", "tcp:203.0.113.5:49152"),
        ("tcp-natted", "sip:alice@192.168.1.20:5060;transport=tcp", "tcp:203.0.113.7:49153"),
        ("udp-natted", "sip:alice@203.0.113.9:5060", "udp:203.0.113.9:1024"),
    ]
    store.apply_bindings([
        (name, Binding(account=f"alice@{D}", contact=contact, expires_at=now + 600, call_id=name, cseq=1,
                       instance="ks1", received=received, nat=True), 600)
        for name, contact, received in bindings
    ], [], f"alice@{D}")
    shown = run("--etcd", directory, "show", f"alice@{D}")
    registered = [line for line in shown.stdout.splitlines() if line.startswith("  registered")]
    assert {line.split()[1]: "behind NAT" in line for line in registered} == {
        "sip:alice@203.0.113.5:5060;transport=tcp": False,
        "sip:alice@192.168.1.20:5060;transport=tcp": True,
        "sip:alice@203.0.113.9:5060": True,
    }, shown.stdout
