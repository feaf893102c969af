"""Contact header values of a REGISTER (RFC 3261 §20.10, §25.1, §7.3.1).

Pure: text in, `ContactSpec`s out; a value that cannot be read raises a 400 `SipError`
whose reason phrase says what was wrong. The registrar (registrar.py) decides what the
contacts mean; this module only reads them, and splits other comma-separated header
lists (Route, Record-Route) the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from statestore.domain.errors import SipError

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


def bad_request(detail: str) -> SipError:
    # 400 (RFC 3261 §21.4.1) with a reason phrase telling what was wrong.
    return SipError(400, detail)


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
        raise bad_request("Invalid Contact: unterminated quoted string")


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
        raise bad_request("Invalid Contact: unterminated <")
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
            raise bad_request("Invalid Contact: * mixed with other contacts")
        return "*"
    return [_parse_contact(item) for item in items]


def _parse_contact(text: str) -> ContactSpec:
    if not text:
        raise bad_request("Invalid Contact: empty contact")
    opening = next((index for index, char in _unquoted(text) if char == "<"), -1)
    if opening < 0:
        # addr-spec form: everything after the first ";" is a header parameter (§20.10).
        uri, semicolon, params = text.partition(";")
        return _contact(uri.strip(), semicolon + params)
    closing = text.find(">", opening)
    if closing < 0:
        raise bad_request("Invalid Contact: unterminated <")
    _check_display(text[:opening].strip())
    return _contact(text[opening + 1 : closing].strip(), text[closing + 1 :].strip())


def _check_display(display: str) -> None:
    quoted = len(display) >= 2 and display[0] == display[-1] == '"'
    if not quoted and not _DISPLAY_TOKENS.fullmatch(display):
        raise bad_request("Invalid Contact: bad display name")


def _contact(uri: str, raw_params: str) -> ContactSpec:
    if not _URI.fullmatch(uri):
        raise bad_request("Invalid Contact: bad URI")
    if raw_params and not raw_params.startswith(";"):
        raise bad_request("Invalid Contact: junk after URI")
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
            raise bad_request("Invalid Contact: bad parameter")
        params[name] = value.strip() if equals else None
    return params


def _expires_param(params: dict[str, str | None]) -> int | None:
    if "expires" not in params:
        return None
    value = params["expires"]
    if value is None or not _DELTA_SECONDS.fullmatch(value):
        raise bad_request("Invalid Contact: bad expires")
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
        raise bad_request("Invalid Contact: bad +sip.instance")
    return value.lower()


def _reg_id_param(params: dict[str, str | None]) -> str:
    if "reg-id" not in params:
        return ""
    value = params["reg-id"]
    if value is None or not _REG_ID.fullmatch(value) or int(value) > _REG_ID_MAX:
        raise bad_request("Invalid Contact: bad reg-id")
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
        raise bad_request("Invalid Contact: bad q")
    return float(value)


def split_header_list(value: str) -> list[str]:
    """Elements of a comma-separated header value (Route, Record-Route), quoting respected."""
    return [item.strip() for item in _split_top(value, ",") if item.strip()]
