"""Digest authentication (RFC 3261 §22, RFC 7616) against accounts in the store, cache as fallback.

The rules are in statestore/domain/digest.py; this adapter reads the request, keeps the nonce
counts and answers challenges. Kamailio's `auth` module is not used for checking: its KEMI
exports in 5.6 (`pv_auth_check`, `auth_challenge`) offer one algorithm per challenge and keep
nonce counts only with one-time-nonce / nc arrays sized at start-up, per instance, with nonces
every instance accepts (shared secret) - so a header captured on one instance replays on another.

Single use across the cluster: a nonce names the instance that minted it and is accepted only
there (another instance answers stale=true and the phone retries with a nonce of its own). So
the highest nonce count per nonce can live in that instance's shared memory (htable `blf_nc`,
shared by all its processes) and a (nonce, nc) pair is accepted at most once in the cluster,
with no store round trip and no cross-instance state.

Order of checks: everything that needs no store comes first (parse, identity, qop/uri,
nonce HMAC, issuer and age, nonce count), so an unauthenticated flood never reaches etcd; the
account is looked up only for credentials that could be valid.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable

import KSR  # type: ignore[import-not-found]
from blf_context import Context
from blf_sip import pv

from statestore.domain import digest
from statestore.domain.errors import SipError, StoreUnavailable
from statestore.domain.model import Account

# Seconds a domain check (served or not) is remembered by a process: the domain check before
# the challenge must not cost a store round trip per request (flood limit, issue 5).
DOMAIN_CACHE_SECONDS = float(os.environ.get("BLF_DOMAIN_CACHE_SECONDS", "10"))
_DOMAIN_CACHE_ENTRIES = 4096
_NC_TABLE = "blf_nc"
# The nonce count outlives its nonce by this much in the htable (so a replay finds it).
_NC_MARGIN_SECONDS = 60

# Reads an account by AOR (None: no such account); raises StoreUnavailable.
AccountReader = Callable[[str], Account | None]

_domains: dict[str, tuple[bool, float]] = {}
_policy: digest.DigestPolicy | None = None


def lookup_account(ctx: Context, aor: str, store_required: bool) -> Account | None:
    """Account from the store; from the cache when the store is down and that is allowed."""
    if not ctx.store_down():
        try:
            account = ctx.store.get_account(aor)
        except StoreUnavailable:
            ctx.mark_store_down()
        else:
            if account is not None:
                ctx.cache.put_account(account)
            return account
    if store_required:
        raise StoreUnavailable("store marked down")
    cached = ctx.cache.get_account(aor)
    if cached is None:
        # Neither store nor cache can say: a 503 with Retry-After, not an endless challenge.
        raise StoreUnavailable(f"store down and {aor} not cached")
    return cached


def require_domain(ctx: Context, domain: str) -> None:
    """The store answers and serves `domain`; checked before any challenge, so that a
    phone learns of an outage (503) or a wrong domain (404) without a digest round.

    Answers are remembered per process for DOMAIN_CACHE_SECONDS, both ways, so a flood of
    requests costs no store round trip; the outage flag is shared memory, no round trip either.
    """
    if ctx.store_down():
        raise StoreUnavailable("store marked down")
    now = time.monotonic()
    cached = _domains.get(domain)
    if cached is not None and now - cached[1] < DOMAIN_CACHE_SECONDS:
        served = cached[0]
    else:
        try:
            served = ctx.store.domain_exists(domain)
        except StoreUnavailable:
            ctx.mark_store_down()
            raise
        _remember_domain(domain, served, now)
    if not served:
        raise SipError(404, "Not Found - Domain Not Served Here")


def _remember_domain(domain: str, served: bool, now: float) -> None:
    if len(_domains) >= _DOMAIN_CACHE_ENTRIES:
        for name, (_, checked) in list(_domains.items()):
            if now - checked >= DOMAIN_CACHE_SECONDS:
                del _domains[name]
        if len(_domains) >= _DOMAIN_CACHE_ENTRIES:
            _domains.clear()
    _domains[domain] = (served, now)


def policy(ctx: Context) -> digest.DigestPolicy:
    """This process's digest settings (BLF_AUTH_SECRET, BLF_NONCE_LIFETIME, BLF_DIGEST_ALGORITHMS)."""
    global _policy
    if _policy is None:
        env = os.environ
        try:
            algorithms = digest.parse_algorithms(env.get("BLF_DIGEST_ALGORITHMS", ",".join(digest.DEFAULT_ALGORITHMS)))
        except ValueError as exc:
            KSR.err(f"blf: BLF_DIGEST_ALGORITHMS: {exc}; offering {','.join(digest.DEFAULT_ALGORITHMS)}\n")
            algorithms = digest.DEFAULT_ALGORITHMS
        _policy = digest.DigestPolicy(
            secret=env.get("BLF_AUTH_SECRET", "").encode("utf-8"),
            instance=ctx.settings.instance,
            lifetime=int(env.get("BLF_NONCE_LIFETIME", str(digest.DEFAULT_NONCE_LIFETIME))),
            algorithms=algorithms,
        )
    return _policy


