"""Tenant isolation played as an attack (issue 7 §4), on the two-instance lab.

The victim is a domain V with an account alice (aliases `101`, `+15551230101`), her phone
registered and answering, and vera, a watcher of V, watching alice. The attacker, mallory,
has her own domain M (added without --may-call: it may call only itself), her own account
and password. Every test is one attempt; it fails on a leak: a 200 where V's state is at
stake, a NOTIFY showing alice's state to M, a change of alice's lamp, a call reaching
alice's phone, a registration or subscription added to alice, or a different answer for
an existing and a non-existing user of V.

| attempt                                                            | expected answer                      |
|--------------------------------------------------------------------|--------------------------------------|
| alias `+15551230101`/`101` provisioned in M (V's numbers)          | 200, reaches only M's own account    |
| Request-URI in V (SUBSCRIBE, INVITE), alice vs nobody              | 403 Forbidden, same for both         |
| `sip:alice%40V@M` (user@host packed in the user part)              | 404 Not Found (nobody in M)          |
| Request-URI host = the server's IP (ks1, ks2)                      | resolves in M: M's user, else 404    |
| Request-URI host = another IP                                      | 404 Not Found - Domain Not Served    |
| `;user=phone` with `phone-context=V`, user in M or in V            | M's number, else 404; V's: 403       |
| To naming alice, Request-URI in M (SUBSCRIBE, INVITE)              | M's callee, alice untouched          |
| From naming alice (realm becomes V, mallory has no V password)     | 401/407 again, never 200             |
| PAI naming alice (SUBSCRIBE, INVITE to V; to M)                    | 403 to V; to M the watcher is mallory|
| fetch (Expires: 0) of alice, of nobody in V                        | 403, same, no NOTIFY                 |
| in-dialog SUBSCRIBE with vera's Call-ID and tags (refresh, end)    | 401 (V's realm)/403/481, it stays    |
| NOTIFY with vera's subscription's Call-ID and tags                 | refused, nothing reaches vera        |
| BYE with a call of alice's Call-ID and tags (no/unsigned Route)    | 403/404/481, call and lamp stay      |
| the same with the call's signed Record-Route, from M's address     | 403/481, call and lamp stay          |
| REGISTER alice@V with mallory's credentials (R-URI V, R-URI M)     | 401/403, no registration added       |
| digest with mallory's credentials but realm V                      | 401 again, never 200                 |
| alias as digest username (mallory's own alias, alice's alias)      | 401 again, never 200                 |
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.e2e.blf_watch import Subscription, Watcher
from tests.e2e.conftest import KS, QUIET_SECONDS, blfctl, no_notify
from tests.e2e.tenants import (
    Tenant,
    TenantPhone,
    add_account,
    add_domain,
    hang_up,
    invite,
    quiet,
    shown,
    tenant_phone,
    tenant_watcher,
    try_subscribe,
    watch,
)
from tests.sipua import Message, UserAgent, challenge_params, digest_credentials

VICTIM_ALIASES = ("101", "+15551230101")
REFUSED = "SIP/2.0 403 Forbidden"
NOBODY = "SIP/2.0 404 Not Found"


@dataclass
class Scene:
    victim_domain: str
    alice: Tenant
    alice_phone: UserAgent
    vera: Watcher
    vera_lamp: Subscription
    attacker_domain: str
    mallory: Tenant
    attacker: TenantPhone
    registrations: list[str]

    def untouched(self) -> None:
        """Nothing of alice changed or leaked: vera's lamp stays idle with no NOTIFY, alice's
        phone got no request, her only subscription is vera's, her only registration her own."""
        assert quiet(self.vera, self.vera_lamp, QUIET_SECONDS), f"alice's lamp changed: {self.vera_lamp.lamps}"
        assert self.vera_lamp.lamps == ["idle"]
        with pytest.raises(TimeoutError):
            self.alice_phone.wait_request("INVITE", 0.01)
        view = shown(self.alice.aor)
        assert [s["watcher"] for s in view["subscriptions"]] == [self.vera.ua.user + "@" + self.victim_domain]  # type: ignore[attr-defined]
        assert contacts(view) == self.registrations
        assert view["legs"] == []


