"""Registrar rules of RFC 3261 §10.3 for a registrar whose bindings live in the store.

Pure: no I/O and no clock, `now` is passed in. The adapter turns a REGISTER into a
`RegisterRequest` (Contact values through `contact.parse_contacts`), loads the account's stored
bindings, calls `apply_register`, writes `upserts`, deletes `removals` (keyed by
`uri_identity.binding_id`) and answers 200 OK listing every `bindings` entry with
`contact_header_value`. A request that must fail raises `SipError`; nothing is then written.

A binding is identified by its device when the Contact carries an RFC 5626 `+sip.instance`
(with its `reg-id`, when present), otherwise by its Contact URI (RFC 3261 §10.3): a phone
that restarts with a new Contact but the same instance-id replaces its old binding.
We do not support outbound (no flow keep-alives, no `Require: outbound`, RFC 5626 §6),
we only use the instance-id to recognise the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from statestore.domain.contact import ContactSpec, Star, bad_request, echoed_params
from statestore.domain.errors import SipError
from statestore.domain.model import Binding
from statestore.domain.uri_identity import binding_id, binding_key_id, device_key_id, normalise_uri


@dataclass(frozen=True)
class RegisterRequest:
    """What the registrar needs of a REGISTER (RFC 3261 §10.2)."""

    account: str
    call_id: str
    cseq: int
    contacts: list[ContactSpec] | Star
    expires_header: int | None
    instance: str
    received: str
    nat: bool = False


@dataclass(frozen=True)
class RegistrarPolicy:
    """Expiry limits in seconds; requires 0 <= min_expires <= default_expires <= max_expires.

    `max_bindings`: live bindings an account may hold (RFC 3261 §10.3 lets the registrar
    refuse more). `nat_expires`: the longest expiry granted to a UDP binding behind NAT.
    """

    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    max_bindings: int = 10
    nat_expires: int = 60

    def __post_init__(self) -> None:
        if not 0 <= self.min_expires <= self.default_expires <= self.max_expires:
            raise ValueError(f"inconsistent registrar policy: {self}")
        if self.default_expires <= 0:
            raise ValueError("default_expires must be positive")
        if self.max_bindings < 1 or self.nat_expires < 1:
            raise ValueError(f"max_bindings and nat_expires must be positive: {self}")


@dataclass(frozen=True)
class RegisterOutcome:
    """Writes and deletes for the store, and the bindings to list in the 200 OK."""

    upserts: tuple[Binding, ...]
    removals: tuple[Binding, ...]
    bindings: tuple[Binding, ...]

    @property
    def writes(self) -> bool:
        return bool(self.upserts or self.removals)


def contact_header_value(binding: Binding, now: float) -> str:
    """Contact value for the 200 OK (RFC 3261 §10.3 step 8): remaining expiry and q, then
    the contact's own parameters (RFC 5626 §6: +sip.instance and reg-id are echoed)."""
    value = f"<{binding.contact}>;expires={binding.remaining(now)}"
    if binding.q != 1.0:
        value += f";q={binding.q:.3f}".rstrip("0").rstrip(".")
    return value + binding.params


# --- Processing a REGISTER (RFC 3261 §10.3 steps 6 to 8) ------------------------------------


@dataclass(frozen=True)
class _Wanted:
    """What the request asks for one binding identity: a new binding, or None to remove it."""

    key: str
    uri: str
    sip_instance: str
    binding: Binding | None


def apply_register(
    request: RegisterRequest,
    current: Sequence[Binding],
    policy: RegistrarPolicy,
    now: float,
) -> RegisterOutcome:
    """Bindings to write and delete for `request`, given the account's stored bindings.

    Stored bindings of other accounts are ignored. Expired ones (expires_at <= now) are
    gone: they take no part in the Call-ID/CSeq check and are listed in removals unless
    the request writes the same binding again. A request that would leave the account
    with more than `policy.max_bindings` live bindings (and more than it had) is refused.

    A retransmission of the request that wrote the live bindings (its 200 was lost) is
    answered again with the bindings as they are, and writes nothing (`_is_repeat`).
    """
    mine = [binding for binding in current if binding.account == request.account]
    live = {binding_id(b): b for b in mine if b.expires_at > now}
    expired = [binding for binding in mine if binding.expires_at <= now]
    if isinstance(request.contacts, str):
        _check_star(request)
        wanted = [_Wanted(key, b.contact, b.sip_instance, None) for key, b in live.items()]
    else:
        wanted = _wanted(request, request.contacts, policy, now)
    if _is_repeat(request, wanted, live):
        return RegisterOutcome((), (), tuple(live.values()))
    for item in wanted:
        for key in _replaced(item, live):
            _check_order(live[key], request)
    return _outcome(live, expired, wanted, policy)


def _is_repeat(request: RegisterRequest, wanted: Sequence[_Wanted], live: dict[str, Binding]) -> bool:
    """Whether `request` is a retransmission of the one that wrote the live bindings it
    names: same Call-ID and CSeq (RFC 3261 §17.2.3 would match the branch; a registrar
    that lost the transaction has only these), and every binding it asks for is stored
    as it asks (same identity, contact and q). What it removed is gone already.

    RFC 3261 §10.3 step 7 would abort a request whose CSeq is not higher; but a client
    whose 200 was lost retransmits the very same request (§17.1.2.2), and answering that
    with an error would make the phone believe it is unregistered.
    """
    asked = [item for item in wanted if item.binding is not None]
    if not asked:
        return False
    for item in asked:
        stored, binding = live.get(item.key), item.binding
        assert binding is not None
        if stored is None or (stored.call_id, stored.cseq) != (request.call_id, request.cseq):
            return False
        if normalise_uri(stored.contact) != normalise_uri(binding.contact) or stored.q != binding.q:
            return False
    return True


