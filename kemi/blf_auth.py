"""Digest authentication (RFC 3261 §22, RFC 7616) against the accounts of the directory copy.

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
nonce HMAC, issuer and age), so an unauthenticated flood never reaches etcd; the
account is looked up only for credentials that could be valid. Challenges are stateless; the
transaction is made only for a request whose credentials verified (see authenticate).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Sequence

import KSR  # type: ignore[import-not-found]
from blf_context import Context
from blf_directory import directory
from blf_metrics import auth_failed
from blf_routing import live_instances
from blf_sip import pv, refused, stateful
from blf_tcp import hold_flow

from statestore.domain import digest
from statestore.domain.errors import SipError
from statestore.domain.identity import DOMAIN_NOT_SERVED
from statestore.metrics import AuthFailure

_NC_TABLE = "blf_nc"
# The nonce count outlives its nonce by this much in the htable (so a replay finds it).
_NC_MARGIN_SECONDS = 60
# Requests this server answers itself, as a UAS: challenged with 401 + WWW-Authenticate,
# credentials in Authorization. Every other request is proxied: 407 + Proxy-Authenticate,
# credentials in Proxy-Authorization (RFC 3261 §22.3).
UAS_METHODS = frozenset({"REGISTER", "SUBSCRIBE", "PUBLISH"})

_policy: digest.DigestPolicy | None = None


def realm_for(ctx: Context, candidates: Sequence[str]) -> str:
    """The realm to challenge with: the first served domain among `candidates` (lower case).

    The realm only says which domain's credentials to send; the identity is the account
    they verify as (statestore/domain/identity.py). Checked before any challenge, from the
    directory copy (no store round trip), so that a phone learns of a wrong domain (404)
    without a digest round and a flood costs no store read.
    """
    view = directory(ctx)
    for domain in candidates:
        if domain and view.get(domain) is not None:
            return domain.lower()
    raise SipError(404, DOMAIN_NOT_SERVED)


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


def credentials_header() -> str:
    """The header this request's credentials come in (see UAS_METHODS)."""
    return "Authorization" if pv("$rm") in UAS_METHODS else "Proxy-Authorization"


def authenticate(ctx: Context, realm: str, store_required: bool) -> str | None:
    """The authenticated account (user@realm), or None when there is nothing more to do:
    a challenge was sent (401 or 407, see UAS_METHODS), or the request is a retransmission
    its transaction answers.

    The account is the one the credentials verify as: the digest username is its user,
    never an alias; From, To and P-Asserted-Identity play no part (identity.py).
    `store_required`: the request needs etcd anyway (REGISTER, SUBSCRIBE): no memcached
    fallback for the account before the directory copy is loaded.

    Order (issue 12, findings 2 and 8): verify the credentials without advancing the nonce
    count, then make the transaction (blf_sip.stateful), then advance the nonce count.
    Challenges are stateless: a request that is not authenticated holds no shared memory,
    and its retransmission simply gets another challenge. A retransmission of an
    authenticated request that reaches another worker before the first copy's
    transaction exists verifies too, and tm's t_newtran (lookup and insert under one lock)
    lets exactly one of the two carry on: the phone never gets "stale" for it.
    """
    rules = policy(ctx)
    method = pv("$rm")
    name = credentials_header()
    found = _credentials(name, realm)
    if found is None:
        _challenge(rules, realm, stale=False)  # routine: the first request of every phone
        return None
    index, credentials = found
    problem = digest.problem(credentials, rules.algorithms, pv("$ou"), _names_service(ctx))
    if problem is digest.Problem.ALGORITHM:
        _challenge(rules, realm, stale=False)
        return None
    if problem is not None:
        raise SipError(400, f"Bad Request - {problem.value}")
    status = digest.check_nonce(rules, credentials.nonce, time.time())
    if status is digest.NonceStatus.FORGED:
        _challenge(
            rules, realm, stale=False, refusal="nonce not issued by this cluster",
            failure=AuthFailure.FORGED_NONCE,
        )
        return None
    if status is digest.NonceStatus.STALE:
        _challenge(rules, realm, stale=True)  # routine: expired, or minted by another instance
        return None
    if "@" in credentials.username:
        _challenge(
            rules, realm, stale=False, refusal="user@host in the digest username",
            failure=AuthFailure.BAD_USERNAME,
        )
        return None
    account = directory(ctx).account_record(f"{credentials.username}@{realm}", store_required)
    algorithm = digest.canonical_algorithm(credentials.algorithm) or "MD5"
    if account is not None and not account.ha1_for(algorithm):
        # An account provisioned before SHA-256: offer what it can answer.
        usable = tuple(a for a in rules.algorithms if account.ha1_for(a))
        _challenge(rules, realm, stale=False, algorithms=usable or rules.algorithms)
        return None
    if account is None or not digest.response_matches(credentials, account.ha1_for(algorithm), method):
        _challenge(
            rules, realm, stale=False, refusal=f"wrong credentials for {credentials.username}@{realm}",
            failure=AuthFailure.WRONG_CREDENTIALS,
        )
        return None
    # The nonce count is checked only now, after the transaction: a count already used is
    # either a retransmission whose first copy made the transaction (t_newtran absorbs it)
    # or a replay of a captured header (its transaction answers stale, RFC 7616 §3.4.5).
    if not stateful():
        return None  # a retransmission: its transaction answers it
    if not _advance_nc(rules, credentials):
        _challenge(
            rules, realm, stale=True, refusal=f"nonce count {credentials.nc} reused by {credentials.username}",
            failure=AuthFailure.NONCE_COUNT_REUSED,
        )
        return None
    _consume(name, index)
    hold_flow(ctx)  # an authenticated phone's TCP connection outlives BLF_TCP_IDLE_SECONDS
    return account.aor