@pytest.fixture
def scene(lab: object, phones: list[UserAgent]) -> Iterator[Scene]:
    victim_domain = add_domain()
    alice = add_account(victim_domain, "alice", VICTIM_ALIASES)
    alice_phone = tenant_phone(phones, alice, "ks2")
    assert alice_phone.register(300).status == 200
    vera = tenant_watcher(phones, add_account(victim_domain, "vera"), "ks1")
    vera_lamp = watch(vera, alice.uri())
    attacker_domain = add_domain()
    mallory = add_account(attacker_domain, "mallory", ("mal",))
    attacker = tenant_phone(phones, mallory, "ks1", bind="127.0.0.5")
    registrations = contacts(shown(alice.aor))
    yield Scene(victim_domain, alice, alice_phone, vera, vera_lamp, attacker_domain, mallory, attacker,
                registrations)


def contacts(view: dict[str, object]) -> list[str]:
    """The registered contacts (and through which instance) of a `blfctl show` view."""
    return sorted(f"{r['contact']} {r['instance']}" for r in view["registrations"])  # type: ignore[attr-defined]


def subscribe_as(ua: UserAgent, uri: str, expires: int = 600, to: str | None = None, raw_extra: str = "") -> Message:
    """A SUBSCRIBE of the attacker's; a NOTIFY it brings is left in the phone's queue."""
    headers = {"Event": "dialog", "Expires": str(expires), "Accept": "application/dialog-info+xml"}
    return ua.request("SUBSCRIBE", uri, headers, to=to, raw_extra=raw_extra)


def decoy(phones: list[UserAgent], domain: str, aliases: tuple[str, ...] = (), user: str | None = None) -> UserAgent:
    """An account of the attacker's domain (with `aliases`, or a chosen user name) whose phone
    is registered and answers: where the attacker's requests must end up."""
    if user is None:
        account = add_account(domain, "decoy", aliases)
    else:
        password = f"{user}-pw-{uuid.uuid4().hex[:4]}"
        blfctl("account", "add", f"{user}@{domain}", "--password", password)
        account = Tenant(user, domain, password)
    ua = tenant_phone(phones, account, "ks2")
    assert ua.register(300).status == 200
    return ua


def subscribers_of(aor: str) -> list[str]:
    return sorted(str(s["watcher"]) for s in shown(aor)["subscriptions"])  # type: ignore[union-attr]


# Aliases that look like the victim's numbers


@pytest.mark.parametrize("number", VICTIM_ALIASES)
def test_an_alias_like_the_victims_number_reaches_only_the_attackers_own_account(scene, phones, number):
    decoy_phone = decoy(phones, scene.attacker_domain, (number,))
    watcher = Watcher(scene.attacker)
    sub = watch(watcher, f"sip:{number}@{scene.attacker_domain}")
    assert sub.lamp == "idle"
    assert subscribers_of(f"{decoy_phone.user}@{scene.attacker_domain}") == [scene.mallory.aor]
    answer = invite(scene.attacker, f"sip:{number}@{scene.attacker_domain}")
    assert answer.status == 200, answer.first_line
    assert decoy_phone.wait_request("INVITE", 2).method == "INVITE"
    assert hang_up(scene.attacker, answer).status == 200
    scene.untouched()


# Crafted Request-URIs


@pytest.mark.parametrize("method", ["SUBSCRIBE", "INVITE"])
def test_a_request_uri_in_the_victims_domain_is_refused_alike_for_existing_and_unknown_users(scene, method):
    def attempt(uri: str) -> str:
        if method == "SUBSCRIBE":
            return subscribe_as(scene.attacker, uri).first_line
        return invite(scene.attacker, uri).first_line

    answers = {
        uri: attempt(uri)
        for uri in (scene.alice.uri(), scene.alice.uri("101"), scene.alice.uri("+15551230101"),
                    f"sip:nobody-{uuid.uuid4().hex[:6]}@{scene.victim_domain}")
    }
    assert set(answers.values()) == {REFUSED}, answers
    assert no_notify(scene.attacker, 0.2)
    scene.untouched()


