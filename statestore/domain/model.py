"""Records of the domain: call legs, registrations, subscriptions and lamp states.

Values are immutable; the store adapter serialises them with `to_dict`/`from_dict`.
Enum members carry the RFC 4235 values.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field, replace
from typing import Any


class LegState(enum.StrEnum):
    """Dialog states of RFC 4235 §3.7.1."""

    TRYING = "trying"
    PROCEEDING = "proceeding"
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class TerminationEvent(enum.StrEnum):
    """Why a dialog ended: the `event` attribute of <state> (RFC 4235 §3.7.1, §4.1.2)."""

    CANCELLED = "cancelled"
    REJECTED = "rejected"
    REPLACED = "replaced"
    LOCAL_BYE = "local-bye"
    REMOTE_BYE = "remote-bye"
    ERROR = "error"
    TIMEOUT = "timeout"


class Direction(enum.StrEnum):
    """RFC 4235 §4.1.2: initiator sent the INVITE, recipient received it."""

    INITIATOR = "initiator"
    RECIPIENT = "recipient"


class LampState(enum.StrEnum):
    """Integrated state of an account over every instance."""

    IDLE = "idle"
    EARLY = "early"
    BUSY = "busy"
    TERMINATED = "terminated"


@dataclass(frozen=True)
class Party:
    """One side of a dialog as RFC 4235 §4.1.6 describes it."""

    identity: str
    display: str = ""
    target: str = ""


@dataclass(frozen=True)
class Leg:
    """One account's side of one call, as written by the instance serving the call.

    Stored legs are ordered by their state (RFC 4235 §3.7.1 never goes back), then by
    `version`, a counter of the call's writes kept by the serving instance (not a clock):
    see `statestore.domain.legs.order_of`. A terminated leg says why (`event`, and the
    final response `code` when there was one, 0 otherwise).
    """

    account: str
    instance: str
    leg_id: str
    version: int
    state: LegState
    direction: Direction
    call_id: str
    local_tag: str
    remote_tag: str
    local: Party
    remote: Party
    event: TerminationEvent | None = None
    code: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        data["direction"] = self.direction.value
        if self.event is None:
            del data["event"]
        else:
            data["event"] = self.event.value
        if not self.code:
            del data["code"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Leg:
        return cls(
            account=data["account"],
            instance=data["instance"],
            leg_id=data["leg_id"],
            version=int(data["version"]),
            state=LegState(data["state"]),
            direction=Direction(data["direction"]),
            call_id=data["call_id"],
            local_tag=data.get("local_tag", ""),
            remote_tag=data.get("remote_tag", ""),
            local=_party(data["local"]),
            remote=_party(data["remote"]),
            event=_event(data.get("event")),
            code=int(data.get("code") or 0),
        )

    def moved_to(self, state: LegState, version: int, remote_tag: str = "") -> Leg:
        return replace(self, state=state, version=version, remote_tag=remote_tag or self.remote_tag)


def _party(data: dict[str, Any]) -> Party:
    # A field written by a newer instance (rolling upgrade) is ignored.
    return Party(str(data.get("identity", "")), str(data.get("display", "")), str(data.get("target", "")))


def _event(value: Any) -> TerminationEvent | None:
    """An event this version does not know is shown as none rather than refused."""
    try:
        return TerminationEvent(value) if value else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Binding:
    """A registered contact of an account (RFC 3261 §10.3).

    `instance` is the cluster instance that took the registration; `received` is the
    transport address it came from ("proto:ip:port"). `sip_instance` and `reg_id` are the
    device's RFC 5626 instance-id (the URN, without quotes or <>) and reg-id; `params` the
    contact parameters echoed in the 200 OK (";+sip.instance=...;reg-id=1", never expires
    or q). `nat` is set when the phone is behind NAT: it is reached at `received`.
    `registered_at` is when the REGISTER that wrote it was taken (0: written before it was
    recorded): a connection registered before its holder instance last started is gone.
    """

    account: str
    contact: str
    expires_at: float
    call_id: str
    cseq: int
    q: float = 1.0
    instance: str = ""
    received: str = ""
    sip_instance: str = ""
    reg_id: str = ""
    params: str = ""
    nat: bool = False
    registered_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Binding:
        # Records written before a field existed lack it (its default applies); a field
        # written by a newer instance during a rolling upgrade is ignored.
        known = {name: value for name, value in data.items() if name in _BINDING_FIELDS}
        return cls(**known)

    def remaining(self, now: float) -> int:
        return max(0, round(self.expires_at - now))


_BINDING_FIELDS = frozenset(Binding.__dataclass_fields__)


@dataclass(frozen=True)
class Subscription:
    """An RFC 6665 subscription, shared by every instance through the store.

    Dialog identifiers are seen from the notifier: `local_tag` is the To tag we answered
    the SUBSCRIBE with, `remote_tag` the subscriber's From tag. Where the watcher is
    reached: `received` is the transport address its last accepted SUBSCRIBE came from
    ("proto:ip:port"), `flow_instance` the instance that received it (it holds the TCP
    connection or NAT pinhole), `nat` whether the watcher is behind NAT.
    """

    sub_id: str
    event: str
    presentity: str
    entity: str
    watcher: str
    watcher_contact: str
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    remote_uri: str
    route_set: tuple[str, ...]
    expires_at: float
    owner: str
    # CSeq and dialog-info version of the first NOTIFY at ownership epoch `epoch`
    # (subscription.notify_numbers). Records written before epochs hold the last ones
    # sent, at epoch 0: any epoch since numbers above them.
    cseq: int = 0
    version: int = -1
    last_digest: str = ""
    notify_timeouts: int = 0
    event_id: str = ""
    transport: str = "udp"
    accept: tuple[str, ...] = field(default_factory=tuple)
    received: str = ""
    flow_instance: str = ""
    nat: bool = False
    epoch: int = 0
    # Why the subscription ends, when it was ended on purpose (RFC 6665 §4.2.2 `reason`,
    # e.g. "noresource": its presentity's account was removed); "" for an expiry or an
    # unsubscribe (subscription.final_reason).
    termination_reason: str = ""
    # RFC 6665 §4.1.3 state of the subscription (statestore.domain.lifecycle): "active",
    # or "pending" while its presentity has not authorized the watcher (RFC 3857 §3.2).
    status: str = "active"
    # The RFC 3857 §3.2.4 event that brought it to `status` ("subscribe", "approved", ...).
    status_event: str = "subscribe"
    # Rendering profile of the watcher's phone (statestore.domain.profiles), fixed when it
    # subscribes or refreshes: e.g. ("single-dialog", "no-terminated").
    profile: tuple[str, ...] = field(default_factory=tuple)
    # Body type chosen from the SUBSCRIBE's Accept among the package's (RFC 6665 §4.1.2).
    content_type: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["route_set"] = list(self.route_set)
        data["accept"] = list(self.accept)
        data["profile"] = list(self.profile)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Subscription:
        # Records written before a field existed lack it (its default applies); a field
        # written by a newer instance during a rolling upgrade is ignored.
        values = {name: value for name, value in data.items() if name in _SUBSCRIPTION_FIELDS}
        values["route_set"] = tuple(values.get("route_set", ()))
        values["accept"] = tuple(values.get("accept", ()))
        values["profile"] = tuple(values.get("profile", ()))
        return cls(**values)

    def remaining(self, now: float) -> int:
        return max(0, int(self.expires_at - now))


_SUBSCRIPTION_FIELDS = frozenset(Subscription.__dataclass_fields__)


@dataclass(frozen=True)
class WatcherEntry:
    """One subscription of a watcher as the watcher index holds it: enough to count the
    watcher's subscriptions and to recognise a device subscribing again, without reading
    the subscriptions themselves."""

    sub_id: str
    presentity: str
    event: str
    contact: str
    received: str = ""
    # The URI subscribed to (an alias or the account): a device may watch an account under
    # several of its URIs, one BLF key each. Entries written before aliases have none.
    entity: str = ""

    @classmethod
    def of(cls, subscription: Subscription) -> WatcherEntry:
        return cls(
            subscription.sub_id, subscription.presentity, subscription.event,
            subscription.watcher_contact, subscription.received, subscription.entity,
        )

    def to_dict(self) -> dict[str, Any]:
        """The stored value; the id is the key's last segment, not repeated here."""
        return {
            "presentity": self.presentity, "event": self.event, "contact": self.contact, "received": self.received,
            "entity": self.entity,
        }

    @classmethod
    def from_dict(cls, sub_id: str, data: dict[str, Any]) -> WatcherEntry:
        return cls(
            sub_id, str(data.get("presentity", "")), str(data.get("event", "")),
            str(data.get("contact", "")), str(data.get("received", "")), str(data.get("entity", "")),
        )


