"""Caps, device replacement and the watcher binding of subscriptions (issue 5, findings 3 and 4)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statestore import codec, keys
from statestore.domain.errors import SipError
from statestore.domain.model import Subscription, WatcherEntry
from statestore.domain.subscription import (
    NO_SUCH_SUBSCRIPTION,
    PRESENTITY_GUARD_SLACK,
    TOO_MANY_FOR_PAIR,
    TOO_MANY_FOR_PRESENTITY,
    TOO_MANY_FOR_WATCHER,
    Reach,
    SubscriptionPolicy,
    admit,
    check_watcher,
    refreshed,
    reindexed,
    same_device,
)
from statestore.mirror import Mirror

NOW = 1_000_000.0
WATCHER = "bob@example.com"
ALICE = "alice@example.com"
CAROL = "carol@example.com"
POLICY = SubscriptionPolicy(max_subs_per_watcher=6, max_subs_per_pair=2, max_subs_per_presentity=10)


def sub(**overrides: Any) -> Subscription:
    base = Subscription(
        sub_id="new", event="dialog", presentity=ALICE, entity=f"sip:{ALICE}", watcher=WATCHER,
        watcher_contact="sip:bob@10.0.0.2:5060", call_id="c", local_tag="lt", remote_tag="rt",
        local_uri=f"sip:{ALICE}", remote_uri=f"sip:{WATCHER}", route_set=(), expires_at=NOW + 300,
        owner="ks1", received="udp:192.0.2.7:5060", flow_instance="ks1",
    )
    return replace(base, **overrides)


def entry(
    sub_id: str, presentity: str = ALICE, contact: str = "", received: str = "", event: str = "dialog",
    entity: str = "",
) -> WatcherEntry:
    """An entry of another device by default: its own Contact and source."""
    contact = contact or f"sip:bob@10.0.0.{len(sub_id) + 50}"
    return WatcherEntry(sub_id, presentity, event, contact, received, entity or f"sip:{presentity}")


def status_of(excinfo: pytest.ExceptionInfo[SipError]) -> tuple[int, str]:
    return excinfo.value.status, excinfo.value.reason


# --- records ----------------------------------------------------------------------------------


def test_a_subscription_record_without_the_reach_fields_reads_with_defaults() -> None:
    data = sub().to_dict()
    for name in ("received", "flow_instance", "nat"):
        del data[name]
    data["a_field_of_a_newer_version"] = 1
    old = Subscription.from_dict(data)
    assert (old.received, old.flow_instance, old.nat) == ("", "", False)
    assert old == sub(received="", flow_instance="")


def test_reach_fields_survive_the_codec() -> None:
    record = sub(nat=True)
    assert codec.decode_subscription(codec.encode_subscription(record)) == record


def test_watcher_entry_round_trip_and_tolerance() -> None:
    first = WatcherEntry.of(sub())
    assert first == WatcherEntry("new", ALICE, "dialog", "sip:bob@10.0.0.2:5060", "udp:192.0.2.7:5060", f"sip:{ALICE}")
    assert WatcherEntry.from_dict("new", codec.decode(codec.encode(first.to_dict()))) == first
    assert WatcherEntry.from_dict("x", {}) == WatcherEntry("x", "", "", "", "")


# --- the watcher binding (finding 3) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("found", "authenticated"), [(sub(), "mallory@example.com"), (None, "mallory@example.com"), (None, WATCHER)]
)
def test_only_the_watcher_may_refresh_or_end_its_subscription(found, authenticated) -> None:
    """Someone else's subscription answers as a missing one: no oracle (issue 12, finding 4)."""
    assert check_watcher(sub(), WATCHER) == sub()
    with pytest.raises(SipError) as excinfo:
        check_watcher(found, authenticated)
    assert status_of(excinfo) == (481, NO_SUCH_SUBSCRIPTION)


def test_an_authenticated_refresh_moves_contact_and_reach() -> None:
    reach = Reach("tcp:198.51.100.9:40000", "ks2", True)
    renewed = refreshed(sub(notify_timeouts=2), 600, NOW, "sip:bob@198.51.100.9:40000;transport=tcp", reach)
    assert renewed == sub(
        expires_at=NOW + 600, watcher_contact="sip:bob@198.51.100.9:40000;transport=tcp",
        received="tcp:198.51.100.9:40000", flow_instance="ks2", nat=True,
    )
    assert reindexed(sub(), renewed)


def test_a_plain_refresh_does_not_rewrite_the_index() -> None:
    same = Reach("udp:192.0.2.7:5060", "ks2", False)
    renewed = refreshed(sub(), 600, NOW, "sip:bob@10.0.0.2:5060", same)
    assert renewed.flow_instance == "ks2"
    assert not reindexed(sub(), renewed)
    assert not reindexed(sub(), replace(sub(), cseq=9, version=8, last_digest="d"))


# --- same device ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [
        (entry("old", contact="sip:bob@10.0.0.2:5060"), True),
        (entry("old", contact="SIP:bob@10.0.0.2:5060"), True),
        (entry("old", received="udp:192.0.2.7:5060"), True),
        (entry("old", received="udp:192.0.2.7:5061"), False),
        (entry("old", received="tcp:192.0.2.7:5060"), False),
        (entry("old", contact="sip:bob@10.0.0.2:5060", presentity=CAROL), False),
        (entry("old", contact="sip:bob@10.0.0.2:5060", event="presence"), False),
        (entry("new", contact="sip:bob@10.0.0.2:5060"), False),
        (entry("old"), False),
        (entry("old", contact="sip:bob@10.0.0.2:5060", entity="sip:101@example.com"), False),
        (WatcherEntry("old", ALICE, "dialog", "sip:bob@10.0.0.2:5060"), True),
    ],
    ids=["same contact", "contact case", "same source", "other port", "other protocol", "other presentity",
         "other event", "itself (a retransmission)", "another device", "another alias of the account (another key)",
         "an entry from before aliases (the account)"],
)
def test_same_device(candidate: WatcherEntry, expected: bool) -> None:
    assert same_device(candidate, sub()) is expected