@pytest.mark.parametrize("packed", ["{user}%40{victim}", "{user}%40{victim}%3A5071"])
@pytest.mark.parametrize("method", ["SUBSCRIBE", "INVITE"])
def test_user_at_host_packed_in_the_user_part_names_nobody(scene, method, packed):
    user = packed.format(user=scene.alice.user, victim=scene.victim_domain)
    uri = f"sip:{user}@{scene.attacker_domain}"
    answer = subscribe_as(scene.attacker, uri) if method == "SUBSCRIBE" else invite(scene.attacker, uri)
    assert answer.first_line == NOBODY, answer.first_line
    assert no_notify(scene.attacker, 0.2)
    scene.untouched()


@pytest.mark.parametrize("instance", ["ks1", "ks2"])
def test_the_servers_own_address_as_host_resolves_in_the_callers_domain(scene, phones, instance):
    """The Request-URI host is the address of the instance the request is sent to ("myself")."""
    host, port = KS[instance]
    attacker = tenant_phone(phones, scene.mallory, instance, bind="127.0.0.5")
    # The victim's user name: nobody of that name in M -> 404, whatever exists in V.
    answer = subscribe_as(attacker, f"sip:{scene.alice.user}@{host}:{port}")
    assert answer.first_line == NOBODY, answer.first_line
    assert invite(attacker, f"sip:{scene.alice.user}@{host}:{port}").first_line == NOBODY
    assert invite(attacker, f"sip:101@{host}:{port}").first_line == NOBODY
    scene.untouched()
    # The same name provisioned in M: the address names M's account (entity in M's domain).
    twin = decoy(phones, scene.attacker_domain, user=scene.alice.user)
    sub = watch(Watcher(attacker), f"sip:{scene.alice.user}@{host}:{port}",
                entity=f"sip:{scene.alice.user}@{scene.attacker_domain}")
    assert sub.lamp == "idle"
    assert subscribers_of(f"{twin.user}@{scene.attacker_domain}") == [scene.mallory.aor]
    scene.untouched()


def test_another_ip_as_host_is_a_domain_not_served(scene):
    for method in ("SUBSCRIBE", "INVITE"):
        uri = f"sip:{scene.alice.user}@127.0.0.9"
        answer = subscribe_as(scene.attacker, uri) if method == "SUBSCRIBE" else invite(scene.attacker, uri)
        assert answer.first_line == "SIP/2.0 404 Not Found - Domain Not Served Here", (method, answer.first_line)
    scene.untouched()


@pytest.mark.parametrize("method", ["SUBSCRIBE", "INVITE"])
def test_user_phone_with_the_victims_phone_context_stays_in_the_request_uri_domain(scene, phones, method):
    def attempt(uri: str) -> Message:
        return subscribe_as(scene.attacker, uri, expires=0) if method == "SUBSCRIBE" else invite(scene.attacker, uri)

    context = f"phone-context={scene.victim_domain}"
    # In M, where that number is nobody's: 404, never V's alice.
    in_attacker = attempt(f"sip:+1-555-123-0101;{context}@{scene.attacker_domain};user=phone")
    assert in_attacker.first_line == NOBODY, in_attacker.first_line
    # Addressed to V itself: the could-call rule, like any other URI in V.
    in_victim = attempt(f"sip:+1-555-123-0101;phone-context=+1@{scene.victim_domain};user=phone")
    assert in_victim.first_line == REFUSED, in_victim.first_line
    scene.untouched()
    # M's own number of that form: M's account (a fetch of it, or a call to it).
    decoy_phone = decoy(phones, scene.attacker_domain, ("+15551230101",))
    own = attempt(f"sip:+1-555-123-0101;{context}@{scene.attacker_domain};user=phone")
    assert own.status == 200, own.first_line
    if method == "INVITE":
        assert decoy_phone.wait_request("INVITE", 2).method == "INVITE"
        hang_up(scene.attacker, own)
    scene.untouched()


# To / From / PAI games


