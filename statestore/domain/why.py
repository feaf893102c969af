"""Why is this lamp the colour it is: one verdict from the facts of one account.

`explain` takes what the store holds of an account (its call legs on every instance, its
registrations, publications and the subscriptions to it), the live instances with their
leases, and the time; it returns the state each event package's watchers see, the reasons
(each naming its evidence: a leg's key, instance, state and lease; a registration's
expiry), what would change it, and which instance is responsible for each watcher's
NOTIFYs (the rendezvous rule of statestore.domain.subscription, not a copy of it).

The numbers of the last NOTIFY a watcher got are not in the store: the instance that sent
it keeps them in its shared memory (statestore.domain.notified) and `blfctl why` asks the
responsible instance for them (`Facts.notified`). A subscription record holds the CSeq and
version of the first NOTIFY at its ownership epoch; later NOTIFYs number up from there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from statestore.domain.lamp import is_active, lamp_state
from statestore.domain.model import Binding, Direction, LampState, Leg, LegState, Publication, Subscription
from statestore.domain.notified import LastNotify, NotifyUnknown
from statestore.domain.subscription import responsible_instance, serving

# What an operator calls each integrated state (the panel of `blfctl watch` too).
LAMP_WORDS: dict[LampState, str] = {
    LampState.IDLE: "idle",
    LampState.EARLY: "ringing",
    LampState.BUSY: "busy",
    LampState.TERMINATED: "offline",
}


@dataclass(frozen=True)
class Lease:
    """An instance's lease as etcd holds it: granted TTL and seconds left."""

    ttl: int
    remaining: int


@dataclass(frozen=True)
class Instance:
    """A live instance: the event packages it serves and its lease (None: not read)."""

    packages: frozenset[str]
    lease: Lease | None = None
    metrics: str | None = None  # the metrics socket it announces, HOST:PORT


@dataclass(frozen=True)
class Facts:
    account: str
    legs: tuple[Leg, ...]
    bindings: tuple[Binding, ...]
    publications: tuple[Publication, ...]
    subscriptions: tuple[Subscription, ...]
    instances: Mapping[str, Instance]  # the live ones, by name
    now: float
    asked: str = ""  # what the operator named, when an alias of `account`
    leg_keys: Mapping[str, str] = field(default_factory=dict)  # leg id -> its store key
    # What the responsible instance said of each subscription's last NOTIFY, by sub id.
    notified: Mapping[str, LastNotify | NotifyUnknown] = field(default_factory=dict)


@dataclass(frozen=True)
class Reason:
    text: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Watcher:
    """A subscription to the account and who sends its NOTIFYs."""

    subscription: Subscription
    responsible: str | None  # None: no live instance serves its package
    owner_live: bool


@dataclass(frozen=True)
class Verdict:
    facts: Facts
    lamp: LampState
    packages: dict[str, str]
    reasons: tuple[Reason, ...]
    changes: tuple[str, ...]
    watchers: tuple[Watcher, ...]

    @property
    def lamp_word(self) -> str:
        return LAMP_WORDS[self.lamp]

    def to_dict(self) -> dict[str, Any]:
        facts, now = self.facts, self.facts.now
        return {
            "account": facts.account,
            "asked": facts.asked or facts.account,
            "alias": bool(facts.asked) and facts.asked != facts.account,
            "lamp": self.lamp_word,
            "state": self.lamp.value,
            "packages": self.packages,
            "reasons": [{"text": r.text, "evidence": r.evidence} for r in self.reasons],
            "changes": list(self.changes),
            "subscriptions": [_watcher_dict(w, now, facts.notified.get(w.subscription.sub_id)) for w in self.watchers],
        }


def explain(facts: Facts) -> Verdict:
    lamp = lamp_state(facts.legs, facts.bindings, facts.now)
    reasons = (*_leg_reasons(facts), *_binding_reasons(facts), *_publication_reasons(facts))
    watchers = tuple(_watcher(sub, facts) for sub in sorted(facts.subscriptions, key=lambda s: (s.event, s.sub_id)))
    return Verdict(facts, lamp, _packages(facts, lamp), reasons, _changes(facts, lamp), watchers)


def _lease_evidence(facts: Facts, instance: str) -> dict[str, Any]:
    live = facts.instances.get(instance)
    evidence: dict[str, Any] = {"instance": instance, "lease_alive": live is not None}
    if live is not None and live.lease is not None:
        evidence |= {"lease_ttl": live.lease.ttl, "lease_remaining": live.lease.remaining}
    return evidence


def _lease_text(evidence: Mapping[str, Any]) -> str:
    if not evidence["lease_alive"]:
        return f"instance {evidence['instance']} is not live (its lease lapsed: the leg should be gone)"
    if "lease_ttl" in evidence:
        return (f"instance {evidence['instance']} live, lease TTL {evidence['lease_ttl']} s, "
                f"{evidence['lease_remaining']} s left")
    return f"instance {evidence['instance']} live"


def _leg_role(leg: Leg) -> str:
    """What the leg does to the lamp (domain.lamp.lamp_state's rule, in words)."""
    if not is_active(leg):
        return "ended, counts for nothing"
    if leg.state is LegState.CONFIRMED:
        return "answered: busy"
    if leg.direction is Direction.INITIATOR:
        return "placing a call: busy while the other side rings"
    return "ringing at the account: early"


