"""Digest authentication (RFC 3261 §22) against accounts in the store, cache as fallback."""

from __future__ import annotations

import KSR  # type: ignore[import-not-found]
from blf_context import Context
from blf_sip import pv

from statestore.domain.errors import SipError, StoreUnavailable
from statestore.domain.model import Account

# pv_auth_check flags: the password given is the HA1; checks: the auth user must be the
# From user (To user for REGISTER), so nobody places calls or registers as someone else.
_HA1 = 1
_CHECK_IDENTITY = 1


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
    phone learns of an outage (503) or a wrong domain (404) without a digest round."""
    if ctx.store_down():
        raise StoreUnavailable("store marked down")
    try:
        served = ctx.store.domain_exists(domain)
    except StoreUnavailable:
        ctx.mark_store_down()
        raise
    if not served:
        raise SipError(404, "Not Found - Domain Not Served Here")


def authenticate(ctx: Context, realm: str, store_required: bool) -> str | None:
    """The authenticated account (user@realm), or None after sending a challenge."""
    user = pv("$au")
    if user:
        account = lookup_account(ctx, f"{user}@{realm}", store_required)
        if account is not None and KSR.auth.pv_auth_check(realm, account.ha1, _HA1, _CHECK_IDENTITY) > 0:
            KSR.auth.consume_credentials()
            return account.aor
    KSR.auth.auth_challenge(realm, 0)
    return None
