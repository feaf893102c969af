"""PUBLISH (RFC 3903): an account publishes its own event state (presence) as an ESC.

The rules are in statestore/domain/publication.py; this adapter gathers the request's facts,
runs the header checks (489, 400, 423) before the digest challenge, authenticates as
SUBSCRIBE does (401 with WWW-Authenticate), checks the body (415, 413, 400: no document is
parsed for a sender that has not authenticated), lets only the account itself
publish (the Request-URI, or one of its aliases, must resolve to the authenticated account:
403 otherwise), reads the publication its SIP-If-Match names, and carries out the one
verdict of `publication.decide`. A write that loses its compare-and-swap (a refresh of
the same publication through another instance at the same moment) is decided again on a
fresh read: the old entity-tag is gone, so the loser gets 412.
"""

from __future__ import annotations

import secrets
import time

import KSR  # type: ignore[import-not-found]
from blf_auth import authenticate, realm_for
from blf_context import Context, lost_races, trying_if_store_slow
from blf_directory import directory, realm_candidates, request_identities, require_served_target
from blf_sip import header, headers, pv, reply, source

from statestore.domain.contact import parse_contacts
from statestore.domain.errors import SipError, store_unavailable_error
from statestore.domain.identity import check_reach
from statestore.domain.model import Publication
from statestore.domain.publication import (
    Action,
    PublishRequest,
    Verdict,
    admit,
    check_body,
    check_headers,
    decide,
    device_of,
)
from statestore.store import StateStore

ONLY_THE_ACCOUNT = "Forbidden - Only The Account May Publish Its State"
ETAG_BYTES = 8


def _request() -> PublishRequest:
    return PublishRequest(
        event=header("Event"), expires=header("Expires"), if_match=header("SIP-If-Match"),
        content_type=pv("$cT"), body=pv("$rb").encode(),
    )


def _device() -> str:
    """The publishing device (publication.device_of): +sip.instance, Contact, or source."""
    try:
        contacts = parse_contacts(headers("Contact"))
    except SipError:
        contacts = []
    first = contacts[0] if isinstance(contacts, list) and contacts else None
    return device_of(first.sip_instance if first else "", first.uri if first else "", source())


def handle_publish(ctx: Context) -> None:
    request = _request()
    checked = check_headers(request, ctx.settings.pub_min_expires or None)
    if ctx.zone(pv("$rd")).down():
        raise store_unavailable_error()
    require_served_target(ctx)
    account = authenticate(ctx, realm_for(ctx, realm_candidates()), store_required=True)
    if account is None:
        return  # challenged, or a retransmission its transaction answers
    checked = check_body(checked, request)  # a document is parsed for an authenticated sender only
    found = request_identities(ctx, account)
    check_reach(found, directory(ctx))
    if found.callee != account:
        raise SipError(403, ONLY_THE_ACCOUNT)
    trying_if_store_slow()
    device = _device()
    store = ctx.zone(account).store  # everything of an account lives in its domain's zone
    for _ in lost_races():
        stored = store.get_publication(account, checked.etag) if checked.etag else None
        publication, revision = stored if stored is not None else (None, 0)
        verdict = decide(checked, account, publication, time.time(), secrets.token_hex(ETAG_BYTES), device,
                         ctx.settings.instance)
        replaced = _admitted(store, verdict) if verdict.action is Action.CREATE else []
        if _carry_out(store, verdict, revision):
            reply(200, "OK", verdict.headers)
            _log(verdict, account)
            for old, old_revision in replaced:  # its device's older state (after the 200: not on its path)
                store.delete_publication(old.account, old.etag, old_revision)
            return


def _admitted(store: StateStore, verdict: Verdict) -> list[tuple[Publication, int]]:
    """A new publication within the account's cap (403 over it, publication.admit); the
    publications of the same device it replaces, with their revisions."""
    assert verdict.write is not None
    existing = store.publications_of(verdict.write.account)
    replaced = admit(verdict.write, [pub for pub, _ in existing], time.time())
    return [(pub, revision) for pub, revision in existing if pub in replaced]


def _carry_out(store: StateStore, verdict: Verdict, revision: int) -> bool:
    """Write the verdict in one transaction; False when a concurrent writer won."""
    old = verdict.delete
    if verdict.action is Action.DELETE:
        assert old is not None
        return store.delete_publication(old.account, old.etag, revision)
    assert verdict.write is not None
    replaces = (old.etag, revision) if old is not None else None
    return store.put_publication(verdict.write, replaces)


def _log(verdict: Verdict, account: str) -> None:
    written: Publication | None = verdict.write
    if written is None:
        KSR.info(f"blf: {account}: publication removed\n")
    else:
        KSR.dbg(f"blf: {account}: {verdict.action.value} {written.event} publication {written.etag}\n")
