"""The directory's names, domain rules and bulk import lines (issue 7), without a store."""

from __future__ import annotations

import pytest

from statestore import keys
from statestore.domain import directory
from statestore.domain.directory import (
    MAX_ALIASES,
    AccountEntry,
    DirectoryError,
    Found,
    NameTaken,
    UnknownAccount,
    merged_record,
    rules_from_record,
    rules_to_record,
)
from statestore.domain.policy import DomainRules, NumberRule

AOR = "alice@example.com"


@pytest.mark.parametrize(
    "name", ["alice", "101", "+15551230101", "sales-desk", "a.b_c", "O'Brien", "x" * directory.MAX_USER]
)
def test_valid_user_parts(name: str) -> None:
    assert directory.user(name) == name
    assert directory.alias(name) == name


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("", "empty"),
        ("a/b", "character"),
        ("a@b", "character"),
        ("a b", "character"),
        ("101;user=phone", "character"),
        ("a?b", "character"),
        ("a,b", "character"),
        ("a%40b", "character"),
        ("bj\u00f6rn", "character"),
        ("x" * (directory.MAX_USER + 1), "longer"),
    ],
)
def test_invalid_user_parts(name: str, says: str) -> None:
    with pytest.raises(DirectoryError, match=says):
        directory.alias(name)
    with pytest.raises(DirectoryError, match=says):
        directory.user(name)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("example.com", "example.com"), ("Example.COM", "example.com"), ("pbx-1.tenant.example", "pbx-1.tenant.example"),
     ("localhost", "localhost"), ("192.0.2.10", "192.0.2.10")],
)
def test_valid_domains(name: str, expected: str) -> None:
    assert directory.domain(name) == expected


@pytest.mark.parametrize(
    "name",
    ["", "example..com", ".example.com", "example.com.", "-a.example", "a-.example", "exa_mple.com", "a/b",
     "a@b", "a b.com", "x" * 64 + ".com", ("a" * 60 + ".") * 5],
)
def test_invalid_domains(name: str) -> None:
    with pytest.raises(DirectoryError, match="domain"):
        directory.domain(name)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("alice@Example.com", ("alice", "example.com")), ("+1555@example.com", ("+1555", "example.com"))],
)
def test_aor(text: str, expected: tuple[str, str]) -> None:
    assert directory.aor(text) == expected


@pytest.mark.parametrize("text", ["alice", "@example.com", "alice@", "al/ice@example.com", "alice@exa mple.com"])
def test_bad_aor(text: str) -> None:
    with pytest.raises(DirectoryError):
        directory.aor(text)


def test_aliases_are_unique_and_not_the_account_itself() -> None:
    assert directory.aliases(["101", "102", "101"], "alice") == ["101", "102"]
    with pytest.raises(DirectoryError, match="own user"):
        directory.aliases(["alice"], "alice")
    with pytest.raises(DirectoryError, match="more than"):
        directory.aliases([str(n) for n in range(MAX_ALIASES + 1)], "alice")


A = "a.example"


def rules(may_call: tuple[str, ...] = (), accept_from: tuple[str, ...] | None = None,
          numbers: NumberRule | None = None) -> DomainRules:
    accepts = None if accept_from is None else frozenset(accept_from)
    return DomainRules(A, frozenset(may_call), accepts, numbers or NumberRule())


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"domain": A}, rules()),  # written before rules existed
        ({"domain": A, "may_call": ["b.example"], "accept_from": None}, rules(("b.example",))),
        ({"domain": A, "may_call": [], "accept_from": []}, rules((), ())),
        ({"domain": A, "may_call": ["b.example"], "accept_from": ["c.example"]}, rules(("b.example",), ("c.example",))),
        ({"domain": A, "numbers": {"strip_plus": True, "prefixes": [["0", "+44"], ["", "+1"]]}},
         rules(numbers=NumberRule(True, (("0", "+44"), ("", "+1"))))),
        ({"domain": A, "numbers": {"strip_plus": True}, "zone": "eu-1", "later": {"x": 1}},
         rules(numbers=NumberRule(True))),  # fields of a later version are ignored
    ],
)
def test_domain_rules_read(value: dict[str, object], expected: DomainRules) -> None:
    assert rules_from_record(value) == expected
    assert rules_from_record(rules_to_record(expected)) == expected


def test_domain_rules_record_keeps_its_fields_without_the_domain_itself() -> None:
    record = rules_to_record(rules(("c.example", "b.example"), ("d.example",), NumberRule(True, (("0", "+44"),))))
    assert record == {
        "domain": A,
        "may_call": ["b.example", "c.example"],
        "accept_from": ["d.example"],
        "numbers": {"strip_plus": True, "prefixes": [["0", "+44"]]},
    }
    assert rules_to_record(rules())["accept_from"] is None


def test_domain_rules_checked_lowercased() -> None:
    made = directory.domain_rules("A.example", ["B.example", "a.example", "b.example"], ["C.example"])
    assert made == rules(("b.example",), ("c.example",))
    assert made.may_call == frozenset({A, "b.example"})  # itself implied
    assert directory.domain_rules(A).accept_from is None
    with pytest.raises(DirectoryError, match="domain"):
        directory.domain_rules(A, ["bad_domain"])


