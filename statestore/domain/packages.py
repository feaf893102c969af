"""Event packages (RFC 6665 §7), each one declaration.

Everything else derives from the declarations in `PACKAGES`: the Allow-Events header, the
Event header check (489), body negotiation from Accept (406), the expiry granted, who may
subscribe, the records the initial SUBSCRIBE reads, which store changes make a
subscription's NOTIFY due (the mirror's dirtying), how often a subscription is NOTIFYed,
whether a new watcher waits for the presentity's authorization, and what PUBLISH takes.
Adding a package is adding a renderer and one `EventPackage` here.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from statestore.domain import bodies, dialoginfo, presence, reginfo, watcherinfo
from statestore.domain.bodies import PresentityState, Renderer
from statestore.domain.errors import SipError
from statestore.domain.model import Subscription

# Renderer: (entity, version, state, profile, previous) -> body. `entity` and `version`
# may be the stand-in strings of bodies.Template; `previous` is the state the watcher's
# last NOTIFY showed (None: its first, or after a takeover), for partial-state packages.
# What a body shows, as a short hash: equal digests, equal documents (never the time).
Digester = Callable[[PresentityState, frozenset[str]], str]


class Input(enum.StrEnum):
    """Kinds of record a package's bodies are made of (statestore.records)."""

    LEGS = "legs"  # call legs on every instance (the BLF core)
    REGS = "regs"  # registered contacts
    PUBS = "pubs"  # publications (RFC 3903)
    SUBS = "subs"  # the subscriptions to the presentity (watcher information)


class Subscribers(enum.StrEnum):
    """Who may subscribe to a presentity's state."""

    COULD_CALL = "could-call"  # any account that could call it (issue 7 §3), itself included
    SELF = "self"  # only the account itself (RFC 3857 §5.1: a presentity's own winfo)


@dataclass(frozen=True)
class Expiry:
    """Subscription durations in seconds (RFC 6665 §4.2.1.1): granted within these, and
    within the operator's own limits."""

    default_expires: int = 3600
    min_expires: int = 60
    max_expires: int = 3600


@dataclass(frozen=True)
class Publishing:
    """What PUBLISH takes for a package (RFC 3903 §6): body types, and the durations of a
    publication (423 with Min-Expires below the minimum)."""

    content_types: tuple[str, ...]
    default_expires: int = 3600
    min_expires: int = 60
    max_expires: int = 7200


@dataclass(frozen=True)
class EventPackage:
    """One event package. `content_types` in our order of preference; `inputs` the record
    kinds its bodies are made of (a change of any other kind does not make its watchers
    due); `watched_event` for a template package (RFC 6665 §7.3: "presence.winfo"), the
    package whose subscriptions it shows; `min_interval` the least time between two
    NOTIFYs of one subscription (rate control; the last state is always sent, late);
    `authorization` whether a new watcher waits for the presentity's policy (pending);
    `partial` whether NOTIFYs after the first may carry partial state."""

    name: str
    content_types: tuple[str, ...]
    render: Renderer
    digest: Digester
    inputs: frozenset[Input]
    subscribers: Subscribers = Subscribers.COULD_CALL
    expiry: Expiry = Expiry()
    min_interval: float = 0.0
    authorization: bool = False
    partial: bool = False
    watched_event: str = ""
    publishing: Publishing | None = None

    @property
    def content_type(self) -> str:
        return self.content_types[0]

    def reads(self, kind: str) -> bool:
        return kind in self.inputs


DIALOG = EventPackage(
    name="dialog",
    content_types=(dialoginfo.CONTENT_TYPE,),
    render=dialoginfo.render,
    digest=dialoginfo.digest,
    inputs=frozenset({Input.LEGS}),
    # A lamp must follow a call as a person sees it: only NOTIFYs of the same subscription
    # closer than this are merged (a flapping line), far below what anyone notices.
    min_interval=0.2,
)

PRESENCE = EventPackage(
    name="presence",
    content_types=("application/pidf+xml",),
    render=presence.render,
    digest=presence.digest,
    # Calls show as the RPID activity on-the-phone; registrations as open/closed.
    inputs=frozenset({Input.LEGS, Input.REGS, Input.PUBS}),
    # RFC 3856 §6.10: not more than one notification every 5 seconds per watcher.
    min_interval=5.0,
    authorization=True,
    publishing=Publishing(content_types=("application/pidf+xml",)),
)

REG = EventPackage(
    name="reg",
    content_types=(reginfo.CONTENT_TYPE,),
    render=reginfo.render,
    digest=reginfo.digest,
    inputs=frozenset({Input.REGS}),
    partial=True,  # RFC 3680 §5.2: full state first, then the contacts that changed
)


