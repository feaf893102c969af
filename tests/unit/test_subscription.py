"""RFC 6665 subscription rules: package, Accept, Expires, NOTIFY sequencing and ownership."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statestore.domain.errors import SipError
from statestore.domain.model import Subscription
from statestore.domain.packages import DIALOG, check_accept, event_package
from statestore.domain.subscription import (
    EPOCH_STRIDE,
    MAX_CSEQ,
    REASON_NORESOURCE,
    TERMINATING_NOTIFY_CODES,
    SubscriptionPolicy,
    ended,
    ends_subscription,
    final_reason,
    granted_expires,
    is_expired,
    notify_numbers,
    numbered,
    parse_expires,
    refreshed,
    responsible_instance,
    retry_delay,
    subscription_id,
    subscription_state,
)

NOW = 1_000_000.0
POLICY = SubscriptionPolicy(min_expires=60, max_expires=3600, default_expires=1800)
INSTANCES = ["node-a", "node-b", "node-c"]


def subscription(**overrides: Any) -> Subscription:
    base = Subscription(
        sub_id="sub-1",
        event="dialog",
        presentity="alice@example.com",
        entity="sip:alice@example.com",
        watcher="bob@example.com",
        watcher_contact="sip:bob@10.0.0.2:5060",
        call_id="sub-call",
        local_tag="ltag",
        remote_tag="rtag",
        local_uri="sip:alice@example.com",
        remote_uri="sip:bob@example.com",
        route_set=(),
        expires_at=NOW + 300,
        owner="node-a",
    )
    return replace(base, **overrides)


def error_of(excinfo: pytest.ExceptionInfo[SipError]) -> tuple[int, str, dict[str, str]]:
    return excinfo.value.status, excinfo.value.reason, excinfo.value.headers


# --- event_package ----------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["dialog", "Dialog", "DIALOG", " dialog ", "dialog;id=1", "dialog ; sla"])
def test_event_package_dialog(header: str) -> None:
    assert event_package(header) == DIALOG


@pytest.mark.parametrize("header", [None, "", "dialog-info", "message-summary", ";dialog", "presence.winfo.winfo"])
def test_event_package_unsupported_is_489_with_allow_events(header: str | None) -> None:
    with pytest.raises(SipError) as excinfo:
        event_package(header)
    allowed = "dialog, dialog.winfo, presence, presence.winfo, reg"
    assert error_of(excinfo) == (489, "Bad Event", {"Allow-Events": allowed})


# --- check_accept -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "accept",
    [
        [],
        [""],
        ["application/dialog-info+xml"],
        ["Application/Dialog-Info+XML"],
        ["application/dialog-info+xml;q=0.5"],
        ["application/*"],
        ["*/*"],
        ["application/pidf+xml, application/dialog-info+xml"],
        ["application/pidf+xml", "application/dialog-info+xml"],
    ],
    ids=["absent", "empty", "exact", "case", "params", "application-any", "any", "list", "headers"],
)
def test_check_accept_admits(accept: list[str]) -> None:
    check_accept(accept, DIALOG)


@pytest.mark.parametrize(
    "accept",
    [["application/pidf+xml"], ["text/*"], ["application/pidf+xml", "multipart/related"]],
    ids=["pidf-only", "other-type", "several"],
)
def test_check_accept_without_the_package_body_is_406(accept: list[str]) -> None:
    with pytest.raises(SipError) as excinfo:
        check_accept(accept, DIALOG)
    assert error_of(excinfo) == (406, "Not Acceptable", {"Accept": "application/dialog-info+xml"})


# --- parse_expires ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("  ", None), ("0", 0), ("3600", 3600), (" 60 ", 60), ("007", 7)],
)
def test_parse_expires(value: str | None, expected: int | None) -> None:
    assert parse_expires(value) == expected


@pytest.mark.parametrize(
    "value", ["abc", "-1", "+60", "1.5", "60s", "6 0", "\u00b2", "\u0661\u0662"],
    ids=["letters", "negative", "plus", "fraction", "suffix", "inner-space", "superscript", "arabic-indic"],
)
def test_parse_expires_non_digits_is_400(value: str) -> None:
    with pytest.raises(SipError) as excinfo:
        parse_expires(value)
    assert error_of(excinfo) == (400, "Bad Request - Invalid Expires", {})


@given(st.text(max_size=8))
def test_parse_expires_is_a_number_of_ascii_digits_or_400(value: str) -> None:
    text = value.strip()
    if text == "":
        assert parse_expires(value) is None
    elif text.isascii() and text.isdigit():
        assert parse_expires(value) == int(text)
    else:
        with pytest.raises(SipError) as excinfo:
            parse_expires(value)
        assert excinfo.value.status == 400


# --- granted_expires --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "expected"),
    [(None, 1800), (0, 0), (60, 60), (600, 600), (3600, 3600), (3601, 3600), (86400, 3600)],
    ids=["default", "unsubscribe", "minimum", "within", "maximum", "above", "far-above"],
)
def test_granted_expires(requested: int | None, expected: int) -> None:
    assert granted_expires(requested, POLICY) == expected


@pytest.mark.parametrize("requested", [1, 30, 59])
def test_granted_expires_below_minimum_is_423(requested: int) -> None:
    with pytest.raises(SipError) as excinfo:
        granted_expires(requested, POLICY)
    assert error_of(excinfo) == (423, "Interval Too Brief", {"Min-Expires": "60"})


@given(st.integers(min_value=POLICY.min_expires, max_value=10**9))
def test_granted_expires_is_never_above_the_request_nor_the_maximum(requested: int) -> None:
    granted = granted_expires(requested, POLICY)
    assert POLICY.min_expires <= granted <= requested
    assert granted == min(requested, POLICY.max_expires)


# --- subscription_state -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expires_at", "reason", "expected"),
    [
        (NOW + 300, None, "active;expires=300"),
        (NOW + 299.9, None, "active;expires=299"),
        (NOW, None, "active;expires=0"),
        (NOW - 10, None, "active;expires=0"),
        (NOW + 300, "timeout", "terminated;reason=timeout"),
        (NOW + 300, "noresource", "terminated;reason=noresource"),
    ],
)
def test_subscription_state(expires_at: float, reason: str | None, expected: str) -> None:
    assert subscription_state(subscription(expires_at=expires_at), NOW, reason) == expected


@pytest.mark.parametrize(
    ("expires_at", "expected"), [(NOW + 1, False), (NOW, True), (NOW - 1, True)]
)
def test_is_expired(expires_at: float, expected: bool) -> None:
    assert is_expired(subscription(expires_at=expires_at), NOW) is expected


# --- NOTIFY numbering without a store write (issue 6, finding 1) ----------------------------------


def test_the_first_notify_of_a_new_record_has_cseq_1_and_version_0() -> None:
    assert notify_numbers(subscription(cseq=1, version=0, epoch=7), 7, 0) == (1, 0)


def test_one_sender_steps_by_one() -> None:
    record = subscription(cseq=1, version=0, epoch=7)
    assert [notify_numbers(record, 7, n) for n in range(4)] == [(1, 0), (2, 1), (3, 2), (4, 3)]


def test_a_later_epoch_numbers_above_everything_an_earlier_one_could_send() -> None:
    record = subscription(cseq=1, version=0, epoch=7)
    last_of_epoch_7 = notify_numbers(record, 7, EPOCH_STRIDE - 1)
    first_of_epoch_8 = notify_numbers(record, 8, 0)
    assert last_of_epoch_7 is not None and first_of_epoch_8 is not None
    assert first_of_epoch_8 > last_of_epoch_7
    assert notify_numbers(record, 7, EPOCH_STRIDE) is None  # used up: a new epoch is needed


def test_a_record_from_before_epochs_numbers_above_its_last_notify() -> None:
    stored = {k: v for k, v in subscription(cseq=41, version=40).to_dict().items() if k != "epoch"}
    legacy = Subscription.from_dict(stored)
    numbers = notify_numbers(legacy, 1, 0)
    assert numbers is not None and numbers > (41, 40)


def test_numbers_past_2_to_the_31_end_the_subscription() -> None:
    record = subscription(cseq=1, version=0, epoch=1)
    epochs = (MAX_CSEQ - 1) // EPOCH_STRIDE
    assert notify_numbers(record, 1 + epochs, 0) is not None
    assert notify_numbers(record, 2 + epochs, 0) is None
    assert notify_numbers(record, 0, 0) is None  # an epoch before the record's: never numbered


@given(st.lists(st.tuples(st.integers(1, 3), st.integers(1, 50)), min_size=1, max_size=20))
def test_cseq_and_version_strictly_increase_over_senders_and_epochs(steps: list[tuple[int, int]]) -> None:
    """Each step: a sender `gap` epochs later (a takeover, a restart) sends `count` NOTIFYs."""
    record = subscription(cseq=1, version=0, epoch=3)
    epoch, last = 3 - steps[0][0], (0, -1)
    for gap, count in steps:
        epoch += gap
        for n in range(count):
            numbers = notify_numbers(record, epoch, n)
            assert numbers is not None and numbers > last
            assert numbers[0] - numbers[1] == 1  # version = CSeq - 1 for a new record
            last = numbers


def test_a_numbered_subscription_carries_its_numbers() -> None:
    assert numbered(subscription(cseq=1, version=0, epoch=2), 2, 3) == subscription(cseq=4, version=3, epoch=2)


def test_an_unsubscribe_makes_the_record_due_now() -> None:
    assert ended(subscription(), NOW) == subscription(expires_at=NOW, status_event="timeout")
    assert final_reason(ended(subscription(), NOW)) == "timeout"


def test_a_removed_account_ends_the_subscriptions_to_it_with_noresource() -> None:
    removed = ended(subscription(), NOW, REASON_NORESOURCE)
    assert removed == subscription(expires_at=NOW, termination_reason="noresource", status_event="noresource")
    assert is_expired(removed, NOW)
    assert final_reason(removed) == "noresource"
    assert subscription_state(removed, NOW, final_reason(removed)) == "terminated;reason=noresource"


@pytest.mark.parametrize(("timeouts", "delay"), [(1, 2.0), (2, 4.0), (3, 8.0), (9, 8.0)])
def test_retry_delays_after_notify_timeouts(timeouts: int, delay: float) -> None:
    assert retry_delay(timeouts) == delay


# --- ends_subscription ------------------------------------------------------------------------


@pytest.mark.parametrize("status", [481, 404, 489, 410, 480, 501, 604])
def test_notify_responses_that_end_the_subscription(status: int) -> None:
    assert ends_subscription(status) is True


@pytest.mark.parametrize("status", [200, 202, 408, 500, 503, 486])
def test_notify_responses_that_keep_the_subscription(status: int) -> None:
    assert ends_subscription(status) is False


def test_no_success_ends_a_subscription() -> None:
    assert not any(200 <= status < 300 for status in TERMINATING_NOTIFY_CODES)


# --- subscription_id --------------------------------------------------------------------------


def test_subscription_id_is_stable_and_names_the_whole_dialog() -> None:
    value = subscription_id("call", "rtag", "ltag")
    assert value == subscription_id("call", "rtag", "ltag")
    assert len(value) == 24
    assert len({value, subscription_id("call2", "rtag", "ltag"), subscription_id("call", "ltag", "rtag")}) == 3


# --- responsible_instance ---------------------------------------------------------------------


@pytest.mark.parametrize("live", [["node-a"], ["node-b", "node-a"], ["node-c", "node-b", "node-a"]])
def test_a_live_owner_is_responsible(live: list[str]) -> None:
    assert responsible_instance(subscription(owner="node-a"), live) == "node-a"


def test_no_live_instance_means_no_one() -> None:
    assert responsible_instance(subscription(), []) is None


def test_a_dead_owner_hands_over_to_a_live_instance() -> None:
    assert responsible_instance(subscription(owner="node-z"), INSTANCES) in INSTANCES


@given(
    sub_id=st.text(min_size=1, max_size=12),
    live=st.lists(st.sampled_from(["n1", "n2", "n3", "n4", "n5"]), min_size=1, unique=True),
    data=st.data(),
)
def test_a_dead_owner_is_replaced_by_the_same_instance_whatever_the_order(
    sub_id: str, live: list[str], data: st.DataObject
) -> None:
    sub = subscription(sub_id=sub_id, owner="dead")
    chosen = responsible_instance(sub, live)
    assert chosen in live
    assert responsible_instance(sub, data.draw(st.permutations(live))) == chosen


@given(
    sub_id=st.text(min_size=1, max_size=12),
    live=st.lists(st.sampled_from(["n1", "n2", "n3", "n4", "n5"]), min_size=2, unique=True),
)
def test_losing_another_instance_does_not_move_a_subscription(sub_id: str, live: list[str]) -> None:
    sub = subscription(sub_id=sub_id, owner="dead")
    chosen = responsible_instance(sub, live)
    for gone in live:
        if gone != chosen:
            assert responsible_instance(sub, [name for name in live if name != gone]) == chosen


def test_orphaned_subscriptions_spread_over_the_instances() -> None:
    counts = Counter(
        responsible_instance(subscription(sub_id=f"sub-{n}", owner="dead"), INSTANCES) for n in range(300)
    )
    assert set(counts) == set(INSTANCES)
    assert min(counts.values()) >= 60


# --- refreshed --------------------------------------------------------------------------------


def test_refreshed_extends_and_resets_notify_timeouts() -> None:
    current = subscription(expires_at=NOW - 5, notify_timeouts=2, cseq=3, version=2, last_digest="d")
    assert refreshed(current, 600, NOW, "sip:bob@10.0.0.9") == subscription(
        expires_at=NOW + 600, notify_timeouts=0, cseq=3, version=2, last_digest="d",
        watcher_contact="sip:bob@10.0.0.9",
    )


def test_refreshed_without_contact_keeps_the_old_one() -> None:
    current = subscription(notify_timeouts=1)
    assert refreshed(current, 0, NOW, "") == subscription(expires_at=NOW, notify_timeouts=0)


def test_notify_timeouts_are_counted_until_the_policy_limit_removes_the_subscription():
    from statestore.domain.subscription import SubscriptionPolicy, after_notify_timeout

    policy = SubscriptionPolicy(max_notify_timeouts=3)
    first = after_notify_timeout(subscription(), policy)
    assert first is not None and first.notify_timeouts == 1
    second = after_notify_timeout(first, policy)
    assert second is not None and second.notify_timeouts == 2
    assert after_notify_timeout(second, policy) is None


@pytest.mark.parametrize(
    ("header", "expected_id"),
    [("dialog", ""), ("dialog;id=7", "7"), ("dialog; ID = abc ;x=1", "abc"), (None, "")],
)
def test_event_id_is_read_from_the_event_header(header, expected_id):
    from statestore.domain.subscription import event_header, event_id

    assert event_id(header) == expected_id
    rendered = event_header(subscription(event_id=expected_id))
    assert rendered == (f"dialog;id={expected_id}" if expected_id else "dialog")


def test_ending_a_subscription_already_over_keeps_it_over_with_its_first_reason() -> None:
    over = ended(subscription(), NOW, REASON_NORESOURCE)
    again = ended(over, NOW + 5)
    assert is_expired(again, NOW + 5) and final_reason(again) == "noresource"