def test_an_unknown_source_matches_no_unknown_source() -> None:
    assert not same_device(entry("old", received=""), sub(received=""))


# --- caps (finding 4) ------------------------------------------------------------------------------


def test_a_first_subscription_is_admitted_and_replaces_nothing() -> None:
    admission = admit(sub(), [], 0, POLICY)
    assert admission.replaced == ()


def test_the_same_device_replaces_its_older_subscription_even_at_the_pair_cap() -> None:
    older = entry("old", contact="sip:bob@10.0.0.2:5060")
    admission = admit(sub(), [older, entry("b")], 2, POLICY)
    assert admission.replaced == (older,)


def test_a_retransmission_does_not_count_against_itself() -> None:
    assert admit(sub(), [entry("new", contact="sip:bob@10.0.0.2:5060"), entry("b")], 2, POLICY).replaced == ()


def test_over_the_pair_cap_is_refused() -> None:
    with pytest.raises(SipError) as excinfo:
        admit(sub(), [entry("a"), entry("b")], 2, POLICY)
    assert status_of(excinfo) == (403, TOO_MANY_FOR_PAIR)


def test_the_pair_cap_counts_one_presentity_and_event_only() -> None:
    others = [entry("a"), entry("b", presentity=CAROL), entry("c", event="presence")]
    assert admit(sub(), others, 1, POLICY).replaced == ()


def test_over_the_watcher_cap_is_refused() -> None:
    others = [entry(f"s{i}", presentity=f"p{i}@example.com") for i in range(6)]
    with pytest.raises(SipError) as excinfo:
        admit(sub(), others, 0, POLICY)
    assert status_of(excinfo) == (403, TOO_MANY_FOR_WATCHER)
    assert admit(sub(), others[:5], 0, POLICY).replaced == ()


def test_over_the_presentity_cap_is_refused_unless_a_replacement_frees_a_place() -> None:
    with pytest.raises(SipError) as excinfo:
        admit(sub(), [], 10, POLICY)
    assert status_of(excinfo) == (403, TOO_MANY_FOR_PRESENTITY)
    older = entry("old", received="udp:192.0.2.7:5060")
    assert admit(sub(), [older], 10, POLICY).replaced == (older,)


def test_a_cap_of_zero_is_no_cap() -> None:
    unlimited = SubscriptionPolicy(max_subs_per_watcher=0, max_subs_per_pair=0, max_subs_per_presentity=0)
    others = [entry(f"s{i}") for i in range(1000)]
    admission = admit(sub(), others, 10_000, unlimited)
    assert admission.replaced == () and not admission.guard_presentity


def test_the_presentity_count_is_guarded_only_near_its_cap() -> None:
    policy = SubscriptionPolicy(max_subs_per_presentity=500)
    assert not admit(sub(), [], 500 - PRESENTITY_GUARD_SLACK - 1, policy).guard_presentity
    assert admit(sub(), [], 500 - PRESENTITY_GUARD_SLACK, policy).guard_presentity


def test_defaults_an_operator_would_pick() -> None:
    policy = SubscriptionPolicy()
    assert (policy.max_subs_per_watcher, policy.max_subs_per_pair, policy.max_subs_per_presentity) == (300, 4, 500)


@given(
    pairs=st.lists(st.tuples(st.sampled_from([ALICE, CAROL]), st.integers(0, 3), st.integers(0, 3)), max_size=12),
    count=st.integers(0, 12),
)
def test_admitted_subscriptions_never_exceed_a_cap(pairs: list[tuple[str, int, int]], count: int) -> None:
    """Whatever is stored, what remains after an admission is within every cap."""
    entries = [
        entry(f"s{i}", presentity, contact=f"sip:bob@10.0.1.{c}", received=f"udp:192.0.2.{r}:5060")
        for i, (presentity, c, r) in enumerate(pairs)
    ]
    new = sub(watcher_contact="sip:bob@10.0.1.0", received="udp:192.0.2.0:5060")
    try:
        admission = admit(new, entries, count, POLICY)
    except SipError as error:
        assert error.status == 403
        return
    remaining = [e for e in entries if e not in admission.replaced] + [WatcherEntry.of(new)]
    assert len(remaining) <= POLICY.max_subs_per_watcher
    assert sum(1 for e in remaining if e.presentity == ALICE) <= POLICY.max_subs_per_pair
    assert count - len(admission.replaced) + 1 <= POLICY.max_subs_per_presentity
    assert all(same_device(e, new) for e in admission.replaced)


# --- the notifier's mirror ignores the index ------------------------------------------------------


def test_the_mirror_ignores_index_keys() -> None:
    mirror = Mirror()
    record = sub()
    mirror.load([(keys.sub(record.sub_id), codec.encode_subscription(record), 5)])
    for key, value in (
        (keys.watcher_sub(WATCHER, record.sub_id), codec.encode(WatcherEntry.of(record).to_dict())),
        (keys.presentity_sub(ALICE, record.sub_id), b""),
    ):
        assert mirror.apply(key, value, 6) == set()
        assert mirror.apply(key, None, 7) == set()
    assert mirror.subs == {record.sub_id: (record, 5)}
    mirror.load([(keys.presentity_sub(ALICE, "x"), b"", 8), (keys.watcher_sub(WATCHER, "x"), b"{}", 8)])
    assert mirror.subs == {} and mirror.legs == {} and mirror.bindings == {}