@dataclass(frozen=True)
class Account:
    """A provisioned SIP account: never a password, only the digest HA1s (RFC 7616 §3.4.2),
    `ha1` = MD5(user:domain:password) and `ha1_sha256` = SHA-256 of the same. Records written
    before SHA-256 digest have no `ha1_sha256`: such an account authenticates with MD5 only."""

    user: str
    domain: str
    ha1: str
    ha1_sha256: str = ""

    @property
    def aor(self) -> str:
        return f"{self.user}@{self.domain}"

    def ha1_for(self, algorithm: str) -> str:
        """The HA1 for a digest `algorithm` ("MD5", "SHA-256"); empty when there is none."""
        return {"MD5": self.ha1, "SHA-256": self.ha1_sha256}.get(algorithm, "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Account:
        return cls(
            user=data["user"], domain=data["domain"], ha1=data["ha1"], ha1_sha256=data.get("ha1_sha256", "") or ""
        )


@dataclass(frozen=True)
class Publication:
    """One event state publication of an account (RFC 3903), shared by every instance.

    `etag` is the entity-tag we assigned (SIP-ETag); `body` the published document as
    received (checked well-formed and schema-valid), `content_type` its type. `device` is
    what tells the publishing devices apart (RFC 5626 +sip.instance, else the Contact or
    source), `published_at` when it was last modified (composition puts newer first),
    `instance` the instance that took the last PUBLISH. A publication is removed by
    `Expires: 0` or when `expires_at` passes (statestore.domain.publication).
    """

    account: str
    event: str
    etag: str
    expires_at: float
    content_type: str
    body: str
    published_at: float
    instance: str = ""
    device: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Publication:
        known = {name: value for name, value in data.items() if name in _PUBLICATION_FIELDS}
        return cls(**known)

    def remaining(self, now: float) -> int:
        return max(0, int(self.expires_at - now))


_PUBLICATION_FIELDS = frozenset(Publication.__dataclass_fields__)