def authenticate(
    ctx: Context, realm: str, store_required: bool, read_account: AccountReader | None = None
) -> str | None:
    """The authenticated account (user@realm), or None after sending a challenge:
    401 WWW-Authenticate for REGISTER, 407 Proxy-Authenticate for every other method.

    `read_account` replaces `lookup_account` for a caller that reads the account together
    with what it needs next (an initial SUBSCRIBE: one store round trip for both)."""
    rules = policy(ctx)
    method = pv("$rm")
    name = "Authorization" if method == "REGISTER" else "Proxy-Authorization"
    found = _credentials(name, realm)
    if found is None:
        _challenge(rules, realm, stale=False)
        return None
    index, credentials = found
    # The auth user must be the From user (To user for REGISTER): nobody places calls,
    # subscribes or registers as someone else with their own password.
    if credentials.username != pv("$tU" if method == "REGISTER" else "$fU"):
        raise SipError(403, "Forbidden - Authentication User Mismatch")
    problem = digest.problem(credentials, rules.algorithms, pv("$ou"))
    if problem is digest.Problem.ALGORITHM:
        _challenge(rules, realm, stale=False)
        return None
    if problem is not None:
        raise SipError(400, f"Bad Request - {problem.value}")
    status = digest.check_nonce(rules, credentials.nonce, time.time())
    if status is not digest.NonceStatus.VALID:
        _challenge(rules, realm, stale=status is digest.NonceStatus.STALE)
        return None
    if not digest.nonce_count_accepted(credentials.nonce_count, _highest_nc(credentials.nonce)):
        KSR.info(f"blf: nonce count {credentials.nc} reused by {credentials.username} from {pv('$si')}\n")
        _challenge(rules, realm, stale=True)
        return None
    aor = f"{credentials.username}@{realm}"
    account = read_account(aor) if read_account is not None else lookup_account(ctx, aor, store_required)
    algorithm = digest.canonical_algorithm(credentials.algorithm) or "MD5"
    if account is not None and not account.ha1_for(algorithm):
        # An account provisioned before SHA-256: offer what it can answer.
        usable = tuple(a for a in rules.algorithms if account.ha1_for(a))
        _challenge(rules, realm, stale=False, algorithms=usable or rules.algorithms)
        return None
    if account is None or not digest.response_matches(credentials, account.ha1_for(algorithm), method):
        _challenge(rules, realm, stale=False)
        return None
    if not _advance_nc(rules, credentials):
        _challenge(rules, realm, stale=True)  # the same nc won a race in another process
        return None
    _consume(name, index)
    return account.aor


def _credentials(name: str, realm: str) -> tuple[int, digest.Credentials] | None:
    """The first well-formed Digest credentials for `realm` among the `name` headers."""
    try:
        count = int(KSR.pv.get(f"$hdrc({name})") or 0)
        for index in range(min(count, 8)):
            value = KSR.pv.get(f"$(hdr({name})[{index}])")
            parsed = digest.parse_credentials(str(value)) if value is not None else None
            if parsed is not None and parsed.realm.lower() == realm.lower():
                return index, parsed
    except (UnicodeError, SystemError, ValueError):
        # A header that is not UTF-8 cannot be turned into a Python string: no credentials.
        return None
    return None


def _highest_nc(nonce: str) -> int:
    """The highest nonce count accepted so far for `nonce` on this instance (0: none)."""
    stored = KSR.htable.sht_get(_NC_TABLE, nonce)
    try:
        return int(str(stored), 16) if stored is not None else 0
    except ValueError:
        return 0


def _advance_nc(rules: digest.DigestPolicy, credentials: digest.Credentials) -> bool:
    """Record the nonce count if it is higher than any accepted before, atomically for all
    the processes of this instance (htable slot lock). Counts are kept as hex strings:
    nc goes to ffffffff, beyond the htable's 32-bit signed integers."""
    key = credentials.nonce
    KSR.htable.sht_lock(_NC_TABLE, key)
    try:
        if not digest.nonce_count_accepted(credentials.nonce_count, _highest_nc(key)):
            return False
        KSR.htable.sht_sets(_NC_TABLE, key, f"{credentials.nonce_count:08x}")
        KSR.htable.sht_setex(_NC_TABLE, key, rules.lifetime + _NC_MARGIN_SECONDS)
        return True
    finally:
        KSR.htable.sht_unlock(_NC_TABLE, key)


def _challenge(
    rules: digest.DigestPolicy, realm: str, stale: bool, algorithms: tuple[str, ...] | None = None
) -> None:
    """Answer 401 (REGISTER) or 407 with a fresh nonce of this instance, one header per algorithm."""
    nonce = digest.mint_nonce(rules, time.time(), secrets.token_bytes(digest.NONCE_RANDOM_BYTES))
    register = pv("$rm") == "REGISTER"
    name = "WWW-Authenticate" if register else "Proxy-Authenticate"
    for value in digest.challenges(realm, nonce, algorithms or rules.algorithms, stale):
        KSR.hdr.append_to_reply(f"{name}: {value}\r\n")
    if register:
        KSR.sl.send_reply(401, "Unauthorized")
    else:
        KSR.sl.send_reply(407, "Proxy Authentication Required")
    return None


def _consume(name: str, index: int) -> None:
    """Remove the credentials we used, so they are not forwarded (RFC 3261 §22.3: a proxy
    leaves credentials for other realms in place)."""
    KSR.textops.remove_hf_idx(name, index)
