"""Digest done right (issue 5, finding 2): single-use nonce counts across the cluster, nonces
accepted only by the instance that issued them within their lifetime, SHA-256 digest.

Attacks are played as issue 5 describes them: a captured Authorization / Proxy-Authorization
header replayed from another address, through either instance.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from statestore.domain import digest
from statestore.domain.model import Account
from statestore.etcd_store import EtcdStore
from tests.e2e.conftest import DOMAIN, blfctl, phone
from tests.sipua import Message, UserAgent, challenge_params, digest_credentials

REGISTRAR = f"sip:{DOMAIN}"
SHA256_FIRST = "ks3"  # a third instance started with BLF_DIGEST_ALGORITHMS=SHA-256,MD5


def challenges(response: Message) -> list[dict[str, str]]:
    name = "www-authenticate" if response.status == 401 else "proxy-authenticate"
    return [challenge_params(value) for value in response.all(name)]


def is_stale_challenge(response: Message) -> bool:
    found = challenges(response)
    return response.status in (401, 407) and bool(found) and all(c.get("stale") == "true" for c in found)


def is_fresh_challenge(response: Message) -> bool:
    found = challenges(response)
    return response.status in (401, 407) and bool(found) and not any("stale" in c for c in found)


def registered_contacts(user: str) -> list[str]:
    shown = json.loads(blfctl("show", f"{user}@{DOMAIN}", "--json").stdout)
    return [r["contact"] for r in shown["registrations"]]


def attacker(phones: list[UserAgent], victim: str, instance: str) -> UserAgent:
    """Another address that knows the victim's name, not the password; it never answers challenges."""
    return phone(phones, (victim, "not-the-password"), instance)


def replay_register(ua: UserAgent, credentials_line: str) -> Message:
    headers = {"Expires": "300", "Contact": ua.contact}
    return ua.request("REGISTER", REGISTRAR, headers, to=ua.aor, auth=False, raw_extra=credentials_line)


def lab_secret() -> bytes:
    state = json.loads((Path(os.environ["BLF_VAR"]) / "lab.json").read_text())
    return str(state["secret"]).encode()


def test_replayed_register_authorization_gets_a_stale_challenge_anywhere(account, phones):
    victim = account("alice")
    ua = phone(phones, victim, "ks1")
    assert ua.register(300).status == 200
    captured = ua.sent_credentials[-1]
    for instance in ("ks1", "ks2"):
        mallory = attacker(phones, victim[0], instance)
        response = replay_register(mallory, captured)
        assert is_stale_challenge(response), (instance, response.first_line, response.headers)
        assert mallory.contact.strip("<>") not in registered_contacts(victim[0])
    assert registered_contacts(victim[0]) == [ua.contact.strip("<>")]
    assert ua.register(300).status == 200, "the owner still registers (a fresh nonce)"


def test_nonce_count_must_increase(account, phones):
    alice = account("alice")
    ua = phone(phones, alice, "ks1")
    ua.reuse_nonce = True
    assert ua.register(300).status == 200
    sent = len(ua.sent_credentials)
    assert ua.register(300).status == 200, "the held nonce with nc=2, no new challenge"
    assert len(ua.sent_credentials) == sent + 1 and "nc=00000002" in ua.sent_credentials[-1]
    assert ua.challenge is not None
    for nc in (2, 1):  # correctly computed, fresh cnonce, but a count already used or lower
        value = digest_credentials(ua.challenge, "REGISTER", REGISTRAR, alice[0], alice[1], nc=nc)
        response = replay_register(ua, f"Authorization: {value}\r\n")
        assert is_stale_challenge(response), (nc, response.first_line)
    value = digest_credentials(ua.challenge, "REGISTER", REGISTRAR, alice[0], alice[1], nc=7)
    assert replay_register(ua, f"Authorization: {value}\r\n").status == 200, "counts may skip, never go back"


def test_expired_foreign_or_forged_nonce_is_refused(account, phones):
    alice = account("alice")
    ua = phone(phones, alice, "ks1")
    secret = lab_secret()
    now = time.time()
    nonces = {
        "expired": digest.mint_nonce(digest.DigestPolicy(secret, "ks1"), now - 301, os.urandom(12)),
        "issued by ks2": digest.mint_nonce(digest.DigestPolicy(secret, "ks2"), now, os.urandom(12)),
        "forged": digest.mint_nonce(digest.DigestPolicy(b"guessed-secret", "ks1"), now, os.urandom(12)),
    }
    for what, nonce in nonces.items():
        challenge = {"realm": DOMAIN, "nonce": nonce, "qop": "auth", "algorithm": "MD5"}
        value = digest_credentials(challenge, "REGISTER", REGISTRAR, alice[0], alice[1])
        response = replay_register(ua, f"Authorization: {value}\r\n")
        expected = is_fresh_challenge if what == "forged" else is_stale_challenge
        assert expected(response), (what, response.first_line, response.headers)
    # A phone that answers a stale challenge with the new nonce gets in, through the other instance too.
    roaming = phone(phones, alice, "ks2")
    roaming.reuse_nonce = True
    roaming.challenge = {"realm": DOMAIN, "nonce": nonces["issued by ks2"], "qop": "auth", "algorithm": "MD5"}
    assert roaming.register(300).status == 200
    ua.reuse_nonce = True
    ua.challenge = dict(roaming.challenge)
    assert ua.register(300).status == 200, "ks1 answers ks2's nonce stale=true; the phone retries"
    assert len(ua.sent_credentials) == 2