def _check_star(request: RegisterRequest) -> None:
    # RFC 3261 §10.3 step 6: "*" with an Expires value other than zero is a 400.
    if request.expires_header != 0:
        raise bad_request("Invalid Contact: * requires Expires: 0")


def _wanted(
    request: RegisterRequest, contacts: Sequence[ContactSpec], policy: RegistrarPolicy, now: float
) -> list[_Wanted]:
    """One entry per binding identity named by the request; a later duplicate wins."""
    wanted: dict[str, _Wanted] = {}
    for spec in contacts:
        expires = _expiry(spec, request, policy)
        binding = _binding(request, spec, now + expires, now) if expires else None
        key = device_key_id(spec.sip_instance, spec.reg_id) if spec.sip_instance else binding_key_id(spec.uri)
        wanted.pop(key, None)
        wanted[key] = _Wanted(key, spec.uri, spec.sip_instance, binding)
    return list(wanted.values())


def _replaced(item: _Wanted, live: dict[str, Binding]) -> list[str]:
    """Keys of the live bindings a wanted entry updates or removes.

    The binding of the same identity, and one with the same Contact URI when either side
    names no device (RFC 3261 §10.3 matches by URI): a phone that starts or stops sending
    +sip.instance does not leave a second binding behind. Two devices with their own
    instance-ids stay apart even behind NATs that give them the same private Contact.
    """
    uri = normalise_uri(item.uri)
    return [
        key
        for key, binding in live.items()
        if key == item.key
        or (
            normalise_uri(binding.contact) == uri
            and not (binding.sip_instance and item.sip_instance)
        )
    ]


def _udp_behind_nat(request: RegisterRequest) -> bool:
    return request.nat and request.received.partition(":")[0].lower() == "udp"


def _expiry(spec: ContactSpec, request: RegisterRequest, policy: RegistrarPolicy) -> int:
    # RFC 3261 §10.3 step 7: contact param, else Expires header, else the local default;
    # the registrar MAY shorten it (clamp to max) and MAY refuse a too short one with 423.
    requested = spec.expires if spec.expires is not None else request.expires_header
    if requested is None:
        requested = policy.default_expires
    if requested < 0:
        raise bad_request("Invalid Expires")
    if 0 < requested < policy.min_expires:
        raise SipError(423, "Interval Too Brief", {"Min-Expires": str(policy.min_expires)})
    granted = min(requested, policy.max_expires)
    if granted and _udp_behind_nat(request):
        # A UDP phone behind NAT is reached through the NAT's mapping of its source port,
        # which a NAT drops after a minute or so of silence. Its re-registrations are the
        # keep-alive: the 200 grants at most nat_expires, so the phone refreshes (and
        # re-opens the pinhole) that often. We send no OPTIONS pings and do no STUN.
        granted = min(granted, policy.nat_expires)
    return granted


def _binding(request: RegisterRequest, spec: ContactSpec, expires_at: float, now: float) -> Binding:
    return Binding(
        account=request.account,
        contact=spec.uri,
        expires_at=expires_at,
        call_id=request.call_id,
        cseq=request.cseq,
        q=spec.q,
        instance=request.instance,
        received=request.received,
        sip_instance=spec.sip_instance,
        reg_id=spec.reg_id,
        params=echoed_params(spec.raw_params),
        nat=request.nat,
        registered_at=now,
    )


def _check_order(stored: Binding, request: RegisterRequest) -> None:
    # RFC 3261 §10.3 steps 6 and 7: a binding is updated or removed when the Call-ID
    # differs, or when it is the same and the CSeq is higher; otherwise "the update MUST
    # be aborted and the request fails". The RFC names no status code; we answer 400
    # (the request, not the server, is at fault, and a retry with the same CSeq would
    # fail again, so a 500 with Retry-After would only invite a useless retry).
    if stored.call_id == request.call_id and request.cseq <= stored.cseq:
        raise bad_request("Out of order CSeq")


def _outcome(
    live: dict[str, Binding], expired: Sequence[Binding], wanted: Sequence[_Wanted], policy: RegistrarPolicy
) -> RegisterOutcome:
    result = dict(live)
    removals: list[Binding] = []
    written = {item.key for item in wanted if item.binding is not None}
    for item in wanted:
        if item.binding is not None:
            result[item.key] = item.binding
        gone = [key for key in _replaced(item, live) if key not in written]
        removals += [result.pop(key) for key in gone if key in result]
    _check_cap(len(result), len(live), policy)
    removals += [b for b in expired if binding_id(b) not in written]
    upserts = tuple(item.binding for item in wanted if item.binding is not None)
    return RegisterOutcome(upserts, tuple(removals), tuple(result.values()))


def _check_cap(after: int, before: int, policy: RegistrarPolicy) -> None:
    # RFC 3261 §10.3 lets the registrar refuse a registration by local policy. 403: the
    # account is at its limit; retrying, here or at the other instance, cannot help until
    # a binding is removed or expires. (503 would invite retries and make phones fail
    # over to the other instance as if this one were overloaded.) An account already
    # over a lowered cap keeps its refreshes; it only cannot grow.
    if after > policy.max_bindings and after > before:
        raise SipError(403, "Forbidden - Too Many Registrations")


def call_targets(bindings: Sequence[Binding], now: float) -> list[Binding]:
    """Live contacts to ring, best first: highest q, then the most recently refreshed
    (RFC 3261 §16.6: a proxy may fork to all of them; the first becomes the R-URI)."""
    live = (binding for binding in bindings if binding.expires_at > now)
    return sorted(live, key=lambda binding: (-binding.q, -binding.expires_at))
