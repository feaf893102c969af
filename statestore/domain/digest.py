"""HTTP Digest for SIP (RFC 3261 §22, RFC 7616, RFC 8760): nonces, credentials, challenges.

Pure: no clock, no randomness, no I/O. The Kamailio adapter (kemi/blf_auth.py) passes in the
time and the random bytes, keeps the nonce counts, and looks the account up.

A nonce is stateless and self-describing (RFC 7616 §3.3 leaves its content to the server):

    base64url( issued-at (8 bytes, big-endian seconds) | len(instance) (1 byte) | instance
               | random (NONCE_RANDOM_BYTES) | HMAC-SHA256(secret, everything before) )

Every instance can check that the cluster minted it (shared secret) but only the instance that
issued it accepts it: that instance alone keeps the nonce's highest nonce count, so counting
there is enough to make each (nonce, nc) pair usable once across the cluster.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

# RFC 7616 §3.7: the server lists its challenges in order of preference, strongest first.
SUPPORTED_ALGORITHMS = ("SHA-256", "MD5")
# Offered by default: MD5 alone. Phones under test fail on anything more: sipp 3.6.1 answers
# only the first challenge and knows only MD5; baresip 1.0 (libre 1.1, Debian 12) refuses a
# 401/407 that has any non-MD5 challenge, or two challenges for one realm, whatever the order.
# Operators whose phones all take the first algorithm they support set "SHA-256,MD5".
DEFAULT_ALGORITHMS = ("MD5",)
DEFAULT_NONCE_LIFETIME = 300
NONCE_RANDOM_BYTES = 12
# A credentials header longer than this is hostile or broken; nothing legitimate comes close.
MAX_CREDENTIALS_LENGTH = 4096
_MAC_BYTES = 32
_ISSUED = struct.Struct(">Q")
_NC = re.compile(r"[0-9a-fA-F]{8}")
_HEX = re.compile(r"[0-9a-f]+")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


class NonceStatus(enum.Enum):
    """What a nonce is worth to this instance."""

    VALID = "valid"
    STALE = "stale"  # minted by the cluster but expired or issued by another instance
    FORGED = "forged"  # not minted by the cluster (or damaged): a plain new challenge


@dataclass(frozen=True)
class DigestPolicy:
    """What this instance mints and accepts; the secret is the one all instances share."""

    secret: bytes
    instance: str
    lifetime: int = DEFAULT_NONCE_LIFETIME
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS


@dataclass(frozen=True)
class Credentials:
    """A parsed Authorization / Proxy-Authorization value (RFC 7616 §3.4); fields as sent."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str = ""
    nc: str = ""
    cnonce: str = ""
    opaque: str = ""

    @property
    def nonce_count(self) -> int:
        """The nc as a number; 0 when it is not 8 hex digits (§3.4: nc is 8LHEX)."""
        return int(self.nc, 16) if _NC.fullmatch(self.nc) else 0


class Problem(enum.Enum):
    """Why well-formed credentials are not acceptable before any account is looked at."""

    QOP = "qop=auth, nc and cnonce are required"
    ALGORITHM = "algorithm not offered"
    URI = "digest uri names neither the Request-URI nor this service"


def _serves_nothing(host: str) -> bool:
    return False


@dataclass(frozen=True)
class Service:
    """What a digest uri may name besides the Request-URI: this service. sipp's
    `[authentication]` keyword puts `sip:<server ip>:<port>` there, and RFC 7616 §3.4.6
    leaves the check to the server (RFC 2617 §3.2.2.5: a SHOULD; Kamailio's auth module
    does not make it). Replays stay stopped by single-use nonces and nonce counts.

    `addresses`: the instances' SIP addresses, "host:port" (this one and the live ones);
    `serves`: whether a host is a domain served here (the directory copy)."""

    addresses: frozenset[str] = frozenset()
    serves: Callable[[str], bool] = field(default=_serves_nothing)


# --- algorithms -------------------------------------------------------------------------------


def parse_algorithms(text: str) -> tuple[str, ...]:
    """BLF_DIGEST_ALGORITHMS ("SHA-256,MD5"): the offered algorithms in preference order."""
    names: list[str] = []
    for item in text.split(","):
        name = canonical_algorithm(item.strip())
        if name is None:
            raise ValueError(f"unsupported digest algorithm {item.strip()!r}; use {', '.join(SUPPORTED_ALGORITHMS)}")
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("no digest algorithm configured")
    return tuple(names)


def canonical_algorithm(name: str) -> str | None:
    """The supported algorithm `name` designates (case-insensitive), None for others (-sess too)."""
    for known in SUPPORTED_ALGORITHMS:
        if name.upper() == known:
            return known
    return None


def hash_hex(algorithm: str, text: str) -> str:
    return _HASHES[algorithm](text.encode("utf-8")).hexdigest()


def ha1(algorithm: str, user: str, realm: str, password: str) -> str:
    """H(username:realm:password) (RFC 7616 §3.4.2); only this is ever stored."""
    return hash_hex(algorithm, f"{user}:{realm}:{password}")


# --- nonces -----------------------------------------------------------------------------------


