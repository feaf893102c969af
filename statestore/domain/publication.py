"""PUBLISH (RFC 3903): the publication state machine as one transition table.

A PUBLISH is one of four requests (§4): `initial` (no SIP-If-Match, a body), `refresh`
(SIP-If-Match, no body), `modify` (SIP-If-Match and a body) and `remove` (SIP-If-Match,
Expires: 0). What the ESC does with each, given what it holds for the entity-tag named, is
`TRANSITIONS`: the only place that says which moves exist.

The adapter (kemi/blf_publish.py) gathers the request's facts (`PublishRequest`), reads the
publication its SIP-If-Match names, and calls `decide` once with those, the clock and a
fresh random entity-tag (`new_etag`): it gets back a `Verdict` (what to write and delete,
the reply's headers) or a SipError carrying the refusal. Nothing here reads a clock, draws
a random number or touches the store.

Entity-tags (§6 step 6, §8.3): "The ESC MUST generate a new entity-tag for each successful
publication, replacing any previous entity-tag associated with that event state", unique
among the Request-URI's current ones and different from any assigned before: every
successful initial, refresh or modify gets the fresh random tag passed in (64 bits,
`secrets.token_hex(8)`; the store's create compares the new key absent, so a collision is
a lost race, never an overwrite).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from statestore.domain import pidf
from statestore.domain.errors import SipError
from statestore.domain.model import Publication
from statestore.domain.packages import EventPackage, Publishing, publishable
from statestore.domain.subscription import parse_expires

# The checks of a published body, by its media type: the text to store, or SipError
# (400 invalid, 413 too large, 415 another type). One per type a package takes.
BodyCheck = Callable[[bytes, str], str]
BODY_CHECKS: dict[str, BodyCheck] = {pidf.CONTENT_TYPE: pidf.check_pidf}

CONDITIONAL_REQUEST_FAILED = "Conditional Request Failed"


class Kind(enum.StrEnum):
    """RFC 3903 §4: what a PUBLISH asks for."""

    INITIAL = "initial"  # §4.1: new event state (no SIP-If-Match)
    REFRESH = "refresh"  # §4.2: extend its expiry (SIP-If-Match, no body)
    MODIFY = "modify"  # §4.3: replace its state (SIP-If-Match and a body)
    REMOVE = "remove"  # §4.4: remove it (SIP-If-Match, Expires: 0)


class Held(enum.StrEnum):
    """What the ESC holds for the entity-tag a PUBLISH names."""

    NOT_ASKED = "not-asked"  # no SIP-If-Match: no entity-tag named
    LIVE = "live"  # a publication of that account and event, not expired
    GONE = "gone"  # none: unknown, expired, or of another account or event


class Action(enum.StrEnum):
    CREATE = "create"  # store a new publication under a new entity-tag
    REPLACE = "replace"  # store it under a new entity-tag, delete the old one (one transaction)
    DELETE = "delete"  # delete it
    REFUSE_412 = "412"  # §6 step 3: no such entity-tag


# (request, what is held) -> action. Nothing else is a move: an initial PUBLISH names no
# entity-tag, and the others name one (Kind is read from the headers, `kind_of`).
TRANSITIONS: dict[tuple[Kind, Held], Action] = {
    (Kind.INITIAL, Held.NOT_ASKED): Action.CREATE,
    (Kind.REFRESH, Held.LIVE): Action.REPLACE,
    (Kind.REFRESH, Held.GONE): Action.REFUSE_412,
    (Kind.MODIFY, Held.LIVE): Action.REPLACE,
    (Kind.MODIFY, Held.GONE): Action.REFUSE_412,
    (Kind.REMOVE, Held.LIVE): Action.DELETE,
    (Kind.REMOVE, Held.GONE): Action.REFUSE_412,
}


@dataclass(frozen=True)
class PublishRequest:
    """The facts of a PUBLISH that need no store: its headers (None when absent) and body."""

    event: str | None
    expires: str | None
    if_match: str | None
    content_type: str
    body: bytes


@dataclass(frozen=True)
class Checked:
    """A PUBLISH that passed every check needing no store (`check`)."""

    package: EventPackage
    kind: Kind
    expires: int  # granted; 0 for a removal
    etag: str  # the SIP-If-Match entity-tag, "" for an initial PUBLISH
    content_type: str  # of the checked document, "" without one
    document: str  # the checked body as text, "" without one


@dataclass(frozen=True)
class Verdict:
    """What to do with a PUBLISH: write `write` (under its new entity-tag), delete
    `delete` (compared on its stored revision, in the same transaction as the write),
    and answer 200 with `headers`."""

    action: Action
    write: Publication | None
    delete: Publication | None
    headers: dict[str, str]


def publishing_of(package: EventPackage) -> Publishing:
    assert package.publishing is not None  # publishable() returns only such packages
    return package.publishing


def kind_of(has_if_match: bool, has_body: bool, expires: int | None) -> Kind:
    """§4 and §6 step 5: the request's kind; 400 for an initial PUBLISH without a body
    or asking for Expires: 0 (there is nothing to remove without an entity-tag)."""
    if not has_if_match:
        if not has_body:
            raise SipError(400, "Bad Request - Initial PUBLISH Without Body")
        if expires == 0:
            raise SipError(400, "Bad Request - Expires 0 Without SIP-If-Match")
        return Kind.INITIAL
    if expires == 0:
        return Kind.REMOVE
    return Kind.MODIFY if has_body else Kind.REFRESH


def granted(requested: int | None, rules: Publishing, min_expires: int | None = None) -> int:
    """§6 step 4: the package's default without Expires; 423 with Min-Expires below the
    minimum (the package's, or the operator's `min_expires`); above the maximum, the maximum."""
    floor = rules.min_expires if min_expires is None else min_expires
    if requested is None:
        return rules.default_expires
    if requested == 0:
        return 0
    if requested < floor:
        raise SipError(423, "Interval Too Brief", {"Min-Expires": str(floor)})
    return min(requested, rules.max_expires)


def checked_body(content_type: str, body: bytes, rules: Publishing) -> tuple[str, str]:
    """§6 step 5: (media type, document text) of a body the package takes; 415 with
    Accept for another type, 400/413 for a body its check refuses."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    check = BODY_CHECKS.get(media_type)
    if media_type not in rules.content_types or check is None:
        raise SipError(415, "Unsupported Media Type", {"Accept": ", ".join(rules.content_types)})
    return media_type, check(body, content_type)


