"""REGISTER: a registrar for the whole cluster, bindings kept in the store (RFC 3261 §10.3)."""

from __future__ import annotations

import time

import KSR  # type: ignore[import-not-found]
from blf_auth import authenticate, realm_for
from blf_context import Context, lost_races, trying_if_store_slow
from blf_directory import directory
from blf_sip import header, headers, pv, reply

from statestore.domain.contact import ContactSpec, parse_contacts
from statestore.domain.errors import SipError, store_unavailable_error
from statestore.domain.identity import RequestFacts, resolve
from statestore.domain.model import Binding
from statestore.domain.registrar import RegisterRequest, apply_register, contact_header_value
from statestore.domain.routing import behind_nat
from statestore.domain.subscription import parse_expires
from statestore.domain.uri_identity import binding_id


def handle_register(ctx: Context) -> None:
    # Challenged statelessly; answered through a transaction once authenticated
    # (blf_auth.authenticate, blf_sip.stateful): tm sends the answer again to every
    # retransmission while the transaction lives; one that comes later is recognised by
    # the registrar.
    recorded = record_register(ctx)
    if recorded is None:
        return
    now, bindings = recorded
    for binding in bindings:
        KSR.hdr.append_to_reply(f"Contact: {contact_header_value(binding, now)}\r\n")
    reply(200, "OK", {"Date": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now))})


def record_register(ctx: Context) -> tuple[float, list[Binding]] | None:
    """Authenticate a REGISTER (our digest) and write its bindings to the cluster's registrar;
    when, and the account's bindings now. None when it was challenged (or is a
    retransmission its transaction answers). The drop-in records the REGISTERs that the
    operator's own registrar then saves (docs/dropin.md)."""
    # The AOR registered is the To URI (RFC 3261 §10.2); its domain is the realm.
    realm = realm_for(ctx, [pv("$td")])
    zone = ctx.zone(realm)  # everything of an account lives in its domain's zone
    if zone.down():
        raise store_unavailable_error()
    account = authenticate(ctx, realm, store_required=True)
    if account is None:
        return None
    # The To user (the account's user or one of its aliases, in any equivalent number form)
    # must name the account that authenticated: nobody registers for someone else.
    view = directory(ctx)
    registered = resolve(RequestFacts(None, None, ruri_user=pv("$tU"), ruri_host=realm), view, view).callee
    if registered != account:
        raise SipError(403, "Forbidden")
    now = time.time()
    contacts = parse_contacts(headers("Contact"))
    request = RegisterRequest(
        account=account,
        call_id=pv("$ci"),
        cseq=int(pv("$cs") or 0),
        contacts=contacts,
        expires_header=parse_expires(header("Expires")),
        instance=ctx.settings.instance,
        received=f"{pv('$pr')}:{pv('$si')}:{pv('$sp')}",
        nat=_behind_nat(contacts),
    )
    trying_if_store_slow()
    # The guarded write fails when a REGISTER of the same account on another worker or
    # instance wrote between our read and our write: read and decide again, after a
    # jittered pause, until ours wins (blf_context.lost_races; caps decided on each read).
    for _ in lost_races():
        read = zone.store.read_bindings(account)
        outcome = apply_register(request, read.bindings, ctx.registrar, now)
        if not outcome.writes or zone.store.apply_bindings(
            [(binding_id(b), b, b.remaining(now)) for b in outcome.upserts],
            [binding_id(b) for b in outcome.removals],
            account,
            read,
        ):
            break
    ctx.cache.put_bindings(account, list(outcome.bindings), now)
    return now, list(outcome.bindings)


def _behind_nat(contacts: list[ContactSpec] | str) -> bool:
    """Whether the phone registers from behind NAT: its top Via's sent-by is not where the
    request came from, or a Contact names a private address (routing.behind_nat).

    $via0(host)/$via0(port) are the sent-by of the top Via as Kamailio parsed it (pv module,
    5.6); a sent-by without a port counts as 5060 (RFC 3261 §18.2.1).
    """
    via_port = pv("$via0(port)")
    port = int(via_port) if via_port.isdigit() and int(via_port) > 0 else None
    source_ip, source_port = pv("$si"), int(pv("$sp") or 0)
    uris = [spec.uri for spec in contacts] if not isinstance(contacts, str) else []
    return any(behind_nat(uri, pv("$via0(host)"), port, source_ip, source_port) for uri in uris or [""])
