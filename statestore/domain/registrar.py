"""Registrar rules of RFC 3261 §10.3 for a registrar whose bindings live in the store.

Pure: no I/O and no clock, `now` is passed in. The adapter turns a REGISTER into a
`RegisterRequest` (Contact values through `parse_contacts`), loads the account's stored
bindings, calls `apply_register`, writes `upserts`, deletes `removals` (keyed by
`binding_id`) and answers 200 OK listing every `bindings` entry with
`contact_header_value`. A request that must fail raises `SipError`; nothing is then written.

A binding is identified by its device when the Contact carries an RFC 5626 `+sip.instance`
(with its `reg-id`, when present), otherwise by its Contact URI (RFC 3261 §10.3): a phone
that restarts with a new Contact but the same instance-id replaces its old binding.
We do not support outbound (no flow keep-alives, no `Require: outbound`, RFC 5626 §6),
we only use the instance-id to recognise the device.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from statestore.domain.errors import SipError
from statestore.domain.model import Binding

Star = Literal["*"]

# RFC 3261 §25.1: absoluteURI / SIP-URI reduced to "scheme:something without blanks".
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\s<>\"]+")
# RFC 3261 §25.1: token, and a display-name made of tokens and blanks.
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_DISPLAY_TOKENS = re.compile(r"[A-Za-z0-9\-.!%*_+`'~\s]*")
# RFC 3261 §20.10 / §25.1: contact-params expires = delta-seconds, q = qvalue.
_DELTA_SECONDS = re.compile(r"[0-9]+")
_QVALUE = re.compile(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?")
# RFC 5626 §13 (ABNF): reg-id = "reg-id" EQUAL 1*10DIGIT ; 1 to 2**31 - 1.
_REG_ID = re.compile(r"[1-9][0-9]{0,9}")
_REG_ID_MAX = 2**31 - 1
# Contact parameters the 200 OK writes itself (RFC 3261 §10.3 step 8): never echoed twice.
_OWN_PARAMS = frozenset({"expires", "q"})
# scheme ":" [userinfo "@"] hostport [";" params] ["?" headers] (RFC 3261 §19.1.1).
_URI_PARTS = re.compile(
    r"(?P<scheme>[^:]*):(?P<user>[^@]*@)?(?P<host>[^;?]*)(?P<tail>.*)", re.DOTALL
)


@dataclass(frozen=True)
class ContactSpec:
    """One contact of a REGISTER; `raw_params` is the header-parameter text after the URI.

    `sip_instance` is the RFC 5626 instance-id (the URN without its quotes and <>), `reg_id`
    the reg-id; "" when absent.
    """

    uri: str
    expires: int | None = None
    q: float = 1.0
    raw_params: str = ""
    sip_instance: str = ""
    reg_id: str = ""


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


def _bad(detail: str) -> SipError:
    # 400 (RFC 3261 §21.4.1) with a reason phrase telling what was wrong.
    return SipError(400, detail)


# --- Contact parsing (RFC 3261 §20.10, §25.1, §7.3.1) -------------------------------------


def _unquoted(text: str) -> Iterator[tuple[int, str]]:
    """Yield (index, char) outside quoted strings; quoted-pair escapes are honoured."""
    quoted = escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif quoted:
            escaped = char == "\\"
            quoted = char != '"'
        elif char == '"':
            quoted = True
        else:
            yield index, char
    if quoted:
        raise _bad("Invalid Contact: unterminated quoted string")


def _split_top(text: str, separator: str) -> list[str]:
    """Split on `separator` outside quoted strings and outside <...> (RFC 3261 §7.3.1)."""
    cuts: list[int] = []
    angled = False
    for index, char in _unquoted(text):
        if char == "<":
            angled = True
        elif char == ">":
            angled = False
        elif char == separator and not angled:
            cuts.append(index)
    if angled:
        raise _bad("Invalid Contact: unterminated <")
    bounds = zip([-1, *cuts], [*cuts, len(text)], strict=True)
    return [text[start + 1 : end] for start, end in bounds]


def parse_contacts(values: Sequence[str]) -> list[ContactSpec] | Star:
    """Contacts of all Contact header values of a REGISTER, or "*" for a lone wildcard.

    No value at all is a query (RFC 3261 §10.2.3) and gives an empty list.
    """
    items = [item.strip() for value in values for item in _split_top(value, ",")]
    if "*" in items:
        # RFC 3261 §10.2.2: "*" only on its own (and, checked later, with Expires: 0).
        if len(items) != 1:
            raise _bad("Invalid Contact: * mixed with other contacts")
        return "*"
    return [_parse_contact(item) for item in items]


def _parse_contact(text: str) -> ContactSpec:
    if not text:
        raise _bad("Invalid Contact: empty contact")
    opening = next((index for index, char in _unquoted(text) if char == "<"), -1)
    if opening < 0:
        # addr-spec form: everything after the first ";" is a header parameter (§20.10).
        uri, semicolon, params = text.partition(";")
        return _contact(uri.strip(), semicolon + params)
    closing = text.find(">", opening)
    if closing < 0:
        raise _bad("Invalid Contact: unterminated <")
    _check_display(text[:opening].strip())
    return _contact(text[opening + 1 : closing].strip(), text[closing + 1 :].strip())


def _check_display(display: str) -> None:
    quoted = len(display) >= 2 and display[0] == display[-1] == '"'
    if not quoted and not _DISPLAY_TOKENS.fullmatch(display):
        raise _bad("Invalid Contact: bad display name")


def _contact(uri: str, raw_params: str) -> ContactSpec:
    if not _URI.fullmatch(uri):
        raise _bad("Invalid Contact: bad URI")
    if raw_params and not raw_params.startswith(";"):
        raise _bad("Invalid Contact: junk after URI")
    params = _parse_params(raw_params[1:]) if raw_params else {}
    return ContactSpec(
        uri, _expires_param(params), _q_param(params), raw_params, _instance_param(params), _reg_id_param(params)
    )


def _parse_params(text: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for item in _split_top(text, ";"):
        name, equals, value = item.partition("=")
        name = name.strip().lower()
        if not _TOKEN.fullmatch(name):
            raise _bad("Invalid Contact: bad parameter")
        params[name] = value.strip() if equals else None
    return params


def _expires_param(params: dict[str, str | None]) -> int | None:
    if "expires" not in params:
        return None
    value = params["expires"]
    if value is None or not _DELTA_SECONDS.fullmatch(value):
        raise _bad("Invalid Contact: bad expires")
    return int(value)


def _instance_param(params: dict[str, str | None]) -> str:
    # RFC 5626 §4.1 / RFC 3840 §9: +sip.instance="<urn:uuid:...>", a quoted string holding
    # the URN in <>. Compared case-insensitively: UUID URNs (RFC 4122 §3) are, and a phone
    # that changed only the case of its instance-id is still the same device.
    if "+sip.instance" not in params:
        return ""
    value = (params["+sip.instance"] or "").strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1].strip()
    if not value or any(char in value for char in '<>"\\ \t'):
        raise _bad("Invalid Contact: bad +sip.instance")
    return value.lower()


def _reg_id_param(params: dict[str, str | None]) -> str:
    if "reg-id" not in params:
        return ""
    value = params["reg-id"]
    if value is None or not _REG_ID.fullmatch(value) or int(value) > _REG_ID_MAX:
        raise _bad("Invalid Contact: bad reg-id")
    return value


def echoed_params(raw_params: str) -> str:
    """Contact parameters to echo in the 200 OK (+sip.instance, reg-id, feature tags of
    RFC 3840...), as sent, without expires and q, which the 200 states itself."""
    if not raw_params:
        return ""
    kept = [
        item.strip()
        for item in _split_top(raw_params[1:], ";")
        if item.partition("=")[0].strip().lower() not in _OWN_PARAMS
    ]
    return "".join(f";{item}" for item in kept)


def _q_param(params: dict[str, str | None]) -> float:
    if "q" not in params:
        return 1.0
    value = params["q"]
    if value is None or not _QVALUE.fullmatch(value):
        raise _bad("Invalid Contact: bad q")
    return float(value)


# --- URI identity ---------------------------------------------------------------------------


def normalise_uri(uri: str) -> str:
    """Lower-case scheme and hostport; user and parameters stay as they are.

    A simplification of the URI comparison of RFC 3261 §19.1.4.
    """
    parts = _URI_PARTS.fullmatch(uri.strip())
    if parts is None:
        return uri.strip()
    user = parts["user"] or ""
    return f"{parts['scheme'].lower()}:{user}{parts['host'].lower()}{parts['tail']}"


def binding_key_id(contact_uri: str) -> str:
    """Stable short id of a contact URI for the store key: 16 hex chars of sha1."""
    return _short_hash(normalise_uri(contact_uri))


def device_key_id(sip_instance: str, reg_id: str = "") -> str:
    """Stable short id of a device's binding (RFC 5626 §6: instance-id and reg-id)."""
    return _short_hash(f"instance:{sip_instance}\nreg-id:{reg_id}")


def binding_id(binding: Binding) -> str:
    """Store key id of a binding: its device when it named one, else its Contact URI."""
    if binding.sip_instance:
        return device_key_id(binding.sip_instance, binding.reg_id)
    return binding_key_id(binding.contact)


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


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
        raise _bad("Invalid Contact: * requires Expires: 0")


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
        raise _bad("Invalid Expires")
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
        raise _bad("Out of order CSeq")


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


def split_header_list(value: str) -> list[str]:
    """Elements of a comma-separated header value (Route, Record-Route), quoting respected."""
    return [item.strip() for item in _split_top(value, ",") if item.strip()]


def call_targets(bindings: Sequence[Binding], now: float) -> list[Binding]:
    """Live contacts to ring, best first: highest q, then the most recently refreshed
    (RFC 3261 §16.6: a proxy may fork to all of them; the first becomes the R-URI)."""
    live = (binding for binding in bindings if binding.expires_at > now)
    return sorted(live, key=lambda binding: (-binding.q, -binding.expires_at))