def test_a_to_naming_the_victim_changes_nothing_on_subscribe_and_invite(scene, phones):
    decoy_phone = decoy(phones, scene.attacker_domain)
    own = f"sip:{decoy_phone.user}@{scene.attacker_domain}"
    sub = Watcher(scene.attacker)
    response, subscription = try_subscribe(sub, own, to=scene.alice.uri())
    assert response.status == 200 and subscription is not None, response.first_line
    assert subscribers_of(f"{decoy_phone.user}@{scene.attacker_domain}") == [scene.mallory.aor]
    answer = invite(scene.attacker, own, to=scene.alice.uri())
    assert answer.status == 200, answer.first_line
    assert decoy_phone.wait_request("INVITE", 2).method == "INVITE"
    hang_up(scene.attacker, answer)
    # To in M, Request-URI in V: still V's rule.
    assert subscribe_as(scene.attacker, scene.alice.uri(), to=own).first_line == REFUSED
    assert invite(scene.attacker, scene.alice.uri(), to=own).first_line == REFUSED
    scene.untouched()


@pytest.mark.parametrize("target", ["victim", "attacker"])
def test_a_from_naming_the_victim_is_challenged_in_the_victims_realm_and_never_passes(scene, phones, target):
    """The realm is the From domain when served (contract §2): V. mallory has no V password;
    answering with her own gets challenged again."""
    decoy_phone = decoy(phones, scene.attacker_domain)
    uri = scene.alice.uri() if target == "victim" else f"sip:{decoy_phone.user}@{scene.attacker_domain}"
    scene.attacker.from_uri = scene.alice.uri()
    subscribed = subscribe_as(scene.attacker, uri)
    assert subscribed.status == 401, subscribed.first_line
    assert 'realm="' + scene.victim_domain + '"' in (subscribed.header("www-authenticate") or "")
    called = invite(scene.attacker, uri)
    assert called.status == 407, called.first_line
    with pytest.raises(TimeoutError):
        decoy_phone.wait_request("INVITE", 0.2)
    assert subscribers_of(f"{decoy_phone.user}@{scene.attacker_domain}") == []
    scene.untouched()


def test_a_pai_naming_the_victim_changes_nothing_on_subscribe_and_invite(scene, phones):
    pai = f"P-Asserted-Identity: <{scene.alice.uri()}>\r\n"
    assert subscribe_as(scene.attacker, scene.alice.uri(), raw_extra=pai).first_line == REFUSED
    assert invite(scene.attacker, scene.alice.uri(), raw_extra=pai).first_line == REFUSED
    decoy_phone = decoy(phones, scene.attacker_domain)
    own = f"sip:{decoy_phone.user}@{scene.attacker_domain}"
    response, _ = try_subscribe(Watcher(scene.attacker), own, raw_extra=pai)
    assert response.status == 200, response.first_line
    assert subscribers_of(f"{decoy_phone.user}@{scene.attacker_domain}") == [scene.mallory.aor]
    answer = invite(scene.attacker, own, raw_extra=pai)
    assert answer.status == 200, answer.first_line
    hang_up(scene.attacker, answer)
    scene.untouched()


# Fetch


def test_a_fetch_across_domains_is_refused_alike_and_notifies_nothing(scene):
    answers = {
        uri: subscribe_as(scene.attacker, uri, expires=0).first_line
        for uri in (scene.alice.uri(), scene.alice.uri("101"), f"sip:nobody-x@{scene.victim_domain}")
    }
    assert set(answers.values()) == {REFUSED}, answers
    assert no_notify(scene.attacker)
    scene.untouched()


# In-dialog requests with another watcher's or another call's dialog identifiers


def _in_subscription(ua: UserAgent, sub: Subscription, expires: int, contact: str = "") -> Message:
    headers = {"Event": "dialog", "Expires": str(expires)} | ({"Contact": contact} if contact else {})
    return ua.request("SUBSCRIBE", sub.uri, headers, to=sub.uri, call_id=sub.call_id, from_tag=sub.from_tag,
                      to_tag=sub.to_tag)