def test_domain_rules_with_number_rules() -> None:
    made = directory.domain_rules(A, strip_plus=True, prefixes=["0=+44", "=+1", "0=+44"])
    assert made.numbers == NumberRule(True, (("0", "+44"), ("", "+1")))
    assert "+442071234567" in made.numbers.forms("02071234567")


@pytest.mark.parametrize("text", ["0=+44", "=+1", "+1=", "00=+", "1=11"])
def test_number_prefix(text: str) -> None:
    a, _, b = text.partition("=")
    assert directory.number_prefix(text) == (a, b)


@pytest.mark.parametrize("text", ["0+44", "", "=", "0=0", "a=+1", "0=+4 4", "1=2=3", "+=+", "0=++44"])
def test_malformed_number_prefix(text: str) -> None:
    with pytest.raises(DirectoryError, match="number prefix"):
        directory.number_prefix(text)


NOTHING = Found(None, None, {}, frozenset())
RECORD = {"user": "alice", "domain": "example.com", "ha1": "x", "aliases": ["101"]}


@pytest.mark.parametrize(
    ("entry", "found", "expected"),
    [
        (AccountEntry(AOR, {"user": "alice"}, ("101",)), NOTHING, {"user": "alice", "aliases": ["101"]}),
        (AccountEntry(AOR, None, ("102", "101")), Found(RECORD, None, {"101": AOR}, frozenset()),
         {**RECORD, "aliases": ["101", "102"]}),
        (AccountEntry(AOR, {"user": "alice", "ha1": "new"}, ()), Found(RECORD, None, {}, frozenset()),
         {"user": "alice", "ha1": "new", "aliases": ["101"]}),  # a new password keeps the aliases
    ],
    ids=["new account", "aliases added to a stored one", "password changed"],
)
def test_merged_record(entry: AccountEntry, found: Found, expected: dict[str, object]) -> None:
    assert merged_record(entry, found) == expected


@pytest.mark.parametrize(
    ("entry", "found", "error", "says"),
    [
        (AccountEntry(AOR, None, ("101",)), NOTHING, UnknownAccount, "no account alice@example.com"),
        (AccountEntry(AOR, {}, ("101",)), Found(None, None, {"101": "bob@example.com"}, frozenset()), NameTaken,
         "alias 101@example.com is taken by bob@example.com"),
        (AccountEntry(AOR, {}, ("bob",)), Found(None, None, {}, frozenset({"bob"})), NameTaken,
         "alias bob@example.com is taken by bob@example.com"),
        (AccountEntry(AOR, {}, ()), Found(None, "bob@example.com", {}, frozenset()), NameTaken,
         "alias alice@example.com is taken by bob@example.com"),
    ],
    ids=["unknown account", "alias of another", "another account's user", "own user is another's alias"],
)
def test_merged_record_refuses(entry: AccountEntry, found: Found, error: type[Exception], says: str) -> None:
    with pytest.raises(error, match=says):
        merged_record(entry, found)


def test_import_csv_and_json_lines() -> None:
    lines = [
        "# comment", "", "alice@Example.com,pw1,101;+15551230101", "bob@example.com,pw2",
        '{"account": "carol@example.com", "password": "pw3", "aliases": ["sales-desk"]}',
        '"dave@example.com","pw,with,commas",',
    ]
    entries = directory.import_entries(lines)
    assert [(e.aor, e.password, e.aliases) for e in entries] == [
        ("alice@example.com", "pw1", ("101", "+15551230101")),
        ("bob@example.com", "pw2", ()),
        ("carol@example.com", "pw3", ("sales-desk",)),
        ("dave@example.com", "pw,with,commas", ()),
    ]


@pytest.mark.parametrize(
    ("lines", "says"),
    [
        (["alice@example.com"], "line 1: a CSV line"),
        (["alice@example.com,"], "line 1: an account"),
        (["alice@exa_mple.com,pw"], "line 1: domain"),
        (["ok@example.com,pw", "bad/user@example.com,pw,1"], "line 2: user"),
        (["alice@example.com,pw,10 1"], "line 1: alias"),
        (["{not json"], "line 1: not JSON"),
        (['{"account": "a@example.com", "password": "p", "aliases": "101"}'], "list of strings"),
        (["a@example.com,p", "a@example.com,q"], "line 2: account a@example.com is listed on line 1"),
        (["a@example.com,p,101", "b@example.com,q,101"], "line 2: 101@example.com is a@example.com's"),
        (["a@example.com,p,b", "b@example.com,q"], "line 2: b@example.com is a@example.com's"),
    ],
)
def test_import_refuses_the_whole_file(lines: list[str], says: str) -> None:
    with pytest.raises(DirectoryError, match=says):
        directory.import_entries(lines)


def test_alias_keys() -> None:
    assert keys.alias("example.com", "101") == "/blf/aliases/example.com/101"
    assert keys.alias("example.com", "101").startswith(keys.aliases_in("example.com"))
    assert keys.alias("example.com.au", "101").startswith(keys.aliases_in("example.com")) is False
    assert keys.parse(keys.alias("example.com", "+1555")) == keys.ParsedKey("aliases", "+1555", "example.com")
