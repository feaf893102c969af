"""Identity resolution (issue 7 §2): the caller from authentication, the callee from the
Request-URI in its own domain; From, To, PAI and display names change nothing (§4)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statestore.domain.errors import SipError
from statestore.domain.identity import (
    DOMAIN_NOT_SERVED,
    FORBIDDEN,
    NOT_FOUND,
    Identities,
    MappingDirectory,
    RequestFacts,
    asserted_identity,
    check_reach,
    dialled_user,
    realm_candidates,
    resolve,
    withheld,
)
from statestore.domain.policy import DomainRules, NumberRule, domain_table

# acme strips a leading "+" and knows its national "0"; beta declares no number forms and
# accepts calls from everyone; gamma accepts only from beta. acme may call beta and gamma.
RULES = domain_table(
    [
        DomainRules(
            "acme.example",
            may_call=frozenset({"beta.example", "gamma.example"}),
            numbers=NumberRule(strip_plus=True, prefixes=(("0", "+1"),)),
        ),
        DomainRules("beta.example", may_call=frozenset({"acme.example"})),
        DomainRules("gamma.example", accept_from=frozenset({"beta.example"})),
    ]
)
DIRECTORY = MappingDirectory(
    accounts=frozenset(
        {"alice@acme.example", "bob@acme.example", "carol@beta.example", "dave@gamma.example", "101@beta.example"}
    ),
    aliases={
        "101@acme.example": "alice@acme.example",
        "+15551230101@acme.example": "alice@acme.example",
        "sales-desk@acme.example": "bob@acme.example",
        "5550102@acme.example": "bob@acme.example",
        # beta's tenant gave carol an alias that looks like acme's number for alice.
        "+15551230101@beta.example": "carol@beta.example",
        "201@gamma.example": "dave@gamma.example",
        # A directory that answers outside the domain it was asked about is not believed.
        "rogue@beta.example": "alice@acme.example",
    },
)


def facts(ruri: str, auth: str | None = "alice@acme.example", **extra: str) -> RequestFacts:
    """Facts of a request to `ruri` ("user@host" or "user@host;user=phone"),
    authenticated as `auth` ("user@realm")."""
    target, _, param = ruri.partition(";user=")
    user, _, host = target.rpartition("@")
    auth_user, _, realm = (auth or "").rpartition("@")
    return RequestFacts(
        auth_user=auth_user if auth else None,
        auth_realm=realm if auth else None,
        ruri_user=user,
        ruri_host=host,
        ruri_user_param=param,
        **extra,
    )


@pytest.mark.parametrize(
    ("ruri", "callee", "entity"),
    [
        # The account's user, and each alias, in the R-URI's domain.
        ("bob@acme.example", "bob@acme.example", "sip:bob@acme.example"),
        ("101@acme.example", "alice@acme.example", "sip:101@acme.example"),
        ("+15551230101@acme.example", "alice@acme.example", "sip:+15551230101@acme.example"),
        ("sales-desk@acme.example", "bob@acme.example", "sip:sales-desk@acme.example"),
        # Declared number forms: "+" stripped or added, national "0" for "+1".
        ("15551230101@acme.example", "alice@acme.example", "sip:15551230101@acme.example"),
        ("05551230101@acme.example", "alice@acme.example", "sip:05551230101@acme.example"),
        ("+5550102@acme.example", "bob@acme.example", "sip:+5550102@acme.example"),
        # Domains are case-insensitive, users are not (RFC 3261 §19.1.4).
        ("bob@ACME.Example", "bob@acme.example", "sip:bob@acme.example"),
        ("Bob@acme.example", None, None),
        ("SALES-DESK@acme.example", None, None),
        # beta declares no number forms: only the exact alias.
        ("+15551230101@beta.example", "carol@beta.example", "sip:+15551230101@beta.example"),
        ("15551230101@beta.example", None, None),
        # The same number in two domains: each domain's own account.
        ("101@beta.example", "101@beta.example", "sip:101@beta.example"),
        # ;user=phone: a telephone-subscriber, visual separators and parameters dropped.
        (
            "+1-555-123-0101@acme.example;user=phone",
            "alice@acme.example",
            "sip:+1-555-123-0101@acme.example;user=phone",
        ),
        (
            "+1(555)1230101;phone-context=beta.example@acme.example;user=phone",
            "alice@acme.example",
            "sip:+1(555)1230101;phone-context=beta.example@acme.example;user=phone",
        ),
        ("555.0102@acme.example;user=phone", "bob@acme.example", "sip:555.0102@acme.example;user=phone"),
        # Without user=phone, separators are part of the name.
        ("555.0102@acme.example", None, None),
        # Unknown users.
        ("nobody@acme.example", None, None),
        ("@acme.example", None, None),
        ("+@acme.example", None, None),
        # A directory answer from another domain is not believed.
        ("rogue@beta.example", None, None),
    ],
)
def test_callee_is_the_account_the_request_uri_resolves_to(ruri: str, callee: str | None, entity: str | None) -> None:
    resolved = resolve(facts(ruri), DIRECTORY, RULES)
    assert resolved.callee == callee
    assert resolved.entity == entity
    assert resolved.caller == "alice@acme.example"


@pytest.mark.parametrize(
    ("ruri", "domain"),
    [
        ("bob@acme.example", "acme.example"),
        ("nobody@beta.example", "beta.example"),
        # The server's address is not a domain (nor is any IP literal).
        ("bob@192.0.2.10", None),
        ("bob@[2001:db8::1]", None),
        ("bob@2001:db8::1", None),
        # Another provider, look-alikes and sub-domains are not served here.
        ("bob@evil.example", None),
        ("bob@acme.example.evil.example", None),
        ("bob@sub.acme.example", None),
        ("bob@acme.example.", None),
        ("bob@", None),
    ],
)
def test_the_request_uri_domain_must_be_served(ruri: str, domain: str | None) -> None:
    resolved = resolve(facts(ruri), DIRECTORY, RULES)
    assert resolved.callee_domain == domain
    if domain is None:
        assert resolved == Identities("alice@acme.example", None, None, None)


@pytest.mark.parametrize(
    ("auth", "caller"),
    [
        ("alice@acme.example", "alice@acme.example"),
        ("alice@ACME.example", "alice@acme.example"),
        ("carol@beta.example", "carol@beta.example"),
        # An alias as digest username authenticates nobody (decision: see identity module).
        ("101@acme.example", None),
        ("sales-desk@acme.example", None),
        # An account of another domain under this realm, or an unserved realm.
        ("carol@acme.example", None),
        ("alice@evil.example", None),
        ("alice@192.0.2.10", None),
        ("Alice@acme.example", None),
        (None, None),
    ],
)
def test_caller_is_the_account_that_authenticated(auth: str | None, caller: str | None) -> None:
    assert resolve(facts("bob@acme.example", auth), DIRECTORY, RULES).caller == caller


def test_an_empty_username_authenticates_nobody() -> None:
    request = RequestFacts(auth_user="", auth_realm="acme.example", ruri_user="bob", ruri_host="acme.example")
    assert resolve(request, DIRECTORY, RULES).caller is None


@pytest.mark.parametrize(
    "headers",
    [
        {"from_uri": "sip:anonymous@anonymous.invalid", "display": "Anonymous"},
        {"from_uri": "sip:carol@beta.example", "pai": "<sip:carol@beta.example>"},
        {"pai": "<sip:+15551230101@beta.example>", "display": "Carol"},
        {"to_uri": "sip:dave@gamma.example"},
        {"to_uri": "sip:201@gamma.example", "from_uri": "sip:201@gamma.example"},
        {"pai": "<tel:+15551230101>", "from_uri": "sip:101@acme.example", "display": '"bob"'},
    ],
)
def test_from_to_pai_and_display_change_nothing(headers: dict[str, str]) -> None:
    for ruri in ("101@acme.example", "bob@192.0.2.10", "nobody@acme.example", "201@gamma.example"):
        for auth in ("alice@acme.example", "carol@beta.example", None):
            plain = facts(ruri, auth)
            assert resolve(replace(plain, **headers), DIRECTORY, RULES) == resolve(plain, DIRECTORY, RULES)


# Hostile tenant (issue 7 §4): each row one attempt; the expected answer says nothing
# more than a refusal of the same kind for an account that does not exist.
@pytest.mark.parametrize(
    ("attempt", "auth", "ruri", "status", "reason"),
    [
        ("own domain, known", "alice@acme.example", "sales-desk@acme.example", None, None),
        ("own domain, unknown", "alice@acme.example", "nobody@acme.example", 404, NOT_FOUND),
        ("callable domain, known", "alice@acme.example", "carol@beta.example", None, None),
        ("callable domain, unknown", "alice@acme.example", "nobody@beta.example", 404, NOT_FOUND),
        ("domain that refuses us, known", "alice@acme.example", "dave@gamma.example", 403, FORBIDDEN),
        ("domain that refuses us, known alias", "alice@acme.example", "201@gamma.example", 403, FORBIDDEN),
        ("domain that refuses us, unknown", "alice@acme.example", "nobody@gamma.example", 403, FORBIDDEN),
        ("domain we may not call, known", "dave@gamma.example", "alice@acme.example", 403, FORBIDDEN),
        ("domain we may not call, unknown", "dave@gamma.example", "nobody@acme.example", 403, FORBIDDEN),
        ("beta's alias that looks like acme's number", "carol@beta.example", "+15551230101@beta.example", None, None),
        ("acme's number from gamma", "dave@gamma.example", "+15551230101@acme.example", 403, FORBIDDEN),
        (
            "acme's number with gamma's phone-context",
            "dave@gamma.example",
            "+15551230101;phone-context=gamma.example@acme.example;user=phone",
            403,
            FORBIDDEN,
        ),
        (
            "other domain packed in the user part",
            "dave@gamma.example",
            "alice@acme.example@gamma.example",
            404,
            NOT_FOUND,
        ),
        ("escaped user@host form", "dave@gamma.example", "alice%40acme.example@gamma.example", 404, NOT_FOUND),
        ("the server's IP as host", "dave@gamma.example", "alice@192.0.2.10", 404, DOMAIN_NOT_SERVED),
        ("another provider's domain", "alice@acme.example", "bob@evil.example", 404, DOMAIN_NOT_SERVED),
        ("an alias as username", "101@acme.example", "bob@acme.example", 403, FORBIDDEN),
        ("not authenticated", None, "bob@acme.example", 403, FORBIDDEN),
    ],
)
def test_hostile_requests_get_no_existence_oracle(
    attempt: str, auth: str | None, ruri: str, status: int | None, reason: str | None
) -> None:
    resolved = resolve(facts(ruri, auth), DIRECTORY, RULES)
    if status is None:
        check_reach(resolved, RULES)
        assert resolved.callee is not None, attempt
        return
    with pytest.raises(SipError) as refused:
        check_reach(resolved, RULES)
    assert (refused.value.status, refused.value.reason, refused.value.headers) == (status, reason, {}), attempt


def test_a_refusal_across_domains_is_the_same_for_known_and_unknown_users() -> None:
    answers = set()
    for user in ("dave", "201", "nobody", "+15551230101", "Dave"):
        with pytest.raises(SipError) as refused:
            check_reach(resolve(facts(f"{user}@gamma.example"), DIRECTORY, RULES), RULES)
        answers.add((refused.value.status, refused.value.reason))
    assert answers == {(403, FORBIDDEN)}


def test_an_ambiguous_number_form_resolves_to_nobody() -> None:
    # Two accounts own two forms of one number (a provisioning conflict): no guess.
    directory = MappingDirectory(
        accounts=frozenset({"alice@acme.example", "bob@acme.example"}),
        aliases={"+15550001@acme.example": "alice@acme.example", "05550001@acme.example": "bob@acme.example"},
    )
    assert resolve(facts("15550001@acme.example"), directory, RULES).callee is None
    # The exact form still names its account.
    assert resolve(facts("+15550001@acme.example"), directory, RULES).callee == "alice@acme.example"
    assert resolve(facts("05550001@acme.example"), directory, RULES).callee == "bob@acme.example"


@pytest.mark.parametrize(
    ("user", "param", "expected"),
    [
        ("101", "", "101"),
        ("+1-555-0101", "", "+1-555-0101"),
        ("+1-555-0101", "phone", "+15550101"),
        ("+1-555-0101", "PHONE", "+15550101"),
        ("5550101;isub=12", "phone", "5550101"),
        ("(555) 0101", "phone", "555 0101"),
        ("", "", None),
        ("a@b", "", None),
        ("-.()", "phone", None),
    ],
)
def test_dialled_user(user: str, param: str, expected: str | None) -> None:
    assert dialled_user(user, param) == expected


_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
_RURIS = st.sampled_from(
    [
        "101@acme.example",
        "+15551230101@acme.example",
        "15551230101@beta.example",
        "dave@gamma.example",
        "alice@192.0.2.10",
        "nobody@acme.example",
        "555-0102@acme.example;user=phone",
        "rogue@beta.example",
    ]
)
_AUTHS = st.sampled_from(["alice@acme.example", "carol@beta.example", "101@acme.example", None])


@given(_RURIS, _AUTHS, _TEXT, _TEXT, _TEXT, _TEXT)
def test_from_to_pai_and_display_never_change_resolution(
    ruri: str, auth: str | None, from_uri: str, to_uri: str, pai: str, display: str
) -> None:
    plain = facts(ruri, auth)
    games = replace(plain, from_uri=from_uri, to_uri=to_uri, pai=pai, display=display)
    assert resolve(games, DIRECTORY, RULES) == resolve(plain, DIRECTORY, RULES)


@given(st.text(alphabet="+0123456789-.()abc@;=", max_size=20), st.sampled_from(["", "phone"]), _RURIS)
def test_a_callee_is_always_in_the_request_uri_domain(user: str, param: str, ruri: str) -> None:
    host = ruri.partition(";")[0].rpartition("@")[2]
    resolved = resolve(RequestFacts("alice", "acme.example", user, host, param), DIRECTORY, RULES)
    if resolved.callee is not None:
        assert resolved.callee.rpartition("@")[2] == resolved.callee_domain == host.lower()


@given(st.sampled_from(["+15551230101", "15551230101", "05551230101"]), st.sampled_from(["", "phone"]))
def test_equivalent_number_forms_resolve_to_the_same_account(number: str, param: str) -> None:
    resolved = resolve(RequestFacts("alice", "acme.example", number, "acme.example", param), DIRECTORY, RULES)
    assert resolved.callee == "alice@acme.example"


@pytest.mark.parametrize(
    ("auth", "user", "callee"),
    [
        # A phone set up with the server's IP dials within its own domain, whatever the IP.
        ("alice@acme.example", "sales-desk", "bob@acme.example"),
        ("carol@beta.example", "+15551230101", "carol@beta.example"),
        ("carol@beta.example", "bob", None),  # bob is acme's: not reached through beta
        (None, "bob", None),  # nobody authenticated: no domain at all
    ],
)
def test_the_server_address_as_host_is_the_callers_own_domain(auth: str | None, user: str, callee: str | None) -> None:
    request = replace(facts(f"{user}@192.0.2.10", auth), ruri_is_us=True)
    found = resolve(request, DIRECTORY, RULES)
    assert found.callee == callee
    if auth is None:
        assert found.callee_domain is None
    else:
        assert found.callee_domain == auth.rpartition("@")[2]
        assert found.entity == (None if callee is None else f"sip:{user}@{found.callee_domain}")


def test_another_ip_address_is_no_domain_even_for_an_authenticated_caller() -> None:
    found = resolve(facts("bob@192.0.2.10"), DIRECTORY, RULES)
    assert (found.callee_domain, found.callee) == (None, None)


@pytest.mark.parametrize(
    ("user", "host", "privacy", "expected"),
    [
        ("anonymous", "anonymous.invalid", "", True),
        ("Anonymous", "anonymous.invalid", "", True),
        ("anonymous", "acme.example", "", True),
        ("someone", "anonymous.invalid", "", True),
        ("alice", "acme.example", "", False),
        ("alice", "acme.example", "none", False),
        ("alice", "acme.example", "id", True),
        ("alice", "acme.example", "user; critical", True),
        ("alice", "acme.example", "header", True),
        ("alice", "acme.example", "session", False),
        ("", "", "", False),
    ],
)
def test_withheld_identity(user: str, host: str, privacy: str, expected: bool) -> None:
    assert withheld(user, host, privacy) is expected


@pytest.mark.parametrize(
    ("hosts", "ruri_is_us", "expected"),
    [
        (("acme.example", "", "beta.example"), False, ["acme.example", "beta.example"]),
        (("anonymous.invalid", "acme.example", "beta.example"), False,
         ["anonymous.invalid", "acme.example", "beta.example"]),
        (("acme.example", "", "192.0.2.10"), True, ["acme.example"]),  # our address names no realm
        (("", "", ""), False, []),
    ],
)
def test_realm_candidates(hosts: tuple[str, str, str], ruri_is_us: bool, expected: list[str]) -> None:
    assert realm_candidates(*hosts, ruri_is_us) == expected


def test_the_asserted_identity_is_the_authenticated_account_unless_withheld() -> None:
    assert asserted_identity("alice@acme.example", caller_withheld=False) == "<sip:alice@acme.example>"
    assert asserted_identity("alice@acme.example", caller_withheld=True) is None
