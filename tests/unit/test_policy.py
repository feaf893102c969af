"""The "could call" rule (issue 7 §3): one function for cross-domain INVITE and SUBSCRIBE."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statestore.domain.policy import (
    DomainRules,
    NumberRule,
    could_call,
    domain_of,
    domain_table,
    may_watch,
)

# acme may call beta and gamma; beta accepts from everyone and may call acme;
# gamma accepts only from beta (and itself); delta was added without --may-call;
# Echo is written in capitals on purpose and may call acme.
RULES = domain_table(
    [
        DomainRules("acme.example", may_call=frozenset({"beta.example", "gamma.example"})),
        DomainRules("beta.example", may_call=frozenset({"acme.example", "gamma.example"})),
        DomainRules("gamma.example", may_call=frozenset({"acme.example"}), accept_from=frozenset({"beta.example"})),
        DomainRules("delta.example"),
        DomainRules("Echo.Example", may_call=frozenset({"ACME.example"})),
    ]
)


@pytest.mark.parametrize(
    ("caller", "callee", "expected"),
    [
        # Same domain: always.
        ("acme.example", "acme.example", True),
        ("delta.example", "delta.example", True),
        ("gamma.example", "gamma.example", True),
        # Outbound allowed, inbound open.
        ("acme.example", "beta.example", True),
        ("beta.example", "acme.example", True),
        ("echo.example", "acme.example", True),
        # Outbound allowed, inbound restricted to someone else.
        ("acme.example", "gamma.example", False),
        # Outbound allowed, inbound restricted to the caller.
        ("beta.example", "gamma.example", True),
        # Inbound open but outbound not allowed (the rule is not symmetric).
        ("acme.example", "echo.example", False),
        ("acme.example", "delta.example", False),
        ("delta.example", "acme.example", False),
        # Inbound would accept but the callee's may_call does not matter for the caller.
        ("gamma.example", "acme.example", True),
        ("gamma.example", "beta.example", False),
        # Unknown domains: never, not even "within" one.
        ("nowhere.example", "acme.example", False),
        ("acme.example", "nowhere.example", False),
        ("nowhere.example", "nowhere.example", False),
        ("", "acme.example", False),
        ("acme.example", "", False),
        ("", "", False),
        # Case-insensitive domains (RFC 3261 §19.1.4).
        ("ACME.example", "Beta.EXAMPLE", True),
        ("Acme.Example", "acme.example", True),
        ("Acme.Example", "GAMMA.example", False),
        ("BETA.example", "gamma.EXAMPLE", True),
        # Look-alikes are other (unknown) domains.
        ("acme.example.", "beta.example", False),
        ("acme.example", "beta.example.evil", False),
        ("sub.acme.example", "acme.example", False),
    ],
)
def test_could_call(caller: str, callee: str, expected: bool) -> None:
    assert could_call(caller, callee, RULES) is expected


@pytest.mark.parametrize(
    ("watcher", "presentity", "expected"),
    [
        ("alice@acme.example", "bob@acme.example", True),
        ("alice@acme.example", "101@beta.example", True),
        ("alice@acme.example", "101@gamma.example", False),
        ("carol@beta.example", "101@gamma.example", True),
        ("dave@delta.example", "alice@acme.example", False),
        ("alice@ACME.example", "bob@Beta.Example", True),
        ("alice@nowhere.example", "bob@acme.example", False),
        # A user part that looks like another domain does not change the domain.
        ("alice@beta.example@acme.example", "bob@delta.example", False),
        ("alice", "bob@acme.example", False),
    ],
)
def test_may_watch_is_could_call_of_the_domains(watcher: str, presentity: str, expected: bool) -> None:
    assert may_watch(watcher, presentity, RULES) is expected
    assert may_watch(watcher, presentity, RULES) is could_call(domain_of(watcher), domain_of(presentity), RULES)


def test_domain_rules_normalise_names_and_include_the_domain_itself() -> None:
    rules = DomainRules("Acme.Example", may_call=frozenset({"BETA.example"}), accept_from=frozenset({"Gamma.example"}))
    assert rules.name == "acme.example"
    assert rules.may_call == {"acme.example", "beta.example"}
    assert rules.accept_from == frozenset({"acme.example", "gamma.example"})
    assert DomainRules("delta.example").may_call == {"delta.example"}
    assert DomainRules("delta.example").accept_from is None


def test_an_empty_accept_from_accepts_only_the_domain_itself() -> None:
    rules = domain_table(
        [DomainRules("a.example", may_call=frozenset({"b.example"})), DomainRules("b.example", accept_from=frozenset())]
    )
    assert not could_call("a.example", "b.example", rules)
    assert could_call("b.example", "b.example", rules)


@pytest.mark.parametrize(
    ("rule", "user", "forms"),
    [
        (NumberRule(), "+15551230101", ("+15551230101",)),
        (NumberRule(strip_plus=True), "+15551230101", ("+15551230101", "15551230101")),
        (NumberRule(strip_plus=True), "15551230101", ("15551230101", "+15551230101")),
        (NumberRule(strip_plus=True), "sales-desk", ("sales-desk",)),
        (NumberRule(strip_plus=True), "101a", ("101a",)),
        (NumberRule(strip_plus=True), "+", ("+",)),
        (NumberRule(prefixes=(("0", "+44"),)), "02071234567", ("02071234567", "+442071234567")),
        (NumberRule(prefixes=(("0", "+44"),)), "+442071234567", ("+442071234567", "02071234567")),
        (
            NumberRule(strip_plus=True, prefixes=(("0", "+44"),)),
            "442071234567",
            # The closure of the declared equivalences, "+0..." included: harmless, as
            # lookups stay in the domain and an exact form wins.
            ("442071234567", "+442071234567", "02071234567", "+02071234567"),
        ),
        (NumberRule(prefixes=(("", "+1"),)), "5551230101", ("5551230101", "+15551230101")),
    ],
)
def test_number_forms(rule: NumberRule, user: str, forms: tuple[str, ...]) -> None:
    assert rule.forms(user) == forms


@pytest.mark.parametrize("pair", [("0", "0"), ("a", "+1"), ("+1", "1+"), ("0",)])
def test_malformed_number_rules_are_refused(pair: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        NumberRule(prefixes=(pair,))  # type: ignore[arg-type]


def test_number_forms_are_bounded() -> None:
    rule = NumberRule(strip_plus=True, prefixes=(("1", "11"), ("", "9"), ("2", "22")))
    forms = rule.forms("12")
    assert forms[0] == "12" and len(forms) <= 16 and len(set(forms)) == len(forms)


_DOMAINS = st.sampled_from(sorted(RULES) + ["nowhere.example", "ACME.EXAMPLE", "Gamma.Example"])


@given(st.sampled_from(sorted(RULES)), st.booleans())
def test_within_a_served_domain_always_true(domain: str, upper: bool) -> None:
    assert could_call(domain.upper() if upper else domain, domain, RULES)


@given(_DOMAINS, _DOMAINS)
def test_across_domains_needs_both_rules(caller: str, callee: str) -> None:
    allowed = could_call(caller, callee, RULES)
    if caller.lower() == callee.lower() or not allowed:
        return
    caller_rules, callee_rules = RULES[caller.lower()], RULES[callee.lower()]
    assert callee.lower() in caller_rules.may_call
    assert callee_rules.accepts(caller)


@given(_DOMAINS, _DOMAINS)
def test_case_never_matters(caller: str, callee: str) -> None:
    assert could_call(caller, callee, RULES) is could_call(caller.swapcase(), callee.upper(), RULES)


@given(st.text(alphabet="+0123456789", min_size=1, max_size=12), st.booleans())
def test_number_forms_are_an_equivalence_under_strip_plus(number: str, strip_plus: bool) -> None:
    rule = NumberRule(strip_plus=strip_plus, prefixes=(("0", "+44"),))
    forms = rule.forms(number)
    assert forms[0] == number
    for form in forms:
        assert number in rule.forms(form)