def mint_nonce(policy: DigestPolicy, now: float, random: bytes) -> str:
    """A fresh nonce of this instance, issued at `now`."""
    name = policy.instance.encode("utf-8")[:255]
    payload = _ISSUED.pack(max(0, int(now))) + bytes([len(name)]) + name + random
    mac = hmac.new(policy.secret, payload, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(payload + mac).rstrip(b"=").decode("ascii")


def check_nonce(policy: DigestPolicy, nonce: str, now: float) -> NonceStatus:
    """VALID only for a nonce this instance minted less than `lifetime` seconds ago."""
    raw = _decode(nonce)
    if raw is None or len(raw) < _ISSUED.size + 1 + _MAC_BYTES:
        return NonceStatus.FORGED
    payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
    if not hmac.compare_digest(mac, hmac.new(policy.secret, payload, hashlib.sha256).digest()):
        return NonceStatus.FORGED
    (issued,) = _ISSUED.unpack_from(payload)
    length = payload[_ISSUED.size]
    issuer = payload[_ISSUED.size + 1 : _ISSUED.size + 1 + length]
    if issuer != policy.instance.encode("utf-8")[:255]:
        return NonceStatus.STALE
    # A nonce from the future was minted by a clock since set back: not trusted either.
    if not issued - 1 <= now < issued + policy.lifetime:
        return NonceStatus.STALE
    return NonceStatus.VALID


def _decode(nonce: str) -> bytes | None:
    if not nonce.isascii() or len(nonce) > 512:
        return None
    try:
        return base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
    except (binascii.Error, ValueError):
        return None


# How far below the highest nonce count seen a count may still arrive, once. A phone with
# many BLF keys sends its SUBSCRIBEs with one nonce and counts 1, 2, 3, ... at once; over
# UDP and across the instance's workers they may be taken out of order. Requiring strictly
# increasing counts made every overtaken request "stale" (a new challenge, a lost
# subscription after three); a window of recently seen counts, as IPsec's anti-replay
# window (RFC 4303 §3.4.3), still lets each (nonce, nc) be used only once.
NC_WINDOW = 64
_WINDOW_MASK = (1 << NC_WINDOW) - 1


@dataclass(frozen=True)
class NonceCounts:
    """The counts accepted for one nonce: the highest, and a bitmap of the NC_WINDOW counts
    below it (bit k set: count `highest - 1 - k` was accepted)."""

    highest: int = 0
    below: int = 0

    def encode(self) -> str:
        return f"{self.highest:08x}:{self.below:016x}"

    @classmethod
    def decode(cls, text: str | None) -> NonceCounts:
        """A stored value; a value of the older form (the highest count alone) has no window."""
        highest, _, below = (text or "").partition(":")
        try:
            return cls(int(highest, 16) if highest else 0, int(below, 16) if below else 0)
        except ValueError:
            return cls()


def nonce_count_accepted(nc: int, seen: NonceCounts) -> NonceCounts | None:
    """RFC 7616 §3.4.5 (nc) and §5.3 (replay): each nonce count is used once. The counts
    seen after this one is accepted, or None for a replay, a zero count or one older than
    the window."""
    if nc <= 0:
        return None
    if nc > seen.highest:
        shift = nc - seen.highest
        below = ((seen.below << shift) | (1 << (shift - 1))) & _WINDOW_MASK if seen.highest else 0
        return NonceCounts(nc, below)
    k = seen.highest - 1 - nc
    if nc == seen.highest or k >= NC_WINDOW or seen.below >> k & 1:
        return None
    return NonceCounts(seen.highest, seen.below | 1 << k)


# --- challenges -------------------------------------------------------------------------------


def challenges(realm: str, nonce: str, algorithms: Iterable[str], stale: bool) -> list[str]:
    """WWW-/Proxy-Authenticate values, one per algorithm in preference order (RFC 7616 §3.7)."""
    values = []
    for algorithm in algorithms:
        value = f'Digest realm="{_quote(realm)}", nonce="{nonce}", qop="auth", algorithm={algorithm}'
        if stale:
            value += ", stale=true"
        values.append(value)
    return values


def _quote(text: str) -> str:
    """A quoted-string body: no CTLs (the realm comes from the request), quotes escaped."""
    clean = "".join(ch for ch in text if ch >= " " and ch != "\x7f")
    return clean.replace("\\", "\\\\").replace('"', '\\"')


# --- credentials ------------------------------------------------------------------------------


def parse_credentials(value: str) -> Credentials | None:
    """Digest credentials from a header value; None if it is not well-formed Digest.

    Hostile input is expected: quoted strings with commas and escapes, duplicates, huge or
    non-ASCII values. Anything not understood is None, never an exception.
    """
    if len(value) > MAX_CREDENTIALS_LENGTH:
        return None
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    params = _auth_params(rest)
    if params is None:
        return None
    required = ("username", "realm", "nonce", "uri", "response")
    if any(not params.get(name) for name in required):
        return None
    return Credentials(
        username=params["username"], realm=params["realm"], nonce=params["nonce"], uri=params["uri"],
        response=params["response"], algorithm=params.get("algorithm", "MD5"), qop=params.get("qop", ""),
        nc=params.get("nc", ""), cnonce=params.get("cnonce", ""), opaque=params.get("opaque", ""),
    )


def _auth_params(text: str) -> dict[str, str] | None:
    """auth-param *( "," auth-param ) with BWS (RFC 7235 §2.1); duplicates are malformed."""
    params: dict[str, str] = {}
    pos, end = 0, len(text)
    while True:
        pos = _skip(text, pos, " \t,")
        if pos >= end:
            return params
        name = _TOKEN.match(text, pos)
        if name is None:
            return None
        pos = _skip(text, name.end(), " \t")
        if pos >= end or text[pos] != "=":
            return None
        pos = _skip(text, pos + 1, " \t")
        if pos < end and text[pos] == '"':
            parsed = _quoted(text, pos)
            if parsed is None:
                return None
            param, pos = parsed
        else:
            token = _TOKEN.match(text, pos)
            if token is None:
                return None
            param, pos = token.group(), token.end()
        key = name.group().lower()
        if key in params:
            return None
        params[key] = param
        pos = _skip(text, pos, " \t")
        if pos < end and text[pos] != ",":
            return None


def _skip(text: str, pos: int, chars: str) -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def _quoted(text: str, pos: int) -> tuple[str, int] | None:
    """The unescaped body of the quoted-string starting at `pos`, and the index after it."""
    out: list[str] = []
    pos += 1
    while pos < len(text):
        char = text[pos]
        if char == '"':
            return "".join(out), pos + 1
        if char == "\\" and pos + 1 < len(text):
            pos += 1
            char = text[pos]
        if char in "\r\n\x00":
            return None
        out.append(char)
        pos += 1
    return None


def problem(
    credentials: Credentials, offered: Iterable[str], request_uri: str, service: Service | None = None
) -> Problem | None:
    """Checks of the credentials alone (RFC 7616 §3.4, RFC 3261 §22.4), before any state."""
    if credentials.qop.lower() != "auth" or not _NC.fullmatch(credentials.nc) or not credentials.cnonce:
        return Problem.QOP
    if canonical_algorithm(credentials.algorithm) not in tuple(offered):
        return Problem.ALGORITHM
    if not same_uri(credentials.uri, request_uri) and not names_service(credentials.uri, service or Service()):
        return Problem.URI
    return None


def same_uri(digest_uri: str, request_uri: str) -> bool:
    """RFC 7616 §3.4.6: the digest-uri names the Request-URI. Scheme and host compare
    case-insensitively (RFC 3261 §19.1.4); user and parameters as written."""
    return _normalised(digest_uri) == _normalised(request_uri)


_DEFAULT_PORTS = {"sip": 5060, "sips": 5061}
_HOSTPORT = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]]+)(?::(?P<port>[0-9]{1,5}))?")


