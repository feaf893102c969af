"""Issue 7 §1-§3 end to end: accounts and aliases, identity from authentication, could-call.

Every test makes its own domains (tests/e2e/tenants.py) on the session's two-instance lab.
Written against /work/briefs/issue7-contract.md: a SUBSCRIBE to an alias watches the
account and its NOTIFYs name the URI subscribed to; a call to an alias rings the account
and lights every watcher's lamp of it; the caller's lamp is the authenticated account's
whatever From, PAI or display name say; REGISTER/SUBSCRIBE are challenged with 401,
INVITE with 407; across domains a SUBSCRIBE or INVITE passes only when the caller's
domain may call the callee's and the callee's accepts it, otherwise 403 whether or not
the user exists; blfctl changes are seen by both instances within 1 s.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.e2e.blf_watch import Subscription, Watcher
from tests.e2e.tenants import (
    Tenant,
    TenantPhone,
    add_account,
    add_alias,
    add_domain,
    expect_lamps,
    hang_up,
    invite,
    quiet,
    registered_callee,
    remove_alias,
    set_domain,
    shown,
    tenant_phone,
    tenant_watcher,
    try_subscribe,
    watch,
)
from tests.sipua import Message, UserAgent

ALIASES = ("101", "+15551230101", "sales-desk")
PROPAGATION_SECONDS = 1.0  # contract §8: a blfctl change is visible on every instance within 1 s


def within(seconds: float, attempt: Callable[[], Message], wanted: int) -> Message:
    """Send `attempt` until its answer has status `wanted` or `seconds` have passed; the last answer."""
    deadline = time.monotonic() + seconds
    while True:
        answer = attempt()
        if answer.status == wanted or time.monotonic() >= deadline:
            return answer


def answered_call(caller: UserAgent, uri: str, lamp: tuple[Watcher, Subscription] | None = None) -> None:
    """A call from `caller` to `uri` that is answered, then hung up: once `lamp` shows it busy
    (else a hang-up right after the 200 may end the call before a NOTIFY shows it confirmed)."""
    answer = invite(caller, uri)
    assert answer.status == 200, f"INVITE {uri}: {answer.first_line}"
    if lamp is not None:
        lamp[0].wait_lamp(lamp[1], "busy", 5)
    assert hang_up(caller, answer).status == 200


def self_answering(phones: list[UserAgent], account: Tenant, instance: str = "ks2") -> UserAgent:
    """A phone of `account` registered through `instance` that answers every INVITE at once."""
    ua = tenant_phone(phones, account, instance)
    assert ua.register(300).status == 200
    return ua


# §1 accounts and aliases


def test_a_subscribe_to_each_alias_watches_the_account_and_notify_names_the_uri_subscribed_to(lab, phones):
    domain = add_domain()
    alice = add_account(domain, "alice", ALIASES)
    watchers = [add_account(domain, f"w{index}") for index in range(len(ALIASES) + 1)]
    # One watcher per URI: the account's and each alias (the Watcher checks entity == URI subscribed to).
    for index, (creds, user) in enumerate(zip(watchers, (alice.user, *ALIASES), strict=True)):
        cat = tenant_watcher(phones, creds, "ks1" if index % 2 else "ks2")
        sub = watch(cat, alice.uri(user))
        assert sub.notifies[0].lamp == "idle"
    stored = shown(alice.aor)["subscriptions"]
    assert sorted(s["watcher"] for s in stored) == sorted(w.aor for w in watchers)  # type: ignore[index]


def test_one_device_watching_the_account_and_an_alias_keeps_both_keys(lab, phones, sipp):
    """A phone with a BLF key for `alice` and one for `101` (the same account): two keys, both lit."""
    domain = add_domain()
    alice, bob, cat = add_account(domain, "alice", ("101",)), add_account(domain, "bob"), add_account(domain, "cat")
    keys = tenant_watcher(phones, cat, "ks1")
    by_user, by_alias = watch(keys, alice.uri()), watch(keys, alice.uri("101"))
    stored = shown(alice.aor)["subscriptions"]
    assert len(stored) == 2, f"the second key replaced the first (same device and account): {stored}"  # type: ignore[arg-type]
    registered_callee(phones, sipp, alice)
    answered_call(tenant_phone(phones, bob, "ks1"), alice.uri(), (keys, by_alias))
    expect_lamps(keys, by_alias, ["idle", "early", "busy", "idle"])
    expect_lamps(keys, by_user, ["idle", "early", "busy", "idle"])


def test_a_call_to_an_alias_rings_the_account_and_lights_the_lamps_of_every_alias(lab, phones, sipp):
    domain = add_domain()
    alice, bob = add_account(domain, "alice", ALIASES), add_account(domain, "bob")
    lamps: list[tuple[Watcher, Subscription]] = []
    for index, user in enumerate((alice.user, *ALIASES)):
        cat = tenant_watcher(phones, add_account(domain, f"w{index}"), "ks1" if index % 2 else "ks2")
        lamps.append((cat, watch(cat, alice.uri(user))))
    boss = tenant_watcher(phones, add_account(domain, "boss"), "ks2")
    bob_lamp = watch(boss, bob.uri())
    registered_callee(phones, sipp, alice, "ks2", ring_ms=800)
    answered_call(tenant_phone(phones, bob, "ks1"), alice.uri("sales-desk"), lamps[0])
    for cat, sub in lamps:
        expect_lamps(cat, sub, ["idle", "early", "busy", "idle"])
    expect_lamps(boss, bob_lamp, ["idle", "busy", "idle"])


def test_a_plus_number_alias_is_reached_without_the_plus_where_the_domain_strips_it(lab, phones, sipp):
    """`blfctl domain add --strip-plus`: `+15551230101` and `15551230101` are one number there;
    in a domain without the rule the other form names nobody (404)."""
    stripping, plain = add_domain(strip_plus=True), add_domain()
    alice = add_account(stripping, "alice", ("+15551230101",))
    bob, cat = add_account(stripping, "bob"), add_account(stripping, "cat")
    keys = tenant_watcher(phones, cat, "ks1")
    sub = watch(keys, alice.uri("15551230101"))  # entity: the form dialled
    registered_callee(phones, sipp, alice)
    answered_call(tenant_phone(phones, bob, "ks2"), alice.uri("15551230101"), (keys, sub))
    expect_lamps(keys, sub, ["idle", "early", "busy", "idle"])

    carol = add_account(plain, "carol", ("+15551230102",))
    dave = add_account(plain, "dave")
    response, _ = try_subscribe(tenant_watcher(phones, dave, "ks2"), carol.uri("15551230102"))
    assert response.first_line == "SIP/2.0 404 Not Found"


# §2 identity from authentication

# How the caller's phone (or its PBX) rewrites its identity (returns extra header lines);
# the lamp that lights is still the authenticated account's.
def _other_user(ua: TenantPhone, other: Tenant) -> str:
    ua.from_uri = other.uri()
    return ""


def _other_number(ua: TenantPhone, other: Tenant) -> str:
    ua.from_uri = f"sip:+15559990000@{other.domain}"
    return ""


def _anonymous(ua: TenantPhone, other: Tenant) -> str:
    ua.from_uri = "sip:anonymous@anonymous.invalid"
    ua.display = "Anonymous"
    return ""


def _pai_of_someone_else(ua: TenantPhone, other: Tenant) -> str:
    return f"P-Asserted-Identity: <{other.uri()}>\r\n"


def _display_of_someone_else(ua: TenantPhone, other: Tenant) -> str:
    ua.display = other.user
    return ""


def _everything_someone_else(ua: TenantPhone, other: Tenant) -> str:
    ua.from_uri, ua.display = other.uri(), other.user
    return f"P-Asserted-Identity: \"{other.user}\" <{other.uri()}>\r\nRemote-Party-ID: <{other.uri()}>\r\n"


REWRITES: dict[str, Callable[[TenantPhone, Tenant], str]] = {
    "from-other-user": _other_user,
    "from-other-number": _other_number,
    "anonymous": _anonymous,
    "pai-of-someone-else": _pai_of_someone_else,
    "display-name-of-someone-else": _display_of_someone_else,
    "from-pai-display-all-someone-else": _everything_someone_else,
}


@pytest.mark.parametrize("rewrite", sorted(REWRITES))
def test_the_caller_lamp_is_the_authenticated_account_whatever_the_call_says(lab, phones, sipp, rewrite):
    domain = add_domain()
    alice, bob, carol = add_account(domain, "alice"), add_account(domain, "bob"), add_account(domain, "carol")
    boss = tenant_watcher(phones, add_account(domain, "boss"), "ks2")
    alice_lamp, bob_lamp, carol_lamp = watch(boss, alice.uri()), watch(boss, bob.uri()), watch(boss, carol.uri())
    registered_callee(phones, sipp, alice)
    caller = tenant_phone(phones, bob, "ks1")
    extra = REWRITES[rewrite](caller, carol)
    answer = invite(caller, alice.uri(), raw_extra=extra)
    assert answer.status == 200, f"{rewrite}: {answer.first_line}"
    boss.wait_lamp(alice_lamp, "busy", 5)
    assert hang_up(caller, answer).status == 200
    expect_lamps(boss, alice_lamp, ["idle", "early", "busy", "idle"])
    expect_lamps(boss, bob_lamp, ["idle", "busy", "idle"])
    assert quiet(boss, carol_lamp) and carol_lamp.lamps == ["idle"], "the named account's lamp changed"
    assert shown(carol.aor)["legs"] == []


def test_register_for_another_user_is_forbidden_and_adds_no_registration(lab, phones):
    domain = add_domain()
    alice, bob = add_account(domain, "alice", ("101",)), add_account(domain, "bob", ("102",))
    ua = tenant_phone(phones, bob, "ks1")
    for to in (alice.uri(), alice.uri("101")):
        refused = ua.request("REGISTER", f"sip:{domain}", {"Expires": "300", "Contact": ua.contact}, to=to)
        assert refused.status == 403, f"REGISTER To {to} as {bob.user}: {refused.first_line}"
    assert shown(alice.aor)["registrations"] == []
    # Its own alias as the To: the account itself registers (contract §2).
    own = ua.request("REGISTER", f"sip:{domain}", {"Expires": "300", "Contact": ua.contact}, to=bob.uri("102"))
    assert own.status == 200, own.first_line
    assert [r["contact"] for r in shown(bob.aor)["registrations"]] == [ua.contact.strip("<>")]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("method", "status", "header"),
    [("REGISTER", 401, "www-authenticate"), ("SUBSCRIBE", 401, "www-authenticate"),
     ("INVITE", 407, "proxy-authenticate")],
)
def test_requests_answered_here_are_challenged_with_401_and_proxied_ones_with_407(lab, phones, method, status, header):
    """RFC 3261 §22.3: a UAS (REGISTER, SUBSCRIBE) answers 401 + WWW-Authenticate, a proxy 407 + Proxy-Authenticate."""
    domain = add_domain()
    alice, bob = add_account(domain, "alice"), add_account(domain, "bob")
    ua = tenant_phone(phones, bob, "ks1")
    uri = f"sip:{domain}" if method == "REGISTER" else alice.uri()
    headers = {"Expires": "300"} | ({"Event": "dialog"} if method == "SUBSCRIBE" else {})
    challenge = ua.request(method, uri, headers, to=bob.uri() if method == "REGISTER" else None, auth=False)
    assert challenge.status == status, challenge.first_line
    values = challenge.all(header)
    assert values and all(v.lower().startswith("digest") for v in values)
    assert all(f'realm="{domain}"' in v for v in values), values
    other = "proxy-authenticate" if header == "www-authenticate" else "www-authenticate"
    assert challenge.all(other) == []
    # The phone answers with the matching credentials header and gets through.
    ua.request(method, uri, headers, to=bob.uri() if method == "REGISTER" else None)
    assert ua.sent_credentials[-1].startswith("Authorization:" if status == 401 else "Proxy-Authorization:")


def test_an_alias_as_digest_username_authenticates_nobody(lab, phones):
    domain = add_domain()
    alice, bob = add_account(domain, "alice"), add_account(domain, "bob", ("102",))
    ua = tenant_phone(phones, bob, "ks1", user="102")  # the alias, with the account's password
    answer = ua.request("SUBSCRIBE", alice.uri(), {"Event": "dialog", "Expires": "300"})
    assert answer.status == 401, answer.first_line


# §3 could-call


def test_within_a_domain_any_account_may_watch_and_call_any_other(lab, phones):
    domain = add_domain()  # no --may-call: it may call only itself
    alice, bob = add_account(domain, "alice"), add_account(domain, "bob")
    watch(tenant_watcher(phones, bob, "ks1"), alice.uri())
    self_answering(phones, alice)
    answered_call(tenant_phone(phones, bob, "ks2"), alice.uri())


def _pair(may_call: bool, accept: str) -> tuple[str, str]:
    """A caller domain and a callee domain: the caller may call the callee or not; the callee
    accepts every domain ("all"), only the caller ("caller") or only a third domain ("other")."""
    callee = add_domain()
    caller = add_domain(may_call=(callee,) if may_call else ())
    if accept != "all":
        third = add_domain()
        set_domain(callee, (), (caller,) if accept == "caller" else (third,))
    return caller, callee


CROSS_DOMAIN = [
    # may_call, callee accepts, allowed
    (True, "all", True),
    (True, "caller", True),
    (False, "all", False),
    (True, "other", False),
    (False, "caller", False),
]


@pytest.mark.parametrize(("may_call", "accepts", "allowed"), CROSS_DOMAIN)
def test_a_cross_domain_subscribe_is_accepted_only_when_the_watcher_could_call(
    lab, phones, may_call, accepts, allowed
):
    caller_domain, callee_domain = _pair(may_call, accepts)
    alice, bob = add_account(callee_domain, "alice"), add_account(caller_domain, "bob")
    response, sub = try_subscribe(tenant_watcher(phones, bob, "ks1"), alice.uri())
    if allowed:
        assert response.status == 200 and sub is not None and sub.lamp == "idle", response.first_line
    else:
        assert response.first_line == "SIP/2.0 403 Forbidden"
        assert shown(alice.aor)["subscriptions"] == []


@pytest.mark.parametrize(("may_call", "accepts", "allowed"), CROSS_DOMAIN)
def test_a_cross_domain_invite_is_routed_only_when_the_caller_could_call(lab, phones, may_call, accepts, allowed):
    caller_domain, callee_domain = _pair(may_call, accepts)
    alice, bob = add_account(callee_domain, "alice"), add_account(caller_domain, "bob")
    callee = self_answering(phones, alice)
    caller = tenant_phone(phones, bob, "ks1")
    if allowed:
        answered_call(caller, alice.uri())
        assert callee.wait_request("INVITE", 2).method == "INVITE"
    else:
        assert invite(caller, alice.uri()).first_line == "SIP/2.0 403 Forbidden"
        with pytest.raises(TimeoutError):
            callee.wait_request("INVITE", 0.5)


def test_unknown_user_is_404_where_the_caller_may_call_and_403_like_a_known_user_where_it_may_not(lab, phones):
    open_domain, closed_domain = add_domain(), add_domain()
    caller_domain = add_domain(may_call=(open_domain,))
    bob = add_account(caller_domain, "bob")
    known_closed = add_account(closed_domain, "alice")
    add_account(open_domain, "anna")
    ua = tenant_phone(phones, bob, "ks1")
    cat = Watcher(ua)

    def subscribe(uri: str) -> str:
        return try_subscribe(cat, uri)[0].first_line

    def call(uri: str) -> str:
        return invite(ua, uri).first_line

    for attempt in (subscribe, call):
        assert attempt(f"sip:nobody-here@{open_domain}") == "SIP/2.0 404 Not Found"
        known, unknown = attempt(known_closed.uri()), attempt(f"sip:nobody-here@{closed_domain}")
        assert known == unknown == "SIP/2.0 403 Forbidden", (attempt.__name__, known, unknown)


def test_domain_set_takes_effect_for_new_requests_within_a_second(lab, phones):
    caller_domain, callee_domain = add_domain(), add_domain()
    alice, bob = add_account(callee_domain, "alice"), add_account(caller_domain, "bob")
    cats = [tenant_watcher(phones, bob, instance) for instance in ("ks1", "ks2")]
    sent = 0

    def subscribe() -> Message:
        nonlocal sent
        sent += 1
        response, sub = try_subscribe(cats[sent % 2], alice.uri(), expires=0)
        return response

    assert subscribe().first_line == "SIP/2.0 403 Forbidden"
    set_domain(caller_domain, (callee_domain,))
    opened = within(PROPAGATION_SECONDS, subscribe, 200)
    assert opened.status == 200, f"still {opened.first_line} 1 s after domain set --may-call"
    set_domain(callee_domain, (), (add_domain(),))  # the callee's domain now accepts only a third
    closed = within(PROPAGATION_SECONDS, subscribe, 403)
    assert closed.first_line == "SIP/2.0 403 Forbidden", f"still {closed.first_line} 1 s after domain set --accept-from"


# Directory changes reach both instances


def test_alias_add_and_remove_are_seen_by_both_instances_within_a_second(lab, phones):
    domain = add_domain()
    alice, bob = add_account(domain, "alice"), add_account(domain, "bob")
    cats = {instance: tenant_watcher(phones, bob, instance) for instance in ("ks1", "ks2")}
    add_alias(alice, "201")
    for instance, cat in cats.items():
        answer = within(PROPAGATION_SECONDS, lambda cat=cat: try_subscribe(cat, alice.uri("201"), expires=0)[0], 200)
        assert answer.status == 200, f"{instance}: {answer.first_line} after alias add"
    remove_alias(domain, "201")
    for instance, cat in cats.items():
        answer = within(PROPAGATION_SECONDS, lambda cat=cat: try_subscribe(cat, alice.uri("201"), expires=0)[0], 404)
        assert answer.first_line == "SIP/2.0 404 Not Found", f"{instance}: {answer.first_line} after alias remove"


def test_a_new_account_subscribes_and_calls_through_ks2_right_after_account_add(lab, phones):
    domain = add_domain()
    alice = add_account(domain, "alice")
    self_answering(phones, alice, "ks1")
    bob = add_account(domain, "bob", ("202",))  # provisioned now, used at once through the other instance
    cat = tenant_watcher(phones, bob, "ks2")
    subscribed = within(PROPAGATION_SECONDS, lambda: try_subscribe(cat, alice.uri(), expires=0)[0], 200)
    assert subscribed.status == 200, subscribed.first_line
    answered_call(tenant_phone(phones, bob, "ks2"), alice.uri())
    # And bob is reachable by his alias through ks2 at once.
    boss = tenant_watcher(phones, alice, "ks2")
    watch(boss, bob.uri("202"))