def _names_service(ctx: Context) -> digest.Service:
    """What a digest uri may name besides the Request-URI: a served domain (directory copy)
    or a live instance's SIP address, this one's included (shared memory): no store read."""
    view = directory(ctx)
    return digest.Service(
        addresses=frozenset(live_instances(ctx).values()),
        serves=lambda host: view.get(host) is not None,
    )


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


def _seen_nc(nonce: str) -> digest.NonceCounts:
    """The nonce counts accepted so far for `nonce` on this instance."""
    stored = KSR.htable.sht_get(_NC_TABLE, nonce)
    return digest.NonceCounts.decode(None if stored is None else str(stored))


def _advance_nc(rules: digest.DigestPolicy, credentials: digest.Credentials) -> bool:
    """Record the nonce count if it was not used before (digest.nonce_count_accepted: a
    window of recent counts), atomically for all the processes of this instance (htable
    slot lock). Kept as a hex string: nc goes to ffffffff, beyond the htable's integers."""
    key = credentials.nonce
    KSR.htable.sht_lock(_NC_TABLE, key)
    try:
        seen = digest.nonce_count_accepted(credentials.nonce_count, _seen_nc(key))
        if seen is None:
            return False
        KSR.htable.sht_sets(_NC_TABLE, key, seen.encode())
        KSR.htable.sht_setex(_NC_TABLE, key, rules.lifetime + _NC_MARGIN_SECONDS)
        return True
    finally:
        KSR.htable.sht_unlock(_NC_TABLE, key)


def _challenge(
    rules: digest.DigestPolicy,
    realm: str,
    stale: bool,
    algorithms: tuple[str, ...] | None = None,
    refusal: str = "",
    failure: AuthFailure | None = None,
) -> None:
    """Answer 401 (UAS_METHODS) or 407 with a fresh nonce of this instance, one header per
    algorithm. With `refusal` (credentials that failed), also the refused request's log line;
    without (no credentials yet, a stale nonce: routine), a debug line only. `failure`:
    why the credentials failed, counted in blf_auth_failures_total."""
    if failure is not None:
        auth_failed(failure)
    nonce = digest.mint_nonce(rules, time.time(), secrets.token_bytes(digest.NONCE_RANDOM_BYTES))
    uas = pv("$rm") in UAS_METHODS
    name = "WWW-Authenticate" if uas else "Proxy-Authenticate"
    for value in digest.challenges(realm, nonce, algorithms or rules.algorithms, stale):
        KSR.hdr.append_to_reply(f"{name}: {value}\r\n")
    status, reason = (401, "Unauthorized") if uas else (407, "Proxy Authentication Required")
    if refusal:
        refused(status, f"{reason} - {refusal}")
    else:
        KSR.dbg(f"blf: challenged {pv('$rm')} from {pv('$si')} (stale={stale})\n")
    KSR.sl.send_reply(status, reason)


def _consume(name: str, index: int) -> None:
    """Remove the credentials we used, so they are not forwarded (RFC 3261 §22.3: a proxy
    leaves credentials for other realms in place)."""
    KSR.textops.remove_hf_idx(name, index)