def check_headers(request: PublishRequest, min_expires: int | None = None) -> Checked:
    """The checks of a PUBLISH's headers, in RFC 3903 §6's order: the event package (489 with
    Allow-Events), Expires (400 unreadable, 423), the kind (400). Cheap, no body parsed: the
    adapter runs them before authenticating, so a hostile PUBLISH costs no store read."""
    package = publishable(request.event)
    rules = publishing_of(package)
    requested = parse_expires(request.expires)
    etag = (request.if_match or "").strip()
    has_body = bool(request.body.strip())
    kind = kind_of(bool(etag), has_body, requested)
    expires = granted(requested, rules, min_expires)
    return Checked(package, kind, expires, etag, "", "")


def check_body(checked: Checked, request: PublishRequest) -> Checked:
    """§6 step 5, the body (415, 413, 400) of a PUBLISH whose headers passed: run after the
    digest, so that no document is parsed for a sender that has not authenticated (RFC
    3261 §8.2 starts with authentication)."""
    if checked.kind not in (Kind.INITIAL, Kind.MODIFY):
        return checked
    content_type, document = checked_body(request.content_type, request.body, publishing_of(checked.package))
    return replace(checked, content_type=content_type, document=document)


def check(request: PublishRequest, min_expires: int | None = None) -> Checked:
    """Every check that needs no store: check_headers, then check_body."""
    return check_body(check_headers(request, min_expires), request)


def held(checked: Checked, account: str, stored: Publication | None, now: float) -> Held:
    """What the ESC holds for the SIP-If-Match of `checked`: the stored publication only
    counts while it lives and is the account's own of the same event (§6 step 3, 412)."""
    if checked.kind is Kind.INITIAL:
        return Held.NOT_ASKED
    if (
        stored is None
        or stored.etag != checked.etag
        or stored.account != account
        or stored.event != checked.package.name
        or stored.expires_at <= now
    ):
        return Held.GONE
    return Held.LIVE


def device_of(sip_instance: str, contact_uri: str, source: str) -> str:
    """What tells the publishing devices of an account apart: the Contact's RFC 5626
    +sip.instance, else the Contact URI, else the request's source address."""
    return sip_instance or contact_uri or source


def decide(
    checked: Checked,
    account: str,
    stored: Publication | None,
    now: float,
    new_etag: str,
    device: str = "",
    instance: str = "",
) -> Verdict:
    """The one decision on a checked PUBLISH of `account` (authenticated, and the
    presentity of its Request-URI), given the publication its SIP-If-Match names as
    stored (None: none, or no SIP-If-Match); SipError 412 when the table says so."""
    action = TRANSITIONS.get((checked.kind, held(checked, account, stored, now)))
    if action is None or action is Action.REFUSE_412:
        raise SipError(412, CONDITIONAL_REQUEST_FAILED)
    if action is Action.DELETE:
        # §4.4: the state is gone; no entity-tag is left to name.
        return Verdict(action, None, stored, {"Expires": "0"})
    if action is Action.CREATE:
        written = Publication(
            account=account, event=checked.package.name, etag=new_etag, expires_at=now + checked.expires,
            content_type=checked.content_type, body=checked.document, published_at=now,
            instance=instance, device=device,
        )
    else:
        assert stored is not None  # REPLACE needs a live publication (TRANSITIONS)
        written = replace(stored, etag=new_etag, expires_at=now + checked.expires, instance=instance)
        if checked.kind is Kind.MODIFY:
            written = replace(written, content_type=checked.content_type, body=checked.document, published_at=now,
                              device=device or stored.device)
    return Verdict(action, written, stored, {"SIP-ETag": new_etag, "Expires": str(checked.expires)})


# An account's publications at most (RFC 3903 leaves it to the ESC): a person has a few
# devices; without a cap one account could fill the store with initial PUBLISHes until they
# expire. Publications of the device that publishes anew do not count: they are replaced.
MAX_PUBLICATIONS_PER_ACCOUNT = 16
TOO_MANY_PUBLICATIONS = "Forbidden - Too Many Publications"


def admit(
    new: Publication, existing: Sequence[Publication], now: float, cap: int = MAX_PUBLICATIONS_PER_ACCOUNT
) -> tuple[Publication, ...]:
    """The live publications of the account that a new (initial) one replaces: those of
    its device and event (a device that lost its entity-tag, after a 412 or a reboot,
    publishes anew: its older state must not stay beside the new one); 403 when the
    account would hold more than `cap` live publications."""
    live = [pub for pub in existing if pub.expires_at > now and pub.etag != new.etag]
    replaced = tuple(pub for pub in live if new.device and pub.device == new.device and pub.event == new.event)
    if cap > 0 and len(live) - len(replaced) + 1 > cap:
        raise SipError(403, TOO_MANY_PUBLICATIONS)
    return replaced