def _leg_reasons(facts: Facts) -> list[Reason]:
    reasons = []
    for leg in sorted(facts.legs, key=lambda leg: (leg.instance, leg.call_id, leg.leg_id)):
        evidence = {
            "kind": "leg", "key": facts.leg_keys.get(leg.leg_id, ""), "leg_id": leg.leg_id,
            "call_id": leg.call_id, "state": leg.state.value, "direction": leg.direction.value,
            "remote": leg.remote.identity, **_lease_evidence(facts, leg.instance),
        }
        reasons.append(Reason(
            f"leg {leg.leg_id} ({leg.direction.value}, {leg.state.value}, with {leg.remote.identity}) on "
            f"{leg.instance}: {_leg_role(leg)}; {_lease_text(evidence)}",
            evidence,
        ))
    return reasons


def _binding_reasons(facts: Facts) -> list[Reason]:
    reasons = []
    for binding in sorted(facts.bindings, key=lambda b: b.contact):
        live = binding.expires_at > facts.now
        evidence = {
            "kind": "registration", "contact": binding.contact, "instance": binding.instance,
            "expires_in": binding.remaining(facts.now), "live": live,
        }
        text = (f"registered {binding.contact} via {binding.instance}, expires in {binding.remaining(facts.now)} s"
                if live else f"registration {binding.contact} expired (not counted)")
        reasons.append(Reason(text, evidence))
    if not any(b.expires_at > facts.now for b in facts.bindings):
        reasons.append(Reason("no live registration: without a call the lamp is offline", {"kind": "registration"}))
    return reasons


def _publication_reasons(facts: Facts) -> list[Reason]:
    return [
        Reason(
            f"publication {p.event} etag {p.etag} by {p.device or 'unknown device'} via {p.instance}, "
            + (f"expires in {p.remaining(facts.now)} s" if p.expires_at > facts.now else "expired (not counted)"),
            {"kind": "publication", "event": p.event, "etag": p.etag, "instance": p.instance,
             "expires_in": p.remaining(facts.now), "live": p.expires_at > facts.now},
        )
        for p in sorted(facts.publications, key=lambda p: p.published_at)
    ]


def _packages(facts: Facts, lamp: LampState) -> dict[str, str]:
    """What a watcher of each package sees, in words: the dialog lamp (RFC 4235, the
    integrated state), presence (RFC 3863 basic status: publications first, else open
    while registered; on-the-phone with an answered call), reg (RFC 3680)."""
    registered = any(b.expires_at > facts.now for b in facts.bindings)
    published = [p for p in facts.publications if p.event == "presence" and p.expires_at > facts.now]
    if published:
        presence = f"as published ({len(published)} live publication{'s' if len(published) > 1 else ''})"
    else:
        presence = "open" if registered else "closed"
    if any(leg.state is LegState.CONFIRMED for leg in facts.legs):
        presence += ", on-the-phone"
    return {"dialog": lamp.value, "presence": presence, "reg": "active" if registered else "terminated"}


def _changes(facts: Facts, lamp: LampState) -> tuple[str, ...]:
    active = [leg for leg in facts.legs if is_active(leg)]
    if not active:
        if lamp is LampState.IDLE:
            last = max(b.remaining(facts.now) for b in facts.bindings if b.expires_at > facts.now)
            return ("it turns ringing when a call reaches it, busy when it places or answers one",
                    f"it goes offline when its registrations end (the last expires in {last} s unless refreshed)")
        return ("it turns idle when a phone of the account registers",
                "a call placed or received shows ringing/busy even while unregistered")
    changes = []
    after = "idle" if any(b.expires_at > facts.now for b in facts.bindings) else "offline"
    for leg in sorted(active, key=lambda leg: (leg.instance, leg.leg_id)):
        lease = _lease_evidence(facts, leg.instance)
        ttl = f" (TTL {lease['lease_ttl']} s)" if "lease_ttl" in lease else ""
        move = "is answered (busy)" if lamp is LampState.EARLY else "ends"
        changes.append(f"leg {leg.leg_id} on {leg.instance}: the lamp moves when the call {move}, "
                       f"or when instance {leg.instance}'s lease{ttl} lapses")
    changes.append(f"with no active leg left it shows {after}")
    return tuple(changes)


def _watcher(subscription: Subscription, facts: Facts) -> Watcher:
    live = sorted(facts.instances)
    serves = {name: instance.packages for name, instance in facts.instances.items()}
    responsible = responsible_instance(subscription, serving(subscription.event, serves, live))
    return Watcher(subscription, responsible, subscription.owner in facts.instances)


def _watcher_dict(watcher: Watcher, now: float, notified: LastNotify | NotifyUnknown | None) -> dict[str, Any]:
    s = watcher.subscription
    known = notified if isinstance(notified, LastNotify) else None
    unknown = notified.reason if isinstance(notified, NotifyUnknown) else None if known else "not asked"
    return {
        "sub_id": s.sub_id, "watcher": s.watcher, "event": s.event, "status": s.status,
        "expires_in": s.remaining(now), "owner": s.owner, "owner_live": watcher.owner_live,
        "responsible": watcher.responsible, "contact": s.watcher_contact,
        "last_notify": known.to_dict() if known else None,
        "last_notify_unknown": unknown,
        "first_notify": {"epoch": s.epoch, "cseq": s.cseq, "version": s.version},
        "notify_timeouts": s.notify_timeouts,
    }
