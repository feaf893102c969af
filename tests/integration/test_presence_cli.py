"""blfctl presence|watcher|profile through `python -m statestore.cli`, as an operator runs
them, against the private etcd: exit codes, output, and what the store holds after."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from statestore import codec, keys
from statestore.cli_directory import new_account
from statestore.domain.authorization import Authorization, Decision, Policy
from statestore.domain.model import Subscription
from statestore.etcd_store import EtcdStore
from tests.factories import subscription

pytestmark = [pytest.mark.integration]

D = "example.com"
ALICE, BOB, CAROL = f"alice@{D}", f"bob@{D}", f"carol@{D}"


def blfctl(endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statestore.cli", "--etcd", endpoint, *args],
        capture_output=True, text=True, timeout=60, check=False,
    )


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done


def refused(done: subprocess.CompletedProcess[str], message: str) -> None:
    """Refused with `message`: exit 1 for an unknown account, 2 for malformed input (docs/operations.md)."""
    assert done.returncode == (1 if message.startswith("no account") else 2), done
    assert done.stderr.startswith("blfctl: ") and message in done.stderr and "Traceback" not in done.stderr


@pytest.fixture
def accounts(store: EtcdStore) -> EtcdStore:
    store.add_domain(D)
    for user in ("alice", "bob", "carol"):
        store.add_account(new_account(user, D, "pw-secret"))
    return store


def stored(store: EtcdStore, sub: Subscription) -> Subscription:
    found = store.get_subscription(sub.sub_id)
    assert found is not None
    return found[0]


def presence(watcher: str, status: str = "pending", **changes: object) -> Subscription:
    return subscription(watcher, ALICE, event="presence", status=status, **changes)


def test_policy_is_stored_and_unknown_accounts_exit_2(etcd_endpoint: str, accounts: EtcdStore) -> None:
    done = ok(blfctl(etcd_endpoint, "presence", "policy", ALICE, "ask"))
    assert done.stdout == ""
    assert accounts.authorization(ALICE) == Authorization(Policy.ASK)
    value = accounts.client.get(keys.authz(ALICE))[0]
    assert codec.decode(value) == {"policy": "ask", "watchers": {}}
    refused(blfctl(etcd_endpoint, "presence", "policy", f"nobody@{D}", "ask"), f"no account nobody@{D}")
    refused(blfctl(etcd_endpoint, "presence", "policy", "not-an-aor", "ask"), "not USER@DOMAIN")
    assert blfctl(etcd_endpoint, "presence", "policy", ALICE, "maybe").returncode == 2  # argparse's choices
    assert accounts.client.get(keys.authz(f"nobody@{D}"))[0] is None


def test_approve_makes_pending_presence_active_and_is_remembered(etcd_endpoint: str, accounts: EtcdStore) -> None:
    ok(blfctl(etcd_endpoint, "presence", "policy", ALICE, "ask"))
    pending = presence(BOB)
    dialog = subscription(BOB, ALICE, event="dialog")
    other = presence(CAROL)
    for sub in (pending, dialog, other):
        assert accounts.create_subscription(sub) is not None
    done = ok(blfctl(etcd_endpoint, "watcher", "approve", ALICE, f"sip:{BOB}"))
    assert done.stdout == ""
    after = stored(accounts, pending)
    assert (after.status, after.status_event, after.termination_reason) == ("active", "approved", "")
    assert after.expires_at == pending.expires_at
    assert stored(accounts, dialog) == dialog  # authorization governs presence only
    assert stored(accounts, other) == other  # another watcher
    assert accounts.authorization(ALICE).watchers == {BOB: Decision.APPROVED}


@pytest.mark.parametrize(("decision", "remembered"), [("deny", None), ("block", Decision.BLOCKED)])
def test_deny_and_block_end_pending_and_active_subscriptions(
    etcd_endpoint: str, accounts: EtcdStore, decision: str, remembered: Decision | None
) -> None:
    ok(blfctl(etcd_endpoint, "presence", "policy", ALICE, "ask"))
    ok(blfctl(etcd_endpoint, "watcher", "approve", ALICE, BOB))
    pending, active = presence(BOB), presence(BOB, status="active")
    for sub in (pending, active):
        assert accounts.create_subscription(sub) is not None
    before = time.time()
    done = ok(blfctl(etcd_endpoint, "watcher", decision, ALICE, BOB))
    assert done.stdout == ""
    for sub in (pending, active):
        after = stored(accounts, sub)
        assert after.termination_reason == "rejected" and after.status_event == "rejected"
        assert before <= after.expires_at <= time.time()
    assert accounts.authorization(ALICE).watchers.get(BOB) is remembered
    refused(blfctl(etcd_endpoint, "watcher", decision, f"nobody@{D}", BOB), f"no account nobody@{D}")
    refused(blfctl(etcd_endpoint, "watcher", decision, ALICE, "bob"), "not USER@DOMAIN")


def test_policy_allow_approves_pending_presence_but_not_blocked(etcd_endpoint: str, accounts: EtcdStore) -> None:
    ok(blfctl(etcd_endpoint, "presence", "policy", ALICE, "ask"))
    ok(blfctl(etcd_endpoint, "watcher", "block", ALICE, CAROL))
    pending = presence(BOB)
    blocked = presence(CAROL)  # written behind the block's back: allow must not let it in
    for sub in (pending, blocked):
        assert accounts.create_subscription(sub) is not None
    ok(blfctl(etcd_endpoint, "presence", "policy", ALICE, "allow"))
    after = stored(accounts, pending)
    assert (after.status, after.status_event) == ("active", "approved")
    assert stored(accounts, blocked).status == "pending"
    assert accounts.authorization(ALICE) == Authorization(Policy.ALLOW, {CAROL: Decision.BLOCKED})


def test_watcher_list_json_and_text(etcd_endpoint: str, accounts: EtcdStore) -> None:
    ok(blfctl(etcd_endpoint, "presence", "policy", ALICE, "ask"))
    ok(blfctl(etcd_endpoint, "watcher", "block", ALICE, f"dave@{D}"))
    ok(blfctl(etcd_endpoint, "watcher", "approve", ALICE, CAROL))
    subs = [presence(BOB), subscription(BOB, ALICE, event="dialog"), presence(CAROL, status="active")]
    for sub in subs:
        assert accounts.create_subscription(sub) is not None
    done = ok(blfctl(etcd_endpoint, "watcher", "list", ALICE, "--json"))
    view = json.loads(done.stdout)
    assert view["presentity"] == ALICE and view["policy"] == "ask"
    rows = view["watchers"]
    assert [(r["watcher"], r["event"], r["status"], r["event_reason"], r["decision"]) for r in rows] == [
        (BOB, "dialog", "active", "subscribe", ""),
        (BOB, "presence", "pending", "subscribe", ""),
        (CAROL, "presence", "active", "subscribe", "approved"),
        (f"dave@{D}", "", "", "", "blocked"),
    ]
    assert rows[1]["id"] == subs[0].sub_id and 3500 < rows[1]["expires"] <= 3600
    assert rows[3]["expires"] is None and rows[3]["id"] == ""
    assert set(rows[0]) == {"watcher", "event", "status", "event_reason", "expires", "id", "decision"}
    text = ok(blfctl(etcd_endpoint, "watcher", "list", ALICE)).stdout.splitlines()
    assert text[0] == f"{ALICE}: policy ask"
    assert text[1].split() == ["WATCHER", "EVENT", "STATUS", "EVENT_REASON", "EXPIRES", "DECISION", "ID"]
    assert len(text) == 6 and text[5].split()[:2] == [f"dave@{D}", "-"]
    refused(blfctl(etcd_endpoint, "watcher", "list", f"nobody@{D}"), f"no account nobody@{D}")


def test_profile_set_clear_show(etcd_endpoint: str, accounts: EtcdStore) -> None:
    ok(blfctl(etcd_endpoint, "profile", "set", BOB, "single-dialog", "no-terminated"))
    assert accounts.profile_of(BOB) == ("single-dialog", "no-terminated")
    assert codec.decode(accounts.client.get(keys.profile(BOB))[0]) == {"profile": ["single-dialog", "no-terminated"]}
    ok(blfctl(etcd_endpoint, "profile", "set", "--user-agent", "^Yealink", "single-dialog"))
    ok(blfctl(etcd_endpoint, "profile", "set", "--user-agent", "Grandstream GXP.*", "dummy-idle", "no-identities"))
    ok(blfctl(etcd_endpoint, "profile", "set", "--user-agent", "^Yealink", "no-terminated"))  # replaced in place
    assert accounts.ua_profile_rules() == [
        ("^Yealink", ("no-terminated",)), ("Grandstream GXP.*", ("dummy-idle", "no-identities"))
    ]
    assert codec.decode(accounts.client.get(keys.UA_PROFILES)[0]) == {
        "rules": [["^Yealink", ["no-terminated"]], ["Grandstream GXP.*", ["dummy-idle", "no-identities"]]]
    }
    shown = json.loads(ok(blfctl(etcd_endpoint, "profile", "show", BOB, "--json")).stdout)
    assert shown == {
        "rules": [["^Yealink", ["no-terminated"]], ["Grandstream GXP.*", ["dummy-idle", "no-identities"]]],
        "account": BOB, "profile": ["single-dialog", "no-terminated"],
    }
    text = ok(blfctl(etcd_endpoint, "profile", "show", BOB)).stdout
    assert "'^Yealink'" in text and f"{BOB}: single-dialog, no-terminated" in text
    ok(blfctl(etcd_endpoint, "profile", "clear", BOB))
    ok(blfctl(etcd_endpoint, "profile", "clear", "--user-agent", "^Yealink"))
    ok(blfctl(etcd_endpoint, "profile", "clear", "--user-agent", "no such rule"))  # already so
    assert accounts.profile_of(BOB) is None
    assert json.loads(ok(blfctl(etcd_endpoint, "profile", "show", BOB, "--json")).stdout) == {
        "rules": [["Grandstream GXP.*", ["dummy-idle", "no-identities"]]], "account": BOB, "profile": None,
    }
    ok(blfctl(etcd_endpoint, "profile", "set", CAROL))  # an empty profile: the rules do not apply to her
    assert accounts.profile_of(CAROL) == ()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("profile", "set", BOB, "single-dialog", "blinky"), "unknown profile name(s): blinky; known: dummy-idle"),
        (("profile", "set", "--user-agent", "Yealink", "fast"), "known: dummy-idle, no-identities"),
        (("profile", "set", "--user-agent", "Yealink(", "single-dialog"), "invalid User-Agent regex"),
        (("profile", "set", f"nobody@{D}", "single-dialog"), f"no account nobody@{D}"),
        (("profile", "set", "single-dialog"), "not USER@DOMAIN"),
        (("profile", "set"), "give ACCOUNT or --user-agent REGEX"),
        (("profile", "clear", f"nobody@{D}"), f"no account nobody@{D}"),
        (("profile", "clear", BOB, "single-dialog"), "takes no profile names"),
        (("profile", "show", f"nobody@{D}"), f"no account nobody@{D}"),
    ],
)
def test_profile_refusals_exit_2_and_write_nothing(
    etcd_endpoint: str, accounts: EtcdStore, args: tuple[str, ...], message: str
) -> None:
    before = {kv.key: kv.value for kv in accounts.range(keys.ROOT)}
    refused(blfctl(etcd_endpoint, *args), message)
    assert {kv.key: kv.value for kv in accounts.range(keys.ROOT)} == before


def test_account_remove_deletes_its_authorization_and_profile(etcd_endpoint: str, accounts: EtcdStore) -> None:
    ok(blfctl(etcd_endpoint, "presence", "policy", ALICE, "ask"))
    ok(blfctl(etcd_endpoint, "profile", "set", ALICE, "single-dialog"))
    ok(blfctl(etcd_endpoint, "account", "remove", ALICE))
    assert accounts.client.get(keys.authz(ALICE))[0] is None
    assert accounts.client.get(keys.profile(ALICE))[0] is None
    refused(blfctl(etcd_endpoint, "presence", "policy", ALICE, "ask"), f"no account {ALICE}")
    assert accounts.client.get(keys.authz(ALICE))[0] is None