@pytest.mark.parametrize("instance", ["ks1", "ks2"])
def test_in_dialog_subscribe_with_vera_s_dialog_ids_neither_redirects_nor_ends_it(scene, phones, instance):
    attacker = tenant_phone(phones, scene.mallory, instance, bind="127.0.0.5")
    contact_before = shown(scene.alice.aor)["subscriptions"][0]["contact"]  # type: ignore[index]
    # 401: her credentials are M's, the subscription is authenticated in its watcher's realm (V),
    # which she cannot answer (test_security_subs accepts the same challenge within a domain).
    redirected = _in_subscription(attacker, scene.vera_lamp, 600, contact=attacker.contact)
    assert redirected.status in (401, 403, 481), redirected.first_line
    ended = _in_subscription(attacker, scene.vera_lamp, 0)
    assert ended.status in (401, 403, 481), ended.first_line
    assert no_notify(attacker, 0.2)
    assert shown(scene.alice.aor)["subscriptions"][0]["contact"] == contact_before  # type: ignore[index]
    scene.untouched()


def test_a_notify_with_vera_s_dialog_ids_reaches_nobody(scene):
    sub = scene.vera_lamp
    body = (
        f'<?xml version="1.0"?><dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="99" '
        f'state="full" entity="{sub.uri}"><dialog id="x" direction="recipient"><state>confirmed</state>'
        f"</dialog></dialog-info>"
    ).encode()
    headers = {"Event": "dialog", "Subscription-State": "active;expires=600",
               "Content-Type": "application/dialog-info+xml"}
    # As the notifier would send it (From: the presentity's tag, To: vera's), to vera's URI and to
    # the server's own address.
    for uri in (f"sip:{scene.vera.ua.user}@{scene.victim_domain}", f"sip:{scene.vera.ua.user}@127.0.0.1:5071"):
        answer = scene.attacker.request(
            "NOTIFY", uri, headers, to=f"sip:{scene.vera.ua.user}@{scene.victim_domain}", call_id=sub.call_id,
            from_tag=sub.to_tag, to_tag=sub.from_tag, body=body,
        )
        assert answer.status >= 400, f"NOTIFY {uri}: {answer.first_line}"
    scene.untouched()


def _victims_call(scene: Scene, phones: list[UserAgent]) -> tuple[UserAgent, Message]:
    """bob (of V) calls alice and she answers: vera sees alice busy. bob's phone and the 200."""
    bob_phone = tenant_phone(phones, add_account(scene.victim_domain, "bob"), "ks1")
    call = invite(bob_phone, scene.alice.uri())
    assert call.status == 200, call.first_line
    assert scene.alice_phone.wait_request("INVITE", 2).method == "INVITE"
    scene.vera.wait_lamp(scene.vera_lamp, "busy", 5)
    return bob_phone, call


def _bye_as_either_side(scene: Scene, call: Message, routes: str) -> list[Message]:
    """mallory's BYE in the call's dialog (Call-ID, both tags, as either side) with `routes`."""
    target = (call.header("contact") or "").strip("<>").split(">")[0]
    answers = []
    for from_tag, to_tag in ((call.tag("from"), call.tag("to")), (call.tag("to"), call.tag("from"))):
        answers.append(scene.attacker.request(
            "BYE", target, {"Route": routes} if routes else {}, to=scene.alice.uri(),
            call_id=call.header("call-id"), from_tag=from_tag, to_tag=to_tag,
        ))
    return answers


def _call_intact_then_hung_up(scene: Scene, bob_phone: UserAgent, call: Message) -> None:
    with pytest.raises(TimeoutError):
        scene.alice_phone.wait_request("BYE", 0.5)
    assert quiet(scene.vera, scene.vera_lamp) and scene.vera_lamp.lamp == "busy"
    assert hang_up(bob_phone, call).status == 200
    scene.vera.wait_lamp(scene.vera_lamp, "idle", 5)


@pytest.mark.parametrize("route", ["none", "ours-without-token"])
def test_a_bye_with_the_call_id_and_tags_of_a_victims_call_ends_nothing(scene, phones, route):
    """What a watcher can read in dialog-info (call-id, local-tag, remote-tag: RFC 4235 §4.1.6)."""
    bob_phone, call = _victims_call(scene, phones)
    routes = "" if route == "none" else f"<sip:{KS['ks1'][0]}:{KS['ks1'][1]};lr>"
    for answer in _bye_as_either_side(scene, call, routes):
        assert answer.status in (403, 404, 481), answer.first_line
    _call_intact_then_hung_up(scene, bob_phone, call)


