"""Registrar rules of RFC 3261 §10.3 for a registrar whose bindings live in the store.

Pure: no I/O and no clock, `now` is passed in. The adapter turns a REGISTER into a
`RegisterRequest` (Contact values through `parse_contacts`), loads the account's stored
bindings, calls `apply_register`, writes `upserts`, deletes `removals` (keyed by
`binding_key_id`) and answers 200 OK listing every `bindings` entry with
`contact_header_value`. A request that must fail raises `SipError`; nothing is then written.
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
# scheme ":" [userinfo "@"] hostport [";" params] ["?" headers] (RFC 3261 §19.1.1).
_URI_PARTS = re.compile(
    r"(?P<scheme>[^:]*):(?P<user>[^@]*@)?(?P<host>[^;?]*)(?P<tail>.*)", re.DOTALL
)


@dataclass(frozen=True)
class ContactSpec:
    """One contact of a REGISTER; `raw_params` is the header-parameter text after the URI."""

    uri: str
    expires: int | None = None
    q: float = 1.0
    raw_params: str = ""


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


@dataclass(frozen=True)
class RegistrarPolicy:
    """Expiry limits in seconds; requires 0 <= min_expires <= default_expires <= max_expires."""

    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600

    def __post_init__(self) -> None:
        if not 0 <= self.min_expires <= self.default_expires <= self.max_expires:
            raise ValueError(f"inconsistent registrar policy: {self}")
        if self.default_expires <= 0:
            raise ValueError("default_expires must be positive")


@dataclass(frozen=True)
class RegisterOutcome:
    """Writes and deletes for the store, and the bindings to list in the 200 OK."""

    upserts: tuple[Binding, ...]
    removals: tuple[Binding, ...]
    bindings: tuple[Binding, ...]


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
    return ContactSpec(uri, _expires_param(params), _q_param(params), raw_params)


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
    return hashlib.sha1(normalise_uri(contact_uri).encode("utf-8")).hexdigest()[:16]


def contact_header_value(binding: Binding, now: float) -> str:
    """Contact value for the 200 OK (RFC 3261 §10.3 step 8): remaining expiry and q."""
    value = f"<{binding.contact}>;expires={binding.remaining(now)}"
    if binding.q != 1.0:
        value += f";q={binding.q:.3f}".rstrip("0").rstrip(".")
    return value


# --- Processing a REGISTER (RFC 3261 §10.3 steps 6 to 8) ------------------------------------


def apply_register(
    request: RegisterRequest,
    current: Sequence[Binding],
    policy: RegistrarPolicy,
    now: float,
) -> RegisterOutcome:
    """Bindings to write and delete for `request`, given the account's stored bindings.

    Stored bindings of other accounts are ignored. Expired ones (expires_at <= now) are
    gone: they take no part in the Call-ID/CSeq check and are listed in removals unless
    the request writes the same contact again.
    """
    mine = [binding for binding in current if binding.account == request.account]
    live = {normalise_uri(b.contact): b for b in mine if b.expires_at > now}
    expired = [binding for binding in mine if binding.expires_at <= now]
    if isinstance(request.contacts, str):
        _check_star(request)
        wanted: dict[str, Binding | None] = dict.fromkeys(live)
    else:
        wanted = _wanted(request, request.contacts, policy, now)
    for key in wanted.keys() & live.keys():
        _check_order(live[key], request)
    return _outcome(live, expired, wanted)


def _check_star(request: RegisterRequest) -> None:
    # RFC 3261 §10.3 step 6: "*" with an Expires value other than zero is a 400.
    if request.expires_header != 0:
        raise _bad("Invalid Contact: * requires Expires: 0")


def _wanted(
    request: RegisterRequest, contacts: Sequence[ContactSpec], policy: RegistrarPolicy, now: float
) -> dict[str, Binding | None]:
    """New binding per normalised contact URI, None for a removal; a later duplicate wins."""
    wanted: dict[str, Binding | None] = {}
    for spec in contacts:
        expires = _expiry(spec, request.expires_header, policy)
        binding = _binding(request, spec, now + expires) if expires else None
        wanted[normalise_uri(spec.uri)] = binding
    return wanted


def _expiry(spec: ContactSpec, header: int | None, policy: RegistrarPolicy) -> int:
    # RFC 3261 §10.3 step 7: contact param, else Expires header, else the local default;
    # the registrar MAY shorten it (clamp to max) and MAY refuse a too short one with 423.
    requested = spec.expires if spec.expires is not None else header
    if requested is None:
        requested = policy.default_expires
    if requested < 0:
        raise _bad("Invalid Expires")
    if 0 < requested < policy.min_expires:
        raise SipError(423, "Interval Too Brief", {"Min-Expires": str(policy.min_expires)})
    return min(requested, policy.max_expires)


def _binding(request: RegisterRequest, spec: ContactSpec, expires_at: float) -> Binding:
    return Binding(
        account=request.account,
        contact=spec.uri,
        expires_at=expires_at,
        call_id=request.call_id,
        cseq=request.cseq,
        q=spec.q,
        instance=request.instance,
        received=request.received,
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
    live: dict[str, Binding], expired: Sequence[Binding], wanted: dict[str, Binding | None]
) -> RegisterOutcome:
    result = dict(live)
    removals: list[Binding] = []
    for key, binding in wanted.items():
        if binding is not None:
            result[key] = binding
        elif key in result:
            removals.append(result.pop(key))
    rewritten = {key for key, binding in wanted.items() if binding is not None}
    removals += [b for b in expired if normalise_uri(b.contact) not in rewritten]
    upserts = tuple(binding for binding in wanted.values() if binding is not None)
    return RegisterOutcome(upserts, tuple(removals), tuple(result.values()))


def split_header_list(value: str) -> list[str]:
    """Elements of a comma-separated header value (Route, Record-Route), quoting respected."""
    return [item.strip() for item in _split_top(value, ",") if item.strip()]


def call_targets(bindings: Sequence[Binding], now: float) -> list[Binding]:
    """Live contacts to ring, best first: highest q, then the most recently refreshed
    (RFC 3261 §16.6: a proxy may fork to all of them; the first becomes the R-URI)."""
    live = (binding for binding in bindings if binding.expires_at > now)
    return sorted(live, key=lambda binding: (-binding.q, -binding.expires_at))
