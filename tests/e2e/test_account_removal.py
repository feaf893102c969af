"""Issue 7 §1 end to end: `blfctl account remove` gives the account's watchers a final NOTIFY.

Each subscription to the removed account (through its user or an alias, on either
instance) gets `Subscription-State: terminated;reason=noresource` (RFC 6665 §4.2.2: the
resource no longer exists, do not subscribe again) with a dialog-info body that validates
(tests/e2e/blf_watch.py checks every NOTIFY), and leaves the store. Then the removed
account authenticates nothing: its REGISTER and INVITE fail, a call to it is 404.
"""

from __future__ import annotations

from statestore import keys
from tests.e2e.conftest import blfctl, etcdctl, wait_store
from tests.e2e.tenants import add_account, add_domain, invite, tenant_phone, tenant_watcher, watch

FINAL_NOTIFY_SECONDS = 5.0


def stored_keys(prefix: str) -> list[str]:
    found = etcdctl("get", "--prefix", "--keys-only", prefix)
    assert found.returncode == 0, found.stderr
    return [line for line in found.stdout.splitlines() if line]


def wait_gone(prefix: str, timeout: float) -> list[str]:
    """Wait until nothing is stored under `prefix` (woken by the store's changes there);
    what is left when `timeout` passed."""
    wait_store(lambda: not stored_keys(prefix), timeout, prefix)
    return stored_keys(prefix)


def test_account_remove_sends_its_watchers_a_final_notify_noresource(lab, phones):
    domain = add_domain()
    alice = add_account(domain, "alice", ("101",))
    bob = add_account(domain, "bob")
    alice_phone = tenant_phone(phones, alice, "ks1")
    assert alice_phone.register(300).status == 200
    # Watchers on both instances, through the account's URI and its alias.
    watching = []
    for index, (instance, user) in enumerate((("ks1", alice.user), ("ks2", "101"), ("ks2", alice.user))):
        watcher = tenant_watcher(phones, add_account(domain, f"w{index}"), instance)
        watching.append((watcher, watch(watcher, alice.uri(user))))
    # Alice watches Bob: that subscription is hers and goes without a NOTIFY to her.
    alice_keys = tenant_watcher(phones, alice, "ks2")
    watch(alice_keys, bob.uri())

    removed = blfctl("account", "remove", alice.aor)
    assert f"account {alice.aor} removed" in removed.stdout

    for watcher, sub in watching:
        final = watcher.wait_terminated(sub, FINAL_NOTIFY_SECONDS)
        assert final.state_header == "terminated;reason=noresource", final.state_header
        assert final.lamp == "idle"
    assert wait_gone(keys.subs_of_presentity(alice.aor), FINAL_NOTIFY_SECONDS) == []
    assert stored_keys(keys.subs_of_watcher(alice.aor)) == []
    assert stored_keys(keys.alias(domain, "101")) == []

    # The account is gone: its phone authenticates nothing, a call to it finds nobody.
    assert alice_phone.register(300).status in (401, 403)
    assert invite(alice_phone, bob.uri()).status in (403, 407)
    bob_phone = tenant_phone(phones, bob, "ks2")
    assert invite(bob_phone, alice.uri()).status == 404
    assert invite(bob_phone, alice.uri("101")).status == 404