def test_same_authorization_cannot_make_many_subscriptions(account, phones):
    alice, catherine = account("alice"), account("catherine")
    ua = phone(phones, catherine, "ks1")
    uri = f"sip:{alice[0]}@{DOMAIN}"
    headers = {"Event": "dialog", "Expires": "60", "Accept": "application/dialog-info+xml"}
    assert ua.request("SUBSCRIBE", uri, headers).status == 200
    captured = ua.sent_credentials[-1]
    assert captured.startswith("Authorization:")  # a SUBSCRIBE is answered by us: 401, Authorization
    for instance in ("ks1", "ks2", "ks1", "ks2"):
        mallory = attacker(phones, catherine[0], instance)
        response = mallory.request("SUBSCRIBE", uri, headers, auth=False, raw_extra=captured)
        assert is_stale_challenge(response), (instance, response.first_line)
    shown = json.loads(blfctl("show", f"{alice[0]}@{DOMAIN}", "--json").stdout)
    assert len(shown["subscriptions"]) == 1


@pytest.fixture(scope="module")
def md5_only_account(lab: dict[str, tuple[str, int]]) -> tuple[str, str]:
    """An account stored before SHA-256 digest (no SHA-256 HA1), written straight into etcd
    as such records were."""
    user = f"olga-{uuid.uuid4().hex[:6]}"
    password = f"{user}-pw"
    store = EtcdStore("127.0.0.1:2379", timeout=2.0)
    try:
        store.put_account(Account(user=user, domain=DOMAIN, ha1=digest.ha1("MD5", user, DOMAIN, password)))
    finally:
        store.close()
    return user, password


@pytest.fixture(scope="module")
def sha256_instance(lab: dict[str, tuple[str, int]], md5_only_account: tuple[str, str]) -> Iterator[tuple[str, int]]:
    """A third instance of the lab that offers SHA-256 before MD5 (the lab's two offer the default).
    Started after `md5_only_account` is written: its directory comes from a snapshot that has
    that account (until the snapshot is in, accounts are read from etcd), so no test waits for
    a watch to bring it."""
    os.environ["BLF_DIGEST_ALGORITHMS"] = "SHA-256,MD5"
    try:
        started = blfctl("lab", "start", SHA256_FIRST, check=False)
    finally:
        del os.environ["BLF_DIGEST_ALGORITHMS"]
    if started.returncode != 0:
        pytest.fail(f"{SHA256_FIRST} did not start: {started.stdout}{started.stderr}")
    try:
        yield ("127.0.0.1", 5073)
    finally:
        blfctl("lab", "kill", SHA256_FIRST, check=False)


def test_register_with_sha256_digest(account, phones, sha256_instance):
    alice = account("alice")
    default = phone(phones, alice, "ks1").request("REGISTER", REGISTRAR, {"Expires": "60"}, auth=False)
    assert [c.get("algorithm") for c in challenges(default)] == ["MD5"], "the lab offers the default"

    ua = UserAgent(alice[0], DOMAIN, alice[1], sha256_instance)
    phones.append(ua)
    first = ua.request("REGISTER", REGISTRAR, {"Expires": "60"}, to=ua.aor, auth=False)
    assert [c.get("algorithm") for c in challenges(first)] == ["SHA-256", "MD5"]
    assert len({c["nonce"] for c in challenges(first)}) == 1
    assert ua.register(120).status == 200
    assert "algorithm=SHA-256" in ua.sent_credentials[-1]
    md5_phone = UserAgent(alice[0], DOMAIN, alice[1], sha256_instance)
    md5_phone.algorithms = ("MD5",)
    phones.append(md5_phone)
    assert md5_phone.register(120).status == 200 and "algorithm=MD5" in md5_phone.sent_credentials[-1]


def test_account_without_sha256_ha1_is_offered_md5(md5_only_account, phones, sha256_instance):
    user, password = md5_only_account
    ua = UserAgent(user, DOMAIN, password, sha256_instance)
    phones.append(ua)
    refused = ua.register(120)
    assert refused.status == 401 and "algorithm=SHA-256" in ua.sent_credentials[-1]
    assert [c.get("algorithm") for c in challenges(refused)] == ["MD5"]
    ua.algorithms = ("MD5",)
    assert ua.register(120).status == 200