def test_a_bye_with_a_victims_call_s_whole_route_set_from_another_tenant_ends_nothing(scene, phones):
    """mallory also holds the call's Record-Route (as someone on the path would): the signed
    route names the dialog's flows, and she sends from neither of them."""
    bob_phone, call = _victims_call(scene, phones)
    for answer in _bye_as_either_side(scene, call, ", ".join(reversed(call.all("record-route")))):
        assert answer.status in (403, 481), answer.first_line
    _call_intact_then_hung_up(scene, bob_phone, call)


# REGISTER and digest across domains


@pytest.mark.parametrize("request_uri", ["victim", "attacker"])
def test_register_of_the_victims_account_with_the_attackers_credentials_adds_nothing(scene, request_uri):
    domain = scene.victim_domain if request_uri == "victim" else scene.attacker_domain
    headers = {"Expires": "300", "Contact": scene.attacker.contact}
    for to in (scene.alice.uri(), scene.alice.uri("101")):
        answer = scene.attacker.request("REGISTER", f"sip:{domain}", headers, to=to)
        assert answer.status in (401, 403), f"REGISTER {domain} To {to}: {answer.first_line}"
    scene.untouched()


def _forged_digest(
    scene: Scene, method: str, uri: str, user: str, realm: str, password: str, to: str | None = None
) -> Message:
    """`method` to `uri` answering the server's challenge with credentials computed for `realm`."""
    headers = {"Event": "dialog", "Expires": "600"} if method == "SUBSCRIBE" else {"Expires": "300"}
    challenge = scene.attacker.request(method, uri, headers, to=to, auth=False)
    assert challenge.status in (401, 407), challenge.first_line
    name = "www-authenticate" if challenge.status == 401 else "proxy-authenticate"
    params = challenge_params(challenge.all(name)[0])
    params["realm"] = realm
    header = "Authorization" if challenge.status == 401 else "Proxy-Authorization"
    credentials = digest_credentials(params, method, uri, user, password)
    return scene.attacker.request(method, uri, headers, to=to, raw_extra=f"{header}: {credentials}\r\n", auth=False)


@pytest.mark.parametrize("method", ["SUBSCRIBE", "INVITE", "REGISTER"])
@pytest.mark.parametrize("target", ["victim", "attacker"])
def test_digest_with_the_attackers_credentials_in_the_victims_realm_authenticates_nobody(
    scene, phones, target, method
):
    """Challenged in M's realm (her From), mallory answers in V's; to alice, or to M's own account
    (a REGISTER: To alice, or To her own account)."""
    decoy_phone = decoy(phones, scene.attacker_domain)
    own = f"sip:{decoy_phone.user}@{scene.attacker_domain}"
    to = None
    uri = scene.alice.uri() if target == "victim" else own
    if method == "REGISTER":
        uri = f"sip:{scene.victim_domain if target == 'victim' else scene.attacker_domain}"
        to = scene.alice.uri() if target == "victim" else scene.mallory.uri()
    answer = _forged_digest(scene, method, uri, scene.mallory.user, scene.victim_domain, scene.mallory.password,
                            to)
    assert answer.status in (401, 403, 407), answer.first_line
    assert no_notify(scene.attacker, 0.2)
    with pytest.raises(TimeoutError):
        decoy_phone.wait_request("INVITE", 0.01)
    assert contacts(shown(scene.mallory.aor)) == []
    scene.untouched()


@pytest.mark.parametrize("alias_of", ["attacker", "victim"])
def test_an_alias_as_digest_username_authenticates_nobody(scene, phones, alias_of):
    """mallory's own alias with her password; alice's alias even with alice's password (the
    worst case: an alias is no login name, whoever knows the password)."""
    owner = scene.mallory if alias_of == "attacker" else scene.alice
    user = "mal" if alias_of == "attacker" else "101"
    realm = owner.domain
    ua = tenant_phone(phones, owner, "ks2", user=user, bind="127.0.0.5")
    answer = ua.request("SUBSCRIBE", scene.alice.uri(), {"Event": "dialog", "Expires": "600"})
    assert answer.status == 401, answer.first_line
    assert f'realm="{realm}"' in (answer.header("www-authenticate") or "")
    scene.untouched()
