"""blfctl's directory commands (issue 7) through `python -m statestore.cli`, as an operator
runs them, against the private etcd: exit codes, messages, and what the store holds after."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from statestore import keys
from statestore.cli_directory import ha1
from statestore.domain.policy import DomainRules, NumberRule
from statestore.etcd_store import EtcdStore

pytestmark = [pytest.mark.integration]

D = "example.com"
PW = "pw-secret"  # blfctl refuses passwords shorter than 8 characters
IMPORT_ACCOUNTS = 10_000
IMPORT_BUDGET_SECONDS = 20.0  # "well under a minute"


def blfctl(endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statestore.cli", "--etcd", endpoint, *args],
        capture_output=True, text=True, timeout=120, check=False,
    )


def everything(store: EtcdStore) -> dict[str, bytes]:
    return {kv.key: kv.value for kv in store.range(keys.ROOT)}


def test_account_add_with_aliases_then_alias_add_and_remove(etcd_endpoint: str, store: EtcdStore) -> None:
    added = blfctl(etcd_endpoint, "account", "add", "alice@Example.com", "--password", PW,
                   "--alias", "101", "--alias", "+15551230101", "sales-desk")
    assert added.returncode == 0, added.stderr
    assert "account alice@example.com added with aliases 101, +15551230101, sales-desk" in added.stdout
    account = store.get_account(f"alice@{D}")
    assert account is not None and account.ha1 == ha1("alice", D, "pw-secret")
    assert store.domain_rules(D) == DomainRules(D)
    assert blfctl(etcd_endpoint, "alias", "add", f"alice@{D}", "102", "103").returncode == 0
    assert [store.resolve_alias(D, a) for a in ("101", "+15551230101", "sales-desk", "102", "103")] == [
        f"alice@{D}"
    ] * 5
    removed = blfctl(etcd_endpoint, "alias", "remove", f"102@{D}")
    assert removed.returncode == 0 and f"alias 102@{D} removed from alice@{D}" in removed.stdout
    assert store.resolve_alias(D, "102") is None
    again = blfctl(etcd_endpoint, "alias", "remove", f"102@{D}")
    assert again.returncode == 1 and f"no alias 102@{D}" in again.stderr


def test_alias_taken_is_refused_with_its_owner_and_nothing_changes(etcd_endpoint: str, store: EtcdStore) -> None:
    assert blfctl(etcd_endpoint, "account", "add", f"alice@{D}", "--password", PW, "--alias", "101").returncode == 0
    before = everything(store)
    taken = blfctl(etcd_endpoint, "account", "add", f"bob@{D}", "--password", PW, "--alias", "102", "101")
    assert taken.returncode == 1
    assert f"alias 101@{D} is taken by alice@{D}" in taken.stderr
    assert blfctl(etcd_endpoint, "alias", "add", f"bob@{D}", "101").returncode == 1  # no bob either
    assert everything(store) == before


@pytest.mark.parametrize(
    "args",
    [
        ("account", "add", "alice", "--password", PW),
        ("account", "add", "al/ice@example.com", "--password", PW),
        ("account", "add", "alice@exa_mple.com", "--password", PW),
        ("account", "add", "alice@example.com", "--password", PW, "--alias", "10 1"),
        ("account", "add", "alice@example.com", "--password", PW, "--alias", "101;user=phone"),
        ("account", "add", "alice@example.com", "--password", PW, "--alias", "alice"),
        ("alias", "add", "alice@example.com", "ok", "a/b"),
        ("alias", "remove", "101"),
        ("alias", "remove", "101@bad..domain"),
        ("account", "remove", "alice@-bad.example"),
        ("domain", "add", "bad_domain.example"),
        ("domain", "add", "a.example", "--may-call", "b.example", "not a domain"),
        ("domain", "set", "a.example", "--may-call", "b.example", "--accept-from", "c/d"),
        ("domain", "add", "a.example", "--number-prefix", "0+44"),
        ("domain", "add", "a.example", "--number-prefix", "0=+44", "--number-prefix", "0=0"),
        ("domain", "add", "a.example", "--strip-plus", "--number-prefix", "x=+1"),
        ("domain", "set", "a.example", "--may-call", "--number-prefix", "="),
        ("domain", "show", "bad_domain.example"),
    ],
)
def test_malformed_names_exit_2_and_write_nothing(etcd_endpoint: str, store: EtcdStore, args: tuple[str, ...]) -> None:
    done = blfctl(etcd_endpoint, *args)
    assert done.returncode == 2, done
    assert done.stderr.startswith("blfctl: ") and "Traceback" not in done.stderr
    assert everything(store) == {}


def test_domain_add_and_set_rules(etcd_endpoint: str, store: EtcdStore) -> None:
    assert blfctl(etcd_endpoint, "domain", "add", "A.example").returncode == 0  # the old form
    assert store.domain_rules("a.example") == DomainRules("a.example")
    assert blfctl(etcd_endpoint, "domain", "add", "b.example", "--may-call", "a.example", "c.example",
                  "--accept-from", "a.example").returncode == 0
    assert store.domain_rules("b.example") == DomainRules(
        "b.example", frozenset({"a.example", "c.example"}), frozenset({"a.example"})
    )
    done = blfctl(etcd_endpoint, "domain", "set", "a.example", "--may-call", "b.example")
    assert done.returncode == 0, done.stderr
    assert "may call a.example, b.example; accepts from every domain" in done.stdout
    assert store.domain_rules("a.example") == DomainRules("a.example", frozenset({"b.example"}), None)
    assert blfctl(etcd_endpoint, "domain", "add", "a.example").returncode == 0  # keeps its rules
    assert store.domain_rules("a.example") == DomainRules("a.example", frozenset({"b.example"}), None)
    unknown = blfctl(etcd_endpoint, "domain", "set", "z.example", "--may-call")
    assert unknown.returncode == 1 and "no domain z.example" in unknown.stderr
    assert store.domain_rules("z.example") is None


def test_domain_number_rules_and_show(etcd_endpoint: str, store: EtcdStore) -> None:
    added = blfctl(etcd_endpoint, "domain", "add", "uk.example", "--strip-plus", "--number-prefix", "0=+44",
                   "--number-prefix", "=+1")
    assert added.returncode == 0, added.stderr
    assert store.domain_rules("uk.example") == DomainRules(
        "uk.example", numbers=NumberRule(strip_plus=True, prefixes=(("0", "+44"), ("", "+1")))
    )
    shown = blfctl(etcd_endpoint, "domain", "show", "UK.example")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == {
        "domain": "uk.example", "may_call": [], "accept_from": None, "zone": "z1",
        "numbers": {"strip_plus": True, "prefixes": [["0", "+44"], ["", "+1"]]},
    }
    assert blfctl(etcd_endpoint, "domain", "add", "uk.example").returncode == 0  # keeps its rules
    kept = store.domain_rules("uk.example")
    assert kept is not None and kept.numbers.strip_plus is True
    done = blfctl(etcd_endpoint, "domain", "set", "uk.example", "--may-call", "b.example", "--number-prefix", "00=+")
    assert done.returncode == 0, done.stderr
    assert "equal number forms 00N = +N" in done.stdout
    assert store.domain_rules("uk.example") == DomainRules(
        "uk.example", frozenset({"b.example"}), numbers=NumberRule(prefixes=(("00", "+"),))
    )  # set replaces every rule
    missing = blfctl(etcd_endpoint, "domain", "show", "z.example")
    assert missing.returncode == 1 and "no domain z.example" in missing.stderr


def test_account_remove(etcd_endpoint: str, store: EtcdStore) -> None:
    assert blfctl(etcd_endpoint, "account", "add", f"alice@{D}", "--password", PW, "--alias", "101").returncode == 0
    assert blfctl(etcd_endpoint, "account", "add", f"bob@{D}", "--password", PW).returncode == 0
    done = blfctl(etcd_endpoint, "account", "remove", f"alice@{D}")
    assert done.returncode == 0 and f"account alice@{D} removed" in done.stdout
    assert store.get_account(f"alice@{D}") is None and store.resolve_alias(D, "101") is None
    assert store.get_account(f"bob@{D}") is not None
    missing = blfctl(etcd_endpoint, "account", "remove", f"alice@{D}")
    assert missing.returncode == 1 and f"no account alice@{D}" in missing.stderr


def test_import_a_bad_file_writes_nothing(etcd_endpoint: str, store: EtcdStore, tmp_path: Path) -> None:
    source = tmp_path / "accounts.csv"
    source.write_text(f"alice@{D},pw-secret,101\nbob@{D},pw-secret,101\ncarol@bad_domain,pw-secret\n")
    done = blfctl(etcd_endpoint, "account", "import", str(source))
    assert done.returncode == 2
    assert "line 2: 101@example.com is alice@example.com's already" in done.stderr
    assert "line 3: domain" in done.stderr
    assert everything(store) == {}


def test_import_reports_accounts_refused_by_the_store(etcd_endpoint: str, store: EtcdStore, tmp_path: Path) -> None:
    assert blfctl(etcd_endpoint, "account", "add", f"carol@{D}", "--password", PW, "--alias", "300").returncode == 0
    source = tmp_path / "accounts.jsonl"
    source.write_text("\n".join(json.dumps(line) for line in [
        {"account": f"alice@{D}", "password": "pw-secret", "aliases": ["101"]},
        {"account": f"bob@{D}", "password": "pw-secret", "aliases": ["300"]},
    ]) + "\n")
    done = blfctl(etcd_endpoint, "account", "import", str(source))
    assert done.returncode == 1
    assert f"alias 300@{D} is taken by carol@{D}" in done.stderr
    assert "imported 1 of 2 accounts" in done.stdout
    assert store.resolve_alias(D, "101") == f"alice@{D}" and store.get_account(f"bob@{D}") is None


@pytest.mark.parametrize("form", ["csv", "jsonl"])
def test_import_10000_accounts_with_aliases_well_under_a_minute(
    etcd_endpoint: str, store: EtcdStore, tmp_path: Path, form: str
) -> None:
    lines = []
    for index in range(IMPORT_ACCOUNTS):
        aor, aliases = f"user{index}@tenant{index % 10}.example", [str(1000 + index), f"+1555{1000000 + index}"]
        if form == "csv":
            lines.append(f"{aor},pw-secret{index},{';'.join(aliases)}")
        else:
            lines.append(json.dumps({"account": aor, "password": f"pw-secret{index}", "aliases": aliases}))
    source = tmp_path / f"accounts.{form}"
    source.write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    done = blfctl(etcd_endpoint, "account", "import", str(source))
    elapsed = time.monotonic() - started
    print(f"\nblfctl account import: {IMPORT_ACCOUNTS} accounts, {2 * IMPORT_ACCOUNTS} aliases ({form}) "
          f"in {elapsed:.2f} s (whole process)")
    assert done.returncode == 0, done.stderr
    assert f"imported {IMPORT_ACCOUNTS} of {IMPORT_ACCOUNTS} accounts" in done.stdout
    assert elapsed < IMPORT_BUDGET_SECONDS
    assert len(store.range(keys.ACCOUNTS)) == IMPORT_ACCOUNTS
    assert len(store.range(keys.ALIASES)) == 2 * IMPORT_ACCOUNTS
    assert store.resolve_alias("tenant7.example", "+15551009997") == "user9997@tenant7.example"
    account = store.get_account("user9997@tenant7.example")
    assert account is not None and account.ha1 == ha1("user9997", "tenant7.example", "pw-secret9997")
    assert sorted(store.domains()) == [f"tenant{n}.example" for n in range(10)]