def _winfo(watched: EventPackage) -> EventPackage:
    """RFC 3857 template package `<package>.winfo`: the presentity itself watches who
    watches it (§5.1: only the presentity may subscribe to its own watcher information)."""
    return EventPackage(
        name=f"{watched.name}.winfo",
        content_types=(watcherinfo.CONTENT_TYPE,),
        render=watcherinfo.render_for(watched.name),
        digest=watcherinfo.digest_for(watched.name),
        inputs=frozenset({Input.SUBS}),
        subscribers=Subscribers.SELF,
        partial=True,  # RFC 3858 §4: full state first, then the watchers that changed
        watched_event=watched.name,
    )


PACKAGES: dict[str, EventPackage] = {}


def declare(*packages: EventPackage) -> None:
    for package in packages:
        PACKAGES[package.name] = package


declare(DIALOG, PRESENCE, REG, _winfo(PRESENCE), _winfo(DIALOG))


def allow_events(packages: Sequence[EventPackage] | None = None) -> str:
    """The Allow-Events value (RFC 6665 §8.2.2): every package served."""
    return ", ".join(sorted(p.name for p in (packages if packages is not None else PACKAGES.values())))


def event_package(event_header: str | None) -> EventPackage:
    """The package named by the Event header (RFC 6665 §8.2.1); 489 when unsupported."""
    name = (event_header or "").split(";", 1)[0].strip().lower()
    package = PACKAGES.get(name)
    if package is None:
        raise SipError(489, "Bad Event", {"Allow-Events": allow_events()})
    return package


def _accepted(accept_values: Sequence[str]) -> list[str]:
    """Media ranges of the Accept headers, those with q=0 left out (RFC 3261 §20.1)."""
    ranges: list[str] = []
    for value in accept_values:
        for item in value.split(","):
            media, *params = (part.strip().lower() for part in item.split(";"))
            if not media:
                continue
            refused = any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params)
            if not refused:
                ranges.append(media)
    return ranges


def negotiate(accept_values: Sequence[str], package: EventPackage) -> str:
    """The body type of the subscription's NOTIFYs (RFC 6665 §4.1.2, §7.2): without an
    Accept header the package's default; else the first of ours, in our order of
    preference, the Accept admits; 406 listing ours when none is."""
    offered = _accepted(accept_values)
    present = any(part.strip() for value in accept_values for part in value.split(","))
    if not present:
        return package.content_type
    for content_type in package.content_types:
        main = content_type.split("/", 1)[0]
        if {content_type, f"{main}/*", "*/*"}.intersection(offered):
            return content_type
    raise SipError(406, "Not Acceptable", {"Accept": ", ".join(package.content_types)})


def check_accept(accept_values: Sequence[str], package: EventPackage) -> None:
    negotiate(accept_values, package)


def publishable(event_header: str | None) -> EventPackage:
    """The package a PUBLISH names (RFC 3903 §6 step 2): 489 with the publishable ones
    in Allow-Events when it is not one."""
    name = (event_header or "").split(";", 1)[0].strip().lower()
    package = PACKAGES.get(name)
    if package is None or package.publishing is None:
        names = [p for p in PACKAGES.values() if p.publishing is not None]
        raise SipError(489, "Bad Event", {"Allow-Events": allow_events(names)})
    return package


def inputs_read(kind: str) -> bool:
    """Whether any package's bodies are made of records of `kind` (what the mirror reads)."""
    return any(package.reads(kind) for package in PACKAGES.values())


PENDING_DIGEST = "pending"


def digest_for(subscription: Subscription, state: PresentityState) -> str:
    """What the subscription's next NOTIFY would show, as a digest: nothing while it is
    pending (RFC 6665 §4.2.1: a NOTIFY of a pending subscription carries no state)."""
    if subscription.status == "pending":
        return PENDING_DIGEST
    return PACKAGES[subscription.event].digest(state, frozenset(subscription.profile))


def template_for(
    subscription: Subscription, state: PresentityState, previous: PresentityState | None = None
) -> bodies.Template:
    """The body of the subscription's next NOTIFY, as a template shared by the watchers
    of the presentity who see it alike."""
    if subscription.status == "pending":
        return bodies.empty(state)
    package = PACKAGES[subscription.event]
    content_type = subscription.content_type or package.content_type
    return bodies.Template(
        package.render, state, content_type, frozenset(subscription.profile), previous if package.partial else None
    )


def digest(event: str, state: PresentityState, profile: frozenset[str] = frozenset()) -> str:
    return PACKAGES[event].digest(state, profile)


def render(
    event: str, entity: str, version: int | str, state: PresentityState, profile: frozenset[str] = frozenset(),
    previous: PresentityState | None = None,
) -> bytes:
    return PACKAGES[event].render(entity, version, state, profile, previous)
