"""REGISTER: a registrar for the whole cluster, bindings kept in the store (RFC 3261 §10.3)."""

from __future__ import annotations

import time

import KSR  # type: ignore[import-not-found]
from blf_auth import authenticate, require_domain
from blf_context import Context
from blf_sip import aor_of, header, headers, pv, reply

from statestore.domain.errors import SipError
from statestore.domain.registrar import (
    RegisterRequest,
    apply_register,
    binding_key_id,
    contact_header_value,
    parse_contacts,
)
from statestore.domain.subscription import parse_expires


def handle_register(ctx: Context) -> None:
    realm = pv("$td").lower()
    require_domain(ctx, realm)
    account = authenticate(ctx, realm, store_required=True)
    if account is None:
        return
    if account != aor_of(pv("$tU"), realm):
        raise SipError(403, "Forbidden")
    now = time.time()
    request = RegisterRequest(
        account=account,
        call_id=pv("$ci"),
        cseq=int(pv("$cs") or 0),
        contacts=parse_contacts(headers("Contact")),
        expires_header=parse_expires(header("Expires")),
        instance=ctx.settings.instance,
        received=f"{pv('$pr')}:{pv('$si')}:{pv('$sp')}",
    )
    current = ctx.store.bindings_of(account)
    outcome = apply_register(request, current, ctx.registrar, now)
    ctx.store.apply_bindings(
        [(binding_key_id(b.contact), b, b.remaining(now)) for b in outcome.upserts],
        [binding_key_id(b.contact) for b in outcome.removals],
        account,
    )
    ctx.cache.put_bindings(account, list(outcome.bindings), now)
    for binding in outcome.bindings:
        KSR.hdr.append_to_reply(f"Contact: {contact_header_value(binding, now)}\r\n")
    reply(200, "OK", {"Date": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now))})
