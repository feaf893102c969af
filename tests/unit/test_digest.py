"""Digest rules (RFC 7616, RFC 3261 §22): nonces, credentials parsing, responses, nonce counts."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statestore.domain import digest
from statestore.domain.digest import Credentials, DigestPolicy, NonceStatus, Problem
from statestore.domain.model import Account

NOW = 1_800_000_000.0
RANDOM = bytes(range(12))
KS1 = DigestPolicy(secret=b"cluster-secret", instance="ks1", algorithms=("SHA-256", "MD5"))
KS2 = DigestPolicy(secret=b"cluster-secret", instance="ks2")

# RFC 7616 §3.9.1: the same request answered with SHA-256 and with MD5.
RFC_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC_CREDENTIALS = Credentials(
    username="Mufasa", realm="http-auth@example.org", nonce=RFC_NONCE, uri="/dir/index.html",
    response="", algorithm="SHA-256", qop="auth", nc="00000001",
    cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS",
)
RFC_SHA256 = "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
RFC_MD5 = "8ca523f5e9506fed4657c9700eebdbec"


@pytest.mark.parametrize(("algorithm", "response"), [("SHA-256", RFC_SHA256), ("MD5", RFC_MD5)])
def test_rfc7616_worked_examples(algorithm, response):
    ha1 = digest.ha1(algorithm, "Mufasa", "http-auth@example.org", "Circle of Life")
    credentials = replace(RFC_CREDENTIALS, algorithm=algorithm, response=response)
    assert digest.expected_response(credentials, ha1, "GET") == response
    assert digest.response_matches(credentials, ha1, "GET")
    assert digest.response_matches(replace(credentials, response=response.upper()), ha1, "GET")
    assert not digest.response_matches(credentials, ha1, "POST")
    assert not digest.response_matches(replace(credentials, nc="00000002"), ha1, "GET")
    assert not digest.response_matches(credentials, "", "GET")


def test_rfc7616_example_header_parses():
    value = (
        'Digest username="Mufasa",\r\n realm="http-auth@example.org",\r\n uri="/dir/index.html",\r\n'
        ' algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001,'
        ' cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth,'
        f' response="{RFC_SHA256}", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    ).replace("\r\n", "")
    assert digest.parse_credentials(value) == replace(RFC_CREDENTIALS, response=RFC_SHA256)


def test_quoted_strings_keep_commas_equals_and_escapes():
    value = r'Digest username="a\"b, c=d", realm="x.org", nonce="n", uri="sip:x.org", response="ab",qop="auth"'
    parsed = digest.parse_credentials(value)
    assert parsed is not None
    assert parsed.username == 'a"b, c=d' and parsed.qop == "auth" and parsed.algorithm == "MD5"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Basic dXNlcjpwYXNz",
        "Digest",
        'Digest username="u", realm="r", nonce="n", uri="sip:r"',  # no response
        'Digest username="u", realm="r", nonce="n", uri="sip:r", response=""',
        'Digest username="u, realm="r", nonce="n", uri="sip:r", response="a"',  # unterminated quote
        'Digest username="u" realm="r", nonce="n", uri="sip:r", response="a"',  # missing comma
        'Digest username="u", username="v", realm="r", nonce="n", uri="sip:r", response="a"',
        'Digest username="u", realm="r", nonce="n", uri="sip:r", response="a", =x',
        'Digest username="u\r\nVia: x", realm="r", nonce="n", uri="sip:r", response="a"',
        'Digest username="' + "u" * 5000 + '", realm="r", nonce="n", uri="sip:r", response="a"',
    ],
)
def test_malformed_credentials_are_none(value):
    assert digest.parse_credentials(value) is None


@given(st.text(max_size=300))
def test_any_text_parses_or_is_none_never_raises(text):
    parsed = digest.parse_credentials("Digest " + text)
    if parsed is not None:
        digest.problem(parsed, digest.DEFAULT_ALGORITHMS, "sip:example.com")
        digest.check_nonce(KS1, parsed.nonce, NOW)
        assert isinstance(digest.response_matches(parsed, "00" * 16, "REGISTER"), bool)


def test_non_ascii_values_are_handled():
    value = 'Digest username="zoë", realm="x.org", nonce="nöñce", uri="sip:x.org", response="ä", qop=auth'
    parsed = digest.parse_credentials(value)
    assert parsed is not None and parsed.username == "zoë"
    assert digest.check_nonce(KS1, parsed.nonce, NOW) is NonceStatus.FORGED
    assert not digest.response_matches(parsed, "00" * 16, "REGISTER")


def test_nonce_is_urlsafe_unpadded_and_valid_where_issued():
    nonce = digest.mint_nonce(KS1, NOW, RANDOM)
    assert "=" not in nonce and "+" not in nonce and "/" not in nonce
    assert digest.check_nonce(KS1, nonce, NOW) is NonceStatus.VALID
    assert digest.check_nonce(KS1, nonce, NOW + 299) is NonceStatus.VALID
    assert digest.mint_nonce(KS1, NOW, bytes(12)) != nonce


@pytest.mark.parametrize(
    ("checked_by", "at", "status"),
    [
        (KS1, NOW + 300, NonceStatus.STALE),  # expired: lifetime 300 s
        (KS2, NOW, NonceStatus.STALE),  # another instance's nonce
        (replace(KS1, lifetime=10), NOW + 11, NonceStatus.STALE),
        (KS1, NOW - 5, NonceStatus.STALE),  # from the future
        (replace(KS1, secret=b"other"), NOW, NonceStatus.FORGED),
    ],
)
def test_nonce_outside_its_issuer_or_lifetime(checked_by, at, status):
    assert digest.check_nonce(checked_by, digest.mint_nonce(KS1, NOW, RANDOM), at) is status


def test_damaged_or_foreign_nonces_are_forged():
    nonce = digest.mint_nonce(KS1, NOW, RANDOM)
    flipped = ("A" if nonce[3] != "A" else "B").join((nonce[:3], nonce[4:]))
    for bad in (flipped, nonce[:-4], "", "!!!", "AAAA", "ñ" * 10, nonce + "x" * 600, RFC_NONCE):
        assert digest.check_nonce(KS1, bad, NOW) is NonceStatus.FORGED, bad


def test_each_nonce_count_is_accepted_once_in_any_order_within_the_window():
    accepted = digest.nonce_count_accepted
    first = accepted(1, digest.NonceCounts())
    assert first == digest.NonceCounts(1, 0)
    assert accepted(1, first) is None  # a replay
    assert accepted(0, digest.NonceCounts()) is None
    later = accepted(5, first)
    assert later is not None and later.highest == 5
    overtaken = accepted(3, later)  # taken after 5, sent before it: once
    assert overtaken is not None and accepted(3, overtaken) is None
    assert accepted(1, later) is None  # 1 was used already


def test_nonce_count_is_eight_hex_digits():
    assert replace(RFC_CREDENTIALS, nc="0000000a").nonce_count == 10
    assert replace(RFC_CREDENTIALS, nc="ffffffff").nonce_count == 0xFFFFFFFF
    for bad in ("1", "000000001", "0000000g", ""):
        assert replace(RFC_CREDENTIALS, nc=bad).nonce_count == 0


def sip_credentials(**change: str) -> Credentials:
    base = Credentials(
        username="alice", realm="example.com", nonce="n", uri="sip:example.com", response="00",
        algorithm="SHA-256", qop="auth", nc="00000001", cnonce="c",
    )
    return replace(base, **change)


@pytest.mark.parametrize(
    ("change", "found"),
    [
        ({}, None),
        ({"qop": "AUTH"}, None),
        ({"algorithm": "md5"}, None),
        ({"uri": "SIP:EXAMPLE.COM"}, None),
        ({"qop": ""}, Problem.QOP),  # RFC 2069 answer
        ({"qop": "auth-int"}, Problem.QOP),
        ({"nc": ""}, Problem.QOP),
        ({"nc": "1"}, Problem.QOP),
        ({"cnonce": ""}, Problem.QOP),
        ({"algorithm": "MD5-sess"}, Problem.ALGORITHM),
        ({"algorithm": "SHA-512-256"}, Problem.ALGORITHM),
        ({"uri": "sip:other.example"}, Problem.URI),
        ({"uri": "sip:Bob@example.com"}, Problem.URI),
    ],
)
def test_credentials_problems(change, found):
    assert digest.problem(sip_credentials(**change), digest.SUPPORTED_ALGORITHMS, "sip:example.com") is found


def test_only_offered_algorithms_are_accepted():
    assert digest.DEFAULT_ALGORITHMS == ("MD5",)
    assert digest.problem(sip_credentials(), ("MD5",), "sip:example.com") is Problem.ALGORITHM


def test_uri_comparison_user_is_case_sensitive_host_is_not():
    assert digest.same_uri("sip:bob@Example.COM;transport=tcp", "sip:bob@example.com;transport=tcp")
    assert not digest.same_uri("sip:Bob@example.com", "sip:bob@example.com")
    assert not digest.same_uri("sip:bob@example.com", "sip:bob@example.com:5060")


def test_challenges_one_per_algorithm_in_preference_order():
    values = digest.challenges("example.com", "NONCE", ("SHA-256", "MD5"), stale=False)
    assert values == [
        'Digest realm="example.com", nonce="NONCE", qop="auth", algorithm=SHA-256',
        'Digest realm="example.com", nonce="NONCE", qop="auth", algorithm=MD5',
    ]
    assert all(v.endswith(", stale=true") for v in digest.challenges("r", "N", ("MD5",), stale=True))


def test_challenge_realm_cannot_inject():
    (value,) = digest.challenges('ev"il\r\nVia: x', "N", ("MD5",), stale=False)
    assert "\r" not in value and "\n" not in value and 'realm="ev\\"ilVia: x"' in value


def test_algorithms_setting():
    assert digest.parse_algorithms("SHA-256,MD5") == ("SHA-256", "MD5")
    assert digest.parse_algorithms(" md5 , sha-256, MD5") == ("MD5", "SHA-256")
    for bad in ("", "MD5-sess", "SHA-512-256,MD5"):
        with pytest.raises(ValueError):
            digest.parse_algorithms(bad)


def test_account_ha1s():
    account = Account.from_dict({"user": "alice", "domain": "example.com", "ha1": "m"})
    assert account.ha1_sha256 == "" and account.ha1_for("MD5") == "m" and account.ha1_for("SHA-256") == ""
    both = Account("alice", "example.com", "m", "s")
    assert Account.from_dict(both.to_dict()) == both and both.ha1_for("SHA-256") == "s"
    assert both.ha1_for("MD5-sess") == ""


def test_full_round_with_a_minted_nonce():
    nonce = digest.mint_nonce(KS1, NOW, RANDOM)
    ha1 = digest.ha1("SHA-256", "alice", "example.com", "pw")
    unsigned = sip_credentials(nonce=nonce, uri="sip:example.com")
    signed = replace(unsigned, response=digest.expected_response(unsigned, ha1, "REGISTER"))
    header = (
        f'Digest username="alice", realm="example.com", nonce="{nonce}", uri="sip:example.com", '
        f'response="{signed.response}", algorithm=SHA-256, qop=auth, nc=00000001, cnonce="c"'
    )
    parsed = digest.parse_credentials(header)
    assert parsed == signed
    assert digest.problem(parsed, KS1.algorithms, "sip:example.com") is None
    assert digest.check_nonce(KS1, parsed.nonce, NOW + 1) is NonceStatus.VALID
    assert digest.response_matches(parsed, ha1, "REGISTER")
    assert not digest.response_matches(parsed, digest.ha1("SHA-256", "alice", "example.com", "wrong"), "REGISTER")


# sipp's [authentication] puts sip:<server ip>:<port> in the digest uri (issue 12, finding 9).
SERVICE = digest.Service(
    addresses=frozenset({"127.0.0.1:5071", "10.0.0.2:5060", "[2001:db8::1]:5072"}),
    serves=lambda host: host in ("example.com", "tenant.example"),
)


@pytest.mark.parametrize(
    ("uri", "names"),
    [
        ("sip:127.0.0.1:5071", True),  # sipp: this instance
        ("sip:10.0.0.2", True),  # another live instance, default port 5060
        ("sip:10.0.0.2:5060;transport=udp", True),
        ("sip:[2001:DB8::1]:5072", True),
        ("SIP:Example.COM", True),  # a served domain, any port
        ("sip:example.com:5099", True),
        ("sips:tenant.example", True),
        ("sip:127.0.0.1:5072", False),  # no instance there
        ("sip:127.0.0.1", False),  # 5060: no instance there
        ("sips:127.0.0.1:5071", True),
        ("sips:10.0.0.2", False),  # sips: defaults to 5061
        ("sip:victim.example", False),  # not served
        ("sip:bob@example.com", False),  # a user part names a user, not the service
        ("sip:example.com?subject=x", False),
        ("tel:+15551234", False),
        ("http://example.com", False),
        ("sip:", False),
        ("sip:127.0.0.1:99999999", False),
    ],
)
def test_a_digest_uri_may_name_this_service(uri, names):
    assert digest.names_service(uri, SERVICE) is names


@pytest.mark.parametrize(
    ("uri", "found"),
    [
        ("sip:example.com", None),  # the Request-URI
        ("sip:127.0.0.1:5071", None),  # sipp's default
        ("sip:other.example", Problem.URI),
        ("sip:Bob@example.com", Problem.URI),
    ],
)
def test_the_digest_uri_is_the_request_uri_or_this_service(uri, found):
    credentials = sip_credentials(uri=uri)
    assert digest.problem(credentials, digest.SUPPORTED_ALGORITHMS, "sip:example.com", SERVICE) is found
    # Without a service, only the Request-URI: the other rules are unchanged.
    expected = None if uri == "sip:example.com" else Problem.URI
    assert digest.problem(credentials, digest.SUPPORTED_ALGORITHMS, "sip:example.com") is expected


def test_a_service_uri_does_not_excuse_other_problems():
    credentials = sip_credentials(uri="sip:127.0.0.1:5071", qop="")
    assert digest.problem(credentials, digest.SUPPORTED_ALGORITHMS, "sip:example.com", SERVICE) is Problem.QOP


@given(st.permutations(list(range(1, 41))))
def test_counts_taken_in_any_order_are_each_accepted_once(order: list[int]) -> None:
    seen = digest.NonceCounts()
    for nc in order:
        after = digest.nonce_count_accepted(nc, seen)
        assert after is not None, nc
        assert digest.nonce_count_accepted(nc, after) is None
        seen = digest.NonceCounts.decode(after.encode())


def test_a_count_older_than_the_window_is_refused() -> None:
    seen = digest.nonce_count_accepted(digest.NC_WINDOW + 2, digest.NonceCounts())
    assert seen is not None
    assert digest.nonce_count_accepted(1, seen) is None
    assert digest.nonce_count_accepted(2, seen) is not None


def test_a_stored_count_of_the_older_form_reads_as_a_highest_without_window() -> None:
    assert digest.NonceCounts.decode("0000000a") == digest.NonceCounts(10, 0)
    assert digest.NonceCounts.decode("junk") == digest.NonceCounts()