def names_service(digest_uri: str, service: Service) -> bool:
    """Whether `digest_uri` is a sip: or sips: URI with no user part (parameters allowed,
    no headers) whose host is a served domain (any port), or whose host and port (5060 for
    sip:, 5061 for sips: when absent, RFC 3261 §19.1.2) are an instance's address."""
    parts = _URI.fullmatch(digest_uri.strip())
    if parts is None or parts["user"] or "?" in parts["tail"] or (parts["tail"] and parts["tail"][0] != ";"):
        return False
    scheme = parts["scheme"].lower()
    hostport = _HOSTPORT.fullmatch(parts["host"])
    if scheme not in _DEFAULT_PORTS or hostport is None:
        return False
    host = hostport["host"].lower()
    if service.serves(host):
        return True
    port = int(hostport["port"]) if hostport["port"] else _DEFAULT_PORTS[scheme]
    return f"{host}:{port}" in {address.lower() for address in service.addresses}


_URI = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):(?P<user>[^@;?]*@)?(?P<host>[^;?]*)(?P<tail>.*)", re.S)


def _normalised(uri: str) -> str:
    parts = _URI.fullmatch(uri.strip())
    if parts is None:
        return uri.strip()
    return f"{parts['scheme'].lower()}:{parts['user'] or ''}{parts['host'].lower()}{parts['tail']}"


def expected_response(credentials: Credentials, algorithm_ha1: str, method: str) -> str:
    """request-digest for qop=auth (RFC 7616 §3.4.1): KD(HA1, nonce:nc:cnonce:qop:H(A2))."""
    algorithm = canonical_algorithm(credentials.algorithm) or "MD5"
    ha2 = hash_hex(algorithm, f"{method}:{credentials.uri}")
    c = credentials
    return hash_hex(algorithm, f"{algorithm_ha1}:{c.nonce}:{c.nc}:{c.cnonce}:{c.qop.lower()}:{ha2}")


def response_matches(credentials: Credentials, algorithm_ha1: str, method: str) -> bool:
    """Whether the response proves knowledge of the password behind `algorithm_ha1`."""
    if not algorithm_ha1 or not _HEX.fullmatch(credentials.response.lower()):
        return False
    expected = expected_response(credentials, algorithm_ha1, method)
    return hmac.compare_digest(expected, credentials.response.lower())
